package netproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/testenv"
)

// server is a loopback TCP server that runs handle for each connection and
// counts accepted connections.
type server struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startServer(t *testing.T, handle func(c *net.TCPConn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		// Handlers end when the proxy closes their connections; the proxy's
		// own cleanup runs first (registered later).
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// echo copies everything back, then half-closes.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func startEcho(t *testing.T) *server { return startServer(t, echo) }

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read back %q: %v", msg, err)
	}
	return string(buf)
}

// expectSilence asserts that nothing at all arrives on c for d: the read
// times out (no data, no EOF, no error).
func expectSilence(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("expected silence, got %q", buf[:n])
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("expected silence (timeout), got %v", err)
	}
}

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.EventuallyEvery(t, 10*time.Second, 5*time.Millisecond, what, cond)
}

func TestForwardAndCount(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	if p.Target() != srv.addr() {
		t.Fatalf("Target() = %q", p.Target())
	}
	c := dial(t, p.Addr())
	if got := roundTrip(t, c, "hello"); got != "hello" {
		t.Fatalf("echo = %q", got)
	}
	if got := roundTrip(t, c, "world!"); got != "world!" {
		t.Fatalf("echo = %q", got)
	}
	waitFor(t, "counters", func() bool { return p.BytesUp() == 11 && p.BytesDown() == 11 })
	if p.Conns() != 1 {
		t.Fatalf("Conns() = %d, want 1", p.Conns())
	}
	c.Close()
	waitFor(t, "connection gone", func() bool { return p.Conns() == 0 })
	if p.BytesDropped() != 0 {
		t.Fatalf("BytesDropped() = %d", p.BytesDropped())
	}
}

// Many megabytes over several parallel connections, with a little latency
// and a mid-stream latency change, arrive intact and in order.
func TestStreamIntegrity(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	p.SetLatency(2 * time.Millisecond)

	const conns, size = 4, 4 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		c := dial(t, p.Addr())
		data := make([]byte, size)
		rand.Read(data)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() {
				// Uneven writes, so chunk boundaries vary.
				for off, step := 0, 1; off < len(data); step = step*7%65521 + 1 {
					end := min(off+step, len(data))
					if _, err := c.Write(data[off:end]); err != nil {
						return
					}
					off = end
				}
				c.CloseWrite()
			}()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				errs <- errors.New("data corrupted or reordered")
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	p.SetLatency(0)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "counters", func() bool {
		return p.BytesUp() == conns*size && p.BytesDown() == conns*size
	})
}

// A half-close travels through: the server sees EOF, can still answer, and
// the client then sees the answer and EOF.
func TestHalfClose(t *testing.T) {
	srv := startServer(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write([]byte("got " + string(b)))
		c.CloseWrite()
	})
	p := newProxy(t, srv.addr())
	p.SetLatency(5 * time.Millisecond)
	c := dial(t, p.Addr())
	c.Write([]byte("abc"))
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got abc" {
		t.Fatalf("got %q, %v; want \"got abc\", nil", got, err)
	}
	waitFor(t, "connection closed after both halves", func() bool { return p.Conns() == 0 })
}

func TestLatencyRoundTrip(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "warm")

	const oneWay = 50 * time.Millisecond
	p.SetLatency(oneWay)
	if p.Latency() != oneWay {
		t.Fatalf("Latency() = %v", p.Latency())
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		roundTrip(t, c, "x")
		rtt := time.Since(start)
		if rtt < 2*oneWay {
			t.Fatalf("round trip %v, want at least %v", rtt, 2*oneWay)
		}
		if rtt > 2*time.Second {
			t.Fatalf("round trip %v, far above %v", rtt, 2*oneWay)
		}
	}

	p.SetLatency(0)
	best := time.Hour
	for i := 0; i < 5; i++ {
		start := time.Now()
		roundTrip(t, c, "y")
		best = min(best, time.Since(start))
	}
	if best >= 2*oneWay {
		t.Fatalf("after SetLatency(0) the best round trip is still %v", best)
	}
}

