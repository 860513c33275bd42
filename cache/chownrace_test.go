package cache

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
)

// ownerRemote reports owners, as SFTP does, and can hold one folder
// listing after it has read the folder: a listing that started before a
// change and answers after it.
type ownerRemote struct {
	*dirRemote
	hold    atomic.Bool
	read    chan struct{} // closed once the held listing has read
	release chan struct{} // closed by the test to let it answer
}

func withOwner(r *dirRemote, p string, fi conn.FileInfo) conn.FileInfo {
	var st syscall.Stat_t
	if syscall.Lstat(r.p(p), &st) == nil {
		fi.Uid, fi.Gid, fi.HasOwner = st.Uid, st.Gid, true
	}
	return fi
}

func (r *ownerRemote) ReadDir(ctx context.Context, p string) ([]conn.FileInfo, error) {
	out, err := r.dirRemote.ReadDir(ctx, p)
	for i := range out {
		out[i] = withOwner(r.dirRemote, filepath.ToSlash(filepath.Join(p, out[i].Name)), out[i])
	}
	if r.hold.CompareAndSwap(true, false) {
		close(r.read)
		<-r.release
	}
	return out, err
}

func (r *ownerRemote) Lstat(ctx context.Context, p string) (conn.FileInfo, error) {
	fi, err := r.dirRemote.Lstat(ctx, p)
	return withOwner(r.dirRemote, p, fi), err
}

// A chown the server answers at once is a change a listing that started
// before it does not know: the listing's old owner must not replace the
// new one (pjdfstest chown/00.t saw a folder's owner go back).
func TestChownNotUndoneByOlderListing(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a file to another owner")
	}
	rem := &ownerRemote{dirRemote: &dirRemote{root: t.TempDir()}, read: make(chan struct{}), release: make(chan struct{})}
	e := &env{t: t, remote: rem.dirRemote, dir: t.TempDir(), clock: &fakeClock{t: time.Now()}}
	s, err := Open(Options{Dir: e.dir, Remote: rem, Online: func() bool { return true }, Now: e.clock.Now, ConflictLabel: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	e.server("d/f.txt", "file\n")
	if err := os.Mkdir(e.remote.p("d/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d/f.txt", "d/sub"} {
		if a := e.mustLookup(p); !a.HasOwner || a.Uid != 0 {
			t.Fatalf("%s: owner %d (known %v), want root's", p, a.Uid, a.HasOwner)
		}
	}
	rem.hold.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "d", Dir: true}})
	}()
	select {
	case <-rem.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the folder was not listed")
	}
	uid, gid := uint32(123), uint32(456)
	for _, p := range []string{"d/f.txt", "d/sub"} {
		if _, err := e.s.Chown(ctx, e.mustLookup(p).Ino, &uid, &gid); err != nil {
			t.Fatal(err)
		}
	}
	close(rem.release)
	<-done
	for _, p := range []string{"d/f.txt", "d/sub"} {
		if a := e.mustLookup(p); a.Uid != uid || a.Gid != gid {
			t.Errorf("%s: owner %d:%d after an older listing, want %d:%d", p, a.Uid, a.Gid, uid, gid)
		}
	}
}
