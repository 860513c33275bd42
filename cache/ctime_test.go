package cache

import (
	"context"
	"io/fs"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// ctimeRemote reports stat data as the real remote does (statRemote),
// and carries out renames and mkdirs a moment late, as a real server
// does: its ctime for them is then newer than the mount's.
type ctimeRemote struct{ statRemote }

func (r ctimeRemote) Rename(ctx context.Context, a, b string) error {
	time.Sleep(20 * time.Millisecond)
	return r.statRemote.Rename(ctx, a, b)
}

func (r ctimeRemote) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	time.Sleep(20 * time.Millisecond)
	return r.statRemote.Mkdir(ctx, p, mode)
}

// ctimeEnv is a store over a ctimeRemote whose clock is the real one
// plus *skew: the server's ctimes come from the real clock.
func ctimeEnv(t *testing.T, skew *atomic.Int64) (*env, context.Context) {
	e := &env{t: t, remote: &dirRemote{root: t.TempDir()}, dir: t.TempDir()}
	e.reopenSkewed(skew)
	return e, context.Background()
}

func (e *env) reopenSkewed(skew *atomic.Int64) {
	e.t.Helper()
	if e.s != nil {
		e.s.Close()
	}
	rem := ctimeRemote{newStatRemote(treeRemote{dirRemote: e.remote})}
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s, err := Open(Options{Dir: e.dir, Remote: rem, Now: now, ConflictLabel: "laptop"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	e.t.Cleanup(func() { s.Close() })
}

func (e *env) preload(ctx context.Context) {
	e.t.Helper()
	if _, err := e.s.Preload(ctx, nil); err != nil {
		e.t.Fatal(err)
	}
}

func wantCtime(t *testing.T, what string, a Attr, want time.Time) {
	t.Helper()
	if !a.Ctime.Equal(want) {
		t.Errorf("%s: ctime %v, want %v", what, a.Ctime.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
}

// movedAt fails unless the attributes of each path show a ctime (and for
// folders, whole-second mtime) of a change made between t0 and t1, and
// returns them.
func (e *env) movedAt(what string, t0, t1 time.Time, paths ...string) map[string]Attr {
	e.t.Helper()
	got := map[string]Attr{}
	for _, p := range paths {
		a := e.mustLookup(p)
		if a.Ctime.Before(t0) || a.Ctime.After(t1) {
			e.t.Errorf("%s: %s ctime %v, not moved at once (between %v and %v)", what, p, a.Ctime.Format(time.RFC3339Nano), t0.Format(time.RFC3339Nano), t1.Format(time.RFC3339Nano))
		}
		if a.Mode.IsDir() && (a.Mtime.Unix() < t0.Unix() || a.Mtime.Unix() > t1.Unix()) {
			e.t.Errorf("%s: folder %s mtime %v, not moved at once", what, p, a.Mtime)
		}
		got[p] = a
	}
	return got
}

// A change through the mount moves ctime at once (the renamed file's and
// its folders' ctime and mtime), and the server carrying it out a moment
// later (a newer ctime there) does not move it again: a listing or the
// change feed that reports the server's own echo of it keeps what the
// mount showed.
func TestCtimeOwnChangeKeptThroughEcho(t *testing.T) {
	e, ctx := ctimeEnv(t, new(atomic.Int64))
	e.server("d/a.txt", "alpha\n")
	e.server("e/keep.txt", "keep\n")
	e.preload(ctx)
	checkServerStat(t, "after the listing", e.remote, "d/a.txt", e.mustLookup("d/a.txt"))
	time.Sleep(20 * time.Millisecond) // the server's clock for file times is coarse

	t0 := time.Now()
	if err := e.s.Rename(ctx, e.mustLookup("d").Ino, "a.txt", e.mustLookup("e").Ino, "b.txt"); err != nil {
		t.Fatal(err)
	}
	shown := e.movedAt("rename", t0, time.Now(), "e/b.txt", "e")
	t0 = time.Now()
	if _, err := e.s.Mkdir(ctx, e.mustLookup("d").Ino, "sub", 0o755); err != nil {
		t.Fatal(err)
	}
	for p, a := range e.movedAt("mkdir", t0, time.Now(), "d/sub", "d") {
		shown[p] = a
	}
	e.delivered()
	if _, err := os.Stat(e.remote.p("e/b.txt")); err != nil {
		t.Fatalf("the rename did not reach the server: %v", err)
	}
	for _, p := range []string{"e/b.txt", "d/sub"} {
		if st := serverStatT(t, e.remote, p); !time.Unix(st.Ctim.Sec, st.Ctim.Nsec).After(shown[p].Ctime) {
			t.Fatalf("%s: the server's ctime %v is not newer than the mount's: nothing tested", p, time.Unix(st.Ctim.Sec, st.Ctim.Nsec))
		}
	}

	// Echoes: the bulk listing (ctime with nanoseconds), the change
	// feed (an SFTP stat: no ctime, whole-second mtime).
	e.preload(ctx)
	e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "e/b.txt"}, {Path: "d", Dir: true}, {Path: "d/sub", Dir: true}, {Path: "e", Dir: true}})
	for p, want := range shown {
		a := e.mustLookup(p)
		wantCtime(t, p+", after the server's echo", a, want.Ctime)
		if a.Mode.IsDir() && !a.Mtime.Equal(want.Mtime) {
			t.Errorf("%s: mtime %v after the server's echo, want %v", p, a.Mtime, want.Mtime)
		}
	}

	// Flush shows the server's stat data for the files (git's index
	// written afterwards matches on the server).
	e.flush()
	checkServerStat(t, "renamed file after flush", e.remote, "e/b.txt", e.mustLookup("e/b.txt"))
}

// delivered waits until every change has reached the server, without
// Flush (which shows the server's stat data).
func (e *env) delivered() {
	e.t.Helper()
	eventuallyT(e.t, "the changes delivered", func() bool { return e.s.Status().Pending == 0 })
}

// A ctime set through the mount never goes backwards: a server whose
// clock is behind reports an older ctime for the change it carried out.
func TestCtimeNeverGoesBackwards(t *testing.T) {
	skew := new(atomic.Int64)
	e, ctx := ctimeEnv(t, skew)
	e.server("f.txt", "file\n")
	e.preload(ctx)
	skew.Store(int64(10 * time.Second))
	mode := fs.FileMode(0o600)
	t0 := time.Now().Add(10 * time.Second)
	if _, err := e.s.SetAttr(ctx, e.mustLookup("f.txt").Ino, &mode, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	shown := e.movedAt("chmod", t0, time.Now().Add(10*time.Second), "f.txt")["f.txt"]
	e.delivered()
	if fi, err := os.Stat(e.remote.p("f.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("chmod did not reach the server: %v %v", fi, err)
	}
	e.preload(ctx)
	e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "f.txt"}})
	wantCtime(t, "chmod, after an older server ctime", e.mustLookup("f.txt"), shown.Ctime)
}

