package daemon

// The daemon side of `remotefs run` (the CLI side, and how the two talk,
// are in runclient.go and internal/control/run.go).
//
// The daemon receives the CLI's stdin, stdout and stderr as open files and
// wires the ssh session straight to them: output never passes through the
// CLI. It runs nothing unless the mount is online and every pending write
// reached the server first. While the command runs it passes on the CLI's
// window sizes and signals; when the CLI goes away it kills the command.
//
// How it could hang, and why it does not:
//   - A read from the user's terminal cannot be interrupted, and a read
//     still pending when the command ends would take the next key typed
//     into the user's shell. stopReader reads only after poll(2) says there
//     is input, and is stopped before the reply that lets the CLI exit.
//   - Writes to the user's stdout block while nobody reads it (a stopped
//     pager): the command is then held back too, as with ssh. The session
//     ends when the CLI goes away (Kill), and the write fails once the
//     reader exits.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"remotefs/conn"
	"remotefs/internal/control"
)

// runCommand answers a "run" request.
func (d *daemon) runCommand(ctx context.Context, req control.Request, progress func(string)) control.Reply {
	fail := func(format string, args ...any) control.Reply {
		return control.Reply{Error: fmt.Sprintf(format, args...)}
	}
	if req.Stream == nil {
		return fail("run: no connection to the client")
	}
	files := req.Stream.Files()
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	rr := req.Run
	if rr == nil || len(rr.Args) == 0 {
		return fail("run: no command given")
	}
	if len(files) != 3 {
		return fail("run: expected stdin, stdout and stderr with the request, got %d files", len(files))
	}
	rel, err := cleanRunDir(rr.Dir)
	if err != nil {
		return fail("run: %v", err)
	}
	if d.mgr == nil {
		return fail("the mount is offline (mounted with --offline): nothing was run")
	}
	if st, since, lastErr := d.mgr.State(); st != conn.Online {
		msg := fmt.Sprintf("%s is %s since %s", d.cfg.Spec.Host, st, since.Local().Format("15:04:05"))
		if lastErr != nil {
			msg += " (" + lastErr.Error() + ")"
		}
		return fail("%s: nothing was run", msg)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The client's messages. gone is closed when it closes the connection
	// (Receive fails), or after the handler returned.
	events := make(chan control.RunEvent)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			var ev control.RunEvent
			if err := req.Stream.Receive(&ev); err != nil {
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()

	// Flush first: the command must see every save made through the
	// mount. An interrupt or the client going away cancels it, and then
	// nothing runs.
	interrupted := errors.New("interrupted before the command started: nothing was run")
	var cause error
	flushed := make(chan error, 1)
	go func() { flushed <- d.flush(ctx, progress) }()
	var ferr error
wait:
	for {
		select {
		case ferr = <-flushed: // soon after cancel, too
			break wait
		case ev := <-events:
			if ev.Signal != "" {
				cause = interrupted
				cancel()
			}
		case <-gone:
			gone = nil
			cause = interrupted
			cancel()
		}
	}
	if cause != nil {
		return control.Reply{Error: cause.Error()}
	}
	if ferr != nil {
		return fail("not every save reached the server, so nothing was run: %v", ferr)
	}

	c := d.mgr.Client()
	if c == nil {
		_, _, lastErr := d.mgr.State()
		return fail("%s went offline (%v): nothing was run", d.cfg.Spec.Host, lastErr)
	}
	dir := path.Join(c.RootPath(), rel)
	cmdline, err := conn.RemoteCommand(dir, rr.Args)
	if err != nil {
		return fail("run: %v", err)
	}
	stdin, err := newStopReader(files[0])
	if err != nil {
		return fail("run: %v", err)
	}
	defer stdin.Stop()
	opts := conn.ExecOptions{Stdin: stdin, Stdout: files[1], Stderr: files[2]}
	// On a pseudo-terminal, output waits until the client has put its
	// terminal in raw mode (RunEvent.Ready), or 2s.
	outputGate := newGate()
	defer outputGate.open()
	if t := rr.Terminal; t != nil {
		opts.PTY = &conn.PTY{Term: t.Term, Rows: t.Rows, Cols: t.Cols}
		opts.Stdout = gatedWriter{outputGate, files[1]}
		defer time.AfterFunc(2*time.Second, outputGate.open).Stop()
	} else {
		outputGate.open()
	}
	// Interrupts while the session opens end the start (ctx).
	startc, startDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(startDone)
		for {
			select {
			case ev := <-events:
				if ev.Signal != "" {
					cancel()
				}
			case <-gone:
				cancel()
				return
			case <-startc:
				return
			}
		}
	}()
	started := time.Now()
	proc, err := c.Start(ctx, cmdline, opts)
	close(startc)
	<-startDone
	if err != nil {
		if ctx.Err() != nil {
			return control.Reply{Error: interrupted.Error()}
		}
		return fail("could not start the command: %v", err)
	}
	d.log.Info("run", "dir", dir, "args", strings.Join(rr.Args, " "), "pty", opts.PTY != nil)
	req.Stream.Send(control.RunReply(control.RunStatus{Started: true}))

	type result struct {
		st  conn.ExitStatus
		err error
	}
	waited := make(chan result, 1)
	go func() {
		st, err := proc.Wait()
		waited <- result{st, err}
	}()
	for {
		select {
		case r := <-waited:
			// Never read the user's terminal again once the command ended.
			stdin.Stop()
			// The command may have written files on the server: catch the
			// mirror up before answering, so `remotefs run make && ls out/`
			// sees what make wrote (one bulk listing; bounded).
			d.catchUp(10 * time.Second)
			if r.err != nil {
				d.log.Warn("run: lost the command", "dir", dir, "args", strings.Join(rr.Args, " "), "err", r.err)
				return control.Reply{Error: fmt.Sprintf("lost the command (it may still be running on the server): %v", r.err),
					Extra: control.RunReply(control.RunStatus{Started: true}).Extra}
			}
			d.log.Info("run: exited", "code", r.st.Code, "signal", r.st.Signal, "took", time.Since(started).Round(time.Millisecond))
			return control.RunReply(control.RunStatus{Started: true, Exited: true, ExitCode: r.st.Code, Signal: r.st.Signal})
		case ev := <-events:
			if ev.Ready {
				outputGate.open()
			}
			if ev.Resize != nil && opts.PTY != nil {
				proc.Resize(ev.Resize.Rows, ev.Resize.Cols)
			}
			if ev.Signal != "" {
				proc.Signal(ev.Signal)
			}
		case <-gone:
			// The CLI died or gave up: nobody sees the output any more.
			gone = nil
			outputGate.open()
			d.log.Info("run: the client went away; killing the command", "dir", dir)
			stdin.Stop()
			proc.Kill()
		}
	}
}

// cleanRunDir checks the client's working directory (relative to the
// mount root, slash-separated) and returns it cleaned.
func cleanRunDir(dir string) (string, error) {
	if strings.IndexByte(dir, 0) >= 0 {
		return "", errors.New("NUL in the working directory")
	}
	if path.IsAbs(dir) {
		return "", fmt.Errorf("working directory %q is not relative to the mount", dir)
	}
	clean := path.Clean("/" + dir)[1:]
	for _, part := range strings.Split(dir, "/") {
		if part == ".." {
			return "", fmt.Errorf("working directory %q leaves the mount", dir)
		}
	}
	return clean, nil
}

// stopReader reads a descriptor passed by `remotefs run` (usually the
// user's terminal, or a pipe) until Stop. It waits in poll(2) for input or
// for Stop, and reads only input that is there, so after Stop returns it
// never reads again, though a blocking read on a terminal could not be
// interrupted. It leaves the descriptor's flags alone: they are shared
// with the user's shell.
type stopReader struct {
	// Set at construction.
	rc    syscall.RawConn
	wakeW *os.File // closed by Stop: wakes poll

	mu      sync.Mutex // held during a read(2)
	wakeR   int        // guarded by mu; -1 once closed
	active  int        // guarded by mu: Reads inside poll
	stopped bool       // guarded by mu
}

var _ io.Reader = (*stopReader)(nil)

func newStopReader(f *os.File) (*stopReader, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	return &stopReader{rc: rc, wakeR: p[0], wakeW: os.NewFile(uintptr(p[1]), "stop-wake")}, nil
}

func (r *stopReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return 0, io.EOF
		}
		r.active++
		wake := r.wakeR
		r.mu.Unlock()

		var ready bool
		var perr error
		cerr := r.rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
			_, perr = unix.Poll(fds, -1)
			ready = fds[0].Revents != 0 && fds[1].Revents == 0
		})

		r.mu.Lock()
		r.active--
		if r.stopped {
			r.closeWakeLocked()
			r.mu.Unlock()
			return 0, io.EOF
		}
		if cerr != nil {
			r.mu.Unlock()
			return 0, cerr
		}
		if perr != nil || !ready {
			r.mu.Unlock()
			if perr != nil && perr != unix.EINTR {
				return 0, perr
			}
			continue
		}
		var n int
		var rerr error
		cerr = r.rc.Control(func(fd uintptr) { n, rerr = unix.Read(int(fd), b) })
		r.mu.Unlock()
		switch {
		case cerr != nil:
			return 0, cerr
		case rerr == unix.EAGAIN || rerr == unix.EINTR:
			continue
		case rerr == unix.EIO:
			// A terminal that was hung up.
			return 0, io.EOF
		case rerr != nil:
			return 0, rerr
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Stop makes Read return io.EOF and never read again; it waits for a
// read(2) in progress (which does not block: poll said input was there).
func (r *stopReader) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.stopped = true
	r.wakeW.Close()
	if r.active == 0 {
		r.closeWakeLocked()
	}
}

func (r *stopReader) closeWakeLocked() {
	if r.wakeR >= 0 && r.active == 0 {
		unix.Close(r.wakeR)
		r.wakeR = -1
	}
}

// gate is closed until open is called (any number of times).
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// gatedWriter holds writes until its gate opens.
type gatedWriter struct {
	g *gate
	w io.Writer
}

func (w gatedWriter) Write(p []byte) (int, error) {
	<-w.g.ch
	return w.w.Write(p)
}
