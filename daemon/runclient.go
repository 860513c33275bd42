package daemon

// `remotefs run COMMAND`: the CLI side. It finds the mount containing the
// working directory, hands its stdin, stdout and stderr to that mount's
// daemon with the request (run.go runs the command over the mount's
// own ssh connection, wired straight to them), and then only relays what a
// terminal does: window size changes, and signals when there is no
// pseudo-terminal. It sets the terminal to raw mode while a remote
// pseudo-terminal runs and always restores it (deferred, so on a panic
// too; the signals that would end the process are caught and forwarded).
//
// The terminal stays the user's: a job started in the background gets no
// stdin (it would take the shell's input), and ^Z is ignored while the
// mount's process reads the terminal for the command.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"remotefs/internal/cli"
	"remotefs/internal/control"
	"remotefs/internal/mountinfo"
)

// RunUsage is `remotefs run --help`.
const RunUsage = `Usage: remotefs run [-t|-T] [--] COMMAND [ARGS...]

Runs COMMAND on the server of the mount you are in, in the server's folder
that matches your current directory, over the mount's own SSH connection.
It first waits until every save made through the mount is on the server,
so the command sees exactly what you see.

Input and output are yours: stdin, stdout and stderr are connected, and
when stdin and stdout are a terminal the command gets a pseudo-terminal,
so interactive programs, colours and progress bars work, and Ctrl-C and
window resizes reach it. Without one, Ctrl-C is passed on as SIGINT
(press it three times to stop waiting; the command is then killed).

COMMAND is a program and its arguments, not shell syntax; for pipes,
globs, redirections or &&, run a shell:
  remotefs run sh -c 'make && ./test | tee log'

Exit status: the command's (128+N when signal N killed it), or 255 when
remotefs could not run it: not inside a mount, the server is offline, a
save could not be delivered (nothing was run then), or the connection
was lost while it ran.

Flags:
  -t   use a pseudo-terminal even when stdin or stdout is not a terminal
  -T   never use a pseudo-terminal

Examples:
  cd ~/remote/proj && remotefs run python train.py --epochs 1
  remotefs run git log -1
  echo hi | remotefs run cat
`

// ExitStatus makes the command exit with Code, after printing Err if set.
type ExitStatus struct {
	Code int
	Err  error
}

func (e ExitStatus) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e ExitStatus) Unwrap() error { return e.Err }

// runFailed: remotefs could not run the command (exit 255, like ssh).
func runFailed(err error) error { return ExitStatus{Code: 255, Err: err} }

type runOptions struct {
	args     []string
	forcePTY bool
	noPTY    bool
}

func parseRunArgs(args []string) (*runOptions, error) {
	o := &runOptions{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--":
			o.args = args[i+1:]
		case "-t":
			o.forcePTY, o.noPTY = true, false
			continue
		case "-T":
			o.noPTY, o.forcePTY = true, false
			continue
		case "-h", "-help", "--help":
			fmt.Print(RunUsage)
			return nil, nil
		default:
			if strings.HasPrefix(a, "-") {
				return nil, cli.Usagef("run: unknown flag %s (put -- before a command that starts with -; see remotefs run --help)", a)
			}
			o.args = args[i:]
		}
		break
	}
	if len(o.args) == 0 {
		return nil, cli.Usagef("run: no command given (see remotefs run --help)")
	}
	return o, nil
}

