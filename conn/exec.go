package conn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
)

// This file runs user commands on the server over the connection's ssh
// client (Start, Process): optionally on a pseudo-terminal, with window
// changes and signals passed on, and the exit status reported the way
// shells report it. Exec (client.go) is the simpler form for helpers.

// ShellQuote quotes s for a POSIX shell (sh, dash, bash, zsh, ksh): s
// itself when it is made only of characters no shell treats specially,
// otherwise s in single quotes, with each single quote in s written as
// (end quote, escaped quote, new quote):
//
//	'\''
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		if !isShellSafe(s[i]) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isShellSafe(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("_-+=./,:@%", b) >= 0
}

// RemoteCommand is the command line that runs args (a program and its
// arguments, not shell syntax) in the absolute remote directory dir:
//
//	cd -- DIR && exec ARG0 ARG1 ...
//
// each word shell-quoted. The server hands it to the user's login shell,
// which must be POSIX-compatible. exec makes the program the session's
// process, so signals sent to the session reach it, not a shell.
func RemoteCommand(dir string, args []string) (string, error) {
	if len(args) == 0 || args[0] == "" {
		return "", errors.New("no command to run")
	}
	if !strings.HasPrefix(dir, "/") {
		return "", fmt.Errorf("remote directory %q is not absolute", dir)
	}
	if strings.IndexByte(dir, 0) >= 0 {
		return "", errors.New("NUL in the remote directory")
	}
	var b strings.Builder
	b.WriteString("cd -- ")
	b.WriteString(ShellQuote(dir))
	b.WriteString(" && exec")
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("NUL in argument %q", a)
		}
		b.WriteByte(' ')
		b.WriteString(ShellQuote(a))
	}
	return b.String(), nil
}

// PTY asks for a pseudo-terminal on the server.
type PTY struct {
	Term       string // the TERM the command sees
	Rows, Cols int    // window size; 0 means 24x80
}

// ExecOptions say how Start connects a command.
type ExecOptions struct {
	// Stdin is copied to the command until it returns EOF (the command
	// then sees end of file); nil gives the command EOF at once. A Read
	// still blocked when the command ends is abandoned, not waited for: a
	// reader over a terminal should return on its own once the Process has
	// ended (see the run command's stopReader) or it keeps its goroutine.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output; nil discards it. On a
	// PTY everything arrives on Stdout, as on a terminal.
	Stdout, Stderr io.Writer
	// PTY, when set, runs the command on a pseudo-terminal.
	PTY *PTY
}

// ExitStatus is how a remote command ended.
type ExitStatus struct {
	// Code is the exit status; for a command killed by a signal it is
	// 128 + the signal's number, as shells report it.
	Code int
	// Signal names the signal that killed the command ("INT", "KILL"), or
	// is empty.
	Signal string
}

// Process is a command started by Start. Its methods are safe for
// concurrent use; Wait must be called exactly once.
type Process struct {
	// Set at construction.
	c       *Client
	sess    session
	waitErr chan waited // the session's wait result
	in, out *progress   // guard the caller's stdin and stdout/stderr
	pidf    *pidFilter  // nil on a PTY

	// pgid is the command's remote process group (its pid: sshd makes the
	// command a session leader), once the pid line arrived; 0 before.
	pgid atomic.Int64
}

// Signals without a pseudo-terminal. OpenSSH honours the "signal" channel
// request only for non-root users (a root login runs without privilege
// separation, and sshd then refuses it), and delivers it to one process.
// So without a PTY the command line first reports its pid on stderr, on a
// line tagged with a random token that Process strips, and a signal is
// sent as "kill -s SIG -- -PGID" in a second session: to the whole process
// group, as a terminal's ^C would, for root too. On a PTY, ^C is a byte
// the remote terminal turns into SIGINT; other signals use the channel
// request (best effort).

