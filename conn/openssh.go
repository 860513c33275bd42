package conn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The user's own ssh (Options.SSH = SSHOpenSSH), as sshfs uses it.
//
//   - The SFTP stream is `ssh -s HOST sftp`; every helper command and
//     `remotefs run` is an `ssh -T HOST COMMAND` process. ssh reads the
//     user's configuration itself, so everything it supports works
//     (ProxyCommand, GSSAPI, PKCS#11 and FIDO keys, certificates, Match).
//   - So that each command does not log in again, the SFTP process is made
//     a ControlMaster on a socket of its own in Options.RuntimeDir, and the
//     command processes are its multiplexed clients, unless the user's
//     configuration sets a ControlPath: then theirs is used as they set it
//     (ControlPersist included). Our master lives as long as the
//     connection: when it dies, the connection is dead.
//   - Liveness is ssh's own: ServerAliveInterval/CountMax are passed on
//     the command line (the configured values, else 5s x 3), and a master
//     that stops hearing from the server exits, which ends the SFTP stream
//     and the connection. A master of the user's was started with their
//     settings, so then the Client also pings through SFTP (realpath ".")
//     at the same rate. Operation deadlines apply as with the built-in
//     client.
//   - Questions (passwords, one-time codes, host key confirmations) go
//     through SSH_ASKPASS (Options.AskpassProgram, forced): each prompt
//     reaches Options.Login over a private socket, and the answer goes back
//     to ssh on the askpass program's stdout; what ssh wrote on stderr
//     just before (the server's message) comes with it. Without Login the
//     answer is refused and Dial fails with ErrLoginNeeded. One try per
//     login (NumberOfPasswordPrompts=1). Commands run in batch mode.
//   - ssh reports no exit-signal (it exits 255), so every command runs
//     under a wrapping shell that exits with the command's $? (128+N);
//     commands on a pseudo-terminal run under a local one that ssh puts in
//     raw mode after sending its modes to the server.
//   - Forwards are ssh's: the master opens the host's LocalForward,
//     RemoteForward and DynamicForward (unless Options.Forwards is off:
//     ClearAllForwardings); the commands clear theirs. Manager then runs
//     no forwarder of its own.
//   - A RemoteCommand or RequestTTY of the host (for interactive use) is
//     overridden.

// SSH implementations for Options.SSH.
const (
	SSHBuiltin = "builtin"
	SSHOpenSSH = "openssh"
)

// opensshTransport runs ssh processes for one connection.
type opensshTransport struct {
	// Set at construction.
	prog string
	args []string // options before the host: -F, -o ...
	host string
	env  []string
}

func (t *opensshTransport) newSession() (session, error) {
	return &opensshSession{t: t}, nil
}

// opensshSession is one `ssh HOST COMMAND` process.
type opensshSession struct {
	t              *opensshTransport
	stdin          io.Reader
	stdout, stderr io.Writer
	pty            *sessionPTY

	mu  sync.Mutex
	cmd *exec.Cmd // guarded by mu; set by start
}

func (s *opensshSession) setIO(stdin io.Reader, stdout, stderr io.Writer) {
	s.stdin, s.stdout, s.stderr = stdin, stdout, stderr
}

func (s *opensshSession) requestPty(term string, rows, cols int) error {
	p, err := openSessionPTY(term, rows, cols)
	if err != nil {
		return err
	}
	s.pty = p
	return nil
}

func (s *opensshSession) start(command string) error {
	args := append([]string{}, s.t.args...)
	if s.pty != nil {
		args = append(args, "-tt")
	} else {
		args = append(args, "-T")
	}
	// The master opens the configured forwards; commands must not ask again.
	// LogLevel=ERROR: no "Shared connection to HOST closed." on the terminal.
	args = append(args, "-o", "ClearAllForwardings=yes", "-o", "LogLevel=ERROR", "-e", "none", s.t.host, statusWrapper(command))
	cmd := exec.Command(s.t.prog, args...)
	cmd.Env = s.t.env
	if s.pty != nil {
		if err := s.pty.attach(cmd, s.stdin, s.stdout); err != nil {
			return err
		}
	} else {
		// Its own process group: a Ctrl-C meant for a --foreground mount
		// must not reach it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
		if s.stdin != nil {
			w, err := cmd.StdinPipe()
			if err != nil {
				return err
			}
			// Copied on a goroutine of ours, not exec's: Wait must not wait for
			// a Read that may block forever (the reader is guarded, and
			// abandoned when the command ends).
			in := s.stdin
			defer func() {
				go func() {
					io.Copy(w, in)
					w.Close()
				}()
			}()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	if s.pty != nil {
		s.pty.started()
	}
	return nil
}

func (s *opensshSession) wait() (sessionExit, error) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	err := cmd.Wait()
	if s.pty != nil {
		s.pty.finish()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return sessionExit{}, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return sessionExit{}, fmt.Errorf("ssh was killed by %v", ws.Signal())
		}
		return sessionExit{code: ee.ExitCode()}, nil
	}
	return sessionExit{}, err
}

