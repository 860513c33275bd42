package conn

// The server-side change feed (Client.Watch): what changed under the root,
// pushed by the server, so the cache's mirror follows changes made there.
//
// Modes, tried in this order by "auto":
//
//   - helper: the remotefs binary itself, when the server's `uname -sm` is
//     this binary's GOOS/GOARCH (Linux only). It is uploaded over SFTP to
//     $HOME/.cache/remotefs/remotefs-helper-<16 hex of its sha256> (folder
//     0700, file 0700; a temporary name then a rename; skipped when a file
//     of that name and size is there) and run over an exec channel as
//     `remotefs-helper-... __watch -- ROOT` (package agent):
//     recursive inotify, a new folder's contents reported as it is walked,
//     records `KIND NUL PATH NUL` on stdout. The most exact mode.
//   - inotifywait (a version with %0 and --no-newline, e.g. 3.22): `sh -c
//     'inotifywait -m -r ... & ...'`, records `EVENTS|PATH NUL`. It does
//     not report what a new folder held when it appeared (Change.Dir says
//     to list it).
//   - poll: every PollInterval one exec of `date +%s.%N; find ROOT/
//     -newerct @T -printf ...` (GNU find) lists what changed by ctime since
//     the previous poll, T taken from the server's own clock (minus 1s for
//     timestamp granularity; what the previous poll saw with the same ctime
//     is not reported again), so clock skew does not matter. A removal
//     shows as its folder changing (Dir, the root as ""); renames as the
//     new name plus both folders.
//
// The long-running modes die with the session: the client writes a byte to
// their stdin every 5s; they exit at stdin EOF (closed by Watch when its
// ctx ends, by sshd when the connection drops) or when no byte came for
// 30s (a link that died silently). Nothing is left running on the server.
// When ctx ends, Watch closes stdin, waits up to 3s for the command to end
// and then closes the session.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// Change is one thing the server says changed, relative to the root.
type Change struct {
	// Path is root-relative. It is "" only with Overflow, or with Dir for
	// the root itself (the poll mode reports that the root's entries
	// changed that way: relist it).
	Path string
	// Gone: deleted or moved away (IN_DELETE, IN_MOVED_FROM); else
	// created, modified, attributes changed or moved here.
	Gone bool
	// Dir: the path is (was) a directory, when known. A Dir change that is
	// not Gone means the directory exists and its entries may have
	// changed: list it (and, when it is new, what is under it). Poll mode
	// reports removals that way (the parent changed), and inotifywait mode
	// does not report what a new directory held when it appeared.
	Dir bool
	// Overflow: events were lost; rescan everything. A batch holding an
	// Overflow change holds nothing else.
	Overflow bool
	// From, when set, is where Path was moved from (a rename on the
	// server, reported only by the helper mode; the other modes report a
	// removal and a creation). The same batch also holds a Gone change for
	// From. Path may have changed again since the rename.
	From string
}

// WatchOptions tune Watch. The zero value is fine.
type WatchOptions struct {
	// Mode picks the mechanism: "auto" (or ""): the helper if possible,
	// else inotifywait if the server has it, else poll; or "helper",
	// "inotifywait", "poll" to force one (Watch fails when it cannot run).
	Mode string
	// PollInterval is the poll mode's period (default 2s).
	PollInterval time.Duration
	// Ignore holds base-name globs (path.Match syntax, e.g.
	// "node_modules"): changes inside a directory whose name matches are
	// not reported and the helper and inotifywait do not watch inside it.
	// The entry itself is still reported, like TreeWalker's prune.
	Ignore []string
	// Logger gets the mode chosen, fallbacks and restarts (default: the
	// connection's logger).
	Logger *slog.Logger
}

// Watch modes, as WatchOptions.Mode and as passed to started.
const (
	WatchAuto        = "auto"
	WatchHelper      = "helper"
	WatchInotifywait = "inotifywait"
	WatchPoll        = "poll"
)

// WatchHelperCommand is the hidden subcommand of the remotefs binary that
// runs the watch helper; its output format is proto's watch records.
const WatchHelperCommand = proto.WatchCommand

// Timing of the feed.
const (
	watchCoalesce   = 50 * time.Millisecond
	watchHeartbeat  = 5 * time.Second
	watchHelperIdle = 30 * time.Second // the helper's heartbeat timeout
	watchStopGrace  = 3 * time.Second  // after stdin EOF, before SIGKILL
	watchPollMargin = time.Second      // poll: look back this far (timestamp granularity)
	watchMaxPending = 100000           // more distinct paths pending: report Overflow instead
	watchMaxRetry   = 30 * time.Second
	defaultPollTime = 2 * time.Second
)

var watchHelper atomic.Pointer[func() (string, error)]

// SetWatchHelper says how to find a remotefs binary that understands
// WatchHelperCommand (cmd/remotefs passes os.Executable). Without it the
// helper mode is unavailable: a test binary must not be uploaded as one.
func SetWatchHelper(executable func() (string, error)) {
	if executable == nil {
		watchHelper.Store(nil)
		return
	}
	watchHelper.Store(&executable)
}

// watchHelperDir, when set (tests), replaces $HOME/.cache/remotefs as the
// server folder holding helpers. Set it before any Watch.
var watchHelperDir string