// Chunks are delayed independently: ten writes 20 ms apart under 200 ms of
// latency all arrive about 200 ms after they were sent, not 200 ms after
// each other.
func TestLatencyIsPipelined(t *testing.T) {
	const n, gap, oneWay = 10, 20 * time.Millisecond, 200 * time.Millisecond
	arrived := make(chan time.Time, n)
	srv := startServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 1)
		for i := 0; i < n; i++ {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			arrived <- time.Now()
		}
	})
	p := newProxy(t, srv.addr())
	p.SetLatency(oneWay)
	c := dial(t, p.Addr())

	sent := make([]time.Time, n)
	for i := 0; i < n; i++ {
		sent[i] = time.Now()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
	}
	var last time.Time
	for i := 0; i < n; i++ {
		select {
		case last = <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("byte %d never arrived", i)
		}
		if d := last.Sub(sent[i]); d < oneWay {
			t.Fatalf("byte %d arrived %v after it was sent, want at least %v", i, d, oneWay)
		}
	}
	// One chunk per delay would need n*oneWay = 2 s.
	if total := last.Sub(sent[0]); total > n*oneWay*3/4 {
		t.Fatalf("all bytes took %v: latency is serialising chunks", total)
	}
}

// A latency change does not reorder: a byte sent under a long delay is
// still delivered before one sent after the delay was dropped.
func TestLatencyChangeKeepsOrder(t *testing.T) {
	got := make(chan string, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 2)
		io.ReadFull(c, buf)
		got <- string(buf)
	})
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	p.SetLatency(300 * time.Millisecond)
	c.Write([]byte("a"))
	time.Sleep(20 * time.Millisecond) // let the proxy read "a" on its own
	p.SetLatency(0)
	c.Write([]byte("b"))
	select {
	case s := <-got:
		if s != "ab" {
			t.Fatalf("server read %q, want \"ab\"", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server got nothing")
	}
}

// Bandwidth is one link per direction, shared by all connections: two
// connections sending 128 KiB each over a 256 KiB/s link need about 1 s.
func TestBandwidthShared(t *testing.T) {
	const rate, each = 256 << 10, 128 << 10
	done := make(chan time.Time, 2)
	srv := startServer(t, func(c *net.TCPConn) {
		if n, _ := io.Copy(io.Discard, c); n == each {
			done <- time.Now()
		}
	})
	p := newProxy(t, srv.addr())
	p.SetBandwidth(rate)
	if p.Bandwidth() != rate {
		t.Fatalf("Bandwidth() = %d", p.Bandwidth())
	}
	start := time.Now()
	for i := 0; i < 2; i++ {
		c := dial(t, p.Addr())
		go func() {
			c.Write(make([]byte, each))
			c.CloseWrite()
		}()
	}
	var last time.Time
	for i := 0; i < 2; i++ {
		select {
		case last = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("transfer did not finish")
		}
	}
	want := time.Duration(float64(2*each) / rate * float64(time.Second))
	if took := last.Sub(start); took < want*9/10 || took > 5*want {
		t.Fatalf("sending %d bytes at %d B/s took %v, want about %v", 2*each, rate, took, want)
	}

	// Unlimited again: the same amount goes through much faster.
	p.SetBandwidth(0)
	start = time.Now()
	c := dial(t, p.Addr())
	c.Write(make([]byte, each))
	c.CloseWrite()
	select {
	case last = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("transfer did not finish")
	}
	if took := last.Sub(start); took > want/2 {
		t.Fatalf("unlimited transfer of %d bytes took %v", each, took)
	}
}

// The blackhole drops bytes in both directions without closing anything;
// connections made during it reach the target only once it is over.
func TestBlackhole(t *testing.T) {
	received := make(chan string, 16) // what the server read, per read
	push := make(chan string)         // what the first connection's server side writes
	first := true
	var mu sync.Mutex
	srv := startServer(t, func(c *net.TCPConn) {
		mu.Lock()
		isFirst := first
		first = false
		mu.Unlock()
		if isFirst {
			go func() {
				for s := range push {
					c.Write([]byte(s))
				}
			}()
		}
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				received <- string(buf[:n])
				c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { close(push) })
	p := newProxy(t, srv.addr())
	old := dial(t, p.Addr())
	if got := roundTrip(t, old, "before"); got != "before" {
		t.Fatalf("echo = %q", got)
	}
	<-received

	p.Blackhole(true)
	if !p.Blackholed() {
		t.Fatal("Blackholed() = false")
	}
	// Up: the client's bytes vanish, the connection stays open.
	old.Write([]byte("lost"))
	expectSilence(t, old, 300*time.Millisecond)
	// Down: the server's bytes vanish too.
	push <- "gone"
	expectSilence(t, old, 300*time.Millisecond)
	// A new connection is accepted but goes nowhere.
	fresh := dial(t, p.Addr())
	fresh.Write([]byte("early"))
	expectSilence(t, fresh, 300*time.Millisecond)
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("target saw %d connections during the blackhole, want 1", n)
	}
	waitFor(t, "dropped bytes counted", func() bool { return p.BytesDropped() == int64(len("lost")+len("gone")+len("early")) })
	select {
	case s := <-received:
		t.Fatalf("server read %q during the blackhole", s)
	default:
	}

	p.Blackhole(false)
	// The old connection works again; what was dropped stays dropped.
	if got := roundTrip(t, old, "back"); got != "back" {
		t.Fatalf("echo after blackhole = %q", got)
	}
	if s := <-received; s != "back" {
		t.Fatalf("server read %q, want \"back\"", s)
	}
	push <- "down"
	if got := string(readN(t, old, 4)); got != "down" {
		t.Fatalf("client read %q, want \"down\"", got)
	}
	// The connection made during the blackhole now reaches the target.
	waitFor(t, "deferred dial", func() bool { return srv.accepted.Load() == 2 })
	if got := roundTrip(t, fresh, "late"); got != "late" {
		t.Fatalf("echo on connection from the blackhole = %q", got)
	}
	// And so does a brand-new one.
	if got := roundTrip(t, dial(t, p.Addr()), "new"); got != "new" {
		t.Fatalf("echo on new connection = %q", got)
	}
	if p.Conns() != 3 {
		t.Fatalf("Conns() = %d, want 3", p.Conns())
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

// A blackholed client that closes leaves the server's side open: the FIN
// is lost like everything else.
func TestBlackholeLosesFIN(t *testing.T) {
	serverErr := make(chan error, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		serverErr <- err
	})
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	waitFor(t, "upstream connection", func() bool { return srv.accepted.Load() == 1 })
	p.Blackhole(true)
	c.Close()
	select {
	case err := <-serverErr:
		t.Fatalf("server saw the end of the connection (%v) through a blackhole", err)
	case <-time.After(300 * time.Millisecond):
	}
	p.Close()
	select {
	case <-serverErr:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the upstream connection")
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestResetAll(t *testing.T) {
	serverErr := make(chan error, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				serverErr <- err
				return
			}
			c.Write(buf[:n])
		}
	})
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "ping")

	p.ResetAll()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("client read after ResetAll: %v, want ECONNRESET", err)
	}
	select {
	case err := <-serverErr:
		if !isReset(err) {
			t.Fatalf("server read after ResetAll: %v, want ECONNRESET", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never saw the reset")
	}
	waitFor(t, "no connections", func() bool { return p.Conns() == 0 })
	if got := roundTrip(t, dial(t, p.Addr()), "again"); got != "again" {
		t.Fatalf("new connection after ResetAll: %q", got)
	}
}

// A client that resets its connection resets the server's side too.
func TestClientResetPropagates(t *testing.T) {
	serverErr := make(chan error, 1)
	srv := startServer(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		serverErr <- err
	})
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	waitFor(t, "upstream connection", func() bool { return srv.accepted.Load() == 1 })
	c.SetLinger(0)
	c.Close()
	select {
	case err := <-serverErr:
		if !isReset(err) {
			t.Fatalf("server saw %v, want ECONNRESET", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never saw the reset")
	}
	waitFor(t, "no connections", func() bool { return p.Conns() == 0 })
}

func TestRefuse(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	addr := p.Addr()
	c := dial(t, addr)
	roundTrip(t, c, "one")

	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	if nc, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("dial while refusing: %v, want ECONNREFUSED", err)
	}
	if got := roundTrip(t, c, "two"); got != "two" {
		t.Fatalf("existing connection while refusing: %q", got)
	}

	if err := p.Refuse(false); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("Addr() changed from %s to %s", addr, p.Addr())
	}
	if got := roundTrip(t, dial(t, addr), "three"); got != "three" {
		t.Fatalf("new connection after Refuse(false): %q", got)
	}
	if err := p.Refuse(false); err != nil {
		t.Fatalf("second Refuse(false): %v", err)
	}
	p.Close()
	if err := p.Refuse(false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Refuse(false) after Close: %v, want ErrClosed", err)
	}
}

// When the target is down the client's connection is reset.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	// The reset can come so fast that it already fails the connect.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !isReset(err) && !errors.Is(err, io.EOF) {
		t.Fatalf("read through proxy to a dead target: %v, want a reset", err)
	}
	waitFor(t, "no connections", func() bool { return p.Conns() == 0 })
}

// Close ends every connection, every goroutine and the listener, even with
// connections waiting on a blackhole, a slow link or a slow receiver.
func TestCloseStopsEverything(t *testing.T) {
	srv := startServer(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
	})
	before := runtime.NumGoroutine()

	p, err := New("127.0.0.1:0", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	p.SetLatency(time.Second)
	p.SetBandwidth(1024)
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, p.Addr())
		go c.Write(make([]byte, 64<<10)) // stuck behind the slow link
		clients = append(clients, c)
	}
	waitFor(t, "upstream connections", func() bool { return srv.accepted.Load() == 3 })
	p.Blackhole(true)
	clients = append(clients, dial(t, p.Addr())) // waits for the blackhole to end

	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	p.Close() // twice is fine
	if p.Conns() != 0 {
		t.Fatalf("Conns() = %d after Close", p.Conns())
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client %d still open after Close", i)
		}
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
	for i := range clients {
		clients[i].Close()
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+3 })
}

