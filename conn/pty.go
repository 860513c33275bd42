package conn

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// sessionPTY is a local pseudo-terminal for an `ssh -tt` process (the
// openssh transport): ssh asks the server for a terminal of the local one's
// size and type and passes window changes on when the local one is
// resized. The caller's stdin is written to the master, the master's output
// goes to the caller's stdout.
type sessionPTY struct {
	term   string
	master *os.File
	slave  *os.File

	wg      sync.WaitGroup // the output copy
	outDone chan struct{}
}

func openSessionPTY(term string, rows, cols int) (*sessionPTY, error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	fail := func(err error) (*sessionPTY, error) {
		unix.Close(mfd)
		return nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		return fail(err)
	}
	sfd, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	// Left in its default (cooked) modes: ssh sends them to the server's
	// terminal, then puts this one in raw mode.
	p := &sessionPTY{term: term, master: os.NewFile(uintptr(mfd), "ptmx"), slave: os.NewFile(uintptr(sfd), "pts"), outDone: make(chan struct{})}
	if err := p.resize(rows, cols); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// attach makes the pseudo-terminal cmd's controlling terminal and its
// stdin, stdout and stderr.
func (p *sessionPTY) attach(cmd *exec.Cmd, stdin io.Reader, stdout io.Writer) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if p.term != "" {
		cmd.Env = append(append([]string{}, cmd.Env...), "TERM="+p.term)
	}
	if stdin != nil {
		go io.Copy(p.master, stdin)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(stdout, p.master) // ends with EIO once ssh has exited and the output is read
	}()
	return nil
}

// started closes the parent's copy of the terminal, so reading the master
// ends when ssh exits.
func (p *sessionPTY) started() { p.slave.Close() }

// finish waits for the output to be copied.
func (p *sessionPTY) finish() { p.wg.Wait() }

func (p *sessionPTY) write(b []byte) error {
	_, err := p.master.Write(b)
	return err
}

func (p *sessionPTY) resize(rows, cols int) error {
	return unix.IoctlSetWinsize(int(p.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
}

func (p *sessionPTY) close() {
	p.master.Close()
	p.slave.Close()
}
