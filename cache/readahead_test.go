package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"remotefs/conn"
)

// A sequential reader of a large file (1 MiB reads, as cat and the
// bench's bigread do) through a link where every server read takes a
// round trip: the readahead keeps at least 20 runs (40 MiB) asked for at
// once, every block is fetched once and in runs of maxRunBlocks (one
// server read per 2 MiB, not per block), and the reader gets the
// server's bytes. With fewer runs in flight a file streams at less than
// the link's speed: each content session carries one ssh window per
// round trip only while it has runs queued (conn/sessions.go).
func TestSequentialReadKeepsRunsInFlight(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	lr := &latentReads{dirRemote: rem, rtt: 60 * time.Millisecond}
	s, err := Open(Options{Dir: t.TempDir(), Remote: lr, Online: func() bool { return true }, LargeFile: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}

	const size = 96<<20 + 12345
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(18, 96))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(rem.p("big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	a := e.mustLookup("big.bin")
	h, err := s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := h.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
			t.Fatalf("%d bytes at %d are not the server's", n, off)
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || n == 0 {
			break
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}

	lr.mu.Lock()
	defer lr.mu.Unlock()
	blocks := blocksFor(size)
	t.Logf("%d blocks in %d server reads of %d bytes in all; at most %d in flight at once", blocks, lr.calls, lr.bytes, lr.peak)
	if lr.peak < 20 {
		t.Errorf("at most %d server reads in flight at once, want at least 20 (readaheadRuns %d)", lr.peak, readaheadRuns)
	}
	if lr.peak > readaheadRuns+2 {
		t.Errorf("%d server reads in flight at once: the readahead is not bounded by readaheadRuns (%d)", lr.peak, readaheadRuns)
	}
	// About one read per maxRunBlocks (49; 52 seen on a busy machine,
	// where the reader sometimes asks for a block on its own): a read per
	// block would be 97.
	if lr.calls > blocks*2/3 {
		t.Errorf("%d server reads for %d blocks, want about %d (runs of %d blocks)", lr.calls, blocks, (blocks+maxRunBlocks-1)/maxRunBlocks, maxRunBlocks)
	}
	if lr.bytes > int64(blocks)*blockSize+blockSize {
		t.Errorf("%d bytes asked of the server for a file of %d: blocks were fetched twice", lr.bytes, size)
	}
}

// latentReads is a remote whose reads each take rtt, in parallel (a
// link's round trip with bandwidth to spare); it counts them and the
// most in flight at once.
type latentReads struct {
	*dirRemote
	rtt time.Duration

	mu       sync.Mutex
	inflight int
	peak     int
	calls    int
	bytes    int64
}

func (r *latentReads) ReadAt(ctx context.Context, p string, b []byte, off int64) (int, conn.FileInfo, error) {
	r.mu.Lock()
	r.inflight++
	r.peak = max(r.peak, r.inflight)
	r.calls++
	r.bytes += int64(len(b))
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()
	time.Sleep(r.rtt)
	return r.dirRemote.ReadAt(ctx, p, b, off)
}
