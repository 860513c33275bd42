package agent

// The change-feed helper: `remotefs __watch ROOT` runs ON THE SERVER (the
// mount uploads its own binary there, see proto.Client.Watch) and reports
// changes under ROOT with recursive inotify, as proto's watch records.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"remotefs/agent/proto"
)

const watchUsage = `usage: remotefs __watch [--heartbeat-timeout D] [--ignore GLOB]... [--] ROOT

Internal: the change-feed helper a mount runs on the server. It writes
records "KIND\0PATH\0" on stdout and exits at stdin EOF or when stdin was
silent for the heartbeat timeout.`

// Watch runs the change-feed helper (`remotefs __watch`): it watches the
// root named in args and writes records to stdout until stdin ends or is
// silent for the heartbeat timeout (nil), or a fatal error. A malformed
// command line is an error wrapping ErrUsage.
func Watch(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fl := flag.NewFlagSet(proto.WatchCommand, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	idle := fl.Duration("heartbeat-timeout", 30*time.Second, "exit when stdin was silent this long")
	var ignore stringList
	fl.Var(&ignore, "ignore", "base-name glob of directories not to watch inside (repeatable)")
	if err := fl.Parse(args); err != nil {
		return usageErr(err.Error() + "\n" + watchUsage)
	}
	if fl.NArg() != 1 || *idle <= 0 {
		return usageErr(watchUsage)
	}
	for _, g := range ignore {
		if _, err := path.Match(g, ""); err != nil {
			return usageErr(fmt.Sprintf("bad --ignore pattern %q", g))
		}
	}
	out := bufio.NewWriterSize(stdout, 64*1024)
	err := runWatcher(ctx, watcherConfig{Root: fl.Arg(0), Ignore: ignore, Idle: *idle}, stdin, out)
	out.Flush()
	if errors.Is(err, errWatcherStdinClosed) {
		return nil
	}
	return err
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// watcherConfig is what the helper watches.
type watcherConfig struct {
	Root   string
	Ignore []string      // base-name globs of directories not watched inside
	Idle   time.Duration // exit when stdin was silent this long
	// maxWatches > 0 makes adding more watches fail as if the kernel's
	// limit was reached (tests).
	maxWatches int
}

var (
	errWatcherStdinClosed = errors.New("stdin closed")
	errWatcherNoHeartbeat = errors.New("no heartbeat on stdin")
	errWatcherRootGone    = errors.New("the watched folder was removed or moved")
	errWatcherLimit       = errors.New("inotify watch limit reached (raise fs.inotify.max_user_watches)")
)

// watchMask is what is watched on every directory.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// watcher is the helper's state. Only runWatcher's goroutine uses it.
type watcher struct {
	cfg   watcherConfig
	root  string
	fd    int
	byWD  map[int32]string // watch descriptor -> root-relative directory
	byDir map[string]int32
	out   *bufio.Writer
	// last record written in this batch of events, to drop immediate
	// repeats (a write's MODIFY, CLOSE_WRITE, ATTRIB).
	lastKind byte
	lastPath string
	// the IN_MOVED_FROM just reported (its cookie and path), while it is
	// the last record written: its IN_MOVED_TO is then reported as R.
	moveCookie uint32
	moveFrom   string
	werr       error // a write to stdout failed
	limit      bool  // the watch limit was hit
	rootGone   bool
	// overflow: events were lost, folders created meanwhile may lack a
	// watch: walk the tree again.
	overflow bool
}

// runWatcher watches cfg.Root and writes records to out until ctx ends,
// stdin reaches EOF (errWatcherStdinClosed), stdin is silent for cfg.Idle
// (errWatcherNoHeartbeat), or a fatal error (also written as an E or L
// record). out is flushed after each batch of events.
func runWatcher(ctx context.Context, cfg watcherConfig, stdin io.Reader, out io.Writer) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bw, ok := out.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(out, 64*1024)
	}
	w := &watcher{cfg: cfg, root: filepath.Clean(cfg.Root), byWD: map[int32]string{}, byDir: map[string]int32{}, out: bw}
	defer func() {
		switch {
		case errors.Is(err, errWatcherLimit):
			w.emit(proto.WatchRecOverflow, "")
			w.emit(proto.WatchRecLimit, err.Error())
		case err != nil && !errors.Is(err, errWatcherStdinClosed) && !errors.Is(err, errWatcherNoHeartbeat) &&
			!errors.Is(err, context.Canceled) && w.werr == nil:
			w.emit(proto.WatchRecError, err.Error())
		}
		bw.Flush()
	}()

	// The heartbeat: any byte on stdin; EOF ends the helper.
	beats := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				select {
				case beats <- struct{}{}:
				default:
				}
			}
			if err != nil {
				cancel(errWatcherStdinClosed)
				return
			}
			if ctx.Err() != nil {
				return
			}
		}
	}()
	go func() {
		t := time.NewTimer(cfg.Idle)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-beats:
				t.Reset(cfg.Idle)
			case <-t.C:
				cancel(errWatcherNoHeartbeat)
				return
			}
		}
	}()

	fi, err := os.Stat(w.root)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", w.root)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	w.fd = fd
	// A non-blocking fd makes a pollable File: Read waits in the runtime
	// poller and a deadline interrupts it. The raw fd stays usable for
	// add/rm watch (f.Fd() would make it blocking).
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	go func() {
		<-ctx.Done()
		f.SetReadDeadline(time.Now())
	}()
	stopped := func() error {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return ctx.Err()
	}

	if !w.watchTree(ctx, "", false) {
		if w.limit {
			return errWatcherLimit
		}
		if ctx.Err() != nil {
			return stopped()
		}
		return fmt.Errorf("cannot watch %s", w.root)
	}
	if w.limit {
		return errWatcherLimit
	}
	if ctx.Err() != nil {
		return stopped()
	}
	w.emit(proto.WatchRecStarted, "")
	if err := w.flush(); err != nil {
		return err
	}

	buf := make([]byte, 256*1024) // holds many events of up to NAME_MAX bytes
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return fmt.Errorf("reading inotify: %w", err)
		}
		w.handle(ctx, buf[:n])
		if w.overflow && !w.rootGone {
			// Watch what lacks a watch (adding one again is harmless).
			w.overflow = false
			w.watchTree(ctx, "", false)
		}
		if err := w.flush(); err != nil {
			return err
		}
		switch {
		case w.limit:
			return errWatcherLimit
		case w.rootGone:
			return errWatcherRootGone
		case ctx.Err() != nil:
			return stopped()
		}
	}
}

