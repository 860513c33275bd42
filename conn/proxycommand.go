package conn

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// ProxyCommand, as ssh runs it: `$SHELL -c "exec COMMAND"` ($SHELL, else
// /bin/sh) with the tokens already expanded, the ssh protocol on its stdin
// and stdout, its stderr logged line by line. The command gets its own
// process group; when the connection closes (or dies) the group gets
// SIGHUP, as ssh sends, and SIGKILL a second later if it has not exited,
// so nothing it started outlives the connection. A command that exits
// closes its stdout: the connection dies like any lost link and the
// Manager redials, which runs the command again.

// proxyConn is a net.Conn over a ProxyCommand's stdin and stdout.
type proxyConn struct {
	cmd     *exec.Cmd
	command string
	r, w    *os.File // our ends: read from its stdout, write to its stdin
	exited  chan struct{}
	once    sync.Once

	stderrDone chan struct{} // closed when the command's stderr is at EOF

	mu      sync.Mutex
	lastErr string // guarded by mu: the last line the command wrote to stderr
}

var _ net.Conn = (*proxyConn)(nil)

// startHopProxy starts t's ProxyCommand when the hop is reached through
// one (it has one and is not reached through a previous hop); nil
// otherwise.
func startHopProxy(t *Target, via *ssh.Client, log *slog.Logger) (*proxyConn, error) {
	if t.ProxyCommand == "" || via != nil {
		return nil, nil
	}
	return startProxyCommand(t.ProxyCommand, t.Label, log)
}

// startProxyCommand starts command for host (label, for the log).
func startProxyCommand(command, label string, log *slog.Logger) (*proxyConn, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(userShell(), "-c", "exec "+command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("cannot run ProxyCommand for %s: %v", label, err)
	}
	p := &proxyConn{cmd: cmd, command: command, r: outR, w: inW, exited: make(chan struct{}), stderrDone: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(errR)
		for sc.Scan() {
			log.Info("ProxyCommand", "host", label, "stderr", sc.Text())
			p.mu.Lock()
			p.lastErr = sc.Text()
			p.mu.Unlock()
		}
		errR.Close()
		close(p.stderrDone)
	}()
	go func() {
		err := cmd.Wait()
		log.Debug("ProxyCommand exited", "host", label, "status", err)
		close(p.exited)
		p.Close() // a child it left holding the pipe must not keep the link half alive
	}()
	return p, nil
}

// explain adds what the command said last to a handshake error: when a
// ProxyCommand fails, its own message is the useful part.
func (p *proxyConn) explain(err error) error {
	select { // a command that failed has usually exited: read all it said
	case <-p.stderrDone:
	case <-time.After(200 * time.Millisecond):
	}
	p.mu.Lock()
	last := p.lastErr
	p.mu.Unlock()
	if last == "" {
		return err
	}
	return fmt.Errorf("%w (ProxyCommand: %s)", err, last)
}

// viaLabel names the command in dial errors.
func (p *proxyConn) viaLabel() string { return "ProxyCommand " + strconv.Quote(p.command) }

func (p *proxyConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *proxyConn) Write(b []byte) (int, error) { return p.w.Write(b) }

// Close closes the pipes and ends the command's process group: SIGHUP,
// then SIGKILL after a second. It does not wait.
func (p *proxyConn) Close() error {
	p.once.Do(func() {
		p.w.Close()
		p.r.Close()
		pgid := p.cmd.Process.Pid
		select {
		case <-p.exited:
			return
		default:
		}
		syscall.Kill(-pgid, syscall.SIGHUP)
		go func() {
			select {
			case <-p.exited:
			case <-time.After(time.Second):
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
		}()
	})
	return nil
}

// proxyAddr stands for the far end of a ProxyCommand. knownhosts wants a
// *net.TCPAddr; the host key is looked up by name, never by this address.
var proxyAddr = &net.TCPAddr{}

func (p *proxyConn) LocalAddr() net.Addr  { return proxyAddr }
func (p *proxyConn) RemoteAddr() net.Addr { return proxyAddr }

func (p *proxyConn) SetDeadline(t time.Time) error {
	return errors.Join(p.r.SetReadDeadline(t), p.w.SetWriteDeadline(t))
}
func (p *proxyConn) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p *proxyConn) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }
