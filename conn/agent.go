package conn

// The per-connection agent: one long-running `remotefs __agent` on the
// server (package agent), started over ONE exec channel when the
// connection is made, that serves the helpers' requests multiplexed as
// streams (agent/proto, mux.go): the tree listing (WalkTree), content of
// many small files (FetchFiles), batch lstat (StatMany), the change feed
// (Watch's helper mode) and the upload helper (Put). Every exec channel
// pays the user's login shell (on real servers a conda/pyenv init can
// take a second); with the agent, a connection pays it once.
//
// Start (one exec): a small sh script, given the helper's folder, name and
// size, prints a marker line, `uname -sm`, and whether the helper binary
// is already there, then reads one line: "run" execs the helper as
// `__agent`; "send" reads the binary from the same stdin (head -c SIZE)
// into a temporary name, renames it into place and execs it; anything
// else exits. The client says "run" or "send" only when the server's OS
// and architecture are this binary's and both are Linux; the agent then
// greets with proto.AgentHello and the uid and gid it runs as. The
// binary's file name holds its hash: both ends are the same build. The
// start fails when nothing moved either way for OpTimeout (sending the
// binary over a slow link may take longer than that in all).
//
// Fallback: when the agent cannot run (another OS or architecture, no
// helper binary, nothing writable, exec refused, no greeting within
// OpTimeout), each helper runs as before, over an exec channel of its
// own (find, tar, the watch helper or inotifywait or polling, the upload
// helper or SFTP). A start that is under way is waited for (callers want
// the agent more than a second exec), except while it sends the binary
// (the first connection of a build to a server; an SFTP lstat finds that
// out before the login shell has started): the listing and fetches a
// user waits for then run over exec channels of their own, the change
// feed and uploads wait, and a subtree walk (a pruned folder on first
// use) fails so that the folder is listed over SFTP: its own exec would
// pay the login shell for one folder. When an agent that ran dies while the
// connection lives, helpers run the old way for agentRetry, then a new
// agent is started.
//
// Liveness: the agent's exec channel lives as long as the connection (the
// agent exits at stdin EOF, or when nothing came from the client for 30s:
// a link that died without sshd noticing). The client pings it every
// agentPing (OpTimeout/2 when that is shorter); when nothing at all came
// from it for OpTimeout after a ping, the agent is taken for hung:
// its session is closed and its streams fail (a walk with ErrNoTreeWalk,
// so the cache lists with SFTP; an upload as when the upload helper dies,
// wrapping ErrOffline; the change feed restarts), and helpers run one
// exec each until a new agent is due. The connection itself stays up.
//
// The persistent agent (Options.AgentLinger > 0; agent/persist.go): the
// agent started over exec is asked to stay on the server for the linger
// time after its last connection, listening on a unix socket in the
// helper folder named after the build (agentSocket). Each start also
// opens a direct-streamlocal@openssh.com channel to that socket (once
// SFTP has told the home folder, as the root is checked), beside the
// exec: no login shell runs for it, so an agent left by an earlier
// connection greets a round trip after the connection is up instead of
// after the shell's second. The first greeting serves; when it is the
// socket's, the exec is cut short (its session killed: the login shell
// may still run to its end where sshd refuses the signal, for a root
// login). Neither waits for the other, so a server without such an agent
// (the first connection, a socket refused: AllowStreamLocalForwarding no)
// starts the agent exactly as before. Without persistence, cutting the
// first connection's cost further would take listing before the agent
// over SFTP, which lacks the stat data git compares (inode numbers,
// ctime): see cache, "Starting truthfully".
//
// Lock order: agentRunner.mu only; it is never held across network I/O.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"remotefs/agent/proto"
)

// Agent modes, as Options.Agent.
const (
	// AgentAuto: start the agent with each connection when the server can
	// run it.
	AgentAuto = ""
	// AgentOff: never; every helper runs over its own exec channel.
	AgentOff = "off"
)

// DefaultAgentLinger is how long a mount's agent stays on the server for
// the next connection (Options.AgentLinger).
const DefaultAgentLinger = 15 * time.Minute

const (
	agentRetry = 30 * time.Second // after an agent died, before starting another
	agentPing  = 5 * time.Second
	agentBoot  = "remotefs-agent-boot"
)

// agentScript starts the agent: $1 the helper folder ("" for
// $HOME/.cache/remotefs), $2 the helper's file name, $3 its size, $4 the
// `uname -sm` outputs (blanks as "_") of servers this binary runs on, $5
// how long the agent lingers for later connections ("": it does not;
// agentSocket is where it listens).
// When the binary is there and uname is one of those it starts the agent
// at once ("started"): no round trip to the client.
const agentScript = `echo ` + agentBoot + `
u=$(uname -sm)
echo "$u"
d=${1:-$HOME/.cache/remotefs}
f=$d/$2
l=$5
s=$d/agent-${2#remotefs-helper-}.sock
agent() {
  if [ -n "$l" ]; then exec "$f" ` + proto.AgentCommand + ` --listen "$s" --linger "$l"; fi
  exec "$f" ` + proto.AgentCommand + `
}
if [ -f "$f" ] && [ -x "$f" ] && [ "$(wc -c <"$f")" -eq "$3" ]; then
  for m in $4; do
    if [ "$m" = "$(echo "$u" | tr ' ' _)" ]; then echo started; agent; fi
  done
  echo ready
else
  echo need
fi
read -r a || exit 0
case $a in
run) agent ;;
send)
  mkdir -p "$d" && chmod 700 "$d" || exit 1
  t=$d/` + proto.TempPrefix + `boot-$$-$2
  head -c "$3" >"$t" || { rm -f "$t"; exit 1; }
  if [ "$(wc -c <"$t")" -ne "$3" ]; then rm -f "$t"; echo "the helper upload was cut short" >&2; exit 1; fi
  chmod 700 "$t" && mv -f "$t" "$f" || { rm -f "$t"; exit 1; }
  for o in "$d"/remotefs-helper-*; do [ "$o" = "$f" ] || rm -f "$o"; done
  agent ;;
esac
exit 0`

type agentState int

const (
	agentIdle     agentState = iota // not started, or died: start on demand after retryAt
	agentStarting                   // a start is under way (started is open)
	agentReady                      // mux serves
	agentOff                        // cannot run here: never again on this connection
)

// agentRunner runs the agent of one Client.
type agentRunner struct {
	// Set at construction.
	c      *Client
	mode   string
	linger time.Duration // > 0: the agent stays for later connections

	mu      sync.Mutex
	state   agentState    // guarded by mu
	mux     *proto.Mux    // guarded by mu; agentReady
	started chan struct{} // guarded by mu; closed when the start under way ended
	// sending: the start under way is sending the binary (the first
	// connection to this server with this build), which takes as long as
	// the link needs for some megabytes.
	sending   bool          // guarded by mu
	sendingCh chan struct{} // guarded by mu; closed when sending is set
	// looked: a look over SFTP for the binary was started for this start
	// (the script says whether it is there only after the login shell).
	looked  bool      // guarded by mu
	offErr  error     // guarded by mu; agentOff: why
	retryAt time.Time // guarded by mu; agentIdle

	preads atomic.Int64 // reads it answered (agentReadAt)
}

func newAgentRunner(c *Client, mode string, linger time.Duration) *agentRunner {
	a := &agentRunner{c: c, mode: mode, linger: linger}
	if mode == AgentOff {
		a.state, a.offErr = agentOff, errors.New("turned off")
	}
	return a
}

// start starts the agent in the background unless it runs, is starting,
// or cannot run.
func (a *agentRunner) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.startLocked()
}

func (a *agentRunner) startLocked() {
	if a.state != agentIdle || time.Now().Before(a.retryAt) || a.c.Err() != nil {
		return
	}
	if a.c.ssh == nil {
		a.state, a.offErr = agentOff, errors.New("no ssh connection to run it over")
		return
	}
	a.state = agentStarting
	a.started, a.sendingCh, a.sending, a.looked = make(chan struct{}), make(chan struct{}), false, false
	go a.run(a.started)
}