// Settings change while data flows on several connections (run with -race).
// Latency and bandwidth changes never lose or corrupt data.
func TestConcurrentSettings(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	stop := make(chan struct{})
	var knobs sync.WaitGroup
	knobs.Add(1)
	go func() {
		defer knobs.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			p.SetLatency(time.Duration(i%4) * time.Millisecond)
			p.SetBandwidth([]int64{0, 4 << 20, 0, 16 << 20}[i%4])
			_ = p.Conns() + int(p.BytesUp()+p.BytesDown()+p.BytesDropped())
		}
	}()

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		c := dial(t, p.Addr())
		data := make([]byte, 512<<10)
		rand.Read(data)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { c.Write(data); c.CloseWrite() }()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("echo through changing link: %d of %d bytes, err %v", len(got), len(data), err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	knobs.Wait()
}

// Blackhole, reset and refuse toggled at random while clients connect and
// write: nothing deadlocks, nothing races, Close still ends it all.
func TestChaos(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.addr())
	p.SetLatency(time.Millisecond)
	deadline := time.Now().Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
				if err != nil {
					continue // refusing
				}
				c.SetDeadline(time.Now().Add(20 * time.Millisecond))
				c.Write(buf)
				c.Read(buf)
				c.Close()
			}
		}()
	}
	for i := 0; time.Now().Before(deadline); i++ {
		switch i % 5 {
		case 0:
			p.Blackhole(true)
		case 1:
			p.Blackhole(false)
		case 2:
			p.ResetAll()
		case 3:
			p.Refuse(true)
		case 4:
			if err := p.Refuse(false); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(7 * time.Millisecond)
	}
	wg.Wait()
	p.Blackhole(false)
	if err := p.Refuse(false); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, dial(t, p.Addr()), "still works"); got != "still works" {
		t.Fatalf("after chaos: %q", got)
	}
}