// Start starts cmd (a shell command line, see RemoteCommand) on the server
// in a new session and returns once it runs. ctx and OpTimeout bound only
// the start; the command then runs until it ends, Kill, or the connection
// dies.
func (c *Client) Start(ctx context.Context, cmd string, opts ExecOptions) (*Process, error) {
	if c.ssh == nil {
		return nil, fmt.Errorf("exec on %s: %w", c.label, ErrUnsupported)
	}
	p := &Process{c: c, waitErr: make(chan waited, 1), in: &progress{}, out: &progress{}}
	if opts.PTY == nil {
		var tok [8]byte
		rand.Read(tok[:])
		marker := "remotefs-pid-" + hex.EncodeToString(tok[:]) + " "
		stderr := opts.Stderr
		if stderr == nil {
			stderr = io.Discard
		}
		p.pidf = &pidFilter{marker: marker, w: stderr, onPID: func(pid int) { p.pgid.Store(int64(pid)) }}
		opts.Stderr = p.pidf
		cmd = fmt.Sprintf("printf '%s%%s\\n' \"$$\" >&2; %s", marker, cmd)
	}
	err := c.run(ctx, func(pr *progress) error {
		s, err := c.ssh.newSession()
		if err != nil {
			return err
		}
		if t := opts.PTY; t != nil {
			rows, cols := t.Rows, t.Cols
			if rows <= 0 || cols <= 0 {
				rows, cols = 24, 80
			}
			if err := s.requestPty(t.Term, rows, cols); err != nil {
				s.close()
				return fmt.Errorf("pseudo-terminal refused: %w", err)
			}
		}
		var sin io.Reader
		var sout, serr io.Writer
		if opts.Stdin != nil {
			sin = guardedReader{p.in, opts.Stdin}
		}
		if opts.Stdout != nil {
			sout = guardedWriter{p.out, opts.Stdout}
		}
		if opts.Stderr != nil {
			serr = guardedWriter{p.out, opts.Stderr}
		}
		s.setIO(sin, sout, serr)
		if err := s.start(cmd); err != nil {
			s.close()
			return err
		}
		pr.ioMu.Lock()
		defer pr.ioMu.Unlock()
		if pr.abandoned.Load() {
			// Start gave up (ctx, deadline): nobody will Wait.
			p.in.abandonNoWait()
			p.out.abandonNoWait()
			s.signal("KILL")
			s.close()
			go s.wait() // reaps the user's ssh process (--ssh=openssh)
			return errAbandoned
		}
		p.sess = s
		go func() {
			st, err := s.wait()
			p.waitErr <- waited{st, err}
		}()
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrOffline) && c.isTransportError(err) {
			c.die(err)
			err = c.Err()
		}
		return nil, fmt.Errorf("exec on %s: %w", c.label, err)
	}
	return p, nil
}

// Start runs cmd on the current connection (see Client.Start).
func (m *Manager) Start(ctx context.Context, cmd string, opts ExecOptions) (*Process, error) {
	c, err := m.current("exec", cmd)
	if err != nil {
		return nil, err
	}
	return c.Start(ctx, cmd, opts)
}

// Resize tells the command's pseudo-terminal its new window size.
func (p *Process) Resize(rows, cols int) error {
	return p.sess.windowChange(rows, cols)
}

// Signal sends a signal ("INT", "TERM", "HUP", ...; SIG prefix optional)
// to the command: without a PTY to its process group, once its pid is
// known (see above); otherwise with the ssh "signal" request, which
// OpenSSH delivers to the session's process only, and ignores for root.
func (p *Process) Signal(name string) error {
	name = strings.TrimPrefix(name, "SIG")
	if name == "" || strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
		return fmt.Errorf("bad signal name %q", name)
	}
	if pgid := p.pgid.Load(); pgid > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), p.c.opTimeout)
		defer cancel()
		var errOut strings.Builder
		code, err := p.c.Exec(ctx, fmt.Sprintf("kill -s %s -- -%d", name, pgid), nil, nil, &errOut)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("kill -s %s: %s", name, strings.TrimSpace(errOut.String()))
		}
		return nil
	}
	return p.sess.signal(name)
}

// Kill kills the command (its process group without a PTY) and closes the
// session, which ends Wait. On a PTY the server also hangs up the
// terminal, so the command's process group gets SIGHUP.
func (p *Process) Kill() {
	if p.pgid.Load() > 0 {
		p.Signal("KILL")
	}
	p.sess.signal("KILL")
	p.sess.close()
}

