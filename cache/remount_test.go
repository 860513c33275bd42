package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"remotefs/conn"
)

// A store reopened on the cache an earlier mount left (a remount with the
// cache kept) must not show that cache as current while the server is
// reachable: files changed on the server meanwhile (another size, another
// second, or the same size within the same second), removed or added
// show as the server has them at the first lookup, stat or read, before
// the tree listing has reached them.
func TestRemountShowsServerChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stream: the tree listing runs (slowly) while the lookups
		// happen; otherwise none is running.
		stream bool
	}{{"no listing", false}, {"listing in progress", true}} {
		t.Run(tc.name, func(t *testing.T) { testRemountShowsServerChanges(t, tc.stream) })
	}
}

func testRemountShowsServerChanges(t *testing.T, stream bool) {
	e := &env{t: t, remote: &dirRemote{root: t.TempDir()}, dir: t.TempDir(),
		clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	tr := treeRemote{dirRemote: e.remote}
	rem := newStatRemote(tr)
	open := func(r statRemote) {
		s, err := Open(Options{Dir: e.dir, Remote: r, Now: e.clock.Now, ConflictLabel: "laptop"})
		if err != nil {
			t.Fatal(err)
		}
		e.s = s
		s.Connected()
	}
	open(rem)
	defer func() { e.s.Close() }()
	ctx := context.Background()

	// A project whose files the mount has listed and read.
	files := map[string]string{}
	for i := 0; i < 12; i++ {
		rel := fmt.Sprintf("src/pkg%d/m%02d.py", i%3, i)
		files[rel] = strings.Repeat(fmt.Sprintf("line %d\n", i), 5+i)
		e.server(rel, files[rel])
		ts := time.Unix(1700000000+int64(i)*10, int64(i)*1000+7)
		os.Chtimes(e.remote.p(rel), ts, ts)
	}
	if _, err := e.s.Preload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for rel, want := range files {
		if got := e.mustRead(rel); got != want {
			t.Fatalf("%s = %q before the remount, want %q", rel, got, want)
		}
	}
	e.s.Close()

	// While unmounted, the server changes: sizes, seconds, and content of
	// the same size written within the same second as the cached version.
	changed := map[string]string{}
	i := 0
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		old := files[rel]
		st := serverStatT(t, e.remote, rel)
		var mtime time.Time
		switch i % 4 {
		case 0: // another size
			changed[rel] = old + "more\n"
		case 1: // same size, another second
			changed[rel] = strings.ToUpper(old)
			mtime = time.Unix(st.Mtim.Sec+100, st.Mtim.Nsec)
		case 2: // same size, same second (another fraction)
			changed[rel] = strings.ToUpper(old)
			mtime = time.Unix(st.Mtim.Sec, (st.Mtim.Nsec+500_000_000)%1_000_000_000)
		}
		i++
		c, ok := changed[rel]
		if !ok {
			continue
		}
		if err := os.WriteFile(e.remote.p(rel), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if !mtime.IsZero() {
			if err := os.Chtimes(e.remote.p(rel), mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	removed := "src/pkg1/m01.py"
	delete(changed, removed)
	os.Remove(e.remote.p(removed))
	added := "src/pkg2/new.py"
	e.server(added, "new on the server\n")

	// Remount: the tree listing is not done (or not running) when the
	// first lookups come.
	r := rem
	if stream {
		r.treeRemote.slow = 30 * time.Millisecond
	}
	open(r)
	if stream {
		go e.s.Preload(context.Background(), nil)
	}
	for rel := range files {
		a, err := e.lookup(rel)
		if rel == removed {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s, removed on the server while unmounted: lookup %v, want ErrNotExist", rel, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("lookup %s: %v", rel, err)
			continue
		}
		checkServerStat(t, "first lookup after the remount", e.remote, rel, a)
		if st := serverStatT(t, e.remote, rel); a.Size != st.Size {
			t.Errorf("%s: size %d after the remount, server %d", rel, a.Size, st.Size)
		}
	}
	for rel, old := range files {
		if rel == removed {
			continue
		}
		want := old
		if c, ok := changed[rel]; ok {
			want = c
		}
		if got, err := e.read(rel); err != nil || got != want {
			t.Errorf("%s after the remount: %q, %v; want %q", rel, got, err, want)
		}
	}
	if got, err := e.read(added); err != nil || got != "new on the server\n" {
		t.Errorf("%s, added on the server: %q, %v", added, got, err)
	}
	ents, err := e.s.ReadDir(ctx, e.mustLookup("src/pkg2").Ino)
	if err != nil || !slices.ContainsFunc(ents, func(d DirEntry) bool { return d.Name == "new.py" }) {
		t.Errorf("src/pkg2 after the remount: %+v, %v; want new.py in it", ents, err)
	}
}

// In a huge folder, a lookup after a reconnect stats the one name instead
// of listing the folder: a file changed or removed on the server meanwhile
// shows so at once; a listing of the folder lists it again.
func TestReconnectHugeFolderShowsServerChanges(t *testing.T) {
	e := newEnv(t)
	for i := 0; i <= confirmListMax+10; i++ {
		e.server(fmt.Sprintf("big/f%05d", i), "old")
	}
	e.s.Connected()
	if got := e.mustRead("big/f00001"); got != "old" {
		t.Fatalf("read %q", got)
	}
	e.mustLookup("big/f00002")
	e.server("big/f00001", "changed on the server")
	os.Remove(e.remote.p("big/f00002"))
	e.server("big/new", "new")
	e.s.Connected()     // a reconnect
	e.mustLookup("big") // the root is listed again (small)
	before := e.remote.readDirs.Load()
	if a := e.mustLookup("big/f00001"); a.Size != int64(len("changed on the server")) {
		t.Errorf("big/f00001 after the reconnect: size %d, want the server's", a.Size)
	}
	if _, err := e.lookup("big/f00002"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("big/f00002, removed on the server: lookup %v, want ErrNotExist", err)
	}
	if n := e.remote.readDirs.Load() - before; n != 0 {
		t.Errorf("%d listings for lookups in a huge folder, want none (one stat per name)", n)
	}
	bigIno := e.mustLookup("big").Ino
	ents, err := e.s.ReadDir(context.Background(), bigIno)
	if err != nil || !slices.ContainsFunc(ents, func(d DirEntry) bool { return d.Name == "new" }) {
		t.Errorf("readdir of the huge folder after the reconnect lacks the server's new name: %d entries, %v", len(ents), err)
	}
	if got := e.mustRead("big/f00001"); got != "changed on the server" {
		t.Errorf("big/f00001 reads %q after the reconnect", got)
	}
}

// A getattr of an entry known from before a reconnect (the kernel's node
// for a file it looked up earlier) shows the server's attributes, not the
// ones cached before.
func TestCurrentAttrAfterReconnect(t *testing.T) {
	e := newEnv(t)
	e.server("d/a.txt", "one")
	e.s.Connected()
	a := e.mustLookup("d/a.txt")
	e.server("d/a.txt", "one, and more on the server")
	if got, err := e.s.GetAttr(a.Ino); err != nil || got.Size != 3 {
		t.Fatalf("before the reconnect the cache shows %d bytes, %v (the test needs the old size)", got.Size, err)
	}
	e.s.Connected()
	got, err := e.s.CurrentAttr(context.Background(), a.Ino)
	if err != nil || got.Size != int64(len("one, and more on the server")) {
		t.Errorf("getattr after a reconnect: %d bytes, %v; want the server's size", got.Size, err)
	}
	// Offline, the cache is served as it is.
	e.server("d/a.txt", "x")
	e.s.Connected()
	e.remote.offline.Store(true)
	if got, err := e.s.CurrentAttr(context.Background(), a.Ino); err != nil || got.Size != int64(len("one, and more on the server")) {
		t.Errorf("getattr offline: %d bytes, %v; want the cached size", got.Size, err)
	}
}

// sftpUploads is statRemote whose uploads report no stat data, as an
// upload over SFTP (no agent) does.
type sftpUploads struct{ statRemote }

func (r sftpUploads) Put(ctx context.Context, p string, src io.Reader, o conn.PutOptions) (conn.PutResult, error) {
	return r.treeRemote.Put(ctx, p, src, o)
}

// The mount's own changes move the server's ctime: a listing with stat
// data after them keeps the content the mount wrote (it is what the
// server has), whether the upload reported the landed file's stat data
// (the agent) or not (SFTP), and after a chmod through the mount; so it
// is still there to read offline.
func TestOwnChangesKeepContent(t *testing.T) {
	for _, viaSFTP := range []bool{false, true} {
		t.Run(fmt.Sprint("sftp upload ", viaSFTP), func(t *testing.T) {
			e := &env{t: t, remote: &dirRemote{root: t.TempDir()}, dir: t.TempDir(),
				clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
			rem := newStatRemote(treeRemote{dirRemote: e.remote})
			var r conn.Remote = rem
			if viaSFTP {
				r = sftpUploads{rem}
			}
			s, err := Open(Options{Dir: e.dir, Remote: r, Online: func() bool { return !e.remote.offline.Load() }, Now: e.clock.Now, ConflictLabel: "laptop"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			e.s = s
			s.Connected()
			ctx := context.Background()
			e.server("d/a.txt", "server's\n")
			e.server("d/b.txt", "server's\n")
			if _, err := s.Preload(ctx, nil); err != nil {
				t.Fatal(err)
			}
			e.mustRead("d/b.txt")
			e.mustWrite("d/a.txt", "written through the mount\n")
			mode := fs.FileMode(0o600)
			if _, err := s.SetAttr(ctx, e.mustLookup("d/b.txt").Ino, &mode, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			e.flush()
			s.Connected()
			if _, err := s.Preload(ctx, nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"d/a.txt", "d/b.txt"} {
				s.mu.Lock()
				_, ent, _ := s.lookupPathLocked(p)
				kept := ent != nil && ent.content == contentClean
				s.mu.Unlock()
				if !kept {
					t.Errorf("%s: the listing after the mount's own change dropped its cached content", p)
				}
			}
			e.remote.offline.Store(true)
			if got, err := e.read("d/a.txt"); err != nil || got != "written through the mount\n" {
				t.Errorf("offline read of the mount's own file: %q, %v", got, err)
			}
		})
	}
}

// A file the mount renamed (its server ctime moved, to a value the mount
// did not see) and the server then rewrote with the same size and the
// same mtime, while unmounted: the flush before the unmount learned the
// ctime the rename left, so the next mount tells the rewrite from it.
func TestRewriteAfterOwnRenameIsSeen(t *testing.T) {
	e, _, openStore := statEnv(t)
	open := func() {
		openStore()
		e.s.Connected()
	}
	open()
	defer func() { e.s.Close() }()
	ctx := context.Background()
	e.server("a.txt", "lower case\n")
	if _, err := e.s.Preload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	e.mustRead("a.txt")
	if err := e.s.Rename(ctx, RootIno, "a.txt", RootIno, "b.txt"); err != nil {
		t.Fatal(err)
	}
	e.flush()
	e.s.Close()
	st := serverStatT(t, e.remote, "b.txt")
	mt := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	// Rewritten until the rewrite has a ctime of its own (the kernel's
	// clock is coarse), with the mtime it had, to the nanosecond.
	for {
		if err := os.WriteFile(e.remote.p("b.txt"), []byte("UPPER CASE\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(e.remote.p("b.txt"), mt, mt)
		if now := serverStatT(t, e.remote, "b.txt"); now.Ctim != st.Ctim {
			break
		}
		time.Sleep(time.Millisecond)
	}
	open()
	if got := e.mustRead("b.txt"); got != "UPPER CASE\n" {
		t.Errorf("b.txt after the remount reads %q, want the server's rewrite", got)
	}
}