// flush sends what was written, ending a batch.
func (w *watcher) flush() error {
	w.lastKind, w.lastPath = 0, ""
	if w.werr != nil {
		return w.werr
	}
	if err := w.out.Flush(); err != nil {
		w.werr = err
	}
	return w.werr
}

// emit writes one record, unless it repeats the one just written.
func (w *watcher) emit(kind byte, p string) {
	if w.werr != nil || (kind == w.lastKind && p == w.lastPath && kind != proto.WatchRecOverflow) {
		return
	}
	w.lastKind, w.lastPath = kind, p
	w.moveCookie, w.moveFrom = 0, ""
	if err := proto.WriteWatchRecord(w.out, kind, p); err != nil {
		w.werr = err
	}
}

func (w *watcher) abs(rel string) string {
	switch {
	case rel == "":
		return w.root
	case w.root == "/":
		return "/" + rel
	}
	return w.root + "/" + rel
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (w *watcher) ignored(name string) bool {
	for _, g := range w.cfg.Ignore {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// addWatch watches the directory rel; false when it cannot (gone, not a
// directory, no permission, or the limit: w.limit).
func (w *watcher) addWatch(rel string) bool {
	wd, err := unix.InotifyAddWatch(w.fd, w.abs(rel), watchMask)
	if err == nil && w.cfg.maxWatches > 0 && len(w.byWD) >= w.cfg.maxWatches {
		if _, known := w.byWD[int32(wd)]; !known {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			err = unix.ENOSPC
		}
	}
	if err != nil {
		if err == unix.ENOSPC {
			w.limit = true
		}
		return false
	}
	if old, ok := w.byDir[rel]; ok && old != int32(wd) {
		delete(w.byWD, old)
	}
	if oldRel, ok := w.byWD[int32(wd)]; ok && oldRel != rel {
		delete(w.byDir, oldRel)
	}
	w.byWD[int32(wd)] = rel
	w.byDir[rel] = int32(wd)
	return true
}

// watchTree watches rel and every directory under it (not inside ignored
// ones). With report it also reports what it finds (files may have been
// created before the watch was in place). It returns whether rel itself is
// watched.
func (w *watcher) watchTree(ctx context.Context, rel string, report bool) bool {
	if !w.addWatch(rel) {
		return false
	}
	stack := []string{rel}
	for len(stack) > 0 && !w.limit && ctx.Err() == nil {
		dir := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d, err := os.Open(w.abs(dir))
		if err != nil {
			continue
		}
		entries, _ := d.ReadDir(-1)
		d.Close()
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, proto.TempPrefix) {
				continue
			}
			p := joinRel(dir, name)
			if !e.IsDir() {
				if report {
					w.emit(proto.WatchRecChange, p)
				}
				continue
			}
			if report {
				w.emit(proto.WatchRecDir, p)
			}
			if w.ignored(name) {
				continue
			}
			if w.addWatch(p) {
				stack = append(stack, p)
			} else if w.limit {
				break
			}
		}
	}
	return true
}

// unwatchTree drops the watches of rel and everything under it (a
// directory moved away: its watches would report under the old name).
func (w *watcher) unwatchTree(rel string) {
	prefix := rel + "/"
	for dir, wd := range w.byDir {
		if dir == rel || strings.HasPrefix(dir, prefix) {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.byDir, dir)
			delete(w.byWD, wd)
		}
	}
}

