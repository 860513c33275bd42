package daemon

// Interactive logins: servers that ask for a password and a one-time code
// (keyboard-interactive or password authentication).
//
//   - `remotefs mount` asks on the terminal (/dev/tty) before it returns:
//     the daemon, which has no terminal, relays each round of questions to
//     the waiting CLI over the socket it reports readiness on (loginRelay),
//     and the CLI asks exactly the server's prompts, with echo off for
//     secrets, and sends the answers back. --foreground asks directly.
//   - The answers live in memory for the one handshake: never written to
//     disk, logs, argv or the environment, and not kept for later.
//   - A reconnect that needs answers again puts the mount in "login
//     needed" (it serves the cache meanwhile, as offline), and `remotefs
//     login MOUNTPOINT` asks over the control socket the same way.
//   - Without a terminal (fstab at boot, systemd) nobody can answer: the
//     mount fails at once and says so.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"remotefs/conn"
	"remotefs/internal/control"
)

// loginAnswer is the CLI's reply to one round of questions.
type loginAnswer struct {
	Answers []string `json:"answers,omitempty"`
	Error   string   `json:"error,omitempty"`
	// NoTerminal: the CLI has no terminal to ask on.
	NoTerminal bool `json:"no_terminal,omitempty"`
}

// errNoTerminal: there is no terminal to ask the user on.
var errNoTerminal = errors.New("no terminal")

// askOnTerminal asks req's questions on the controlling terminal, exactly
// as the server wrote them; answers to secret prompts are not echoed.
func askOnTerminal(ctx context.Context, req conn.LoginRequest) ([]string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errNoTerminal
	}
	fd := int(tty.Fd()) // blocking mode
	orig, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		tty.Close()
		return nil, errNoTerminal
	}
	// Terminal modes change only on this goroutine; a read blocked on the
	// terminal cannot be interrupted, so on ctx it is left behind (the
	// process is about to exit) and the modes are put back at once. The
	// file is not closed then: closing waits for the blocked read.
	restore := func() { unix.IoctlSetTermios(fd, unix.TCSETS, orig) }
	if req.Name != "" {
		fmt.Fprintln(tty, req.Name)
	}
	if req.Instruction != "" {
		fmt.Fprintln(tty, req.Instruction)
	}
	type line struct {
		s   string
		err error
	}
	rd := bufio.NewReader(tty)
	answers := make([]string, 0, len(req.Questions))
	for _, q := range req.Questions {
		fmt.Fprint(tty, q.Prompt)
		if !q.Echo {
			noEcho := *orig
			noEcho.Lflag &^= unix.ECHO
			noEcho.Lflag |= unix.ICANON | unix.ISIG
			if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
				tty.Close()
				return nil, fmt.Errorf("turning the terminal's echo off: %w", err)
			}
		}
		got := make(chan line, 1)
		go func() {
			s, err := rd.ReadString('\n')
			got <- line{s, err}
		}()
		var l line
		select {
		case l = <-got:
		case <-ctx.Done():
			restore()
			fmt.Fprintln(tty)
			return nil, ctx.Err()
		}
		if !q.Echo {
			restore()
			fmt.Fprintln(tty) // the Enter that was not echoed
		}
		answer := strings.TrimRight(l.s, "\r\n")
		if l.err != nil && !(errors.Is(l.err, io.EOF) && answer != "") {
			tty.Close()
			return nil, fmt.Errorf("reading the answer to %q: %w", strings.TrimSpace(q.Prompt), l.err)
		}
		answers = append(answers, answer)
	}
	tty.Close()
	return answers, nil
}

// noTerminalError is what a mount says when the server wants answers and
// nobody can give them.
func noTerminalError(req conn.LoginRequest) error {
	return loginNeededError(fmt.Sprintf("%s@%s asks for an interactive login (%q) and there is no terminal to ask on: "+
		"mount it with `remotefs mount` from a terminal (a mount that is up asks again with `remotefs login MOUNTPOINT` when a reconnect needs it)",
		req.User, hostOnly(req.Host), firstPrompt(req)))
}

// loginNeededError is a message that wraps conn.ErrLoginNeeded.
type loginNeededError string

func (e loginNeededError) Error() string { return string(e) }
func (e loginNeededError) Unwrap() error { return conn.ErrLoginNeeded }

func hostOnly(label string) string {
	if i := strings.LastIndexByte(label, '@'); i >= 0 {
		return label[i+1:]
	}
	return label
}

func firstPrompt(req conn.LoginRequest) string {
	if len(req.Questions) == 0 {
		return ""
	}
	return strings.TrimSpace(req.Questions[0].Prompt)
}

// loginRelay is the daemon's end of the readiness socket: it sends each
// round of questions to the CLI that started it and reads the answers.
// Lines to the CLI: "warning: ...", "login {json}", then "ok" or
// "error: ...". Lines from the CLI: one loginAnswer per "login".
type loginRelay struct {
	mu sync.Mutex    // serialises writes and question/answer rounds
	f  *os.File      // guarded by mu; nil once the verdict is sent
	rd *bufio.Reader // reads f
}

