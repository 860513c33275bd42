package cache

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
)

// statRemote reports stat data as the real remote does: the bulk listing
// (GNU find) and an upload through the helper give the inode number,
// ctime and mtime with nanoseconds; SFTP (Lstat, ReadDir, ReadAt) only
// whole seconds and neither. otherDev names paths the listing reports
// without an inode (on another filesystem than the root).
type statRemote struct {
	treeRemote
	otherDev  map[string]bool
	bulkStats *atomic.Int64
}

func newStatRemote(tr treeRemote) statRemote {
	return statRemote{treeRemote: tr, otherDev: map[string]bool{}, bulkStats: new(atomic.Int64)}
}

// statEnv is an env whose server reports stat data (statRemote), and a
// function that opens (or reopens) its store.
func statEnv(t *testing.T) (*env, statRemote, func()) {
	e := &env{t: t, remote: &dirRemote{root: t.TempDir()}, dir: t.TempDir(),
		clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	rem := newStatRemote(treeRemote{dirRemote: e.remote})
	open := func() {
		s, err := Open(Options{Dir: e.dir, Remote: rem, Now: e.clock.Now, ConflictLabel: "laptop"})
		if err != nil {
			t.Fatal(err)
		}
		e.s = s
	}
	return e, rem, open
}

func (r statRemote) serverStat(p string, fi conn.FileInfo) conn.FileInfo {
	var st syscall.Stat_t
	if err := syscall.Lstat(r.p(p), &st); err != nil {
		return fi
	}
	fi.Mtime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	fi.Ctime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	if !r.otherDev[p] {
		fi.Ino = st.Ino
	}
	return fi
}

func (r statRemote) WalkTree(ctx context.Context, prune []string, yield func(string, conn.FileInfo) error) error {
	return r.treeRemote.WalkTree(ctx, prune, func(p string, fi conn.FileInfo) error {
		return yield(p, r.serverStat(p, fi))
	})
}

func (r statRemote) Put(ctx context.Context, p string, src io.Reader, o conn.PutOptions) (conn.PutResult, error) {
	res, err := r.treeRemote.Put(ctx, p, src, o)
	if err == nil {
		res.Info = r.serverStat(res.Path, res.Info)
	}
	return res, err
}

func (r statRemote) StatMany(ctx context.Context, paths []string, yield func(string, conn.FileInfo) error) error {
	r.bulkStats.Add(1)
	for _, p := range paths {
		fi, err := r.dirRemote.Lstat(ctx, p)
		if err != nil {
			continue
		}
		if err := yield(p, r.serverStat(p, fi)); err != nil {
			return err
		}
	}
	return nil
}

func serverStatT(t *testing.T, r *dirRemote, rel string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(r.p(rel), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkServerStat fails unless a shows the server's inode number, ctime
// and mtime (with nanoseconds) of rel.
func checkServerStat(t *testing.T, what string, r *dirRemote, rel string, a Attr) {
	t.Helper()
	st := serverStatT(t, r, rel)
	if a.StatIno() != st.Ino || !a.Ctime.Equal(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) || !a.Mtime.Equal(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)) {
		t.Errorf("%s: %s shows ino %d ctime %v mtime %v; server ino %d ctime %v mtime %v", what, rel,
			a.StatIno(), a.Ctime, a.Mtime, st.Ino, time.Unix(st.Ctim.Sec, st.Ctim.Nsec), time.Unix(st.Mtim.Sec, st.Mtim.Nsec))
	}
}

func TestServerStatData(t *testing.T) {
	e, rem, open := statEnv(t)
	open()
	defer func() { e.s.Close() }()
	ctx := context.Background()
	e.server("src/a.txt", "alpha\n")
	e.server("src/b.txt", "beta\n")
	e.server("mnt/other.txt", "elsewhere\n")
	ns := time.Unix(1700000000, 123456789)
	os.Chtimes(e.remote.p("src/a.txt"), ns, ns)
	if _, err := e.s.Preload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	checkServerStat(t, "after the bulk listing", e.remote, "src/a.txt", e.mustLookup("src/a.txt"))
	if a := e.mustLookup("src/a.txt"); a.Mtime.Nanosecond() != 123456789 {
		t.Errorf("mtime %v lost its nanoseconds", a.Mtime)
	}
	// A cache from before inode numbers were checked against the root's
	// filesystem holds one for a file under a mount point; the next
	// listing, which reports none, drops it.
	if a := e.mustLookup("mnt/other.txt"); a.StatIno() != serverStatT(t, e.remote, "mnt/other.txt").Ino {
		t.Errorf("mnt/other.txt: inode %d before it is known to be elsewhere", a.StatIno())
	}
	rem.otherDev["mnt/other.txt"] = true
	if _, err := e.s.Preload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if a := e.mustLookup("mnt/other.txt"); a.StatIno() != 1<<63|uint64(a.Ino) {
		t.Errorf("a file on another filesystem shows inode %d, want the cache's own (%d with the top bit)", a.StatIno(), a.Ino)
	}
	if a := e.mustLookup("src"); a.StatIno()&(1<<63) == 0 {
		t.Errorf("a folder shows the server's inode %d", a.StatIno())
	}
	ents, err := e.s.ReadDir(ctx, e.mustLookup("src").Ino)
	if err != nil || len(ents) != 2 || ents[0].StatIno() != e.mustLookup("src/a.txt").StatIno() {
		t.Errorf("readdir inode numbers %+v, %v; want what stat shows", ents, err)
	}

	// An SFTP stat of the same version keeps what the listing said.
	e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "src/a.txt"}})
	checkServerStat(t, "after an SFTP stat of the same version", e.remote, "src/a.txt", e.mustLookup("src/a.txt"))

	// And so does the next mount, before any listing.
	e.s.Close()
	open()
	checkServerStat(t, "reopened", e.remote, "src/a.txt", e.mustLookup("src/a.txt"))

	// Changed on the server, seen only through SFTP: the old inode
	// number is no longer trusted (the file may have been replaced).
	os.WriteFile(e.remote.p("src/b.txt"), []byte("beta, longer\n"), 0o644)
	e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "src/b.txt"}})
	if a := e.mustLookup("src/b.txt"); a.StatIno() != 1<<63|uint64(a.Ino) {
		t.Errorf("changed through SFTP: inode %d, want the cache's own", a.StatIno())
	}
	// A moment later the bulk stat brings the server's stat data.
	eventuallyT(t, "the bulk stat of a changed file", func() bool {
		a := e.mustLookup("src/b.txt")
		st := serverStatT(t, e.remote, "src/b.txt")
		return a.StatIno() == st.Ino && a.Ctime.Equal(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) && a.Mtime.Equal(time.Unix(st.Mtim.Sec, st.Mtim.Nsec))
	})
	if n := rem.bulkStats.Load(); n != 1 {
		t.Errorf("%d bulk stats, want 1", n)
	}

	// Written through the mount: once delivered, the file shows the stat
	// data the upload reported (a new inode: uploads land by rename).
	e.mustWrite("src/a.txt", "alpha, edited\n")
	e.flush()
	checkServerStat(t, "after an upload", e.remote, "src/a.txt", e.mustLookup("src/a.txt"))
	e.mustWrite("src/new.txt", "new\n")
	e.flush()
	checkServerStat(t, "after a new file's upload", e.remote, "src/new.txt", e.mustLookup("src/new.txt"))
	e.s.Close()
	open()
	checkServerStat(t, "reopened after uploads", e.remote, "src/new.txt", e.mustLookup("src/new.txt"))
}

// The mount's own touch of a cached file is no server change: the cached
// content stays when the feed reports it, and an edit after it uploads
// over it without a conflict copy.
func TestTouchIsNotAServerChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.server("a.txt", "alpha\n")
	e.server("b.txt", "beta\n")
	for i, p := range []string{"a.txt", "b.txt"} {
		e.mustRead(p)
		m := time.Unix(1600000000+int64(i), 5)
		if _, err := e.s.SetAttr(ctx, e.mustLookup(p).Ino, nil, nil, nil, &m); err != nil {
			t.Fatal(err)
		}
	}
	e.mustWrite("b.txt", "beta, edited\n")
	e.flush()
	e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "a.txt"}, {Path: "b.txt"}})
	ino := e.mustLookup("a.txt").Ino
	e.s.mu.Lock()
	kept := e.s.entries[ino].content == contentClean
	e.s.mu.Unlock()
	if !kept {
		t.Error("touching a cached file dropped its content")
	}
	if c := e.s.Status().Conflicts; len(c) != 0 {
		t.Errorf("an edit after a touch made conflict copies: %v", c)
	}
	if got := e.serverContent("b.txt"); got != "beta, edited\n" {
		t.Errorf("server b.txt = %q", got)
	}
}
