package fs

// Echoes: server changes raised as inotify events on the mount.
//
// Linux raises inotify events only for operations that pass through the
// local kernel; invalidating the kernel's caches raises none a watcher
// listens for. So for each change the server made to something the mount
// showed (cache.Invalidation.Event), a helper process performs the
// matching operation through the mount: create (and ftruncate to the
// size, for IN_MODIFY), mkdir, symlink, unlink, rmdir, rename, an
// ftruncate of an open-for-write file to its new size (IN_MODIFY, then
// IN_CLOSE_WRITE), chmod to the new mode (IN_ATTRIB). The kernel raises
// the events as for any local program.
//
// The FUSE requests those operations cause carry the helper's thread id
// (the helper runs everything on its main thread, whose id is its pid).
// FS recognises them and answers from the cache alone: the change is
// already in the mirror, so a create returns the entry that is there, an
// unlink or rename just succeeds, a truncate returns the current
// attributes. Nothing reaches the cache's journal or the server: an echo
// changes no content, makes no conflict, and the server's feed never
// sees it (no loop). To let the kernel perform the operation, lookups by
// the helper see the name as it was before the change (absent before a
// create, the old entry before a removal): FS.pretend, set only for the
// one echo in flight.
//
// Limits: echoes come after the change reached the mirror (the feed's
// ~50 ms batching plus a stat); a name the user looked up in between is
// already in the kernel and its create echo fails harmlessly (no event);
// a file the user cannot write (mode without u+w) gets IN_ATTRIB instead
// of IN_MODIFY; renames are echoed only with the helper change feed (the
// other feeds report a removal and a creation); entries inside a new
// folder are echoed 150 ms after the folder, so recursive watchers can
// add their watch first; a read-only mount echoes nothing.
//
// Locking: the echo loop runs on its own goroutine and waits for the
// helper without holding any lock; echo.mu guards only pretend and is
// never held while calling the cache or the kernel. A helper that does
// not answer within echoTimeout is killed (its FUSE requests are
// interruptible) and started again for the next echo.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

const (
	echoTimeout    = 5 * time.Second
	echoQueueMax   = 20000                  // pending echoes beyond this are dropped (logged)
	echoDirSettle  = 150 * time.Millisecond // before echoing inside a folder just echoed
	echoHelperWait = 5 * time.Second        // the helper's start, up to its ready line
)

// EchoHelper starts the process that performs echo operations: it must
// run RunEchoHelper on the mount with its stdin and stdout connected to
// the returned pipes, and report its main thread's id first (see
// RunEchoHelper). cmd/remotefs starts itself as `remotefs __echo MNT`.
type EchoHelper func() (EchoProcess, error)

// EchoProcess is a started helper.
type EchoProcess struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	Kill   func()       // kills it
	Wait   func() error // reaps it
}

// echoOp is one operation for the helper.
type echoOp struct {
	kind string // create, mkdir, symlink, unlink, rmdir, rename, modify, chmod
	path string // relative to the mount
	arg  string // rename: the new path; symlink: the target
	num  int64  // create, modify: the size; chmod: the mode bits
}

type dirName struct {
	dir  cache.Ino
	name string
}

// pretendEntry is what a helper's lookup of a name sees while its echo is
// in flight: nothing (present false), or attr.
type pretendEntry struct {
	present bool
	attr    cache.Attr
}

type echoState struct {
	pid atomic.Int32 // the helper's thread id while it runs; 0 otherwise

	mu      sync.Mutex
	pretend map[dirName]pretendEntry
	queue   []cache.Invalidation
	dropped int
	signal  chan struct{}
	start   EchoHelper
	on      bool
	stop    context.CancelFunc
	stopped chan struct{} // closed when the echo loop has ended

	// used only by the echo loop
	proc       *echoProcess
	settled    map[cache.Ino]time.Time // folders echoed as created, and when
	startAfter time.Time               // a failed start is not retried before
}

type echoProcess struct {
	EchoProcess
	tid int32
	out *bufio.Reader
}

// EnableEchoes starts replaying server changes to inotify watchers through
// start's helper, until StopEchoes (after which it may be called again).
func (f *FS) EnableEchoes(start EchoHelper) {
	ctx, cancel := context.WithCancel(context.Background())
	f.echo.mu.Lock()
	f.echo.start, f.echo.on = start, true
	f.echo.signal = make(chan struct{}, 1)
	f.echo.pretend = map[dirName]pretendEntry{}
	f.echo.settled = map[cache.Ino]time.Time{}
	f.echo.stop, f.echo.stopped = cancel, make(chan struct{})
	f.echo.mu.Unlock()
	go func() {
		defer close(f.echo.stopped)
		f.echoLoop(ctx)
	}()
}