func newLoginRelay(f *os.File) *loginRelay {
	return &loginRelay{f: f, rd: bufio.NewReader(f)}
}

// line sends one line to the CLI, if it still listens.
func (r *loginRelay) line(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		fmt.Fprintln(r.f, s)
	}
}

// finish sends the verdict and closes the socket: later logins fail with
// ErrLoginNeeded.
func (r *loginRelay) finish(verdict string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		fmt.Fprintln(r.f, verdict)
		r.f.Close()
		r.f = nil
	}
}

// ask relays req to the CLI (a conn.LoginFunc).
func (r *loginRelay) ask(ctx context.Context, req conn.LoginRequest) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil, &conn.LoginNeededError{Host: hostOnly(req.Host), User: req.User, Prompt: firstPrompt(req)}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(r.f, "login %s\n", b); err != nil {
		return nil, fmt.Errorf("asking the terminal: %w", err)
	}
	f := r.f
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	text, err := r.rd.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("asking the terminal: %w", err)
	}
	var a loginAnswer
	if err := json.Unmarshal([]byte(text), &a); err != nil {
		return nil, fmt.Errorf("asking the terminal: bad answer: %w", err)
	}
	switch {
	case a.NoTerminal:
		return nil, noTerminalError(req)
	case a.Error != "":
		return nil, fmt.Errorf("login to %s: %s", req.Host, a.Error)
	}
	return a.Answers, nil
}

// answerLogin is the CLI's side of one "login" line from the daemon.
func answerLogin(ctx context.Context, payload string) loginAnswer {
	var req conn.LoginRequest
	if err := json.Unmarshal([]byte(payload), &req); err != nil {
		return loginAnswer{Error: "bad question from the daemon"}
	}
	answers, err := askOnTerminal(ctx, req)
	switch {
	case errors.Is(err, errNoTerminal):
		return loginAnswer{NoTerminal: true}
	case err != nil:
		return loginAnswer{Error: err.Error()}
	}
	return loginAnswer{Answers: answers}
}

// askpassProgram is this binary, which ssh runs as SSH_ASKPASS with
// --ssh=openssh (the command sees conn.AskpassEnv and answers with
// conn.RunAskpass).
func askpassProgram() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// LoginUsage is `remotefs login --help`.
const LoginUsage = `Usage: remotefs login MOUNTPOINT

Logs in again to the server of a mount that shows "login needed" in
remotefs status: the server asked for a password or a one-time code on a
reconnect (keyboard-interactive or password authentication) and remotefs
keeps no answers. The server's questions are asked on this terminal, as
"remotefs mount" does; once the login succeeds the mount is back online and
delivers the writes it queued meanwhile.

Example:
  remotefs login ~/remote
`

// Login is `remotefs login MOUNTPOINT`: the daemon of mp dials again and
// sends the server's questions here, to be asked on the terminal.
func Login(ctx context.Context, mp string) error {
	c, err := control.Open(ctx, control.SocketPath(mp), control.Request{Cmd: "login"})
	if errors.Is(err, control.ErrNoDaemon) {
		return fmt.Errorf("%s is not a remotefs mount", mp)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		r, err := c.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("login: %w", err)
		}
		if r.Done {
			if r.Error != "" {
				return errors.New(r.Error)
			}
			fmt.Fprintf(os.Stderr, "remotefs: %s is online again\n", mp)
			return nil
		}
		if len(r.Extra) > 0 {
			if err := c.Send(answerLogin(ctx, string(r.Extra))); err != nil {
				return fmt.Errorf("login: %w", err)
			}
		}
	}
}

// handleLogin serves "remotefs login": the Manager dials again, each round
// of questions going to the client as Reply.Extra and its loginAnswer
// coming back on the stream.
func (d *daemon) handleLogin(ctx context.Context, req control.Request) control.Reply {
	if d.mgr == nil {
		return control.Reply{Error: "this mount is offline-only (--offline): there is no server to log in to"}
	}
	ask := func(ctx context.Context, q conn.LoginRequest) ([]string, error) {
		b, err := json.Marshal(q)
		if err != nil {
			return nil, err
		}
		if err := req.Stream.Send(control.Reply{Extra: b}); err != nil {
			return nil, err
		}
		var a loginAnswer
		if err := req.Stream.Receive(&a); err != nil {
			return nil, fmt.Errorf("remotefs login went away: %w", err)
		}
		switch {
		case a.NoTerminal:
			return nil, loginNeededError("remotefs login has no terminal to ask on")
		case a.Error != "":
			return nil, errors.New(a.Error)
		}
		return a.Answers, nil
	}
	if err := d.mgr.Login(ctx, ask); err != nil {
		d.log.Warn("login failed", "err", err)
		return control.Reply{Error: err.Error()}
	}
	d.log.Info("logged in again")
	return control.Reply{}
}
