package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"remotefs/conn"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Readers of a range-cached file, with the readahead running ahead of
// them, while the server replaces the file with other versions: every
// read that succeeds returns exactly one version's bytes at its offset
// (never zeros of a block not fetched, never two versions mixed), and
// once the server stops changing it a new reader gets the last version
// byte for byte. Seeded: the seed is in the test name, to replay a
// failure.
func TestReadaheadAgainstServerVersions(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { readaheadAgainstVersions(t, seed) })
	}
}

func readaheadAgainstVersions(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 18))
	rem := &dirRemote{root: t.TempDir()}
	// AttrTTL 1ns: each open asks the server which version it has.
	s, err := Open(Options{Dir: t.TempDir(), Remote: &slowReads{dirRemote: rem, perMiB: 15 * time.Millisecond}, Online: func() bool { return true }, LargeFile: 1 << 20, AttrTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}

	const nversions = 4
	var versions [nversions][]byte
	for v := range versions {
		b := make([]byte, 6<<20+rng.IntN(2<<20))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		versions[v] = b
	}
	install := func(v int) {
		tmp := rem.p(fmt.Sprintf(".v%d", v))
		os.WriteFile(tmp, versions[v], 0o644)
		mt := time.Unix(int64(1000+v), 0)
		os.Chtimes(tmp, mt, mt)
		if err := os.Rename(tmp, rem.p("big.bin")); err != nil {
			t.Fatal(err)
		}
	}
	install(0)
	a := e.mustLookup("big.bin")

	// matches: some version holds exactly b at off (short only at its
	// end); it notes which in seen.
	var seenMu sync.Mutex
	seen := map[int]bool{}
	matches := func(b []byte, off int64, asked int) bool {
		for i, v := range versions {
			if off >= int64(len(v)) {
				if len(b) == 0 {
					return true // past this version's end
				}
				continue
			}
			want := v[off:min(off+int64(asked), int64(len(v)))]
			if bytes.Equal(b, want) {
				seenMu.Lock()
				seen[i] = true
				seenMu.Unlock()
				return true
			}
		}
		return false
	}

	const readers = 3
	// Readers go on until every version is installed and they have read
	// a while after that (a fixed count let fast readers finish before
	// the server's first change on a quick machine), with a cap.
	var installedAll atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, readers)
	var good [readers]int
	plans := make([]*rand.Rand, readers)
	for r := range plans {
		plans[r] = rand.New(rand.NewPCG(seed, uint64(100+r)))
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := plans[r]
			h, err := s.Open(context.Background(), a.Ino, os.O_RDONLY)
			if err != nil {
				errc <- err
				return
			}
			defer h.Release()
			off := int64(0)
			after := 0
			for i := 0; i < 5000 && after < 40; i++ {
				if installedAll.Load() {
					after++
				}
				size := 128 << 10
				if rng.IntN(10) < 3 { // a jump: anywhere, any size
					off = rng.Int64N(8 << 20)
					size = 1 + rng.IntN(300<<10)
				}
				buf := make([]byte, size)
				n, err := h.ReadAt(buf, off)
				switch {
				case errors.Is(err, ErrChanged):
					off = 0
					continue
				case err != nil && !errors.Is(err, io.EOF):
					errc <- fmt.Errorf("reader %d at %d: %w", r, off, err)
					return
				}
				if !matches(buf[:n], off, size) {
					errc <- fmt.Errorf("reader %d: %d bytes at %d are no version's", r, n, off)
					return
				}
				good[r]++
				off += int64(n)
				if n == 0 {
					off = 0
				}
			}
		}()
	}
	// The server changes the file while they read, once they have read
	// some of the first version (a slow start would otherwise test only
	// the last one).
	deadline := time.Now().Add(10 * time.Second)
	for {
		seenMu.Lock()
		started := seen[0]
		seenMu.Unlock()
		if started || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for v := 1; v < nversions; v++ {
		time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
		install(v)
	}
	installedAll.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("reads that returned data: %v; versions read: %v", good, seen)
	if len(seen) < 2 {
		t.Errorf("the readers saw only versions %v: the server's changes came too late to test anything", seen)
	}
	for r, n := range good {
		if n == 0 {
			t.Errorf("reader %d never got data", r)
		}
	}

	// Settled: a new reader gets the last version whole.
	h, err := s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	last := versions[nversions-1]
	got := make([]byte, 0, len(last))
	buf := make([]byte, 128<<10)
	for moves := 0; int64(len(got)) < int64(len(last)); {
		n, err := h.ReadAt(buf, int64(len(got)))
		if errors.Is(err, ErrChanged) && moves < 3 {
			moves++
			got = got[:0]
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("final read at %d: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
		if n == 0 {
			break
		}
	}
	if !bytes.Equal(got, last) {
		t.Fatalf("final read: %d bytes, want the last version's %d", len(got), len(last))
	}
}

// slowReads is a remote whose reads go one at a time at perMiB, like a
// link of limited bandwidth, so that readahead is still running when the
// server changes the file.
type slowReads struct {
	*dirRemote
	perMiB time.Duration
	mu     sync.Mutex
}

func (r *slowReads) ReadAt(ctx context.Context, p string, b []byte, off int64) (int, conn.FileInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	time.Sleep(r.perMiB * time.Duration(len(b)) / (1 << 20))
	return r.dirRemote.ReadAt(ctx, p, b, off)
}
