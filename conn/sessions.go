package conn

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Metadata and content travel on different SFTP sessions of the same
// connection.
//
//   - The session opened at dial (Client.sftp) carries metadata: lstat,
//     readdir, readlink, mkdir, rename, chmod and the other small
//     requests. Nothing large is ever queued on it, so a lookup waits only
//     for its own round trip.
//   - Content (ReadAt, Fetch, uploads over SFTP) goes to a pool of
//     further SFTP sessions on the same ssh connection, opened in the
//     background as soon as the connection is up (a first read on a
//     fresh connection does not pay their round trips) and kept while it
//     lives. A call takes the session with the fewest calls in flight; a
//     call made before any is open waits for the first (or for all to
//     fail, or OpTimeout).
//
// Why sessions and not one session with more requests in flight:
// OpenSSH's sftp-server answers the requests of a session one after the
// other, so a lookup sent behind a megabyte of read requests waits for
// all of them; and each ssh channel carries at most its window (2 MiB in
// x/crypto/ssh, fixed) per round trip, which at 50 ms caps one session
// at 40 MiB/s. Several sessions carry several windows: a file streams at
// the link's speed when its blocks are fetched on them in parallel (the
// cache's readahead asks for many blocks at once).
//
// A session of the pool that cannot be opened (sshd's MaxSessions,
// default 10, counts each one) is skipped; with none, content shares the
// metadata session as before. When a pool session ends while the
// connection is up, the connection is taken for dead, as when the
// metadata session ends: pending calls on it fail with ErrOffline.
//
// Both sessions share one TCP connection: on a link whose bandwidth is
// the bottleneck, a metadata reply still waits for the content bytes
// queued ahead of it in the network (at most the pool's windows).

// defaultContentSessions is the size of the content pool: 5 windows of
// 2 MiB in flight, 10 MiB per round trip (210 MB/s at 50 ms in theory;
// 98-115 MB/s measured straight over SFTP with the cache's readahead
// runs, 82-97 with 4 sessions, 100-147 with 6). Five is what fits
// OpenSSH's default MaxSessions (10) beside everything else a connection
// may hold open: the metadata session, the agent, two upload helpers and
// the channel for link attributes (lsetstat.go).
const defaultContentSessions = 5

// openSFTP opens one more SFTP session on the connection; the closer ends
// it (closing the sftp client alone does not end an ssh process).
type openSFTP func() (*sftp.Client, io.Closer, error)

// contentPool is the Client's content sessions.
type contentPool struct {
	// Set at construction.
	open openSFTP
	want int
	c    *Client

	once   sync.Once
	opened chan struct{} // closed when the first session is up or every open failed

	mu     sync.Mutex // guards what follows
	ready  []*contentSession
	closed bool
	extra  []io.Closer // closers of the sessions opened
}

type contentSession struct {
	sc       *sftp.Client
	inFlight atomic.Int32
}

func newContentPool(c *Client, open openSFTP, want int) *contentPool {
	if open == nil || want <= 0 {
		return nil
	}
	return &contentPool{open: open, want: want, c: c, opened: make(chan struct{})}
}

// contentSFTP returns the session a content call should use and a func
// to call when the call is done. It may wait for the first pool session
// to open (a few round trips, once per connection); the caller runs it
// under the operation deadline (inside run), and the connection's death
// ends the wait.
func (c *Client) contentSFTP() (*sftp.Client, func()) {
	p := c.content
	if p == nil {
		return c.sftp, func() {}
	}
	p.once.Do(p.start)
	select {
	case <-p.opened:
	case <-c.done:
		return c.sftp, func() {} // calls on it fail at once
	}
	p.mu.Lock()
	var best *contentSession
	for _, s := range p.ready {
		if best == nil || s.inFlight.Load() < best.inFlight.Load() {
			best = s
		}
	}
	p.mu.Unlock()
	if best == nil {
		return c.sftp, func() {}
	}
	best.inFlight.Add(1)
	return best.sc, func() { best.inFlight.Add(-1) }
}