// get returns the running agent's mux, waiting for a start under way (or
// starting one when it is due); nil: run helpers the old way. While the
// start sends the binary, only callers with no other way to run (orWait)
// wait: a listing the user waits for runs its own exec meanwhile.
func (a *agentRunner) get(ctx context.Context, orWait bool) *proto.Mux {
	a.mu.Lock()
	a.startLocked()
	for a.state == agentStarting && (orWait || !a.sending) {
		ch, sending := a.started, a.sendingCh
		if orWait {
			sending = nil
		} else if !a.looked && a.c.sftp != nil {
			a.looked = true
			go a.lookForBinary(sending)
		}
		a.mu.Unlock()
		select {
		case <-ch:
		case <-sending:
		case <-ctx.Done():
			return nil
		case <-a.c.done:
			return nil
		}
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	if a.state == agentReady {
		return a.mux
	}
	return nil
}

// running returns the agent's mux when it runs, without starting or
// waiting for it; nil otherwise.
func (a *agentRunner) running() *proto.Mux {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == agentReady {
		return a.mux
	}
	return nil
}

// starting reports whether an agent start is under way.
func (a *agentRunner) starting() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state == agentStarting
}

// markSending notes that the start whose sendingCh is ch sends the
// binary.
func (a *agentRunner) markSending(ch chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == agentStarting && a.sendingCh == ch && !a.sending {
		a.sending = true
		close(ch)
	}
}

// lookForBinary looks over SFTP (a round trip, where the start script
// answers after the login shell) whether the helper binary is on the
// server, in the folder SFTP starts in (normally $HOME), and marks the
// start as sending it when it is not. A wrong guess costs only an exec
// more (a walk that does not wait) or a wait for the agent.
func (a *agentRunner) lookForBinary(ch chan struct{}) {
	c := a.c
	h, err := findLocalHelper()
	if err != nil {
		return
	}
	var present atomic.Bool // fn may outlive run on a deadline
	c.run(context.Background(), func(*progress) error {
		dir := watchHelperDir
		if dir == "" {
			home, err := c.sftp.Getwd()
			if err != nil {
				return err
			}
			dir = path.Join(home, ".cache", "remotefs")
		}
		fi, err := c.sftp.Lstat(path.Join(dir, "remotefs-helper-"+h.hash))
		present.Store(err == nil && fi.Mode().IsRegular() && fi.Size() == h.size)
		return nil
	})
	if !present.Load() {
		a.markSending(ch)
	}
}

// Agent says whether the connection's agent runs ("running"), is
// starting, or why it does not.
func (c *Client) Agent() string {
	a := c.agent
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.state {
	case agentReady:
		return "running"
	case agentStarting:
		return "starting"
	case agentOff:
		return "off: " + a.offErr.Error()
	}
	return "not running"
}