// Wait waits for the command to end and returns its exit status; the error
// is set when there is none (the connection died: it wraps ErrOffline, and
// the command may still be running on the server). Once Wait returns,
// Stdin, Stdout and Stderr are not used again.
func (p *Process) Wait() (ExitStatus, error) {
	c := p.c
	defer p.sess.close()
	// The session keeps reading stdin on its own goroutine after the
	// command ends: stop it without waiting for a Read that may block.
	defer p.in.abandonNoWait()
	var w waited
	select {
	case w = <-p.waitErr:
		if p.pidf != nil {
			p.pidf.flush()
		}
	case <-c.done:
		p.out.abandon()
		return ExitStatus{}, fmt.Errorf("exec on %s: %w", c.label, c.Err())
	}
	switch {
	case w.err == nil && w.st.missing:
		if cerr := c.Err(); cerr != nil {
			return ExitStatus{}, fmt.Errorf("exec on %s: %w", c.label, cerr)
		}
		return ExitStatus{}, fmt.Errorf("exec on %s: the command ended without an exit status", c.label)
	case w.err == nil:
		st := ExitStatus{Code: w.st.code, Signal: w.st.signal}
		if st.Signal != "" && (st.Code == 128 || st.Code == 0) {
			st.Code = 128 + signalNumber(st.Signal)
		}
		return st, nil
	}
	if cerr := c.Err(); cerr != nil {
		return ExitStatus{}, fmt.Errorf("exec on %s: %w", c.label, cerr)
	}
	return ExitStatus{}, fmt.Errorf("exec on %s: %w", c.label, w.err)
}

// waited is a session's wait result.
type waited struct {
	st  sessionExit
	err error
}

// signalNumber is the Linux number of the signals x/crypto does not know
// (it numbers the common ones itself), or 127 (so 128+n is 255, "unknown").
func signalNumber(name string) int {
	switch name {
	case "TRAP":
		return 5
	case "BUS":
		return 7
	case "USR1":
		return 10
	case "USR2":
		return 12
	case "CHLD":
		return 17
	case "CONT":
		return 18
	case "STOP":
		return 19
	case "TSTP":
		return 20
	case "TTIN":
		return 21
	case "TTOU":
		return 22
	case "XCPU":
		return 24
	case "XFSZ":
		return 25
	case "VTALRM":
		return 26
	case "PROF":
		return 27
	case "WINCH":
		return 28
	case "SYS":
		return 31
	}
	return 127
}

// pidFilter passes the command's stderr through, except for the line
// "MARKER<pid>" the command line prints first, which it reports to onPID.
// Lines before it (a login shell's startup noise) pass through; after the
// marker, or maxPIDSearch bytes without it, it only copies. Used by one
// goroutine at a time (x/crypto's stderr copy).
type pidFilter struct {
	// Set at construction.
	marker string
	w      io.Writer
	onPID  func(int)

	done    bool   // the marker was seen, or we stopped looking
	passing bool   // the current line is not the marker: copy to its end
	line    []byte // start of the current line, held while it may be the marker
	seen    int    // bytes looked at
}

const maxPIDSearch = 64 << 10

func (f *pidFilter) Write(p []byte) (int, error) {
	if f.done {
		return f.w.Write(p)
	}
	var out []byte
	for i, b := range p {
		if f.done {
			out = append(out, p[i:]...)
			break
		}
		f.seen++
		if f.seen > maxPIDSearch {
			f.done = true
			out = append(out, f.line...)
			f.line = nil
			out = append(out, p[i:]...)
			break
		}
		if f.passing {
			out = append(out, b)
			f.passing = b != '\n'
			continue
		}
		f.line = append(f.line, b)
		n := len(f.line)
		if n <= len(f.marker) {
			if b != f.marker[n-1] {
				out = append(out, f.line...)
				f.line = nil
				f.passing = b != '\n'
			}
			continue
		}
		if b == '\n' {
			if pid, err := strconv.Atoi(string(f.line[len(f.marker) : n-1])); err == nil && pid > 0 {
				f.onPID(pid)
				f.done = true
			} else {
				out = append(out, f.line...)
			}
			f.line = nil
			continue
		}
		if b < '0' || b > '9' || n > len(f.marker)+20 {
			out = append(out, f.line...)
			f.line = nil
			f.passing = true
		}
	}
	if len(out) > 0 {
		if _, err := f.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush writes out a held partial line (stderr ended inside it).
func (f *pidFilter) flush() {
	if len(f.line) > 0 {
		f.w.Write(f.line)
		f.line = nil
	}
}