// StopEchoes stops replaying server changes and waits until the helper
// has exited (so it holds nothing open on the mount, e.g. for unmount).
func (f *FS) StopEchoes() {
	f.echo.mu.Lock()
	stop, stopped := f.echo.stop, f.echo.stopped
	f.echo.on, f.echo.queue = false, nil
	f.echo.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
}

// isEcho reports whether a request comes from the echo helper.
func (f *FS) isEcho(h fuse.Header) bool {
	pid := f.echo.pid.Load()
	return pid != 0 && int32(h.Pid) == pid
}

// pretended returns what an echo's lookup of dir/name sees, if set.
func (f *FS) pretended(dir cache.Ino, name string) (pretendEntry, bool) {
	f.echo.mu.Lock()
	defer f.echo.mu.Unlock()
	p, ok := f.echo.pretend[dirName{dir, name}]
	return p, ok
}

// queueEcho queues an event for the echo loop. It never blocks.
func (f *FS) queueEcho(inv cache.Invalidation) {
	f.echo.mu.Lock()
	if !f.echo.on {
		f.echo.mu.Unlock()
		return
	}
	if len(f.echo.queue) >= echoQueueMax {
		f.echo.dropped++
		f.echo.mu.Unlock()
		return
	}
	f.echo.queue = append(f.echo.queue, inv)
	f.echo.mu.Unlock()
	select {
	case f.echo.signal <- struct{}{}:
	default:
	}
}

func (f *FS) echoLoop(ctx context.Context) {
	defer f.stopEchoHelper()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.echo.signal:
		}
		f.echo.mu.Lock()
		batch, dropped := f.echo.queue, f.echo.dropped
		f.echo.queue, f.echo.dropped = nil, 0
		f.echo.mu.Unlock()
		if dropped > 0 {
			f.log.Warn("too many server changes at once; some were not raised as inotify events", "dropped", dropped)
		}
		for _, inv := range batch {
			if ctx.Err() != nil {
				return
			}
			f.echoOne(ctx, inv)
		}
	}
}

// echoOne replays one event. Failures only cost the event: the kernel's
// caches were invalidated before, and are again after a failure in case a
// pretended answer stuck.
func (f *FS) echoOne(ctx context.Context, inv cache.Invalidation) {
	op, pretend, ok := f.planEcho(inv)
	if !ok {
		return
	}
	for d := range pretend {
		f.waitSettled(ctx, d.dir)
	}
	f.echo.mu.Lock()
	for k, v := range pretend {
		f.echo.pretend[k] = v
	}
	f.echo.mu.Unlock()
	err := f.runEcho(ctx, op)
	f.echo.mu.Lock()
	for k := range pretend {
		delete(f.echo.pretend, k)
	}
	f.echo.mu.Unlock()
	if err != nil {
		f.log.Debug("echo for watchers failed", "op", op.kind, "path", op.path, "err", err)
		for k := range pretend {
			f.Invalidate(cache.Invalidation{Dir: k.dir, Name: k.name})
		}
		return
	}
	if op.kind == "mkdir" {
		if a, ok := f.store.Peek(inv.Dir, inv.Name); ok {
			f.echo.settled[a.Ino] = time.Now()
		}
	}
}