// run starts the agent and serves it until it ends.
func (a *agentRunner) run(started chan struct{}) {
	c := a.c
	// No ctx of the caller's: the agent lives as long as the connection
	// (see uploader.install about SIGKILL during shell start-up).
	// Once an agent started here greeted as one that lingers for later
	// connections (others may be using it), ending this connection's use
	// of it closes the session without killing the process.
	var serving atomic.Bool
	execCtx, kill := context.WithCancel(context.WithValue(context.Background(), leaveRunningKey{}, &serving))
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	stderr := &syncBuffer{buf: limitedBuffer{buf: &bytes.Buffer{}, max: 4096}}
	execDone := make(chan error, 1)
	var execStarted bool
	finish := func(m *proto.Mux, err error, permanent bool) {
		a.mu.Lock()
		defer a.mu.Unlock()
		close(started)
		switch {
		case err == nil:
			a.state, a.mux = agentReady, m
		case permanent:
			a.state, a.offErr = agentOff, err
		default:
			a.state, a.retryAt = agentIdle, time.Now().Add(agentRetry)
		}
		if err != nil && c.Err() == nil {
			c.log.Info("server-side agent unavailable: helpers run one exec each", "host", c.label, "err", err)
		}
	}
	stop := func() {
		inW.CloseWithError(io.ErrClosedPipe)
		outR.CloseWithError(io.ErrClosedPipe)
		if execStarted && c.Err() == nil {
			kill()
		}
	}

	h, err := findLocalHelper()
	if err == nil && runtime.GOOS != "linux" {
		err = fmt.Errorf("the agent needs Linux (this is %s)", runtime.GOOS)
	}
	if err != nil {
		finish(nil, err, true)
		kill()
		return
	}
	// Only a transport that can reach the agent's socket leaves it to
	// linger (the user's own ssh program, SSHOpenSSH, opens no such
	// channel here).
	_, reachable := c.ssh.(unixDialer)
	linger := a.linger
	if !reachable {
		linger = 0
	}
	lingerArg := ""
	if linger > 0 {
		lingerArg = linger.String()
	}
	cmd := "sh -c " + shellQuote(agentScript) + " sh " + shellQuote(watchHelperDir) + " " +
		shellQuote("remotefs-helper-"+h.hash) + " " + strconv.FormatInt(h.size, 10) + " " +
		shellQuote(strings.Join(agentUnames(), " ")) + " " + shellQuote(lingerArg)
	// An agent an earlier connection left (persist) greets without a
	// login shell: it is asked beside the exec, and the first to greet
	// serves.
	persist := make(chan booted, 1)
	if linger > 0 {
		go func() { persist <- a.dialPersistent(h) }()
	}
	execStarted = true
	go func() {
		code, err := c.Exec(execCtx, cmd, inR, outW, stderr)
		if err == nil {
			msg := stderr.String()
			if msg == "" {
				msg = "no message"
			}
			err = fmt.Errorf("exited with status %d: %s", code, msg)
		}
		outW.CloseWithError(err)
		inR.CloseWithError(io.ErrClosedPipe)
		execDone <- err
	}()

	// The start may send megabytes: it fails when nothing moved either way
	// for OpTimeout, not when it takes longer.
	var lastIO atomic.Int64
	lastIO.Store(time.Now().UnixNano())
	br := bufio.NewReaderSize(&recvCounter{r: outR, last: &lastIO}, 64<<10)
	res := make(chan booted, 1)
	go func() {
		m, uid, gid, perm, err := a.boot(br, progressWriter{w: inW, last: &lastIO}, h)
		res <- booted{m: m, uid: uid, gid: gid, err: err, permanent: perm}
	}()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	var b booted
	for waiting := true; waiting; {
		select {
		case b = <-res:
			waiting = false
		case pb := <-persist:
			if pb.err != nil {
				persist = nil // not there: the exec starts one
				c.log.Debug("no agent to reuse on the server", "host", c.label, "err", pb.err)
				continue
			}
			b, waiting = pb, false
		case <-timer.C:
			if idle := time.Since(time.Unix(0, lastIO.Load())); idle < c.opTimeout {
				timer.Reset(c.opTimeout - idle)
				continue
			}
			b.err, waiting = fmt.Errorf("no greeting from the agent (nothing moved for %v)", c.opTimeout), false
		case <-c.done:
			b.err, waiting = c.Err(), false
		}
	}
	execEnded := execDone // the agent's end, when it runs over the exec
	if b.persistent {
		// The exec is not needed: its login shell is cut short.
		stop()
		execEnded = nil
	} else if persist != nil && linger > 0 {
		go func() {
			if pb := <-persist; pb.err == nil {
				pb.m.Close(errors.New("the agent started over exec serves"))
				pb.close()
			}
		}()
	}
	if b.err != nil {
		stop()
		finish(nil, fmt.Errorf("agent: %w", b.err), b.permanent)
		return
	}
	if !b.persistent && linger > 0 {
		serving.Store(true)
	}
	c.setOwner(b.uid, b.gid)
	finish(b.m, nil, false)
	c.log.Debug("server-side agent running", "host", c.label, "reused", b.persistent)

	// Serve until the agent, its session or the connection ends; ping it
	// while it has work.
	tick := time.NewTicker(min(agentPing, max(c.opTimeout/2, 100*time.Millisecond)))
	defer tick.Stop()
	var pingSent int64
	var why error
	for why == nil {
		select {
		case <-b.m.Done():
			why = b.m.Err()
		case err := <-execEnded:
			why = err
		case <-c.done:
			why = c.Err()
		case <-tick.C:
			now := time.Now().UnixNano()
			last := b.m.LastRecv.Load()
			// Pings also keep it from exiting as idle (agent.IdleTimeout).
			switch {
			case pingSent == 0 || last > pingSent:
				pingSent = now
				go b.m.Ping()
			case time.Duration(now-max(pingSent, last)) >= c.opTimeout:
				why = fmt.Errorf("no answer from the agent for %v", time.Duration(now-max(pingSent, last)).Round(time.Millisecond))
			}
		}
	}
	a.mu.Lock() // first: no new request gets this agent
	if a.mux == b.m {
		a.state, a.mux, a.retryAt = agentIdle, nil, time.Now().Add(agentRetry)
	}
	a.mu.Unlock()
	b.m.Close(fmt.Errorf("the agent on %s stopped: %w", c.label, why))
	if b.close != nil {
		b.close()
	}
	stop()
	if c.Err() == nil {
		c.log.Warn("server-side agent stopped; helpers run one exec each for a while", "host", c.label, "err", why, "for", agentRetry)
	}
}

// booted is how an agent start ended.
type booted struct {
	m        *proto.Mux
	uid, gid uint32
	err      error
	// permanent: this server cannot run the agent.
	permanent bool
	// persistent: m is an agent an earlier connection left running,
	// reached over a socket channel that close closes.
	persistent bool
	close      func()
}

// agentSocket is where the agent of the build whose helper hash is hash
// listens for later connections, in the helper folder dir (agent/persist.go).
func agentSocket(dir, hash string) string {
	return path.Join(dir, "agent-"+hash+".sock")
}

// unixDialer is a transport that can open a channel to a unix socket on
// the server (direct-streamlocal@openssh.com).
type unixDialer interface {
	dialUnix(path string) (net.Conn, error)
}

// dialPersistent reaches the agent an earlier connection of this build
// left on the server, if any: a channel to its socket, which runs no
// login shell, and its greeting within OpTimeout.
func (a *agentRunner) dialPersistent(h localHelper) booted {
	c := a.c
	d, ok := c.ssh.(unixDialer)
	if !ok {
		return booted{err: errors.New("this transport opens no socket channels")}
	}
	select {
	case <-c.homeKnown:
	case <-c.done:
		return booted{err: c.Err()}
	}
	dir := watchHelperDir
	if dir == "" {
		if !path.IsAbs(c.home) {
			return booted{err: fmt.Errorf("the server's home folder (%q) is unknown", c.home)}
		}
		dir = path.Join(c.home, ".cache", "remotefs")
	}
	// The channel's opening and the greeting, within OpTimeout; what
	// comes after that is closed.
	var conn atomic.Pointer[net.Conn]
	var gaveUp atomic.Bool
	res := make(chan booted, 1)
	go func() {
		nc, err := d.dialUnix(agentSocket(dir, h.hash))
		if err != nil {
			res <- booted{err: err}
			return
		}
		conn.Store(&nc)
		m, uid, gid, err := proto.NewClientMux(nc, nc)
		if gaveUp.Load() {
			if m != nil {
				m.Close(errors.New("too late"))
			}
			nc.Close()
		}
		res <- booted{m: m, uid: uid, gid: gid, err: err}
	}()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	var b booted
	select {
	case b = <-res:
	case <-timer.C:
		b.err = fmt.Errorf("no greeting from the agent's socket within %v", c.opTimeout)
	case <-c.done:
		b.err = c.Err()
	}
	closeConn := func() {
		if nc := conn.Load(); nc != nil {
			(*nc).Close()
		}
	}
	if b.err != nil {
		gaveUp.Store(true)
		closeConn()
		return b
	}
	b.persistent, b.close = true, closeConn
	return b
}

