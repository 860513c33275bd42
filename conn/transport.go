package conn

import (
	"errors"
	"io"
	"net"

	"golang.org/x/crypto/ssh"
)

// transport is what a Client needs from its link besides the SFTP stream:
// sessions that run commands (helpers, `remotefs run`). Liveness is each
// implementation's own (keepalive requests for the built-in client, ssh's
// ServerAlive options for the user's ssh). Two implement it:
// the built-in x/crypto/ssh client (sshTransport) and the user's own ssh
// binary (opensshTransport, openssh.go).
type transport interface {
	newSession() (session, error)
}

// session is one command on the server, like an ssh.Session: set the I/O,
// optionally ask for a pseudo-terminal, Start, then Wait once.
type session interface {
	setIO(stdin io.Reader, stdout, stderr io.Writer)
	requestPty(term string, rows, cols int) error
	start(cmd string) error
	// wait returns how the command ended; the error is set only when
	// there is no exit status (the session or link broke).
	wait() (sessionExit, error)
	// signal sends a signal ("KILL", "INT") to the command (best effort).
	signal(name string) error
	windowChange(rows, cols int) error
	close() error
}

// sessionExit is how a command ended.
type sessionExit struct {
	code    int
	signal  string // the signal that killed it, if the transport knows
	missing bool   // the command ended without reporting a status
}

// sshTransport is the built-in client.
type sshTransport struct{ c *ssh.Client }

func (t sshTransport) newSession() (session, error) {
	s, err := t.c.NewSession()
	if err != nil {
		return nil, err
	}
	return sshSession{s}, nil
}

// dialUnix opens a channel to the unix socket at path on the server
// (direct-streamlocal@openssh.com; sshd's AllowStreamLocalForwarding).
func (t sshTransport) dialUnix(path string) (net.Conn, error) { return t.c.Dial("unix", path) }

func (t sshTransport) keepalive() error {
	// OpenSSH answers with a failure (unknown request): that is a reply.
	_, _, err := t.c.SendRequest("keepalive@openssh.com", true, nil)
	return err
}

type sshSession struct{ s *ssh.Session }

func (s sshSession) setIO(stdin io.Reader, stdout, stderr io.Writer) {
	// Leave nil fields nil: x/crypto treats a nil Stdin as empty and
	// discards nil outputs, which a typed nil would not be.
	if stdin != nil {
		s.s.Stdin = stdin
	}
	if stdout != nil {
		s.s.Stdout = stdout
	}
	if stderr != nil {
		s.s.Stderr = stderr
	}
}

func (s sshSession) requestPty(term string, rows, cols int) error {
	modes := ssh.TerminalModes{ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	return s.s.RequestPty(term, rows, cols, modes)
}

func (s sshSession) start(cmd string) error            { return s.s.Start(cmd) }
func (s sshSession) signal(name string) error          { return s.s.Signal(ssh.Signal(name)) }
func (s sshSession) windowChange(rows, cols int) error { return s.s.WindowChange(rows, cols) }
func (s sshSession) close() error                      { return s.s.Close() }

func (s sshSession) wait() (sessionExit, error) {
	err := s.s.Wait()
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return sessionExit{}, nil
	case errors.As(err, &exitErr):
		return sessionExit{code: exitErr.ExitStatus(), signal: exitErr.Signal()}, nil
	case errors.As(err, &missing):
		return sessionExit{missing: true}, nil
	}
	return sessionExit{}, err
}
