package netproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxChunk    = 64 << 10              // largest single read
	minChunk    = 512                   // smallest read when bandwidth-limited
	queueLen    = 256                   // chunks in flight per pipe, bounds memory
	maxLate     = 40 * time.Millisecond // how late a paced reader may be without the link going idle
	dialTimeout = 10 * time.Second
)

// kind says what a queued chunk carries.
type kind uint8

const (
	kindData  kind = iota
	kindEOF        // the sender half-closed: CloseWrite the receiver
	kindReset      // the sender's read failed: reset the whole pair
	kindQuiet      // the sender went away during a blackhole: forward nothing
)

// chunk is one read from a socket, due for delivery at release.
type chunk struct {
	kind    kind
	data    []byte
	release time.Time
}

// pair is one proxied connection: the accepted client socket and the
// upstream socket dialed to the target, with an up and a down pipe.
type pair struct {
	// Set at construction.
	p      *Proxy
	client *net.TCPConn
	upQ    chan chunk    // client -> target
	downQ  chan chunk    // target -> client
	done   chan struct{} // closed by teardown
	ready  chan struct{} // closed once upstream is set

	mu        sync.Mutex
	upstream  *net.TCPConn // guarded by mu; written once, before ready is closed
	closed    bool         // guarded by mu
	pipesLeft int          // guarded by mu; pipes not yet finished
}

func newPair(p *Proxy, client *net.TCPConn) *pair {
	return &pair{
		p:         p,
		client:    client,
		upQ:       make(chan chunk, queueLen),
		downQ:     make(chan chunk, queueLen),
		done:      make(chan struct{}),
		ready:     make(chan struct{}),
		pipesLeft: 2,
	}
}

// dial connects to the target once the link is up, then starts the down
// pipe.
func (c *pair) dial() {
	defer c.p.wg.Done()
	if !c.p.waitUnblocked(c.done) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	go func() { // cancel the dial on teardown; ends with ctx
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.p.target)
	if err != nil {
		c.teardown(true) // the target refused: the client sees a reset
		return
	}
	up := nc.(*net.TCPConn)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		up.Close()
		return
	}
	c.upstream = up
	close(c.ready)
	c.p.wg.Add(2) // the dial goroutine is still counted, so Wait has not returned
	c.mu.Unlock()
	go c.read(up, c.downQ, &c.p.down)
	go c.write(c.downQ, c.client, &c.p.bytesDown)
}

// read moves bytes from src into q, dropping them during a blackhole and
// pacing them by the link's bandwidth. It ends with one final marker.
func (c *pair) read(src *net.TCPConn, q chan<- chunk, l *link) {
	defer c.p.wg.Done()
	buf := make([]byte, maxChunk)
	for {
		nr, err := src.Read(buf[:l.readSize()])
		readAt := time.Now()
		if nr > 0 {
			if c.p.blackholed.Load() {
				c.p.dropped.Add(int64(nr))
			} else {
				sent := l.reserve(nr, readAt)
				if !c.sleepUntil(sent) {
					return
				}
				ch := chunk{kind: kindData, data: append([]byte(nil), buf[:nr]...), release: sent.Add(c.p.Latency())}
				if !c.enqueue(q, ch) {
					return
				}
			}
		}
		if err != nil {
			k := kindReset
			if errors.Is(err, io.EOF) {
				k = kindEOF
			}
			if c.p.blackholed.Load() {
				k = kindQuiet
			}
			c.enqueue(q, chunk{kind: k, release: readAt.Add(c.p.Latency())})
			return
		}
	}
}

func (c *pair) enqueue(q chan<- chunk, ch chunk) bool {
	select {
	case q <- ch:
		return true
	case <-c.done:
		return false
	}
}

// write delivers chunks from q to dst when they are due; dst nil means the
// upstream socket, once dialed.
func (c *pair) write(q <-chan chunk, dst *net.TCPConn, delivered *atomic.Int64) {
	defer c.p.wg.Done()
	if dst == nil {
		select {
		case <-c.ready:
		case <-c.done:
			return
		}
		c.mu.Lock()
		dst = c.upstream
		c.mu.Unlock()
	}
	for {
		var ch chunk
		select {
		case ch = <-q:
		case <-c.done:
			return
		}
		if !c.sleepUntil(ch.release) {
			return
		}
		lost := c.p.blackholed.Load()
		switch ch.kind {
		case kindData:
			if lost {
				c.p.dropped.Add(int64(len(ch.data)))
				continue
			}
			n, err := dst.Write(ch.data)
			delivered.Add(int64(n))
			if err != nil {
				c.teardown(true)
				return
			}
		case kindEOF:
			if !lost {
				dst.CloseWrite()
			}
			c.pipeDone()
			return
		case kindReset:
			if !lost {
				c.teardown(true)
				return
			}
			c.pipeDone()
			return
		case kindQuiet:
			c.pipeDone()
			return
		}
	}
}

// sleepUntil waits until t; false if the pair was torn down first.
func (c *pair) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-c.done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-c.done:
		return false
	}
}

// pipeDone records that one pipe has delivered its end; the pair closes
// when both have.
func (c *pair) pipeDone() {
	c.mu.Lock()
	c.pipesLeft--
	last := c.pipesLeft == 0
	c.mu.Unlock()
	if last {
		c.teardown(false)
	}
}

// teardown closes both sockets (with RST when rst is set) and stops every
// goroutine of the pair. Only the first call does anything.
func (c *pair) teardown(rst bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	up := c.upstream
	c.mu.Unlock()
	if rst {
		c.client.SetLinger(0)
		if up != nil {
			up.SetLinger(0)
		}
	}
	c.client.Close()
	if up != nil {
		up.Close()
	}
	c.p.forget(c)
}

// link is one direction's bandwidth: a clock of when the wire is next free,
// shared by every connection.
type link struct {
	mu   sync.Mutex
	rate int64     // guarded by mu; bytes per second, 0 = unlimited
	next time.Time // guarded by mu; when the wire is free again
}

func (l *link) setRate(r int64) {
	if r < 0 {
		r = 0
	}
	l.mu.Lock()
	l.rate = r
	if r == 0 {
		l.next = time.Time{}
	}
	l.mu.Unlock()
}

func (l *link) getRate() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// readSize is how much to read at once: about 20 ms of the link's time
// when it is limited, so pacing stays smooth.
func (l *link) readSize() int {
	r := l.getRate()
	if r == 0 {
		return maxChunk
	}
	return int(min(max(r/50, minChunk), maxChunk))
}

// reserve puts n bytes read at now on the wire and returns when they have
// all been sent.
func (l *link) reserve(n int, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate == 0 {
		return now
	}
	start := now
	if l.next.After(start) || (!l.next.IsZero() && now.Sub(l.next) < maxLate) {
		// Busy, or free only since a moment ago: a reader that woke up
		// late (a busy machine) had its bytes waiting in the socket, which
		// a real link would have sent meanwhile.
		start = l.next
	}
	l.next = start.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	return l.next
}