// boot speaks the start script's side of the exchange and reads the
// agent's greeting. permanent: the server cannot run the agent.
func (a *agentRunner) boot(br *bufio.Reader, w io.Writer, h localHelper) (m *proto.Mux, uid, gid uint32, permanent bool, err error) {
	line := func() (string, error) {
		s, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("start-up: %w", err)
		}
		return strings.TrimSuffix(s, "\n"), nil
	}
	// A login script may print things first: skip up to the marker.
	for skipped := 0; ; {
		s, err := line()
		if err != nil {
			return nil, 0, 0, false, err
		}
		if s == agentBoot {
			break
		}
		if skipped += len(s) + 1; skipped > 64<<10 {
			return nil, 0, 0, false, errors.New("no start-up marker in 64 KiB of output")
		}
	}
	uname, err := line()
	if err != nil {
		return nil, 0, 0, false, err
	}
	state, err := line()
	if err != nil {
		return nil, 0, 0, false, err
	}
	goos, goarch := unameToGo(uname)
	if goos != runtime.GOOS || goarch != runtime.GOARCH {
		io.WriteString(w, "no\n")
		return nil, 0, 0, true, fmt.Errorf("the server is %s/%s, this binary %s/%s",
			orUnknown(goos), orUnknown(goarch), runtime.GOOS, runtime.GOARCH)
	}
	switch state {
	case "started":
	case "ready":
		if _, err := io.WriteString(w, "run\n"); err != nil {
			return nil, 0, 0, false, err
		}
	case "need":
		a.mu.Lock()
		ch := a.sendingCh
		a.mu.Unlock()
		a.markSending(ch)
		if _, err := io.WriteString(w, "send\n"); err != nil {
			return nil, 0, 0, false, err
		}
		f, err := os.Open(h.path)
		if err != nil {
			return nil, 0, 0, true, err
		}
		n, err := io.Copy(w, io.LimitReader(f, h.size))
		f.Close()
		if err == nil && n != h.size {
			err = fmt.Errorf("the binary changed while uploading (%d bytes, want %d)", n, h.size)
		}
		if err != nil {
			return nil, 0, 0, false, fmt.Errorf("sending the helper: %w", err)
		}
	default:
		return nil, 0, 0, false, fmt.Errorf("unexpected start-up line %q", state)
	}
	m, uid, gid, err = proto.NewClientMux(br, w)
	return m, uid, gid, false, err
}

// agentUnames are the `uname -sm` outputs (blanks as "_") that unameToGo
// maps to this binary's OS and architecture.
func agentUnames() []string {
	var out []string
	for _, m := range []string{"x86_64", "amd64", "aarch64", "arm64", "i386", "i486", "i586", "i686", "riscv64", "ppc64le", "s390x"} {
		if goos, goarch := unameToGo("Linux " + m); goos == runtime.GOOS && goarch == runtime.GOARCH {
			out = append(out, "Linux_"+m)
		}
	}
	return out
}

// errNoAgent: the request needs the agent and it does not run.
var errNoAgent = errors.New("the server-side agent does not run")

// runHelper runs a server-side helper: argv on the agent when it runs,
// else cmd (a shell command line; "" when there is no other way) over an
// exec channel of its own. Same contract as Exec.
func (c *Client) runHelper(ctx context.Context, argv []string, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if m := c.agent.get(ctx, cmd == ""); m != nil {
		code, err := c.agentExec(ctx, m, argv, stdin, stdout, stderr)
		if !errors.Is(err, errNotOpened) || cmd == "" || c.Err() != nil {
			return code, err
		}
		// The agent ended just now; nothing of the request was used.
	}
	if cmd == "" {
		return -1, fmt.Errorf("exec on %s: %w", c.label, errNoAgent)
	}
	return c.Exec(ctx, cmd, stdin, stdout, stderr)
}

// errNotOpened: the agent had ended before the request could start.
var errNotOpened = errors.New("the request did not start")

// agentStopped: the agent died under a request while the connection lives.
type agentStopped struct{ cause error }

func (e *agentStopped) Error() string { return e.cause.Error() }
func (e *agentStopped) Unwrap() error { return e.cause }