func (s *opensshSession) signal(name string) error {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	switch name {
	case "KILL":
		// Ending ssh closes the session: the server hangs it up.
		return cmd.Process.Kill()
	case "INT":
		if s.pty != nil {
			return s.pty.write([]byte{3}) // ^C, for the remote terminal
		}
	}
	return fmt.Errorf("signal %s: %w with --ssh=openssh", name, ErrUnsupported)
}

func (s *opensshSession) windowChange(rows, cols int) error {
	if s.pty == nil {
		return nil
	}
	return s.pty.resize(rows, cols)
}

func (s *opensshSession) close() error {
	s.signal("KILL")
	if s.pty != nil {
		s.pty.close()
	}
	return nil
}

// statusWrapper runs command in a subshell and exits with its status: ssh
// reports no exit-signal, so a command killed by a signal would look like
// ssh failing (255); the shell's $? says 128+N instead. The wrapping shell
// catches INT, TERM and QUIT (a ^C reaches the whole process group) so it
// outlives the command; the command itself gets them as usual, since
// caught signals are reset in a subshell.
func statusWrapper(command string) string {
	return "trap : INT TERM QUIT; (" + command + "\n); exit $?"
}

// sshG reads `ssh -G HOST`: the configuration ssh would use.
func sshG(ctx context.Context, prog string, base []string, host string, env []string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, prog, append(append([]string{}, base...), "-G", host)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%w: %s -G %s: %s", ErrConfig, prog, host, msg)
	}
	cfg := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok {
			if _, dup := cfg[k]; !dup {
				cfg[k] = v
			}
		}
	}
	return cfg, nil
}

// dialOpenSSH is Dial with the user's ssh program.
func dialOpenSSH(ctx context.Context, spec Spec, opts Options) (*Client, error) {
	prog := opts.SSHProgram
	if prog == "" {
		prog = "ssh"
	}
	if p, err := exec.LookPath(prog); err != nil {
		return nil, fmt.Errorf("--ssh=openssh: %s not found: %v", prog, err)
	} else {
		prog = p
	}
	user, host := splitUserHost(spec.Host)
	if user != "" {
		host = user + "@" + host
	}
	env := os.Environ()
	if opts.Home != "" {
		env = append(env, "HOME="+opts.Home)
	}
	var base []string
	if f := opensshConfigFile(opts); f != "" {
		base = append(base, "-F", f)
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cfg, err := sshG(gctx, prog, base, host, env)
	cancel()
	if err != nil {
		return nil, err
	}
	opts.ConnectTimeout = durationOr(opts.ConnectTimeout, cfg["connecttimeout"], defaultConnectTimeout)
	opts.KeepaliveInterval = durationOr(opts.KeepaliveInterval, cfg["serveraliveinterval"], defaultKeepaliveInterval)
	if opts.KeepaliveCountMax <= 0 {
		opts.KeepaliveCountMax, _ = strconv.Atoi(cfg["serveralivecountmax"])
	}
	if opts.KeepaliveCountMax <= 0 {
		opts.KeepaliveCountMax = defaultKeepaliveCountMax
	}
	// A RemoteCommand or RequestTTY of the host's (for interactive use)
	// would clash with ours.
	base = append(base, "-o", "RemoteCommand=none", "-o", "RequestTTY=no",
		"-o", fmt.Sprintf("ServerAliveInterval=%d", max(1, int(opts.KeepaliveInterval.Round(time.Second)/time.Second))),
		"-o", fmt.Sprintf("ServerAliveCountMax=%d", opts.KeepaliveCountMax),
		"-o", fmt.Sprintf("ConnectTimeout=%d", max(1, int(opts.ConnectTimeout.Round(time.Second)/time.Second))))
	ourSocket := ""
	if cp := cfg["controlpath"]; cp == "" || cp == "none" {
		var r [6]byte
		rand.Read(r[:])
		// ssh adds 17 characters while it creates the socket.
		sock, err := socketPath(opts.RuntimeDir, "cm-"+hex.EncodeToString(r[:]), 17)
		if err != nil {
			return nil, err
		}
		base = append(base, "-o", "ControlMaster=auto", "-o", "ControlPath="+sock, "-o", "ControlPersist=no")
		ourSocket = sock
	}

	if !opts.Forwards {
		// --no-forwards: the master opens none of the host's forwards
		// (with Forwards, ssh opens them itself, as for `ssh HOST`).
		base = append(base, "-o", "ClearAllForwardings=yes")
	}

	// Commands never prompt: they ride the master's login (or, with a
	// user's ControlPath and no master, log in without questions).
	t := &opensshTransport{prog: prog, args: append(append([]string{}, base...), "-o", "BatchMode=yes"), host: host, env: env}

	stderr := &tailBuffer{max: 4096, log: opts.Logger, host: spec.Host}
	// The master's questions come through the askpass program, with what
	// ssh said just before (a server's message, as on ssh's terminal).
	sftpEnv := env
	var ask *askpassServer
	if opts.AskpassProgram != "" {
		ask, err = newAskpassServer(opts.RuntimeDir, LoginRequest{Host: spec.Host, User: cfg["user"]}, opts.Login, stderr.takeLines)
		if err != nil {
			return nil, err
		}
		defer ask.close()
		sftpEnv = append(append([]string{}, env...), "SSH_ASKPASS="+opts.AskpassProgram, "SSH_ASKPASS_REQUIRE=force", AskpassEnv+"="+ask.path)
		// One try per login: a wrong answer fails it, as with the built-in client.
		base = append(base, "-o", "NumberOfPasswordPrompts=1")
	} else {
		base = append(base, "-o", "BatchMode=yes")
	}

	sftpCmd := exec.Command(prog, append(append([]string{}, base...), "-e", "none", "-s", host, "sftp")...)
	sftpCmd.Env = sftpEnv
	// Its own session: a Ctrl-C meant for `remotefs mount` must not reach it.
	sftpCmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	sftpCmd.Stderr = stderr
	wr, err := sftpCmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	rd, err := sftpCmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := sftpCmd.Start(); err != nil {
		return nil, fmt.Errorf("--ssh=openssh: starting %s: %w", prog, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = sftpCmd.Wait()
		close(exited)
	}()
	// SIGTERM lets the master remove its socket; SIGKILL if it lingers.
	var stopOnce sync.Once
	kill := closerFunc(func() error {
		stopOnce.Do(func() {
			sftpCmd.Process.Signal(syscall.SIGTERM)
			go func() {
				select {
				case <-exited:
				case <-time.After(2 * time.Second):
					sftpCmd.Process.Kill()
					<-exited
				}
				if ourSocket != "" {
					os.Remove(ourSocket)
				}
			}()
		})
		return nil
	})
	c := newClientShell(spec.Host, opts, []io.Closer{kill, wr})
	c.ssh = t
	c.content = newContentPool(c, c.opensshSFTPOpener(t), opts.ContentSessions)

	// Wait for the SFTP handshake: ssh has connected and logged in. The
	// connect timeout does not run while someone answers a question.
	started := make(chan error, 1)
	go func() { started <- c.startSFTPPipe(rd, wr) }()
	limit := opts.ConnectTimeout + c.opTimeout
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var asking <-chan bool
	if ask != nil {
		asking = ask.asking
	}
	fail := func(err error) (*Client, error) {
		kill.Close()
		<-exited
		c.closeTransport()
		return nil, err
	}
	for {
		select {
		case err := <-started:
			if err != nil {
				// Let ssh exit by itself first, so its status and last
				// words explain the failure; a master that keeps the
				// channel open is killed after a short wait.
				select {
				case <-exited:
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
				}
				kill.Close()
				<-exited
				return fail(opensshError(spec.Host, stderr.String(), waitErr, ask))
			}
			go func() {
				<-exited
				c.die(fmt.Errorf("ssh exited: %s", lastLine(stderr.String(), waitErr)))
			}()
			if err := c.setRoot(ctx, spec.Path); err != nil {
				c.Close()
				return nil, err
			}
			// A round trip through SFTP (a realpath of "."): for probes after
			// a network change, and as the keepalive behind a master of the
			// user's, which may have no ServerAlive settings.
			c.ping = func() error { _, err := c.sftp.Getwd(); return err }
			if ourSocket == "" {
				go c.keepalive(c.ping, opts.KeepaliveInterval, opts.KeepaliveCountMax)
			}
			c.content.openSoon()
			opts.Logger.Debug("connected", "host", spec.Host, "root", c.root, "ssh", prog)
			c.agent.start() // after the master is up: commands share it
			if opts.UploadHelper == UploadEager {
				c.uploads.start()
			}
			return c, nil
		case <-exited:
			return fail(opensshError(spec.Host, stderr.String(), waitErr, ask))
		case on := <-asking:
			if on {
				timer.Stop()
			} else {
				timer.Reset(limit)
			}
		case <-timer.C:
			return fail(&offlineError{host: spec.Host, cause: fmt.Errorf("ssh did not connect and start sftp within %v", limit)})
		case <-ctx.Done():
			return fail(fmt.Errorf("connecting to %s: %w", spec.Host, ctx.Err()))
		}
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// opensshConfigFile is the -F to give ssh: Options.ConfigFile, or the
// config in Options.Home when that is not the home ssh would use (ssh
// takes ~ from the password database, remotefs from $HOME).
func opensshConfigFile(opts Options) string {
	if opts.ConfigFile != "" {
		return opts.ConfigFile
	}
	if u, err := user.Current(); err == nil && opts.Home != "" && filepath.Clean(opts.Home) != filepath.Clean(u.HomeDir) {
		if f := filepath.Join(opts.Home, ".ssh", "config"); fileExists(f) {
			return f
		}
	}
	return ""
}

// socketPath is name in dir (default $TMPDIR/remotefs-UID), or in the
// default directory when that path, plus extra characters, would be too
// long for a unix socket. The directory is created, mode 0700.
func socketPath(dir, name string, extra int) (string, error) {
	short := filepath.Join(os.TempDir(), "remotefs-"+strconv.Itoa(os.Getuid()))
	if dir == "" || len(dir)+1+len(name)+extra >= 100 {
		dir = short
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("runtime directory: %w", err)
	}
	return filepath.Join(dir, name), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func durationOr(set time.Duration, cfg string, def time.Duration) time.Duration {
	if set > 0 {
		return set
	}
	if n, err := strconv.Atoi(cfg); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return def
}

// opensshError classifies why ssh could not connect, from what it said.
func opensshError(host, stderr string, waitErr error, ask *askpassServer) error {
	msg := lastLine(stderr, waitErr)
	kind := ErrOffline
	switch {
	case ask != nil && ask.loginNeeded() != nil:
		return ask.loginNeeded()
	case strings.Contains(stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		kind = ErrHostKeyChanged
	case strings.Contains(stderr, "Host key verification failed"), strings.Contains(stderr, "No ED25519 host key is known"),
		strings.Contains(stderr, "host key is known"):
		kind = ErrHostKeyUnknown
	case strings.Contains(stderr, "Permission denied"), strings.Contains(stderr, "Too many authentication failures"):
		kind = ErrAuth
	case strings.Contains(stderr, "Bad configuration option"), strings.Contains(stderr, "command-line line"),
		strings.Contains(stderr, "terminating, ") && strings.Contains(stderr, "bad configuration"):
		kind = ErrConfig
	case strings.Contains(stderr, "subsystem request failed"):
		return fmt.Errorf("cannot start sftp on %s: %s (is the sftp subsystem enabled in its sshd_config?)", host, msg)
	}
	return &opensshDialError{host: host, msg: msg, kind: kind}
}

type opensshDialError struct {
	host, msg string
	kind      error
}

func (e *opensshDialError) Error() string {
	return fmt.Sprintf("ssh %s failed: %s", e.host, e.msg)
}

func (e *opensshDialError) Unwrap() error { return e.kind }

// lastLine is the last non-empty line ssh wrote, or how it exited.
func lastLine(stderr string, waitErr error) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	if waitErr != nil {
		return waitErr.Error()
	}
	return "exited"
}

// tailBuffer keeps the end of ssh's stderr for error messages and logs
// each line at debug level.
type tailBuffer struct {
	max  int
	log  interface{ Debug(string, ...any) }
	host string

	mu     sync.Mutex
	buf    []byte
	unread []byte // guarded by mu: written since the last takeLines
}

// takeLines returns the complete lines written since the last call.
func (b *tailBuffer) takeLines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := bytes.LastIndexByte(b.unread, '\n')
	if i < 0 {
		return nil
	}
	text := string(b.unread[:i])
	b.unread = append(b.unread[:0], b.unread[i+1:]...)
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.unread) < b.max {
		b.unread = append(b.unread, p...)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	if b.log != nil {
		for _, l := range strings.Split(strings.TrimSpace(string(p)), "\n") {
			if l != "" {
				b.log.Debug("ssh", "host", b.host, "stderr", l)
			}
		}
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// AskpassEnv names the socket the askpass program asks through.
const AskpassEnv = "REMOTEFS_ASKPASS"

// askpassServer answers the askpass program's questions with a LoginFunc
// during one dial. One connection per question: a JSON line with the
// prompt in, a JSON line with the answer (or a refusal) out.
type askpassServer struct {
	path   string
	ln     net.Listener
	req    LoginRequest // Host and User
	login  LoginFunc
	said   func() []string // what ssh wrote on stderr since last asked
	asking chan bool       // true while a person is answering
	ctx    context.Context // ends with close: a question still shown is withdrawn
	cancel context.CancelFunc

	mu     sync.Mutex
	needed error // guarded by mu: a question found nobody to answer (why)
}

type askpassQuestion struct {
	Prompt string `json:"prompt"`
}

type askpassAnswer struct {
	Answer string `json:"answer"`
	Error  string `json:"error,omitempty"`
}

func newAskpassServer(dir string, req LoginRequest, login LoginFunc, said func() []string) (*askpassServer, error) {
	var r [8]byte
	rand.Read(r[:])
	p, err := socketPath(dir, "askpass-"+hex.EncodeToString(r[:]), 0)
	if err != nil {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", p)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	s := &askpassServer{path: p, ln: ln, req: req, login: login, said: said, asking: make(chan bool, 16)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.serve()
	return s, nil
}

func (s *askpassServer) close() {
	s.cancel()
	s.ln.Close()
	os.Remove(s.path)
}

func (s *askpassServer) loginNeeded() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.needed
}

// setNeeded records the first question nobody could answer.
func (s *askpassServer) setNeeded(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.needed == nil {
		s.needed = err
	}
}

func (s *askpassServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.answer(c) // one question at a time, as ssh asks them
	}
}

func (s *askpassServer) answer(c net.Conn) {
	defer c.Close()
	var q askpassQuestion
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a silent client does not hold serve
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&q); err != nil {
		return
	}
	req := s.req
	if s.said != nil {
		// ssh writes a server's message (keyboard-interactive name and
		// instruction, PAM notices) on stderr before it runs askpass.
		req.Instruction = strings.Join(s.said(), "\n")
	}
	// ssh does not tell askpass whether to echo: only a yes/no question
	// (a host key to confirm) is shown as typed; everything else is secret.
	req.Questions = []LoginQuestion{{Prompt: q.Prompt, Echo: strings.Contains(q.Prompt, "(yes/no")}}
	var a askpassAnswer
	if s.login == nil {
		s.setNeeded(&LoginNeededError{Host: s.req.Host, User: s.req.User, Prompt: strings.TrimSpace(q.Prompt)})
		a.Error = "no terminal"
	} else {
		s.asking <- true
		answers, err := s.login(s.ctx, req)
		s.asking <- false
		switch {
		case errors.Is(err, ErrLoginNeeded):
			s.setNeeded(err)
			a.Error = err.Error()
		case err != nil:
			a.Error = err.Error()
		case len(answers) == 1:
			a.Answer = answers[0]
		}
	}
	json.NewEncoder(c).Encode(a)
}

// RunAskpass is the askpass program's side (SSH_ASKPASS runs it with the
// prompt as its argument): it asks through the socket in $REMOTEFS_ASKPASS
// and prints the answer for ssh. The exit status is non-zero when there is
// no answer.
func RunAskpass(prompt string, stdout io.Writer) int {
	c, err := net.DialTimeout("unix", os.Getenv(AskpassEnv), 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "remotefs askpass:", err)
		return 1
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(askpassQuestion{Prompt: prompt}); err != nil {
		return 1
	}
	var a askpassAnswer
	if err := json.NewDecoder(c).Decode(&a); err != nil || a.Error != "" {
		if a.Error != "" {
			fmt.Fprintln(os.Stderr, "remotefs askpass:", a.Error)
		}
		return 1
	}
	fmt.Fprintln(stdout, a.Answer)
	return 0
}