// Run is `remotefs run ARGS`: it runs the command on the server of the
// mount holding the working directory and returns nil when it exited 0,
// an ExitStatus otherwise.
func Run(ctx context.Context, args []string) error {
	opts, err := parseRunArgs(args)
	if err != nil || opts == nil {
		return err
	}
	// The kernel's idea of the working directory: no symlinks, like the
	// mountpoints the daemons register.
	cwd, err := syscall.Getwd()
	if err != nil {
		return runFailed(fmt.Errorf("cannot tell the current directory: %v", err))
	}
	mp, err := findMount(cwd)
	if err != nil {
		return runFailed(err)
	}
	rel, err := filepath.Rel(mp, cwd)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return runFailed(fmt.Errorf("%s is not inside the mount %s", cwd, mp))
	}

	stdio, err := runStdio()
	if err != nil {
		return runFailed(err)
	}
	defer stdio.close()
	req := &control.RunRequest{Args: opts.args, Dir: filepath.ToSlash(rel)}
	usePTY := (isTerminal(0) && isTerminal(1) || opts.forcePTY) && !opts.noPTY
	if stdio.background {
		// A background job must not read the terminal (it would take the
		// shell's input): the command gets no stdin and no raw mode.
		usePTY = opts.forcePTY
	}
	rawFD := -1
	if usePTY {
		rows, cols := terminalSize()
		term := os.Getenv("TERM")
		if term == "" {
			term = "dumb"
		}
		req.Terminal = &control.Terminal{Term: term, Rows: rows, Cols: cols}
		if isTerminal(0) && !stdio.background {
			rawFD = 0
		}
	}

	// Catch the signals before the request goes out: from then on they are
	// forwarded, never fatal.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	if isTerminal(0) && !stdio.background {
		// ^Z would give the terminal back to the shell while the mount's
		// process still reads it for the command: ignore it (on a remote
		// pseudo-terminal ^Z is a key for the remote side anyway).
		signal.Notify(sigs, syscall.SIGTSTP)
	}
	defer signal.Stop(sigs)

	c, err := control.Open(ctx, control.SocketPath(mp), control.Request{Cmd: "run", Run: req}, stdio.files[:]...)
	if errors.Is(err, control.ErrNoDaemon) {
		if !mountinfo.IsRemotefs(mp) {
			// A socket left behind by a daemon that was killed.
			return runFailed(fmt.Errorf("%s is not inside a remotefs mount (%s was one once), so there is no server to run on", cwd, mp))
		}
		return runFailed(fmt.Errorf("%s is a remotefs mount, but no remotefs process serves it (it stopped): remount it (remotefs unmount %s, then remotefs mount)", mp, mp))
	}
	if err != nil {
		return runFailed(err)
	}
	defer c.Close()

	type next struct {
		r   *control.Reply
		err error
	}
	replies := make(chan next, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			r, err := c.Next()
			select {
			case replies <- next{r, err}:
			case <-quit:
				return
			}
			if err != nil || r.Done {
				return
			}
		}
	}()

	prog := cli.NewProgress()
	restore := func() {}
	defer func() { restore() }() // also on panic
	started, interrupted := false, 0
	for {
		select {
		case n := <-replies:
			if n.err != nil {
				restore()
				prog.Done()
				if started {
					return runFailed(errors.New("the mount's remotefs process went away while the command ran; it may still be running on the server"))
				}
				return runFailed(errors.New("the mount's remotefs process closed the connection without answering"))
			}
			r := n.r
			st, _ := r.Run()
			if !r.Done {
				if r.Progress != "" {
					prog.Show(r.Progress)
				}
				if st.Started && !started {
					started = true
					prog.Done()
					if rawFD >= 0 {
						undo, err := makeRaw(rawFD)
						if err == nil {
							restore = undo
						}
					}
					if req.Terminal != nil {
						// The command's output flows from now on.
						c.Send(control.RunEvent{Ready: true})
					}
					// The window may have changed while the writes were flushed.
					if t := req.Terminal; t != nil {
						if rows, cols := terminalSize(); rows != t.Rows || cols != t.Cols {
							c.Send(control.RunEvent{Resize: &control.Terminal{Rows: rows, Cols: cols}})
						}
					}
				}
				continue
			}
			restore()
			prog.Done()
			if r.Error != "" {
				if interrupted > 0 && !st.Started {
					return ExitStatus{Code: 130, Err: errors.New(r.Error)}
				}
				return runFailed(errors.New(r.Error))
			}
			if !st.Exited {
				return runFailed(errors.New("the command ended without an exit status"))
			}
			if st.ExitCode == 0 {
				return nil
			}
			return ExitStatus{Code: st.ExitCode}
		case s := <-sigs:
			if s == syscall.SIGTSTP {
				continue
			}
			if s == syscall.SIGWINCH {
				if req.Terminal != nil && started {
					rows, cols := terminalSize()
					c.Send(control.RunEvent{Resize: &control.Terminal{Rows: rows, Cols: cols}})
				}
				continue
			}
			c.Send(control.RunEvent{Signal: signalName(s)})
			if s == syscall.SIGINT {
				interrupted++
				if interrupted >= 3 {
					restore()
					prog.Done()
					return ExitStatus{Code: 130, Err: errors.New("interrupted three times: stopped waiting; the command is killed on the server")}
				}
			}
		}
	}
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGQUIT:
		return "QUIT"
	}
	return "TERM"
}

// findMount returns the remotefs mountpoint containing dir: the nearest
// directory, walking up, with a control socket or mounted as
// fuse.remotefs.
func findMount(dir string) (string, error) {
	for d := dir; ; {
		if fileExists(control.SocketPath(d)) {
			return d, nil
		}
		if mountinfo.IsRemotefs(d) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	return "", fmt.Errorf("%s is not inside a remotefs mount, so there is no server to run on: cd into a mounted folder first (remotefs status lists them)", dir)
}

// stdioFiles are the files handed to the daemon: stdin, stdout, stderr, or
// /dev/null for one that is closed (or for stdin in a background job).
type stdioFiles struct {
	files      [3]*os.File
	opened     []*os.File
	background bool
}

func runStdio() (*stdioFiles, error) {
	s := &stdioFiles{files: [3]*os.File{os.Stdin, os.Stdout, os.Stderr}}
	s.background = isTerminal(0) && !isForeground(0)
	for fd := range 3 {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && !(fd == 0 && s.background) {
			continue
		}
		flag := os.O_WRONLY
		if fd == 0 {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err != nil {
			s.close()
			return nil, err
		}
		s.files[fd] = f
		s.opened = append(s.opened, f)
	}
	return s, nil
}

func (s *stdioFiles) close() {
	for _, f := range s.opened {
		f.Close()
	}
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// isForeground reports whether this process is in the foreground job of
// the terminal fd.
func isForeground(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		return true // not our controlling terminal: nobody else reads it
	}
	return pgrp == unix.Getpgrp()
}

// terminalSize is the window size of the first of stdin, stdout, stderr
// that is a terminal, or 0, 0.
func terminalSize() (rows, cols int) {
	for fd := range 3 {
		if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil && ws.Row > 0 && ws.Col > 0 {
			return int(ws.Row), int(ws.Col)
		}
	}
	return 0, 0
}

// makeRaw puts the terminal fd in raw mode (as cfmakeraw, like ssh does
// for a remote pseudo-terminal: the remote one then handles echo, line
// editing and ^C) and returns the function that restores it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	done := false
	return func() {
		if !done {
			done = true
			unix.IoctlSetTermios(fd, unix.TCSETS, old)
		}
	}, nil
}
