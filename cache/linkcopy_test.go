package cache

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// On a server without hard links a link is delivered as a copy of the
// file, also when the file's content was never read through the mount:
// it is fetched from the server for the copy (the link's own pending
// operation does not count as a local change that the fetch would
// overwrite), and the journal drains.
func TestLinkAsCopyOfUncachedFile(t *testing.T) {
	e := newEnv(t)
	e.remote.noLinks.Store(true)
	e.server("a.txt", "on the server only\n")
	a := e.mustLookup("a.txt")
	if _, err := e.s.Link(context.Background(), a.Ino, RootIno, "b.txt"); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if got := e.serverContent("b.txt"); got != "on the server only\n" {
		t.Errorf("server's b.txt holds %q", got)
	}
	if got := e.serverContent("a.txt"); got != "on the server only\n" {
		t.Errorf("server's a.txt holds %q", got)
	}
	if got := e.mustRead("b.txt"); got != "on the server only\n" {
		t.Errorf("the mount's b.txt holds %q", got)
	}
	if st := e.s.Status(); st.Pending != 0 || st.LastError != "" {
		t.Errorf("after flush: %d pending, last error %q", st.Pending, st.LastError)
	}
}

// Status and Flush read the records of changes set aside (files) without
// holding the store's lock: a slow disk there does not stop the mount.
func TestUndeliveredReadOutsideTheLock(t *testing.T) {
	e := newEnv(t)
	e.server("f", "x")
	a := e.mustLookup("f")
	d := filepath.Join(e.dir, UndeliveredDir)
	os.MkdirAll(d, 0o700)
	fifo := filepath.Join(d, "slow.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { e.s.Status(); close(done) }() // blocks reading the FIFO
	defer func() {
		// Unblock the reader: open for writing, close.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
	}()
	time.Sleep(100 * time.Millisecond)
	got := make(chan error, 1)
	go func() { _, err := e.s.GetAttr(a.Ino); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("getattr waited for Status reading the undelivered records")
	}
}

// mknodRemote is a server that makes nodes through a command, refusing
// device nodes as a login that is not root is refused.
type mknodRemote struct {
	*dirRemote
	made atomic.Int64
}

func (r *mknodRemote) Mknod(ctx context.Context, p string, mode fs.FileMode, dev uint32) error {
	if mode&fs.ModeDevice != 0 {
		return &fs.PathError{Op: "mknod", Path: p, Err: fmt.Errorf("%w: exit 1: mknod: Operation not permitted", fs.ErrPermission)}
	}
	r.made.Add(1)
	return syscall.Mkfifo(r.p(p), uint32(mode.Perm()))
}

// A device node made through the mount (as local root) that the server's
// login may not make stays on the mount only, as when the server cannot
// make nodes at all: not set aside as an undelivered change.
func TestDeviceNodeRefusedByServerStaysLocal(t *testing.T) {
	rem := &mknodRemote{dirRemote: &dirRemote{root: t.TempDir()}}
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Remote: rem, Online: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Mknod(ctx, RootIno, "null2", fs.ModeDevice|fs.ModeCharDevice|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mknod(ctx, RootIno, "pipe", fs.ModeNamedPipe|0o644, 0); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Flush(fctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if us := s.Undelivered(); len(us) != 0 {
		t.Errorf("set aside: %+v", us)
	}
	if rem.made.Load() != 1 {
		t.Errorf("the server made %d nodes, want the FIFO", rem.made.Load())
	}
	ents, err := s.ReadDir(ctx, RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ents, func(d DirEntry) bool { return d.Name == "null2" }) {
		t.Errorf("the device node is gone from the mount: %+v", ents)
	}
}
