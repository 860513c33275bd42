package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"remotefs/internal/netproxy"
	"remotefs/internal/sshdtest"
)

// linkRTT is the round trip the latency proxy adds in these tests.
const linkRTT = 50 * time.Millisecond

// dialThroughProxy starts a latency proxy of rtt (bandwidth bytes/s each
// way, 0 unlimited) in front of srv and dials root through it with
// contentSessions (Options.ContentSessions).
func dialThroughProxy(t *testing.T, srv *sshdtest.Server, root string, rtt time.Duration, bandwidth int64, contentSessions int) *Client {
	t.Helper()
	p, err := netproxy.New("127.0.0.1:0", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetLatency(rtt / 2)
	if bandwidth > 0 {
		p.SetBandwidth(bandwidth)
	}
	_, port, _ := net.SplitHostPort(p.Addr())
	opts := clientHome(t, srv, fmt.Sprintf(`
Host slowlink
  HostName 127.0.0.1
  Port %s
  HostKeyAlias srvkey
`, port)+commonHost, "srvkey {{HOSTKEY}}")
	opts.ContentSessions = contentSessions
	return mustDial(t, "slowlink:"+root, opts)
}

// streamContent reads name through c the way the cache's readahead
// does: readers goroutines each asking for the next block (of block
// bytes) not yet taken, until the file is read (or, with stop, over and
// over until stop is closed). Every block is checked against want, the
// file's content. It returns the bytes read.
func streamContent(t *testing.T, c *Client, name string, want []byte, readers, block int, stop <-chan struct{}) int64 {
	t.Helper()
	var next, total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, block)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := (next.Add(1) - 1) * int64(block)
				if stop != nil {
					off %= int64(len(want))
				} else if off >= int64(len(want)) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				n, _, err := c.ReadAt(ctx, name, buf, off)
				cancel()
				if err != nil && !errors.Is(err, io.EOF) {
					errc <- err
					return
				}
				if !bytes.Equal(buf[:n], want[off:min(off+int64(block), int64(len(want)))]) {
					errc <- fmt.Errorf("block at %d: wrong bytes", off)
					return
				}
				total.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return total.Load()
}

