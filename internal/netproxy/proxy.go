package netproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Refuse(false) after Close.
var ErrClosed = errors.New("netproxy: proxy closed")

// Proxy forwards TCP connections from Addr() to a target address through a
// simulated network link. The zero value is not usable; call New.
type Proxy struct {
	// Set at construction.
	target string
	addr   string // the listening address, kept across Refuse

	// Settings and counters, read without a lock on the hot path.
	oneWay     atomic.Int64 // one-way latency in nanoseconds
	blackholed atomic.Bool  // written only under mu, together with unblock
	bytesUp    atomic.Int64
	bytesDown  atomic.Int64
	dropped    atomic.Int64
	up, down   link // bandwidth, one per direction

	wg sync.WaitGroup // every goroutine the proxy starts

	mu      sync.Mutex
	ln      net.Listener  // guarded by mu; nil while refusing or closed
	closed  bool          // guarded by mu
	unblock chan struct{} // guarded by mu; closed when the blackhole ends
	conns   map[*pair]struct{}
}

// New listens on listenAddr (for example "127.0.0.1:0") and forwards every
// connection to targetAddr. The link starts with no latency, unlimited
// bandwidth, no blackhole.
func New(listenAddr, targetAddr string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  targetAddr,
		addr:    ln.Addr().String(),
		ln:      ln,
		unblock: make(chan struct{}),
		conns:   make(map[*pair]struct{}),
	}
	close(p.unblock) // not blackholed
	p.wg.Add(1)
	go p.acceptLoop(ln)
	return p, nil
}

// Addr is the address clients connect to ("127.0.0.1:PORT"). It stays the
// same across Refuse.
func (p *Proxy) Addr() string { return p.addr }

// Target is the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// SetLatency sets the delay added to each direction, so a round trip grows
// by 2*oneWay. Zero or negative means none.
func (p *Proxy) SetLatency(oneWay time.Duration) {
	if oneWay < 0 {
		oneWay = 0
	}
	p.oneWay.Store(int64(oneWay))
}

// Latency returns the one-way delay set by SetLatency.
func (p *Proxy) Latency() time.Duration { return time.Duration(p.oneWay.Load()) }

// SetBandwidth limits each direction to bytesPerSec, shared by all
// connections. Zero or negative means unlimited.
func (p *Proxy) SetBandwidth(bytesPerSec int64) {
	p.up.setRate(bytesPerSec)
	p.down.setRate(bytesPerSec)
}

// Bandwidth returns the limit set by SetBandwidth (0: unlimited).
func (p *Proxy) Bandwidth() int64 { return p.up.getRate() }

// Blackhole turns the dead link on or off. While on, every byte read from
// either side is discarded and nothing is forwarded; connections stay open
// and new ones are accepted but not forwarded. Turning it off resumes
// forwarding; what was dropped stays dropped.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.blackholed.Load() {
		return
	}
	p.blackholed.Store(on)
	if on {
		p.unblock = make(chan struct{})
	} else {
		close(p.unblock)
	}
}

// Blackholed reports whether the blackhole is on.
func (p *Proxy) Blackholed() bool { return p.blackholed.Load() }

// waitUnblocked returns true once the blackhole is off, or false when done
// is closed first.
func (p *Proxy) waitUnblocked(done <-chan struct{}) bool {
	p.mu.Lock()
	ch := p.unblock
	p.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

// ResetAll closes every current connection, on both sides, with a TCP RST.
// The proxy keeps accepting new ones.
func (p *Proxy) ResetAll() {
	for _, c := range p.snapshot() {
		c.teardown(true)
	}
}

// Refuse(true) closes the listening socket so that new connections are
// refused (ECONNREFUSED); current connections are left alone. Refuse(false)
// listens again on Addr(); it fails if the port was taken meanwhile or the
// proxy is closed.
func (p *Proxy) Refuse(on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		if on {
			return nil
		}
		return ErrClosed
	}
	if on {
		if p.ln != nil {
			p.ln.Close()
			p.ln = nil
		}
		return nil
	}
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("netproxy: listen again: %w", err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.acceptLoop(ln)
	return nil
}

// BytesUp is the number of bytes delivered to the target so far.
func (p *Proxy) BytesUp() int64 { return p.bytesUp.Load() }

// BytesDown is the number of bytes delivered back to clients so far.
func (p *Proxy) BytesDown() int64 { return p.bytesDown.Load() }

// BytesDropped is the number of bytes discarded by the blackhole so far.
func (p *Proxy) BytesDropped() int64 { return p.dropped.Load() }

// Conns is the number of connections currently open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.ln != nil {
			p.ln.Close()
			p.ln = nil
		}
	}
	p.mu.Unlock()
	for _, c := range p.snapshot() {
		c.teardown(false)
	}
	p.wg.Wait()
}

func (p *Proxy) snapshot() []*pair {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *Proxy) acceptLoop(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			current := p.ln == ln
			p.mu.Unlock()
			if !current || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off, retry
			continue
		}
		p.start(c.(*net.TCPConn))
	}
}

// start registers a new connection and its goroutines, or closes it at once
// when the proxy is closed.
func (p *Proxy) start(client *net.TCPConn) {
	c := newPair(p, client)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		return
	}
	p.conns[c] = struct{}{}
	// Added under mu, ordered before Close's Wait by the closed flag.
	p.wg.Add(3)
	p.mu.Unlock()
	go c.dial()
	go c.read(client, c.upQ, &p.up)
	go c.write(c.upQ, nil, &p.bytesUp)
}

func (p *Proxy) forget(c *pair) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