// agentExec runs argv as one stream of the agent, like Exec: stdin is
// sent until EOF, stdout and stderr are copied (and not touched after it
// returns), and it returns the exit code. ctx ends the command (the agent
// gets a kill) and the call at once.
func (c *Client) agentExec(ctx context.Context, m *proto.Mux, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fail := func(err error) (int, error) {
		if cerr := c.Err(); cerr != nil {
			err = cerr
		}
		return -1, fmt.Errorf("agent %s on %s: %w", argv[0], c.label, err)
	}
	s, err := m.Open(argv)
	if err != nil {
		return fail(&agentStopped{fmt.Errorf("%w: %w", errNotOpened, err)})
	}
	in, out := &progress{}, &progress{}
	defer in.abandonNoWait()
	if stdin == nil {
		s.CloseWrite()
	} else {
		go func() {
			io.Copy(s, guardedReader{in, stdin})
			s.CloseWrite()
		}()
	}
	copied := make(chan struct{}, 2)
	copyOut := func(w io.Writer, r io.Reader) {
		defer func() { copied <- struct{}{} }()
		if w == nil {
			w = io.Discard
		}
		buf := make([]byte, 64<<10)
		for {
			n, rerr := r.Read(buf)
			if n > 0 {
				if _, werr := (guardedWriter{out, w}).Write(buf[:n]); werr != nil {
					// Nobody reads any more: stop the command, as a
					// closed pipe would.
					s.Abandon(fmt.Errorf("its output was not read: %w", werr))
					return
				}
			}
			if rerr != nil {
				return
			}
		}
	}
	go copyOut(stdout, s)
	go copyOut(stderr, s.Stderr())
	waitc := make(chan error, 1)
	var code int
	go func() {
		var err error
		code, err = s.Wait()
		if err == nil {
			<-copied
			<-copied
		}
		waitc <- err
	}()
	select {
	case err := <-waitc:
		if err != nil {
			out.abandon()
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			return fail(&agentStopped{err})
		}
		return code, nil
	case <-ctx.Done():
		s.Abandon(ctx.Err())
		out.abandon()
		return fail(ctx.Err())
	case <-c.done:
		s.Abandon(c.Err())
		out.abandon()
		return fail(c.Err())
	}
}

// BatchStater is implemented by remotes that can lstat many paths in one
// round trip, with what SFTP's attributes lack (inode number, ctime,
// nanosecond times): StatMany.
type BatchStater interface {
	StatMany(ctx context.Context, paths []string, yield func(path string, fi FileInfo) error) error
}

var (
	_ BatchStater = (*Client)(nil)
	_ BatchStater = (*Manager)(nil)
)

// StatMany implements BatchStater on the current connection.
func (m *Manager) StatMany(ctx context.Context, paths []string, yield func(string, FileInfo) error) error {
	c, err := m.current("stat", "")
	if err != nil {
		return err
	}
	return c.StatMany(ctx, paths, yield)
}

// StatMany lstats many root-relative paths in one request to the agent
// and yields each that exists, in the order given (those that do not
// exist are left out). It waits for an agent being started, unless the
// start is sending the binary; without a running agent it fails with an
// error wrapping ErrUnsupported: the caller stats one by one.
func (c *Client) StatMany(ctx context.Context, paths []string, yield func(path string, fi FileInfo) error) error {
	var list bytes.Buffer
	for _, p := range paths {
		if _, err := c.abs("stat", p); err != nil || p == "" {
			continue
		}
		list.WriteString(p)
		list.WriteByte(0)
	}
	if list.Len() == 0 {
		return nil
	}
	if c.agent.get(ctx, false) == nil {
		return fmt.Errorf("stat many on %s: %w: %w", c.label, ErrUnsupported, errNoAgent)
	}
	return c.streamFindRecords(ctx, []string{proto.StatCommand, "--", c.root}, "", &list, yield,
		func(code int, err error, stderr string) error {
			if err == nil && code != 0 {
				err = fmt.Errorf("stat many on %s: exit %d: %s", c.label, code, strings.TrimSpace(stderr))
			}
			return err
		})
}

// leaveRunningKey marks an exec context whose cancellation closes the
// session without signalling the command: an agent that other
// connections may be using through its socket.
type leaveRunningKey struct{}

func leaveRunning(ctx context.Context) bool {
	b, _ := ctx.Value(leaveRunningKey{}).(*atomic.Bool)
	return b != nil && b.Load()
}