// handle turns a buffer of inotify events into records.
func (w *watcher) handle(ctx context.Context, buf []byte) {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:]))
		mask := binary.NativeEndian.Uint32(buf[4:])
		cookie := binary.NativeEndian.Uint32(buf[8:])
		nameLen := int(binary.NativeEndian.Uint32(buf[12:]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(buf) {
			return // cannot happen: the kernel returns whole events
		}
		name := buf[unix.SizeofInotifyEvent:end]
		if i := indexNUL(name); i >= 0 {
			name = name[:i]
		}
		w.event(ctx, wd, mask, cookie, string(name))
		buf = buf[end:]
	}
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// event handles one inotify event.
func (w *watcher) event(ctx context.Context, wd int32, mask, cookie uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.emit(proto.WatchRecOverflow, "event queue overflow")
		w.overflow = true
		return
	}
	dir, ok := w.byWD[wd]
	if mask&unix.IN_IGNORED != 0 {
		if ok {
			delete(w.byWD, wd)
			if w.byDir[dir] == wd {
				delete(w.byDir, dir)
			}
			if dir == "" {
				w.rootGone = true
			}
		}
		return
	}
	if !ok {
		return // a watch already dropped
	}
	if name == "" {
		// The watched directory itself. Its parent reports the same
		// change with the name, except for the root.
		if dir == "" {
			switch {
			case mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
				w.emit(proto.WatchRecOverflow, "root removed or moved")
				w.rootGone = true
			case mask&unix.IN_ATTRIB != 0:
				w.emit(proto.WatchRecDir, "")
			}
		}
		return
	}
	if strings.HasPrefix(name, proto.TempPrefix) {
		return
	}
	p := joinRel(dir, name)
	isDir := mask&unix.IN_ISDIR != 0
	switch {
	case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		if isDir {
			if mask&unix.IN_MOVED_FROM != 0 {
				w.unwatchTree(p)
			}
			w.emit(proto.WatchRecGoneDir, p)
		} else {
			w.emit(proto.WatchRecGone, p)
		}
		if mask&unix.IN_MOVED_FROM != 0 && cookie != 0 {
			w.moveCookie, w.moveFrom = cookie, p
		}
	case mask&unix.IN_MOVED_TO != 0 && cookie != 0 && cookie == w.moveCookie && w.moveFrom != "":
		// A rename within the tree: the mount moves what it has cached
		// (a folder with everything under it), so a moved folder's
		// contents need not be reported one by one.
		w.emit(proto.WatchRecMoved, p)
		if isDir && !w.ignored(name) {
			w.watchTree(ctx, p, false)
		}
	case isDir && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
		w.emit(proto.WatchRecDir, p)
		if !w.ignored(name) {
			w.watchTree(ctx, p, true)
		}
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_ATTRIB) != 0:
		if isDir {
			w.emit(proto.WatchRecDir, p)
		} else {
			w.emit(proto.WatchRecChange, p)
		}
	}
}
