package agent

// The persistent agent: the agent a connection started over exec also
// listens on a unix socket in the helper folder, named after its build,
// and later connections of the same build reach it over a
// direct-streamlocal@openssh.com channel, which runs no login shell (on
// real servers a conda or pyenv init can take a second: every exec pays
// it). It stays while a connection uses it and for --linger after the
// last one ended, then removes its socket and exits. Each connection is
// one mux session, as on the exec channel (serveSession).
//
// Only the login user reaches it: the helper folder must be the user's
// own and closed to others (0700, as the start script makes it), the
// socket is 0600, and a peer of another uid (SO_PEERCRED) is refused.
// When another agent already answers on the socket, or it cannot be made
// (a path too long for a socket, a folder others may enter), this agent
// serves its own connection only.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"remotefs/agent/proto"
)

// servePersistent serves the starting connection on stdin and stdout, and
// later ones on the socket at sock, until none used it for linger.
func servePersistent(ctx context.Context, sock string, linger time.Duration, stdin io.Reader, stdout io.Writer) error {
	// The connection that started the agent usually ends long before it:
	// its pipes close then, and neither a hang-up nor a write to them may
	// end the agent.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP)
	p := &persistent{linger: linger}
	ln, ino, lerr := listenSocket(sock)
	p.begin()
	first := make(chan error, 1)
	go func() {
		first <- serveSession(ctx, stdin, stdout)
		// The starting connection must see its session end (EOF on the
		// channel) at once, not wait for its ping timeout while the
		// process lingers for others: close what it reads and writes.
		hangUp(stdin, stdout)
		p.end()
	}()
	if lerr != nil {
		return <-first
	}
	go p.accept(ctx, ln)
	p.waitIdle(ctx)
	ln.Close()
	var st unix.Stat_t
	if unix.Lstat(sock, &st) == nil && st.Ino == ino {
		os.Remove(sock) // still ours: not replaced by a newer agent
	}
	select {
	case err := <-first:
		return err
	default:
		return nil
	}
}

// persistent counts the connections an agent serves.
type persistent struct {
	linger time.Duration // set at construction

	mu     sync.Mutex
	active int       // guarded by mu; sessions being served
	last   time.Time // guarded by mu; when the last session ended
}

func (p *persistent) begin() {
	p.mu.Lock()
	p.active++
	p.mu.Unlock()
}

func (p *persistent) end() {
	p.mu.Lock()
	p.active--
	p.last = time.Now()
	p.mu.Unlock()
}

// waitIdle returns once no session was served for linger (or ctx ended).
func (p *persistent) waitIdle(ctx context.Context) {
	t := time.NewTicker(min(max(p.linger/4, 10*time.Millisecond), 15*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		idle := p.active == 0 && time.Since(p.last) >= p.linger
		p.mu.Unlock()
		if idle {
			return
		}
	}
}

// accept serves each connection of the login user on ln as a session.
func (p *persistent) accept(ctx context.Context, ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		if !sameUser(c) {
			c.Close()
			continue
		}
		p.begin()
		go func() {
			defer p.end()
			defer c.Close()
			serveSession(ctx, c, c)
		}()
	}
}

// sameUser reports whether c's peer runs as this process's user.
func sameUser(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == uint32(os.Getuid())
}

// listenSocket makes the agent's socket at sock (mode 0600, in a folder
// of the user's own that others cannot enter), unless another agent
// answers there; it returns the socket's inode number, so that only
// this agent's socket is removed at its end. The socket is made under a
// temporary name and renamed into place: a stale one (its agent gone) is
// replaced at once.
func listenSocket(sock string) (*net.UnixListener, uint64, error) {
	dir := filepath.Dir(sock)
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Getuid()) || st.Mode&0o077 != 0 {
		return nil, 0, fmt.Errorf("%s is not a folder of this user's closed to others", dir)
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, 0, errors.New("another agent serves " + sock)
	}
	tmp := filepath.Join(dir, proto.TempPrefix+"agent-"+strconv.Itoa(os.Getpid())+".sock")
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, 0, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, 0, err
	}
	if err := unix.Lstat(tmp, &st); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, 0, err
	}
	if err := os.Rename(tmp, sock); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, 0, err
	}
	return ln, st.Ino, nil
}

// hangUp closes the starting connection's pipes once its session ended
// (an idle limit, a bad frame): the process lives on for the socket's
// connections, and an open stdout or stderr would keep that connection
// believing it is served.
func hangUp(stdin io.Reader, stdout io.Writer) {
	if stdout == io.Writer(os.Stdout) {
		// The process's own fds: /dev/null replaces the pipes in place
		// (closing them would free fds 0-2 for the next socket, and a
		// stray write to stdout would land in another connection).
		if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
			for fd := 0; fd <= 2; fd++ {
				unix.Dup2(int(null.Fd()), fd)
			}
			null.Close()
			return
		}
	}
	if c, ok := stdout.(io.Closer); ok {
		c.Close()
	}
	if c, ok := stdin.(io.Closer); ok {
		c.Close()
	}
}