// openSoon starts opening the pool's sessions in the background, so that
// the first content call finds them ready (Dial calls it once the
// connection is up). Safe on a nil pool.
func (p *contentPool) openSoon() {
	if p != nil {
		p.once.Do(p.start)
	}
}

// start opens the pool's sessions in parallel; opened is closed as soon
// as one is up, when all have failed, or after OpTimeout.
func (p *contentPool) start() {
	var wg sync.WaitGroup
	var first sync.Once
	for range p.want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.add() {
				first.Do(func() { close(p.opened) })
			}
		}()
	}
	go func() {
		wg.Wait()
		first.Do(func() { close(p.opened) })
	}()
	// An open that neither succeeds nor fails (a master that never
	// answers) must not hold content calls: they use the metadata
	// session meanwhile.
	go func() {
		t := time.NewTimer(p.c.opTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			first.Do(func() { close(p.opened) })
		case <-p.opened:
		}
	}()
}

// add opens one session and puts it in the pool; false when it could not.
func (p *contentPool) add() bool {
	c := p.c
	t0 := time.Now()
	sc, closer, err := p.open()
	if err != nil {
		if c.Err() == nil {
			c.log.Debug("content session not opened; content shares the metadata session", "host", c.label, "err", err)
		}
		return false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closer.Close()
		sc.Close()
		return false
	}
	p.ready = append(p.ready, &contentSession{sc: sc})
	p.extra = append(p.extra, closer)
	n := len(p.ready)
	p.mu.Unlock()
	c.log.Debug("content session opened", "host", c.label, "sessions", n, "took", time.Since(t0).Round(time.Millisecond))
	go func() {
		err := sc.Wait()
		c.die(fmt.Errorf("content sftp session ended: %w", orEOF(err)))
	}()
	return true
}

// close ends every session of the pool, without waiting on the network.
func (p *contentPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	ready, extra := p.ready, p.extra
	p.mu.Unlock()
	go func() {
		for _, cl := range extra {
			cl.Close()
		}
		for _, s := range ready {
			s.sc.Close()
		}
	}()
}

// sessions is how many content sessions are open (tests, status).
func (p *contentPool) sessions() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// sshSFTPOpener opens SFTP sessions on a built-in ssh connection.
func (c *Client) sshSFTPOpener(sshc *ssh.Client) openSFTP {
	return func() (*sftp.Client, io.Closer, error) {
		sess, err := sshc.NewSession()
		if err != nil {
			return nil, nil, err
		}
		fail := func(err error) (*sftp.Client, io.Closer, error) {
			sess.Close()
			return nil, nil, err
		}
		wr, err := sess.StdinPipe()
		if err != nil {
			return fail(err)
		}
		rd, err := sess.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		if err := sess.RequestSubsystem("sftp"); err != nil {
			return fail(err)
		}
		sc, err := c.newSFTPClient(rd, wr)
		if err != nil {
			return fail(err)
		}
		return sc, sess, nil
	}
}

// opensshSFTPOpener opens SFTP sessions as further `ssh -s HOST sftp`
// processes, multiplexed over the connection's master.
func (c *Client) opensshSFTPOpener(t *opensshTransport) openSFTP {
	return func() (*sftp.Client, io.Closer, error) {
		cmd := exec.Command(t.prog, append(append([]string{}, t.args...), "-e", "none", "-s", t.host, "sftp")...)
		cmd.Env = t.env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		wr, err := cmd.StdinPipe()
		if err != nil {
			return nil, nil, err
		}
		rd, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		stop := closerFunc(func() error {
			wr.Close()
			select {
			case <-exited:
			case <-time.After(2 * time.Second):
				cmd.Process.Kill()
			}
			return nil
		})
		sc, err := c.newSFTPClient(rd, wr)
		if err != nil {
			cmd.Process.Kill()
			<-exited
			return nil, nil, errors.Join(err, errors.New("ssh -s sftp through the master failed"))
		}
		return sc, stop, nil
	}
}
