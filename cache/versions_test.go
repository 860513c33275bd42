package cache

import (
	"sync/atomic"

	"bytes"
	"context"
	"errors"
	"os"
	"remotefs/conn"
	"testing"
	"time"
)

// A range-cached file replaced on the server while a handle reads it: the
// block read after the change is the new version's (or ErrChanged), never
// the sparse file's zeros, and never the old version's neighbour mixed in;
// a drop reported by the feed moves the handle the same way.
func TestRangeReadsFollowTheServerVersion(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return true }, LargeFile: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	version := func(tag byte, size int, mtime int64) []byte {
		b := bytes.Repeat([]byte{tag}, size)
		os.WriteFile(rem.p("big.bin"), b, 0o644)
		os.Chtimes(rem.p("big.bin"), time.Unix(mtime, 0), time.Unix(mtime, 0))
		return b
	}
	version('A', 4<<20, 1000)
	a := e.mustLookup("big.bin")
	h, err := s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	buf := make([]byte, 4096)
	if n, err := h.ReadAt(buf, 0); err != nil || n != len(buf) || buf[0] != 'A' {
		t.Fatalf("first read: %d %v %q", n, err, buf[:1])
	}
	epoch := h.Epoch()

	// Replaced on the server, same size, another mtime: found by the
	// block fetch itself (nothing told the cache).
	version('B', 4<<20, 2000)
	sawB := false
	for _, off := range []int64{3 << 20, 0} {
		n, err := h.ReadAt(buf, off)
		sawB = sawB || (err == nil && n > 0 && buf[0] == 'B')
		if err != nil && !errors.Is(err, ErrChanged) {
			t.Fatalf("read at %d after the replace: %v", off, err)
		}
		if err == nil && (n != len(buf) || !bytes.Equal(buf, bytes.Repeat([]byte{'B'}, len(buf)))) {
			t.Fatalf("read at %d after the replace returned %q..., want the new version", off, buf[:8])
		}
	}
	if h.Epoch() == epoch {
		t.Fatal("the handle still reads the content of the replaced version")
	}
	if !sawB {
		t.Fatal("no read after the replace returned the new version (the handle never moved on)")
	}

	// Shrunk and reported by the feed: the next read is the new version's.
	version('C', 2<<20, 3000)
	s.ApplyRemoteChanges(context.Background(), []RemoteChange{{Path: "big.bin"}})
	n, err := h.ReadAt(buf, 1<<20)
	if err != nil || n != len(buf) || buf[0] != 'C' || buf[n-1] != 'C' {
		t.Fatalf("read after a reported shrink: %d %v %q", n, err, buf[:1])
	}
	if n, err := h.ReadAt(buf, 3<<20); n != 0 {
		t.Fatalf("read past the new end: %d bytes, %v", n, err)
	}
	// The files of the versions it moved past are closed once no read
	// uses them, not kept open until the handle is released.
	s.mu.Lock()
	open := len(h.old)
	s.mu.Unlock()
	if open != 0 {
		t.Errorf("the handle keeps %d files of earlier versions open", open)
	}
}

// An open's re-check races a change-feed report that stated the file
// earlier (mid-write on the server) but is applied later: the open must
// not take the older report for the newer answer (a large file's handle
// would then read as a version the server no longer has, and fail).
func TestOpenRecheckNotUndoneByAnOlderReport(t *testing.T) {
	e := newEnv(t)
	e.s.mu.Lock()
	e.s.opts.LargeFile = 8 // read by ranges, as a checkpoint is
	e.s.mu.Unlock()
	e.server("ckpt.bin", "old")
	e.s.Connected()
	a := e.mustLookup("ckpt.bin")
	e.server("ckpt.bin", "the new version")
	fresh, err := e.remote.lstat("ckpt.bin")
	if err != nil {
		t.Fatal(err)
	}
	midWrite := fresh
	midWrite.Size = 9          // what a report stated while the server wrote it
	e.clock.Advance(time.Hour) // the open re-checks
	var calls atomic.Int64
	e.remote.mu.Lock()
	e.remote.lstatHook = func(p string, fi conn.FileInfo, err error) (conn.FileInfo, error) {
		switch calls.Add(1) {
		case 1:
			// The open's stat has its answer; meanwhile the report that
			// stated the file before is applied.
			e.clock.Advance(time.Millisecond)
			e.s.ApplyRemoteChanges(context.Background(), []RemoteChange{{Path: p}})
		case 2:
			return midWrite, nil
		}
		return fi, err
	}
	e.remote.mu.Unlock()
	h, err := e.s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if got := e.mustLookup("ckpt.bin").Size; got != fresh.Size {
		t.Fatalf("after the open the mount shows size %d; the server's file has %d", got, fresh.Size)
	}
}

// A large file with blocks cached from an earlier version, changed on the
// server in a way the change feed has not reported yet: an open re-checks
// it anyway, so a read is not served the old version's cached blocks
// followed by the new version's fetched ones.
func TestLargeFileOpenRechecksWithFeedLive(t *testing.T) {
	e := newEnv(t)
	e.s.mu.Lock()
	e.s.opts.LargeFile = 8 // read by ranges
	e.s.mu.Unlock()
	e.server("ckpt.bin", "version one, long enough")
	e.s.Connected()
	e.s.SetChangeFeed(true, nil)
	e.clock.Advance(time.Second)
	if got := e.mustRead("ckpt.bin"); got != "version one, long enough" {
		t.Fatal(got)
	}
	e.server("ckpt.bin", "VERSION TWO, long enough")
	os.Chtimes(e.remote.p("ckpt.bin"), time.Unix(2000, 0), time.Unix(2000, 0))
	if got := e.mustRead("ckpt.bin"); got != "VERSION TWO, long enough" {
		t.Fatalf("read %q: the server's file is the second version", got)
	}
}