// A change on the server after the mount's own was delivered is newer
// than both: its ctime wins. After a remount the server's ctime is
// shown, whatever the mount set before (a fresh mount shows what the
// server has, so an index git wrote on the server matches).
func TestCtimeNewerServerChangeWins(t *testing.T) {
	skew := new(atomic.Int64)
	e, ctx := ctimeEnv(t, skew)
	e.server("f.txt", "file\n")
	e.preload(ctx)
	mode := fs.FileMode(0o600)
	if _, err := e.s.SetAttr(ctx, e.mustLookup("f.txt").Ino, &mode, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	e.flush()
	time.Sleep(20 * time.Millisecond) // the server's clock for file times is coarse
	if err := os.Chmod(e.remote.p("f.txt"), 0o640); err != nil {
		t.Fatal(err)
	}
	e.preload(ctx)
	a := e.mustLookup("f.txt")
	if a.Mode.Perm() != 0o640 {
		t.Fatalf("mode %v after the server's chmod", a.Mode)
	}
	checkServerStat(t, "after a server change newer than the mount's", e.remote, "f.txt", a)

	skew.Store(int64(time.Hour))
	mode = 0o644
	if _, err := e.s.SetAttr(ctx, a.Ino, &mode, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	e.flush()
	e.reopenSkewed(skew)
	e.preload(ctx)
	checkServerStat(t, "after a remount", e.remote, "f.txt", e.mustLookup("f.txt"))
}

// An upload lands by renaming a new file over the server's: a new inode
// number and ctime there. The mount keeps showing what it showed (a file
// keeps its inode number while it exists, and its ctime moves only with
// its changes) through the landing and the listings after it, until
// Flush, which shows the server's stat data (an index git writes then
// matches on the server).
func TestUploadLandingKeepsShownStat(t *testing.T) {
	e, ctx := ctimeEnv(t, new(atomic.Int64))
	e.server("a.txt", "alpha\n")
	e.preload(ctx)
	checkServerStat(t, "after the listing", e.remote, "a.txt", e.mustLookup("a.txt"))
	serverIno := serverStatT(t, e.remote, "a.txt").Ino

	e.mustWrite("a.txt", "alpha, edited\n")
	e.mustWrite("new.txt", "new\n")
	shown := map[string]Attr{"a.txt": e.mustLookup("a.txt"), "new.txt": e.mustLookup("new.txt")}
	if shown["a.txt"].StatIno() != serverIno {
		t.Fatalf("a.txt shows inode %d before its upload, want the server's %d", shown["a.txt"].StatIno(), serverIno)
	}
	eventuallyT(t, "the uploads", func() bool {
		return e.s.Status().Pending == 0 && e.serverContent("new.txt") == "new\n" && e.serverContent("a.txt") == "alpha, edited\n"
	})
	if serverStatT(t, e.remote, "a.txt").Ino == serverIno {
		t.Fatal("the upload kept the server's inode: nothing tested")
	}
	// Landed, then listed and reported by the feed: still what it showed.
	for _, when := range []string{"landed", "listed"} {
		if when == "listed" {
			e.preload(ctx)
			e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "a.txt"}, {Path: "new.txt"}})
		}
		for p, want := range shown {
			a := e.mustLookup(p)
			if a.StatIno() != want.StatIno() || !a.Ctime.Equal(want.Ctime) || !a.Mtime.Equal(want.Mtime) {
				t.Errorf("%s, %s: ino %d ctime %v mtime %v; the mount showed ino %d ctime %v mtime %v", when, p,
					a.StatIno(), a.Ctime, a.Mtime, want.StatIno(), want.Ctime, want.Mtime)
			}
		}
		ents, err := e.s.ReadDir(ctx, RootIno)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ents {
			if w, ok := shown[d.Name]; ok && d.StatIno() != w.StatIno() {
				t.Errorf("%s, %s: readdir inode %d, stat %d", when, d.Name, d.StatIno(), w.StatIno())
			}
		}
	}
	e.flush()
	for p := range shown {
		checkServerStat(t, "after flush", e.remote, p, e.mustLookup(p))
	}

	// Held again by the next save; a change by someone else on the
	// server ends the hold: the file is another version now.
	flushed := e.mustLookup("a.txt")
	e.mustWrite("a.txt", "alpha, edited twice\n")
	eventuallyT(t, "the second upload", func() bool {
		return e.s.Status().Pending == 0 && e.serverContent("a.txt") == "alpha, edited twice\n"
	})
	if a := e.mustLookup("a.txt"); a.StatIno() != flushed.StatIno() || serverStatT(t, e.remote, "a.txt").Ino == flushed.StatIno() {
		t.Fatalf("second upload: shows inode %d, showed %d, server %d", a.StatIno(), flushed.StatIno(), serverStatT(t, e.remote, "a.txt").Ino)
	}
	time.Sleep(1100 * time.Millisecond) // another second: another version
	if err := os.WriteFile(e.remote.p("a.txt"), []byte("changed on the server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.preload(ctx)
	checkServerStat(t, "after a change on the server", e.remote, "a.txt", e.mustLookup("a.txt"))
}