// planEcho turns an event into the operation that raises it, from the
// mirror as it is now: an event overtaken by later changes is skipped.
func (f *FS) planEcho(inv cache.Invalidation) (echoOp, map[dirName]pretendEntry, bool) {
	s := f.store
	join := func(dir cache.Ino, name string) (string, bool) {
		p, ok := s.PathOf(dir)
		if !ok {
			return "", false
		}
		return path.Join(p, name), true
	}
	switch inv.Event {
	case cache.EventCreated:
		cur, ok := s.Peek(inv.Dir, inv.Name)
		p, pok := join(inv.Dir, inv.Name)
		if !ok || !pok || cur.Ino != inv.Attr.Ino {
			return echoOp{}, nil, false
		}
		op := echoOp{path: p}
		switch {
		case cur.Mode.IsDir():
			op.kind = "mkdir"
		case cur.Mode&iofs.ModeSymlink != 0:
			op.kind, op.arg = "symlink", cur.Target
			if op.arg == "" {
				return echoOp{}, nil, false
			}
		case cur.Mode.IsRegular():
			op.kind, op.num = "create", cur.Size
		default:
			return echoOp{}, nil, false
		}
		return op, map[dirName]pretendEntry{{inv.Dir, inv.Name}: {}}, true
	case cache.EventRemoved:
		p, ok := join(inv.Dir, inv.Name)
		if _, still := s.Peek(inv.Dir, inv.Name); !ok || still {
			return echoOp{}, nil, false
		}
		op := echoOp{kind: "unlink", path: p}
		if inv.Attr.Mode.IsDir() {
			op.kind = "rmdir"
		}
		return op, map[dirName]pretendEntry{{inv.Dir, inv.Name}: {present: true, attr: inv.Attr}}, true
	case cache.EventModified, cache.EventAttrib:
		p, ok := s.PathOf(inv.Ino)
		cur, err := s.GetAttr(inv.Ino)
		if !ok || err != nil || p == "" {
			return echoOp{}, nil, false
		}
		if inv.Event == cache.EventModified && cur.Mode.IsRegular() && cur.Mode&0o200 != 0 {
			return echoOp{kind: "modify", path: p, num: cur.Size}, nil, true
		}
		return echoOp{kind: "chmod", path: p, num: int64(cur.Mode.Perm())}, nil, true
	case cache.EventRenamed:
		from, ok1 := join(inv.Dir, inv.Name)
		to, ok2 := join(inv.ToDir, inv.ToName)
		cur, ok3 := s.Peek(inv.ToDir, inv.ToName)
		if !ok1 || !ok2 || !ok3 || cur.Ino != inv.Ino {
			return echoOp{}, nil, false
		}
		if _, back := s.Peek(inv.Dir, inv.Name); back {
			return echoOp{}, nil, false // something new took the old name
		}
		pretend := map[dirName]pretendEntry{
			{inv.Dir, inv.Name}:     {present: true, attr: cur},
			{inv.ToDir, inv.ToName}: {present: inv.Replaced.Ino != 0, attr: inv.Replaced},
		}
		return echoOp{kind: "rename", path: from, arg: to}, pretend, true
	}
	return echoOp{}, nil, false
}

// waitSettled gives recursive watchers time to watch a folder that was
// just echoed as created before anything inside it is echoed.
func (f *FS) waitSettled(ctx context.Context, dir cache.Ino) {
	t, ok := f.echo.settled[dir]
	if !ok {
		return
	}
	if d := echoDirSettle - time.Since(t); d > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	for ino, at := range f.echo.settled {
		if time.Since(at) > echoDirSettle {
			delete(f.echo.settled, ino)
		}
	}
}

// runEcho sends op to the helper (starting it if needed) and waits for
// its answer.
func (f *FS) runEcho(ctx context.Context, op echoOp) error {
	if f.echo.proc == nil {
		if time.Now().Before(f.echo.startAfter) {
			return errors.New("echo helper unavailable")
		}
		p, err := f.startEchoHelper()
		if err != nil {
			f.log.Warn("cannot start the helper that raises inotify events for server changes; retrying in 30s", "err", err)
			f.echo.startAfter = time.Now().Add(30 * time.Second)
			return err
		}
		f.echo.proc = p
	}
	p := f.echo.proc
	done := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(p.Stdin, encodeEchoOp(op)); err != nil {
			done <- err
			return
		}
		line, err := p.out.ReadString('\n')
		if err != nil {
			done <- err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line != "ok" {
			done <- errors.New(strings.TrimPrefix(line, "error: "))
			return
		}
		done <- nil
	}()
	timer := time.NewTimer(echoTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil && !isEchoOpError(err) {
			f.stopEchoHelper() // the pipe broke: start a new one next time
		}
		return err
	case <-timer.C:
		f.log.Warn("the echo helper did not answer; restarting it", "op", op.kind, "path", op.path)
	case <-ctx.Done():
	}
	f.stopEchoHelper()
	<-done
	return errors.New("echo helper stopped")
}

// isEchoOpError: the helper answered with an error (it is still fine).
func isEchoOpError(err error) bool {
	return !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EPIPE) &&
		!errors.Is(err, io.ErrUnexpectedEOF)
}

func (f *FS) startEchoHelper() (*echoProcess, error) {
	f.echo.mu.Lock()
	start := f.echo.start
	f.echo.mu.Unlock()
	if start == nil {
		return nil, errors.New("no echo helper")
	}
	ep, err := start()
	if err != nil {
		return nil, err
	}
	p := &echoProcess{EchoProcess: ep, out: bufio.NewReader(ep.Stdout)}
	ready := make(chan error, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		if err != nil {
			ready <- fmt.Errorf("echo helper: %w", err)
			return
		}
		tid, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(line), "ready "), 10, 32)
		if err != nil || tid <= 0 {
			ready <- fmt.Errorf("echo helper: unexpected first line %q", line)
			return
		}
		p.tid = int32(tid)
		ready <- nil
	}()
	select {
	case err = <-ready:
	case <-time.After(echoHelperWait):
		err = errors.New("echo helper did not start")
	}
	if err != nil {
		ep.Kill()
		ep.Wait()
		return nil, err
	}
	f.echo.pid.Store(p.tid)
	return p, nil
}