// lookupLatencies times lstats of small files while content streams:
// count lookups, one after the other.
func lookupLatencies(t *testing.T, c *Client, names []string, count int) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := range count {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 := time.Now()
		fi, err := c.Lstat(ctx, names[i%len(names)])
		d := time.Since(t0)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size != 3 {
			t.Fatalf("lstat %s: size %d, want 3", names[i%len(names)], fi.Size)
		}
		out = append(out, d)
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

func medianOf(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// A lookup while a large file streams takes about one round trip: the
// content is on sessions of its own. With content and metadata on one
// session (ContentSessions < 0) the same lookup waits behind the read
// requests queued ahead of it, which the test checks too, so that it
// would notice the separation breaking.
func TestLookupBesideLargeRead(t *testing.T) {
	srv, dir, big := serverWithBigFile(t, 1, 64<<20)
	var names []string
	for i := range 20 {
		n := fmt.Sprintf("small%02d.txt", i)
		writeLocal(t, dir, n, "abc", 0o644)
		names = append(names, n)
	}

	measure := func(sessions int) (lookups []time.Duration, mbps float64) {
		c := dialThroughProxy(t, srv, dir, linkRTT, 0, sessions)
		defer c.Close()
		warmUp(t, c, "big.bin")
		stop := make(chan struct{})
		var read int64
		var took time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			t0 := time.Now()
			read = streamContent(t, c, "big.bin", big, 16, 4<<20, stop)
			took = time.Since(t0)
		}()
		time.Sleep(500 * time.Millisecond) // the reads fill the pipe
		lookups = lookupLatencies(t, c, names, 9)
		close(stop)
		<-done
		wantOpen := defaultContentSessions
		if sessions < 0 {
			wantOpen = 0
		}
		if got := c.content.sessions(); got != wantOpen {
			t.Errorf("ContentSessions %d: %d content sessions open, want %d", sessions, got, wantOpen)
		}
		return lookups, float64(read) / 1e6 / took.Seconds()
	}

	sep, sepRate := measure(0)
	shared, sharedRate := measure(-1)
	t.Logf("lookup while streaming, rtt %v: own session median %v max %v (content %.1f MB/s); shared session median %v max %v (content %.1f MB/s)",
		linkRTT, medianOf(sep), slices.Max(sep), sepRate, medianOf(shared), slices.Max(shared), sharedRate)
	if !timingAsserts(t) {
		return
	}
	if m := medianOf(sep); m > 5*linkRTT {
		t.Errorf("lookup beside a large read took %v (median), want under %v", m, 5*linkRTT)
	}
	if m := medianOf(shared); m < 5*linkRTT {
		t.Errorf("with one shared session a lookup took only %v (median): the load did not reach the session, so the test proves nothing", m)
	}
}

// One file streams at the link's speed: read in parallel blocks (as the
// cache's readahead does), content uses every content session's channel
// window. Through the proxy at 200 ms a round trip, where one session's
// 2 MiB window allows about 10 MB/s, the content sessions carry several
// windows at once; at a 20 MB/s cap (50 ms) the read fills the link. The
// figures are logged; the bounds asserted leave room for a busy machine.
func TestLargeReadThroughput(t *testing.T) {
	srv, dir, big := serverWithBigFile(t, 2, 32<<20)
	rate := func(rtt time.Duration, bandwidth int64, sessions int) float64 {
		c := dialThroughProxy(t, srv, dir, rtt, bandwidth, sessions)
		defer c.Close()
		warmUp(t, c, "big.bin")
		t0 := time.Now()
		n := streamContent(t, c, "big.bin", big, 16, 2<<20, nil)
		return float64(n) / 1e6 / time.Since(t0).Seconds()
	}
	const longRTT = 200 * time.Millisecond
	pool := rate(longRTT, 0, 0)
	one := rate(longRTT, 0, -1)
	const capRate = 20e6
	capped := rate(linkRTT, capRate, 0)
	t.Logf("32 MiB at %v a round trip: %.1f MB/s on %d content sessions, %.1f MB/s on one session; at %v and a 20 MB/s cap: %.1f MB/s (%.0f%%)",
		longRTT, pool, defaultContentSessions, one, linkRTT, capped, capped/capRate*1e8)
	// Loose bounds: under -race on a shared machine the figures drop
	// (91-93% and 2.6x measured alone, 80% and 2.2x under -race).
	if !timingAsserts(t) {
		return
	}
	if capped < 0.7*capRate/1e6 {
		t.Errorf("%.1f MB/s at a 20 MB/s cap, want at least 14", capped)
	}
	if pool < 1.6*one {
		t.Errorf("%.1f MB/s with %d content sessions, not 1.6 times the %.1f with one: the sessions do not share the load", pool, defaultContentSessions, one)
	}
}

// timingAsserts says whether the speed bounds are checked: only in
// `make stress` (REMOTEFS_STRESS=1), on a machine left to the test. Beside
// other packages' tests (make test, CI) they failed on load alone; what
// the bench measures there is the speed, what these tests check
// everywhere is the bytes and the sessions used.
func timingAsserts(t *testing.T) bool {
	if os.Getenv("REMOTEFS_STRESS") != "1" {
		t.Log("speed bounds checked only with REMOTEFS_STRESS=1 (make stress)")
		return false
	}
	return true
}

// serverWithBigFile starts sshd with a folder holding big.bin, size
// random bytes from seed (returned); long tests are skipped with -short.
func serverWithBigFile(t *testing.T, seed uint64, size int) (*sshdtest.Server, string, []byte) {
	if testing.Short() {
		t.Skip("streams content through a slow link")
	}
	srv := sshdtest.Start(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	rng := rand.New(rand.NewPCG(18, seed))
	big := make([]byte, size)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	writeLocalBytes(t, dir, "big.bin", big)
	return srv, dir, big
}

// warmUp reads a little of name, so that the content sessions are open.
func warmUp(t *testing.T, c *Client, name string) {
	t.Helper()
	buf := make([]byte, 4096)
	if _, _, err := c.ReadAt(context.Background(), name, buf, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
}