// watchModeError: the mode cannot run on this server; try the next one.
type watchModeError struct {
	mode string
	err  error
	// limit: the inotify watch limit was hit (no inotify mode will do).
	limit bool
}

func (e *watchModeError) Error() string { return fmt.Sprintf("watch mode %s: %v", e.mode, e.err) }
func (e *watchModeError) Unwrap() error { return e.err }

// Watch streams the server's changes under the root to handle, in batches
// (coalesced over about 50ms, duplicates merged: the last event for a path
// wins and the batch is in the order of each path's last event), until
// ctx ends (it returns ctx.Err()) or the connection dies (it returns an
// error wrapping ErrOffline). It fails at once when no mode can run, or
// the forced one cannot, or an Ignore pattern is malformed.
//
// started is called once (from Watch's goroutine), when the feed is first
// live, with the mode in use: "helper", "inotifywait" or "poll". Changes
// made before that may be missed. If the feed stops later (the helper died,
// the watch limit was hit) it is restarted (in auto mode possibly with
// another mode) and an Overflow change is delivered once it is live again.
//
// handle is called one batch at a time from a goroutine of Watch's, never
// after Watch returns. Paths starting with TempPrefix (uploads in
// progress) are never reported; the rename of one onto its final name is
// reported as a change of that name. The connection's own changes are
// reported like anyone else's.
func (c *Client) Watch(ctx context.Context, o WatchOptions, started func(mode string), handle func([]Change)) error {
	if o.Mode == "" {
		o.Mode = WatchAuto
	}
	switch o.Mode {
	case WatchAuto, WatchHelper, WatchInotifywait, WatchPoll:
	default:
		return fmt.Errorf("watch: unknown mode %q", o.Mode)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollTime
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	for _, g := range o.Ignore {
		if _, err := path.Match(g, ""); err != nil || g == "" || strings.Contains(g, "/") {
			return fmt.Errorf("watch: bad ignore pattern %q", g)
		}
	}
	if started == nil {
		started = func(string) {}
	}
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	w := &watchRun{c: c, o: o, flt: watchFilter{ignore: o.Ignore}, disabled: map[string]bool{}}
	w.b = newBatcher()
	deliverCtx, stopDeliver := context.WithCancel(context.Background())
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		w.b.run(deliverCtx, handle)
	}()
	defer func() {
		stopDeliver()
		<-delivered
	}()

	everLive := false
	delay := time.Second
	for {
		live := false
		mode, err := w.once(ctx, func(mode string) {
			live = true
			if !everLive {
				everLive = true
				o.Logger.Info("watching the server for changes", "host", c.label, "mode", mode)
				started(mode)
			} else {
				o.Logger.Info("change feed restarted", "host", c.label, "mode", mode)
				w.b.add(Change{Overflow: true})
			}
		})
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrOffline):
			return err
		case c.Err() != nil:
			return c.Err()
		}
		var me *watchModeError
		if !everLive || (o.Mode != WatchAuto && errors.As(err, &me) && me.limit) {
			// Never live: no mode works, or the forced one does not. Or
			// the forced mode cannot watch this tree.
			return fmt.Errorf("watch on %s: %w", c.label, err)
		}
		if live {
			delay = time.Second
		}
		// What happens until it is live again is lost: the restart reports
		// an Overflow.
		o.Logger.Warn("change feed stopped; restarting", "host", c.label, "mode", mode, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.Err()
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, watchMaxRetry)
	}
}

// Watch runs Client.Watch on the current client; it fails at once with an
// error wrapping ErrOffline when there is none. It does not follow
// reconnections: when the connection dies it returns, and the caller
// watches again once the Manager is Online (and rescans).
func (m *Manager) Watch(ctx context.Context, o WatchOptions, started func(mode string), handle func([]Change)) error {
	c, err := m.current("watch", "")
	if err != nil {
		return err
	}
	return c.Watch(ctx, o, started, handle)
}

// watchRun is the state of one Watch call.
type watchRun struct {
	c        *Client
	o        WatchOptions
	flt      watchFilter
	b        *batcher
	disabled map[string]bool // auto mode: modes that cannot work here
}

// push reports a change unless the filter drops it.
func (w *watchRun) push(ch Change) {
	if ch.Overflow || !w.flt.skip(ch.Path) {
		w.b.add(ch)
	}
}