func (f *FS) stopEchoHelper() {
	p := f.echo.proc
	if p == nil {
		return
	}
	f.echo.proc = nil
	f.echo.pid.Store(0)
	p.Stdin.Close()
	p.Kill()
	p.Wait()
}

// The helper protocol: a request is four NUL-terminated fields (kind,
// path, arg, number); the answer one line, "ok" or "error: TEXT".
func encodeEchoOp(op echoOp) string {
	return op.kind + "\x00" + op.path + "\x00" + op.arg + "\x00" + strconv.FormatInt(op.num, 10) + "\x00"
}

func readEchoOp(r *bufio.Reader) (echoOp, error) {
	var fields [4]string
	for i := range fields {
		s, err := r.ReadString(0)
		if err != nil {
			if err == io.EOF && i == 0 && s == "" {
				return echoOp{}, io.EOF
			}
			return echoOp{}, fmt.Errorf("truncated request: %w", io.ErrUnexpectedEOF)
		}
		fields[i] = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(fields[3], 10, 64)
	if err != nil {
		return echoOp{}, fmt.Errorf("bad number %q", fields[3])
	}
	op := echoOp{kind: fields[0], path: fields[1], arg: fields[2], num: n}
	if !validEchoPath(op.path) || (op.kind == "rename" && !validEchoPath(op.arg)) {
		return echoOp{}, fmt.Errorf("bad path in %q request", op.kind)
	}
	return op, nil
}

// validEchoPath: a clean, non-empty relative path (it is joined to the
// mountpoint, so it must not climb out of it).
func validEchoPath(p string) bool {
	return p != "" && !path.IsAbs(p) && path.Clean(p) == p && p != ".." && !strings.HasPrefix(p, "../") &&
		!strings.ContainsRune(p, 0)
}

// RunEchoHelper is the helper's side: it performs each request on the
// mount at mountpoint and answers. It must run on the thread whose id it
// reports (the caller locks its goroutine to the process's main thread).
// It returns at EOF on in.
func RunEchoHelper(mountpoint string, in io.Reader, out io.Writer, tid int) error {
	if _, err := fmt.Fprintf(out, "ready %d\n", tid); err != nil {
		return err
	}
	r := bufio.NewReader(in)
	for {
		op, err := readEchoOp(r)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		reply := "ok\n"
		if err := doEcho(mountpoint, op); err != nil {
			reply = "error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
		}
		if _, err := io.WriteString(out, reply); err != nil {
			return err
		}
	}
}

func doEcho(mountpoint string, op echoOp) error {
	p := filepath.Join(mountpoint, filepath.FromSlash(op.path))
	switch op.kind {
	case "create":
		fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			return &iofs.PathError{Op: "create", Path: op.path, Err: err}
		}
		if op.num > 0 {
			err = syscall.Ftruncate(fd, op.num)
		}
		if cerr := syscall.Close(fd); err == nil {
			err = cerr
		}
		return err
	case "modify":
		fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return &iofs.PathError{Op: "open", Path: op.path, Err: err}
		}
		err = syscall.Ftruncate(fd, op.num)
		if cerr := syscall.Close(fd); err == nil {
			err = cerr
		}
		return err
	case "chmod":
		return syscall.Chmod(p, uint32(op.num)&0o7777)
	case "mkdir":
		return syscall.Mkdir(p, 0o755)
	case "symlink":
		return syscall.Symlink(op.arg, p)
	case "unlink":
		return syscall.Unlink(p)
	case "rmdir":
		return syscall.Rmdir(p)
	case "rename":
		return syscall.Rename(p, filepath.Join(mountpoint, filepath.FromSlash(op.arg)))
	}
	return fmt.Errorf("unknown echo operation %q", op.kind)
}

// echoHandle is the open file of an echo: nothing to read, write or
// upload.
type echoHandle struct{}

var (
	_ fs.HandleFlusher  = echoHandle{}
	_ fs.HandleReleaser = echoHandle{}
)

func (echoHandle) Flush(ctx context.Context, req *fuse.FlushRequest) error     { return nil }
func (echoHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error { return nil }