// once starts the first mode that works and runs it until it stops. live
// is called when it is live. It returns the mode tried last and why it
// stopped.
func (w *watchRun) once(ctx context.Context, live func(mode string)) (string, error) {
	if (w.o.Mode == WatchAuto || w.o.Mode == WatchHelper) && !w.disabled[WatchHelper] && w.c.agent.get(ctx, true) != nil {
		// The helper on the connection's agent: no probe, no exec.
		err := w.runMode(ctx, WatchHelper, serverInfo{agent: true}, live)
		var me *watchModeError
		if w.o.Mode != WatchAuto || ctx.Err() != nil || errors.Is(err, ErrOffline) || w.c.Err() != nil || !errors.As(err, &me) {
			return WatchHelper, err
		}
		if me.limit {
			w.disabled[WatchHelper] = true
			w.disabled[WatchInotifywait] = true
		}
		w.o.Logger.Info("the change feed on the agent did not start; trying one exec per helper", "host", w.c.label, "err", me.err)
	}
	var modes []string
	var info serverInfo
	var probeErr error
	if w.o.Mode == WatchAuto || w.o.Mode == WatchHelper || w.o.Mode == WatchInotifywait {
		info, probeErr = w.c.probeWatch(ctx)
		if probeErr != nil && (w.o.Mode != WatchAuto || errors.Is(probeErr, ErrOffline) || ctx.Err() != nil) {
			return w.o.Mode, probeErr
		}
	}
	if w.o.Mode == WatchAuto {
		if probeErr == nil {
			for _, m := range []string{WatchHelper, WatchInotifywait} {
				if !w.disabled[m] {
					modes = append(modes, m)
				}
			}
		}
		modes = append(modes, WatchPoll)
	} else {
		modes = []string{w.o.Mode}
	}
	var err error
	mode := w.o.Mode
	for _, mode = range modes {
		err = w.runMode(ctx, mode, info, live)
		if ctx.Err() != nil || errors.Is(err, ErrOffline) || w.c.Err() != nil {
			return mode, err
		}
		var me *watchModeError
		if errors.As(err, &me) {
			if me.limit {
				w.disabled[WatchHelper] = true
				w.disabled[WatchInotifywait] = true
			}
			if w.o.Mode == WatchAuto && mode != WatchPoll {
				w.o.Logger.Info("server change feed mode unavailable; trying the next", "host", w.c.label, "mode", mode, "err", me.err)
				continue
			}
		}
		return mode, err
	}
	return mode, err
}

// runMode runs one mode until it stops. Failures before it went live
// come as *watchModeError.
func (w *watchRun) runMode(ctx context.Context, mode string, info serverInfo, live func(string)) error {
	onLive := func() { live(mode) }
	switch mode {
	case WatchHelper:
		argv := helperArgv(w.c.root, w.o.Ignore, watchHelperIdle)
		cmd := "" // on the agent only
		if !info.agent {
			exe, err := w.c.installHelper(ctx, info)
			if err != nil {
				if errors.Is(err, ErrOffline) || ctx.Err() != nil {
					return err
				}
				return &watchModeError{mode: mode, err: err}
			}
			cmd = helperCommand(exe, argv)
		}
		return w.runStream(ctx, mode, argv, cmd, nil, w.parseHelper, onLive)
	case WatchInotifywait:
		if !info.inotifywait {
			return &watchModeError{mode: mode, err: errors.New("the server has no inotifywait (inotify-tools) or no timeout (coreutils)")}
		}
		ready := &readyWriter{marker: []byte("Watches established."), buf: limitedBuffer{buf: &bytes.Buffer{}, max: 4096}, ready: make(chan struct{})}
		return w.runStream(ctx, mode, nil, inotifywaitCommand(w.c.root, w.o.Ignore), ready, w.parseInotifywait, onLive)
	default:
		return w.runPoll(ctx, onLive)
	}
}

// serverInfo is what probeWatch learns.
type serverInfo struct {
	agent        bool // the helper runs on the agent: no probe, no install
	goos, goarch string
	home         string
	inotifywait  bool
}

const probeScript = `uname -sm; printf '%s\n' "$HOME"; ` +
	`if command -v inotifywait >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then echo inotifywait; else echo none; fi`

// probeWatch asks the server its OS, architecture, home and whether it has
// inotifywait, in one exec.
func (c *Client) probeWatch(ctx context.Context) (serverInfo, error) {
	var out, stderr bytes.Buffer
	code, err := c.Exec(ctx, "sh -c "+shellQuote(probeScript), nil, &limitedBuffer{buf: &out, max: 16384}, &limitedBuffer{buf: &stderr, max: 4096})
	if err != nil {
		return serverInfo{}, err
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if code != 0 || len(lines) != 3 {
		return serverInfo{}, fmt.Errorf("probing the server failed (exit %d): %s", code, strings.TrimSpace(stderr.String()+" "+out.String()))
	}
	info := serverInfo{home: lines[1], inotifywait: lines[2] == "inotifywait"}
	info.goos, info.goarch = unameToGo(lines[0])
	return info, nil
}

// unameToGo maps `uname -sm` to GOOS and GOARCH ("" when unknown).
func unameToGo(s string) (goos, goarch string) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return "", ""
	}
	switch f[0] {
	case "Linux":
		goos = "linux"
	case "Darwin":
		goos = "darwin"
	case "FreeBSD":
		goos = "freebsd"
	}
	switch f[1] {
	case "x86_64", "amd64":
		goarch = "amd64"
	case "aarch64", "arm64", "aarch64_be":
		if f[1] != "aarch64_be" {
			goarch = "arm64"
		}
	case "i386", "i486", "i586", "i686":
		goarch = "386"
	case "riscv64":
		goarch = "riscv64"
	case "ppc64le":
		goarch = "ppc64le"
	case "s390x":
		goarch = "s390x"
	}
	return goos, goarch
}

// localHelper is the helper binary on this machine and its identity.
type localHelper struct {
	path string
	size int64
	hash string // first 16 hex digits of its sha256
}

var (
	helperMu    sync.Mutex
	helperCache = map[string]localHelper{} // by path+size+mtime
)

// findLocalHelper hashes the helper binary (once per version of it).
func findLocalHelper() (localHelper, error) {
	fn := watchHelper.Load()
	if fn == nil {
		return localHelper{}, errors.New("no helper binary (not running from the remotefs command)")
	}
	exe, err := (*fn)()
	if err != nil {
		return localHelper{}, fmt.Errorf("cannot find the remotefs binary: %w", err)
	}
	fi, err := os.Stat(exe)
	if err != nil {
		return localHelper{}, fmt.Errorf("cannot find the remotefs binary: %w", err)
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", exe, fi.Size(), fi.ModTime().UnixNano())
	helperMu.Lock()
	defer helperMu.Unlock()
	if h, ok := helperCache[key]; ok {
		return h, nil
	}
	f, err := os.Open(exe)
	if err != nil {
		return localHelper{}, fmt.Errorf("cannot read the remotefs binary: %w", err)
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		return localHelper{}, fmt.Errorf("cannot read the remotefs binary: %w", err)
	}
	h := localHelper{path: exe, size: n, hash: hex.EncodeToString(sum.Sum(nil))[:16]}
	helperCache[key] = h
	return h, nil
}

// removeOldHelpers deletes the helpers of other remotefs versions, and
// uploads of a helper that were interrupted more than an hour ago, from the
// server's helper folder (best effort; a helper in use keeps running, its
// file is only unlinked).
func (c *Client) removeOldHelpers(dir, keep string) {
	ents, err := c.sftp.ReadDir(dir)
	if err != nil {
		return
	}
	for _, fi := range ents {
		name := fi.Name()
		switch {
		case name == keep:
		case strings.HasPrefix(name, "remotefs-helper-") && fi.Mode().IsRegular():
			c.sftp.Remove(path.Join(dir, name))
		case IsTempName(name):
			if at, ok := TempCreated(name); ok && time.Since(at) > time.Hour {
				c.sftp.Remove(path.Join(dir, name))
			}
		}
	}
}

// installHelper makes sure the server has this binary as its helper and
// returns its path there: $HOME/.cache/remotefs/remotefs-helper-HASH,
// uploaded through SFTP to a temporary name in that folder (0700) and
// renamed; skipped when a file of that name and size is there already.
func (c *Client) installHelper(ctx context.Context, info serverInfo) (string, error) {
	if info.goos != runtime.GOOS || info.goarch != runtime.GOARCH || runtime.GOOS != "linux" {
		return "", fmt.Errorf("the server is %s/%s, this binary %s/%s (the helper needs linux on both)",
			orUnknown(info.goos), orUnknown(info.goarch), runtime.GOOS, runtime.GOARCH)
	}
	h, err := findLocalHelper()
	if err != nil {
		return "", err
	}
	dir := watchHelperDir
	if dir == "" {
		if !path.IsAbs(info.home) {
			return "", fmt.Errorf("the server's $HOME (%q) is not an absolute path", info.home)
		}
		dir = path.Join(info.home, ".cache", "remotefs")
	}
	target := path.Join(dir, "remotefs-helper-"+h.hash)
	err = c.do(ctx, "install helper", target, func(pr *progress) error {
		if fi, err := c.sftp.Lstat(target); err == nil && fi.Mode().IsRegular() && fi.Size() == h.size {
			return nil
		}
		if _, err := c.sftp.Stat(dir); err != nil {
			if err := c.sftp.MkdirAll(dir); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
			if err := c.sftp.Chmod(dir, 0o700); err != nil {
				return err
			}
		}
		src, err := os.Open(h.path)
		if err != nil {
			return err
		}
		defer src.Close()
		tmp := path.Join(dir, TempName(path.Base(target)))
		f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return fmt.Errorf("create %s: %w", tmp, err)
		}
		ok := false
		defer func() {
			if !ok && c.Err() == nil {
				c.sftp.Remove(tmp)
			}
		}()
		n, err := f.ReadFromWithConcurrency(guardedReader{pr, src}, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != h.size {
			err = fmt.Errorf("the binary changed while uploading (%d bytes, want %d)", n, h.size)
		}
		if err != nil {
			return fmt.Errorf("upload %s: %w", tmp, err)
		}
		if err := c.sftp.Chmod(tmp, 0o700); err != nil {
			return err
		}
		if c.posixRename {
			err = c.sftp.PosixRename(tmp, target)
		} else {
			err = c.sftp.Rename(tmp, target)
		}
		if err != nil {
			// Someone else installed it meanwhile?
			if fi, serr := c.sftp.Lstat(target); serr == nil && fi.Size() == h.size {
				return nil
			}
			return fmt.Errorf("rename to %s: %w", target, err)
		}
		ok = true
		c.removeOldHelpers(dir, path.Base(target))
		return nil
	})
	if err != nil {
		return "", err
	}
	return target, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// helperArgv runs the watch helper on root (after the helper's path, or
// as a request to the agent).
func helperArgv(root string, ignore []string, idle time.Duration) []string {
	argv := []string{WatchHelperCommand, "--heartbeat-timeout", idle.String()}
	for _, g := range ignore {
		argv = append(argv, "--ignore", g)
	}
	return append(argv, "--", root)
}

// helperCommand is the shell command line that runs the helper exe with
// argv.
func helperCommand(exe string, argv []string) string {
	var b strings.Builder
	b.WriteString(shellQuote(exe))
	for _, a := range argv {
		b.WriteString(" " + shellQuote(a))
	}
	return b.String()
}

// inotifywaitEvents are the events the inotifywait mode asks for.
const inotifywaitEvents = "create,delete,modify,close_write,moved_from,moved_to,attrib,delete_self,move_self"

// inotifywaitCommand runs inotifywait on root in the background of a shell
// that reads the heartbeat: at stdin EOF, or when no heartbeat came for 30s,
// or when inotifywait exits, the shell kills it and exits with its status.
func inotifywaitCommand(root string, ignore []string) string {
	args := "inotifywait -m -r -P --format '%e|%w%f%0' --no-newline -e " + inotifywaitEvents
	if re := ignoreRegexp(ignore); re != "" {
		args += " --exclude " + shellQuote(re)
	}
	args += " -- \"$0\""
	script := args + ` & p=$!
while kill -0 $p 2>/dev/null && [ "$(timeout ` + strconv.Itoa(int(watchHelperIdle/time.Second)) + ` head -c 1 | wc -c)" -eq 1 ]; do :; done
kill $p 2>/dev/null; wait $p`
	return "sh -c " + shellQuote(script) + " " + shellQuote(root)
}

// ignoreRegexp turns base-name globs into an extended regular expression
// matching paths inside such a directory, for inotifywait --exclude; ""
// when there are none.
func ignoreRegexp(globs []string) string {
	var alts []string
	for _, g := range globs {
		alts = append(alts, globToERE(g))
	}
	if len(alts) == 0 {
		return ""
	}
	return "/(" + strings.Join(alts, "|") + ")/"
}

// globToERE converts a path.Match pattern (no "/") to an ERE.
func globToERE(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		switch ch := g[i]; ch {
		case '*':
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '\\':
			if i+1 < len(g) {
				i++
				writeERELiteral(&b, g[i])
			}
		case '[':
			j := i + 1
			if j < len(g) && g[j] == '^' {
				j++
			}
			if j < len(g) && g[j] == ']' {
				j++
			}
			for j < len(g) && g[j] != ']' {
				j++
			}
			if j >= len(g) {
				writeERELiteral(&b, ch)
				continue
			}
			class := g[i+1 : j]
			b.WriteByte('[')
			if strings.HasPrefix(class, "^") {
				b.WriteString("^/")
				class = class[1:]
			}
			b.WriteString(strings.ReplaceAll(class, `\`, ""))
			b.WriteByte(']')
			i = j
		default:
			writeERELiteral(&b, ch)
		}
	}
	return b.String()
}

func writeERELiteral(b *strings.Builder, ch byte) {
	if strings.IndexByte(`.[]()*+?{}|^$\`, ch) >= 0 {
		b.WriteByte('\\')
	}
	b.WriteByte(ch)
}

// readyWriter collects a command's stderr (the first bytes, for error
// messages) and closes ready once marker was seen.
type readyWriter struct {
	marker []byte
	mu     sync.Mutex
	buf    limitedBuffer
	tail   []byte
	ready  chan struct{}
	seen   bool
}

func (r *readyWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf.Write(p)
	if !r.seen {
		r.tail = append(r.tail, p...)
		if bytes.Contains(r.tail, r.marker) {
			r.seen = true
			close(r.ready)
			r.tail = nil
		} else if len(r.tail) > len(r.marker) {
			r.tail = append(r.tail[:0], r.tail[len(r.tail)-len(r.marker):]...)
		}
	}
	return len(p), nil
}

func (r *readyWriter) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.TrimSpace(r.buf.buf.String())
}

// streamState is what a stream parser reports besides changes.
type streamState struct {
	live    func()  // the feed is live (once)
	limit   *string // set when the helper hit the watch limit
	message *string // a fatal error from the helper
	mu      *sync.Mutex
}

// runStream runs a long-lived watcher command (helper, inotifywait): its
// stdout goes to parse; a heartbeat byte goes to its stdin every 5s. When
// ctx ends, stdin is closed (the command exits at EOF) and after a grace
// period the command is killed. ready, when not nil, says the command is
// live from its stderr; else parse calls live itself.
func (w *watchRun) runStream(ctx context.Context, mode string, argv []string, cmd string, ready *readyWriter,
	parse func(r io.Reader, st streamState) error, onLive func()) error {
	execCtx, kill := context.WithCancel(context.Background())
	defer kill()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var stderr io.Writer
	var stderrText func() string
	if ready != nil {
		stderr, stderrText = ready, ready.String
	} else {
		sb := &syncBuffer{buf: limitedBuffer{buf: &bytes.Buffer{}, max: 4096}}
		stderr, stderrText = sb, sb.String
	}

	type result struct {
		code int
		err  error
	}
	execDone := make(chan result, 1)
	go func() {
		var code int
		var err error
		if argv != nil {
			code, err = w.c.runHelper(execCtx, argv, cmd, inR, outW, stderr)
		} else {
			code, err = w.c.Exec(execCtx, cmd, inR, outW, stderr)
		}
		outW.CloseWithError(io.EOF)
		inR.CloseWithError(io.ErrClosedPipe)
		execDone <- result{code, err}
	}()

	stopBeat := make(chan struct{})
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		defer inW.Close()
		t := time.NewTicker(watchHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-stopBeat:
				return
			case <-t.C:
				if _, err := inW.Write([]byte{'\n'}); err != nil {
					return
				}
			}
		}
	}()
	var stopBeatOnce sync.Once
	closeStdin := func() { stopBeatOnce.Do(func() { close(stopBeat) }) }
	defer func() { closeStdin(); <-beatDone }()

	liveCh := make(chan struct{})
	var liveOnce sync.Once
	var mu sync.Mutex
	var limitMsg, fatalMsg string
	st := streamState{live: func() { liveOnce.Do(func() { close(liveCh) }) }, limit: &limitMsg, message: &fatalMsg, mu: &mu}
	parseDone := make(chan error, 1)
	go func() {
		err := parse(outR, st)
		outR.CloseWithError(errors.New("watch stream parser stopped"))
		parseDone <- err
	}()
	var readyCh <-chan struct{}
	if ready != nil {
		readyCh = ready.ready
	}

	wasLive := false
	var parseErr error
	parsed := false
	for {
		select {
		case <-readyCh:
			readyCh = nil
			st.live()
			continue
		case <-liveCh:
			liveCh = nil
			wasLive = true
			onLive()
			continue
		case <-ctx.Done():
			closeStdin()
			select {
			case <-execDone:
			case <-time.After(watchStopGrace):
				kill()
				<-execDone
			}
			if !parsed {
				<-parseDone
			}
			return ctx.Err()
		case parseErr = <-parseDone:
			parsed = true
			if parseErr != nil {
				// A protocol error: stop the command.
				closeStdin()
				kill()
			}
			continue
		case r := <-execDone:
			if !parsed {
				parseErr = <-parseDone
			}
			closeStdin()
			if readyCh != nil {
				select {
				case <-readyCh:
					st.live()
				default:
				}
			}
			if liveCh != nil {
				select {
				case <-liveCh: // it was live before it ended
					wasLive = true
					onLive()
				default:
				}
			}
			mu.Lock()
			lim, fatal := limitMsg, fatalMsg
			mu.Unlock()
			if r.err != nil && (errors.Is(r.err, ErrOffline) || w.c.Err() != nil) {
				return r.err
			}
			var err error
			switch {
			case parseErr != nil: // why it was stopped
				err = parseErr
			case r.err != nil:
				err = r.err
			case lim != "":
				return &watchModeError{mode: mode, err: errors.New(lim), limit: true}
			case fatal != "":
				err = errors.New(fatal)
			default:
				msg := stderrText()
				if msg == "" {
					msg = "no message"
				}
				err = fmt.Errorf("exited with status %d: %s", r.code, msg)
			}
			if !wasLive {
				return &watchModeError{mode: mode, err: err}
			}
			return fmt.Errorf("%s: %w", mode, err)
		}
	}
}

// syncBuffer keeps the first bytes written to it, for error messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf limitedBuffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.buf.String())
}

// parseHelper reads the helper's records.
func (w *watchRun) parseHelper(r io.Reader, st streamState) error {
	lastGone := "" // the path of the previous record, when it was G or H
	return proto.ReadWatchRecords(r, func(kind byte, p string) error {
		from := lastGone
		lastGone = ""
		switch kind {
		case proto.WatchRecStarted:
			st.live()
		case proto.WatchRecMoved:
			w.push(Change{Path: p, From: from})
		case proto.WatchRecChange:
			w.push(Change{Path: p})
		case proto.WatchRecDir:
			w.push(Change{Path: p, Dir: true})
		case proto.WatchRecGone:
			w.push(Change{Path: p, Gone: true})
			lastGone = p
		case proto.WatchRecGoneDir:
			w.push(Change{Path: p, Gone: true, Dir: true})
			lastGone = p
		case proto.WatchRecOverflow:
			w.push(Change{Overflow: true})
		case proto.WatchRecLimit:
			st.mu.Lock()
			*st.limit = p
			st.mu.Unlock()
		case proto.WatchRecError:
			st.mu.Lock()
			*st.message = p
			st.mu.Unlock()
		}
		return nil
	})
}

// errWatchStream: a watcher's output is not in its format.
var errWatchStream = proto.ErrWatchStream

// parseInotifywait reads inotifywait's `EVENTS|PATH NUL` records (PATH
// absolute, under root).
func (w *watchRun) parseInotifywait(r io.Reader, st streamState) error {
	return parseInotifywaitStream(r, w.c.root, func(ch Change) { w.push(ch) })
}

// parseInotifywaitStream turns inotifywait's output into changes. Events
// on the root itself (it was deleted or moved) and overflows become
// Overflow; paths outside root are an error.
func parseInotifywaitStream(r io.Reader, root string, emit func(Change)) error {
	br := bufio.NewReaderSize(r, 64*1024)
	prefix := strings.TrimSuffix(root, "/") + "/"
	for {
		line, err := br.ReadString(0)
		if err != nil {
			if err == io.EOF && line == "" {
				return nil
			}
			if err == io.EOF {
				return fmt.Errorf("%w: truncated inotifywait record %q", errWatchStream, line)
			}
			return err
		}
		line = line[:len(line)-1]
		events, p, ok := strings.Cut(line, "|")
		if !ok {
			return fmt.Errorf("%w: bad inotifywait record %q", errWatchStream, line)
		}
		has := func(e string) bool {
			for f := range strings.SplitSeq(events, ",") {
				if f == e {
					return true
				}
			}
			return false
		}
		if has("Q_OVERFLOW") || has("UNMOUNT") {
			emit(Change{Overflow: true})
			continue
		}
		rel, ok := strings.CutPrefix(p, prefix)
		if !ok && p+"/" != prefix {
			return fmt.Errorf("%w: inotifywait path %q outside %q", errWatchStream, p, root)
		}
		rel = strings.TrimSuffix(rel, "/")
		if !proto.ValidRel(rel) {
			return fmt.Errorf("%w: bad inotifywait path %q", errWatchStream, p)
		}
		dir := has("ISDIR")
		switch {
		case has("DELETE_SELF") || has("MOVE_SELF"):
			if rel == "" {
				emit(Change{Overflow: true}) // the root went away
			}
			// Else the parent reports DELETE / MOVED_FROM too.
		case rel == "":
			// An event on the root folder itself (attrib): nothing to relist.
			if has("ATTRIB") {
				emit(Change{Path: "", Dir: true})
			}
		case has("DELETE") || has("MOVED_FROM"):
			emit(Change{Path: rel, Gone: true, Dir: dir})
		case has("CREATE") || has("MOVED_TO") || has("MODIFY") || has("CLOSE_WRITE") || has("ATTRIB"):
			emit(Change{Path: rel, Dir: dir})
		}
	}
}

// runPoll polls with GNU find: every PollInterval one exec lists what
// changed (ctime) since the last poll, by the server's clock.
func (w *watchRun) runPoll(ctx context.Context, onLive func()) error {
	// The first run checks find (a date far ahead: nothing is printed) and
	// reads the server's clock.
	began := time.Now()
	now, _, err := w.poll(ctx, "4102444800", nil)
	if err != nil {
		if errors.Is(err, ErrOffline) || ctx.Err() != nil {
			return err
		}
		return &watchModeError{mode: WatchPoll, err: err}
	}
	onLive()
	var seen map[string]string
	lastMsg := ""
	for {
		// Polls start PollInterval apart (or back to back when one takes
		// longer), so a change waits at most PollInterval plus one poll.
		wait := time.NewTimer(time.Until(began.Add(w.o.PollInterval)))
		select {
		case <-ctx.Done():
			wait.Stop()
			return ctx.Err()
		case <-w.c.done:
			wait.Stop()
			return w.c.Err()
		case <-wait.C:
		}
		began = time.Now()
		since := now.Add(-watchPollMargin)
		next, cur, err := w.poll(ctx, fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()), seen)
		if err != nil {
			if errors.Is(err, ErrOffline) || ctx.Err() != nil || w.c.Err() != nil {
				return err
			}
			if msg := err.Error(); msg != lastMsg {
				w.o.Logger.Warn("polling the server for changes failed", "host", w.c.label, "err", err)
				lastMsg = msg
			}
			continue
		}
		lastMsg = ""
		now, seen = next, cur
	}
}

// pollCommand prints the server's time, then every entry under root
// (root included, as "") whose ctime is after since: `TYPE NUL CTIME NUL
// PATH NUL`. Ignored directories are pruned, unprinted.
func pollCommand(root string, ignore []string, since string) string {
	var b strings.Builder
	b.WriteString("LC_ALL=C; export LC_ALL; date +%s.%N && find ")
	b.WriteString(shellQuote(strings.TrimSuffix(root, "/") + "/"))
	// A pattern that matches the root's own name would prune the root (the
	// filter still drops what is inside such folders).
	var prune []string
	for _, g := range ignore {
		if ok, _ := path.Match(g, path.Base(root)); !ok {
			prune = append(prune, g)
		}
	}
	if len(prune) > 0 {
		b.WriteString(" \\( -type d \\( ")
		for i, g := range prune {
			if i > 0 {
				b.WriteString(" -o ")
			}
			b.WriteString("-name " + shellQuote(g))
		}
		b.WriteString(" \\) -prune \\) -o")
	}
	b.WriteString(" -newerct @" + since + " -printf '%y\\0%C@\\0%P\\0'")
	return "sh -c " + shellQuote(b.String())
}

// poll runs one poll and pushes what changed, except records seen in the
// previous poll with the same ctime. It returns the server's time at the
// start and the records it saw.
func (w *watchRun) poll(ctx context.Context, since string, seen map[string]string) (time.Time, map[string]string, error) {
	var stderr bytes.Buffer
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		code, err := w.c.Exec(ctx, pollCommand(w.c.root, w.o.Ignore, since), nil, pw, &limitedBuffer{buf: &stderr, max: 4096})
		if err == nil && code != 0 {
			// 1: some entries could not be read; the rest is fine.
			err = fmt.Errorf("find exited %d: %s", code, strings.TrimSpace(stderr.String()))
			if code == 1 && !strings.Contains(stderr.String(), "No such file") {
				err = nil
			}
		}
		pw.CloseWithError(err)
		done <- err
	}()
	cur := map[string]string{}
	now, perr := parsePollStream(pr, func(typ byte, ctime, p string) {
		cur[p] = ctime
		if seen[p] == ctime {
			return
		}
		w.push(Change{Path: p, Dir: typ == 'd'})
	})
	pr.CloseWithError(errors.New("poll stopped"))
	err := <-done
	if err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return time.Time{}, nil, err
	}
	return now, cur, nil
}

// parsePollStream reads the poll command's output: a line with the
// server's time (seconds, optionally with a fraction), then `TYPE NUL
// CTIME NUL PATH NUL` records.
func parsePollStream(r io.Reader, rec func(typ byte, ctime, p string)) (time.Time, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	line, err := br.ReadString('\n')
	if err != nil {
		if err == io.EOF {
			return time.Time{}, fmt.Errorf("%w: no time from the server", errWatchStream)
		}
		return time.Time{}, err
	}
	now, ok := parseEpoch(strings.TrimSpace(line))
	if !ok {
		return time.Time{}, fmt.Errorf("%w: bad time %q from the server", errWatchStream, strings.TrimSpace(line))
	}
	var f [3]string
	for {
		for i := range f {
			s, err := br.ReadString(0)
			if err != nil {
				if err == io.EOF && i == 0 && s == "" {
					return now, nil
				}
				if err == io.EOF {
					return time.Time{}, fmt.Errorf("%w: truncated find record", errWatchStream)
				}
				return time.Time{}, err
			}
			f[i] = s[:len(s)-1]
		}
		if len(f[0]) != 1 || !proto.ValidRel(f[2]) {
			return time.Time{}, fmt.Errorf("%w: bad find record %q", errWatchStream, strings.Join(f[:], "|"))
		}
		rec(f[0][0], f[1], f[2])
	}
}

// parseEpoch parses "SECONDS[.FRACTION]" (date +%s.%N; a date without %N
// prints "SECONDS.N" or "SECONDS.%N", taken as whole seconds).
func parseEpoch(s string) (time.Time, bool) {
	secStr, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, false
	}
	var nsec int64
	if frac != "" && strings.Trim(frac, "0123456789") == "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		nsec, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	return time.Unix(sec, nsec), true
}

// watchFilter drops what must not be reported: temporary upload files and
// anything inside an ignored directory.
type watchFilter struct {
	ignore []string
}

func (f watchFilter) skip(p string) bool {
	base := p[strings.LastIndexByte(p, '/')+1:]
	if strings.HasPrefix(base, TempPrefix) {
		return true
	}
	if len(f.ignore) == 0 {
		return false
	}
	dir := p[:max(0, strings.LastIndexByte(p, '/'))]
	for dir != "" {
		el := dir
		if i := strings.IndexByte(dir, '/'); i >= 0 {
			el, dir = dir[:i], dir[i+1:]
		} else {
			dir = ""
		}
		for _, g := range f.ignore {
			if ok, _ := path.Match(g, el); ok {
				return true
			}
		}
	}
	return false
}

// batcher coalesces changes: the last change for a path wins, batches are
// in the order of each path's last change, and too many pending paths
// become one Overflow.
type batcher struct {
	mu       sync.Mutex
	order    []Change // "" Path with !Overflow and !Dir: a dead slot
	idx      map[string]int
	overflow bool
	kick     chan struct{}
}

func newBatcher() *batcher {
	return &batcher{idx: map[string]int{}, kick: make(chan struct{}, 1)}
}

// dead marks a slot whose path reappeared later.
var deadSlot = Change{Path: "\x00"}

func (b *batcher) add(ch Change) {
	b.mu.Lock()
	switch {
	case b.overflow:
	case ch.Overflow:
		b.overflow = true
		b.order, b.idx = nil, map[string]int{}
	default:
		if i, ok := b.idx[ch.Path]; ok {
			// A later change to a path keeps the rename that brought it
			// there; two renames onto one path keep only the last (the
			// first source's Gone change is in the batch anyway).
			if prev := b.order[i]; ch.From == "" && prev.From != "" && !ch.Gone {
				ch.From = prev.From
			}
			b.order[i] = deadSlot
		}
		b.idx[ch.Path] = len(b.order)
		b.order = append(b.order, ch)
		if len(b.idx) > watchMaxPending {
			b.overflow = true
			b.order, b.idx = nil, map[string]int{}
		}
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// take returns the pending batch and empties it.
func (b *batcher) take() []Change {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow {
		b.overflow = false
		return []Change{{Overflow: true}}
	}
	out := make([]Change, 0, len(b.idx))
	for _, ch := range b.order {
		if ch != deadSlot {
			out = append(out, ch)
		}
	}
	b.order, b.idx = nil, map[string]int{}
	return out
}

// run delivers batches to handle until ctx ends: after a change arrives
// it waits watchCoalesce for more, then hands over everything pending.
func (b *batcher) run(ctx context.Context, handle func([]Change)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		t := time.NewTimer(watchCoalesce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if batch := b.take(); len(batch) > 0 && ctx.Err() == nil {
			handle(batch)
		}
	}
}
