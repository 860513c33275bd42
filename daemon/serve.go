package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"remotefs/cache"
	"remotefs/cacheadmin"
	"remotefs/config"
	"remotefs/conn"
	rfs "remotefs/fs"
	"remotefs/internal/cli"
	"remotefs/internal/control"
)

// serve connects, opens the cache, mounts, reports readiness through
// ready (nil in --foreground) and serves until unmounted or signalled.
// warn shows a message to the user who ran mount (nil: stderr).
//
// login answers the server's questions at the first connection (a relay to
// the CLI's terminal, or the terminal itself in --foreground); later
// connections that need answers make the mount wait in "login needed" for
// `remotefs login`.
func serve(ctx context.Context, cfg *config.Mount, ready func(error), warn func(string), login conn.LoginFunc) error {
	if os.Getenv("GOGC") == "" {
		// The daemon's heap is mostly the metadata mirror, which lives as
		// long as the mount: collect at 1.5x the live heap instead of 2x,
		// so a 100,000-entry tree peaks under 200 MB.
		debug.SetGCPercent(50)
	}
	softMemoryLimit()
	if warn == nil {
		warn = func(msg string) { fmt.Fprintln(os.Stderr, "remotefs: warning: "+msg) }
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	log = log.With("mount", cfg.Mountpoint)
	heapProfiles(log)

	hasCache := fileExists(filepath.Join(cfg.CacheDir, "meta.db"))
	var onReconnect atomic.Value // func(), set once the cache is open
	var storeRef atomic.Pointer[cache.Store]
	var mgr *conn.Manager
	if !cfg.Offline {
		var firstDone atomic.Bool // the first connection attempt is over
		copts := conn.Options{
			Login: func(ctx context.Context, req conn.LoginRequest) ([]string, error) {
				if firstDone.Load() || login == nil {
					return nil, &conn.LoginNeededError{Host: hostOnly(req.Host), User: req.User, Prompt: firstPrompt(req)}
				}
				return login(ctx, req)
			},
			SSH:            cfg.SSH,
			AskpassProgram: askpassProgram(),
			RuntimeDir:     control.RuntimeDir(),
			ConfigFile:     cfg.SSHConfig,
			ConnectTimeout: cfg.ConnTimeout,
			OpTimeout:      cfg.OpTimeout,
			// Saves should take the helper's one round trip from the first.
			UploadHelper: conn.UploadEager,
			Forwards:     !cfg.NoForwards,
			Logger:       log,
		}
		copts.AgentLinger = conn.DefaultAgentLinger
		if d, err := time.ParseDuration(os.Getenv("REMOTEFS_TEST_AGENT_LINGER")); err == nil {
			// For tests: how long the agent waits for the next mount
			// (0: it ends with its connection).
			copts.AgentLinger = d
		}
		if os.Getenv("REMOTEFS_TEST_UPLOADS") == conn.UploadSFTP {
			// For tests: every upload over plain SFTP (a server the
			// helper cannot run on), not only those before it starts.
			copts.UploadHelper = conn.UploadSFTP
		}
		if d, err := time.ParseDuration(os.Getenv("REMOTEFS_TEST_REDIAL_BACKOFF")); err == nil && d > 0 {
			// For tests: a fixed, long backoff shows that reconnecting
			// does not wait for it.
			copts.RedialMin, copts.RedialMax = d, d
		}
		mgr = conn.NewManager(cfg.Spec, copts, func(st conn.State, err error) {
			if st == conn.Online {
				// Back online: names cached before are unconfirmed until
				// listed again, and the tree is caught up with what
				// changed on the server meanwhile (the first connection
				// is handled below).
				if s := storeRef.Load(); s != nil {
					s.Connected()
				}
				if f, _ := onReconnect.Load().(func()); f != nil {
					go f()
				}
			}
			if err != nil {
				log.Warn("connection state", "state", st.String(), "err", err)
			} else {
				log.Info("connection state", "state", st.String())
			}
		})
		defer mgr.Close()
		err := mgr.Connect(ctx)
		firstDone.Store(true)
		if err != nil {
			if !errors.Is(err, conn.ErrOffline) {
				return err
			}
			if !hasCache {
				return fmt.Errorf("%v, and there is no cache of %s to show offline", err, cfg.Spec)
			}
			how := "read-only until it connects; --offline-edits accepts changes"
			if cfg.OfflineEdits {
				how = "changes are kept and delivered when it connects"
			}
			log.Warn("server unreachable; starting offline from the cache and reconnecting in the background", "err", err, "offline_edits", cfg.OfflineEdits)
			warn(fmt.Sprintf("%v; mounting offline from the cache (%s) and reconnecting in the background", err, how))
			mgr.StartOffline()
		}
		for _, f := range mgr.Forwards() {
			if f.State == "failed" {
				warn(fmt.Sprintf("%s not opened: %s (the mount goes on without it)", f.Forward, f.Err))
			}
		}
	} else if !hasCache {
		return fmt.Errorf("--offline: there is no cache of %s yet (mount it online once first)", cfg.Spec)
	}

	opts := cache.Options{
		Dir: cfg.CacheDir, ReadOnly: cfg.RefusesChanges(), OfflineEdits: cfg.OfflineEdits,
		AttrTTL: cfg.AttrTTL, DirTTL: cfg.DirTTL, CacheSize: cfg.CacheSize, Logger: log,
		ServerFolders: cfg.ServerFolders, RemoteRoot: cfg.Spec.Path,
		Owners: cache.Owners{LocalUID: uint32(os.Getuid()), LocalGID: uint32(os.Getgid()),
			UIDMap: cfg.UIDMap, GIDMap: cfg.GIDMap},
	}
	if mgr != nil {
		opts.Remote = mgr
		opts.Online = func() bool { st, _, _ := mgr.State(); return st == conn.Online }
		opts.Redial = mgr.Redial
	}
	var fsysRef atomic.Pointer[rfs.FS]
	opts.OnInvalidate = func(inv cache.Invalidation) {
		if f := fsysRef.Load(); f != nil {
			f.Invalidate(inv)
		}
	}
	store, err := cache.Open(opts)
	if err != nil {
		return err
	}
	defer store.Close()
	storeRef.Store(store)
	if mgr != nil {
		if st, _, _ := mgr.State(); st == conn.Online {
			store.Connected()
		}
	}
	if err := cacheadmin.WriteInfo(cfg.CacheDir, cfg.Spec.String(), cfg.Mountpoint); err != nil {
		log.Warn("could not record the remote in the cache directory", "err", err)
	}

	mopts := []fuse.MountOption{
		fuse.FSName("remotefs:" + cfg.Spec.String()),
		fuse.Subtype("remotefs"),
		fuse.MaxReadahead(readaheadKB << 10),
		fuse.MaxPages(readPages), // readahead.go
		fuse.AsyncRead(),
		// Files appear with their owners on the server (cache/owners.go);
		// the kernel applies owners and modes, so what the server would
		// refuse is refused at once, not long after the write was accepted.
		fuse.DefaultPermissions(),
	}
	if cfg.RefusesChanges() {
		mopts = append(mopts, fuse.ReadOnly())
	}
	if cfg.AllowOther {
		mopts = append(mopts, fuse.AllowOther())
	}
	fc, err := fuse.Mount(cfg.Mountpoint, mopts...)
	if err != nil {
		return fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	defer fc.Close()
	raiseReadahead(cfg.Mountpoint, log)

	ctl, err := control.Listen(cfg.Mountpoint)
	if err != nil {
		fuse.Unmount(cfg.Mountpoint)
		return err
	}
	defer os.Remove(control.SocketPath(cfg.Mountpoint))
	defer ctl.Close()

	fsys := rfs.New(store, rfs.Options{AttrValid: cfg.KernelTTL, EntryValid: cfg.KernelTTL, Logger: log,
		LiveValid:   liveValid,
		DirlessOpen: fc.KernelFeatures()&fuse.InitNoOpenDirSupport != 0})
	log.Info("kernel", "folder_opens", map[bool]string{true: "without requests", false: "requested"}[fsys.DirlessOpen()])
	var srvCfg *fusefs.Config
	if cfg.Debug {
		srvCfg = &fusefs.Config{Debug: func(msg any) { log.Debug("fuse", "msg", fmt.Sprint(msg)) }}
	}
	srv := fusefs.New(fc, srvCfg)
	fsys.SetServer(srv)
	fsysRef.Store(fsys)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(fsys) }()

	d := &daemon{cfg: cfg, store: store, mgr: mgr, log: log, served: served, started: time.Now(), feedChanged: fsys.FeedChanged}
	switch {
	case cfg.NoNotify:
		d.notify = "off (--no-notify)"
	case cfg.Offline || cfg.ReadOnly:
		d.notify = "off (read-only mount)"
	default:
		d.notify = "on"
		d.startEchoes = func() { fsys.EnableEchoes(startEchoHelper(cfg.Mountpoint)) }
		d.startEchoes()
		d.stopEchoes = fsys.StopEchoes
		defer fsys.StopEchoes()
	}
	ctlDone := make(chan struct{})
	go func() {
		control.Serve(ctl, d.handle)
		close(ctlDone)
	}()
	defer func() {
		// Answer the requests in progress (an unmount's reply is sent after
		// the unmount) before the process exits.
		ctl.Close()
		select {
		case <-ctlDone:
		case <-time.After(10 * time.Second):
		}
	}()

	log.Info("mounted", "remote", cfg.Spec.String(), "cache", cfg.CacheDir, "pid", os.Getpid())
	if mgr != nil {
		preload := func() {
			st, err := store.Preload(context.Background(), prune(cfg))
			if err != nil {
				log.Warn("tree listing stopped", "err", err, "done", st.String())
				return
			}
			log.Info("tree listed", "stats", st.String())
			// The pruned folders' listing and the prefetch (whose first
			// batch is git's metadata) go side by side. The listing waits
			// (2 s at most) for the change feed, which starts with the
			// agent: a listing made before the feed is live is never
			// trusted as kept current by it, so the kernel would not keep
			// those folders' listings.
			pruned := make(chan struct{})
			go func() {
				defer close(pruned)
				for wait := time.Now().Add(2 * time.Second); cfg.Watch != "off" && !store.ChangeFeedLive() && time.Now().Before(wait); {
					time.Sleep(20 * time.Millisecond)
				}
				if st, err := store.PreloadPruned(context.Background()); err != nil {
					log.Debug("pruned folders not listed ahead; each is listed on first use", "err", err)
				} else if st.Pruned > 0 {
					log.Info("pruned folders listed", "stats", st.String())
				}
			}()
			defer func() { <-pruned }()
			pst, err := store.Prefetch(context.Background(), cache.PrefetchOptions{Skip: prune(cfg), IgnoreGlobs: cfg.Ignore})
			if err != nil {
				log.Warn("prefetch stopped", "err", err, "done", pst.String())
				return
			}
			log.Info("small files prefetched", "stats", pst.String())
		}
		onReconnect.Store(preload)
		if st, _, _ := mgr.State(); st == conn.Online {
			go preload()
		}
		watchCtx, stopWatch := context.WithCancel(context.Background())
		defer stopWatch()
		go d.watchServer(watchCtx)
		go keepPrunedFresh(watchCtx, store, cfg.DirTTL, fsys.Requests, log)
	}
	if ready != nil {
		ready(nil)
	} else {
		fmt.Fprintf(os.Stderr, "remotefs: %s mounted on %s (Ctrl-C to unmount)\n", cfg.Spec, cfg.Mountpoint)
	}

	select {
	case err := <-served:
		// Unmounted from outside (fusermount3 -u, umount) or by `unmount`.
		if err != nil {
			log.Error("serve", "err", err)
		}
	case <-ctx.Done():
		log.Info("signal received; delivering pending writes, then unmounting")
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := store.Flush(fctx); err != nil {
			log.Warn("not every write reached the server; they stay in the journal for the next mount", "err", err)
		}
		cancel()
		if err := fuse.Unmount(cfg.Mountpoint); err != nil {
			log.Error("unmount", "err", err)
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
		}
	}
	// Give the journal a last chance while the link is up.
	if mgr != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := store.Flush(fctx); err != nil {
			log.Warn("pending writes stay in the journal for the next mount", "err", err)
		}
		cancel()
	}
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	log.Info("unmounted")
	return nil
}

// preloadPrune names folders whose contents the mount-time listing skips
// (listed on first use instead, each with its whole subtree in one
// streamed walk): dependency and cache folders with many files that
// editors and git rarely look into.
var preloadPrune = []string{"node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".tox"}

// prune is what the tree listing, the change feed and prefetch skip inside:
// the built-in dependency folders plus the config file's ignore patterns.
// Only base-name patterns apply to folders; patterns with "/" still keep
// matching files out of prefetch.
func prune(cfg *config.Mount) []string {
	out := append([]string(nil), preloadPrune...)
	for _, g := range cfg.Ignore {
		if !strings.Contains(g, "/") {
			out = append(out, g)
		}
	}
	return out
}

// watchServer keeps the change feed running while the mount lives: server
// changes go into the cache (which tells the kernel). When the link drops
// it waits for the connection to come back (the reconnect's tree listing
// catches up on what was missed) and starts the feed again.
func (d *daemon) watchServer(ctx context.Context) {
	if d.cfg.Watch == "off" || d.mgr == nil {
		d.setWatch("off")
		return
	}
	opts := conn.WatchOptions{Mode: d.cfg.Watch, PollInterval: d.cfg.PollInterval, Ignore: prune(d.cfg), Logger: d.log}
	if opts.Mode == "auto" {
		opts.Mode = conn.WatchAuto
	}
	for ctx.Err() == nil {
		if st, _, _ := d.mgr.State(); st != conn.Online {
			d.setWatch("waiting for the server")
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		d.setWatch("starting")
		err := d.mgr.Watch(ctx, opts, func(mode string) {
			d.setWatch(mode)
			d.log.Info("change feed live", "mode", mode)
			// List the tree once more: everything confirmed from now on is
			// covered by the feed, so opens need no re-check.
			go d.catchUp(time.Minute)
		}, func(changes []conn.Change) {
			batch := make([]cache.RemoteChange, len(changes))
			for i, c := range changes {
				batch[i] = cache.RemoteChange{Path: c.Path, Gone: c.Gone, Dir: c.Dir, Overflow: c.Overflow, From: c.From}
			}
			d.store.ApplyRemoteChanges(ctx, batch)
		})
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, conn.ErrOffline) {
			d.log.Warn("change feed stopped; the mount re-checks files on open and lists folders again after --dir-ttl", "err", err)
			d.setWatch("failed: " + err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
			}
		}
	}
}

func (d *daemon) watchState() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watch == "" {
		return "off"
	}
	return d.watch
}

func (d *daemon) setWatch(s string) {
	d.mu.Lock()
	d.watch = s
	d.mu.Unlock()
	// Polling reports changes up to an interval late: keep re-checking on
	// open then, as without a feed.
	live := s == conn.WatchHelper || s == conn.WatchInotifywait
	d.store.SetChangeFeed(live, prune(d.cfg))
	if d.feedChanged != nil {
		// The kernel may keep what it sees while the feed starts too:
		// the listing the feed makes once live finds what changed
		// before, and a feed that does not come up drops it all.
		d.feedChanged(live || s == "starting")
	}
}

// liveValid: how long the kernel may keep names and attributes while the
// change feed is live. Every change the feed reports is pushed out of the
// kernel's caches, and when the feed goes down everything the kernel
// keeps is dropped (fs.FS.FeedChanged), so this only bounds how long a
// lost invalidation could show: long enough that a project looked at
// once is walked again without a request ten minutes later.
const liveValid = 10 * time.Minute

// daemon answers control requests for one mount.
type daemon struct {
	cfg     *config.Mount
	store   *cache.Store
	mgr     *conn.Manager
	log     *slog.Logger
	served  chan error
	started time.Time

	feedChanged func(live bool) // tells the FUSE layer the feed's state; set at construction

	mu     sync.Mutex
	closed bool
	watch  string // change feed state, for status

	notify                  string // inotify events for server changes: on, or off and why
	startEchoes, stopEchoes func() // nil when they are off
}

func (d *daemon) status() *control.Status {
	st := d.store.Status()
	out := &control.Status{
		Mountpoint: d.cfg.Mountpoint, Remote: d.cfg.Spec.String(), PID: os.Getpid(),
		ReadOnly: d.cfg.RefusesChanges(), OfflineEdits: !d.cfg.RefusesChanges() && (d.cfg.OfflineEdits || d.store.AcceptsOfflineEdits()), Pending: st.Pending, PendingBytes: st.PendingBytes, OldestPending: st.OldestPending,
		UploadError: st.LastError, CacheDir: d.cfg.CacheDir, CacheBytes: st.CacheBytes,
		CachedEntries: st.Entries, Conflicts: []control.Conflict{}, Watch: d.watchState(), Notify: d.notify,
		Settling: st.Settling,
	}
	for _, c := range st.Conflicts {
		out.Conflicts = append(out.Conflicts, control.Conflict{Path: c.Path, CopyPath: c.CopyPath, At: c.At})
	}
	for _, u := range st.Undelivered {
		out.Undelivered = append(out.Undelivered, control.Undelivered{Path: u.Path, Op: u.Op, Reason: u.Reason, At: u.At, Kept: u.Kept})
	}
	if d.mgr == nil {
		out.State, out.Since = "offline", d.started
	} else {
		s, since, err := d.mgr.State()
		out.State, out.Since = s.String(), since
		if t := d.mgr.OfflineSince(); !t.IsZero() {
			out.OfflineSince = &t
		}
		out.Uploads = d.mgr.Uploads()
		for _, f := range d.mgr.Forwards() {
			out.Forwards = append(out.Forwards, control.Forward{Kind: f.Kind, Listen: f.Listen, Target: f.Target, State: f.State, Error: f.Err})
		}
		if err != nil && s != conn.Online {
			out.LastError = err.Error()
		}
	}
	return out
}

func (d *daemon) handle(ctx context.Context, req control.Request, progress func(string)) control.Reply {
	switch req.Cmd {
	case "status":
		return control.Reply{Status: d.status()}
	case "flush":
		if err := d.flush(ctx, progress); err != nil {
			return control.Reply{Error: err.Error(), Status: d.status()}
		}
		return control.Reply{Status: d.status()}
	case "run":
		return d.runCommand(ctx, req, progress)
	case "login":
		return d.handleLogin(ctx, req)
	case "unmount":
		var undelivered error
		if !req.Force {
			if err := d.flush(ctx, progress); errors.Is(err, cache.ErrUndelivered) {
				// Everything else is delivered; what the server refused
				// is safe in the cache folder, mounted or not.
				undelivered = err
			} else if err != nil {
				return control.Reply{Error: err.Error() + " (not unmounted; use --force to unmount anyway: pending writes stay in the journal for the next mount)", Status: d.status()}
			}
		}
		st := d.status()
		if d.stopEchoes != nil {
			// Its helper must hold nothing open on the mount.
			d.stopEchoes()
		}
		if err := fuse.Unmount(d.cfg.Mountpoint); err != nil {
			if d.startEchoes != nil {
				d.startEchoes()
			}
			return control.Reply{Error: fmt.Sprintf("unmount %s: %v", d.cfg.Mountpoint, err), Status: st}
		}
		if undelivered != nil {
			return control.Reply{Error: undelivered.Error() + " (unmounted)", Unmounted: true, Status: st}
		}
		return control.Reply{Status: st}
	}
	return control.Reply{Error: fmt.Sprintf("unknown request %q", req.Cmd)}
}

// catchUp re-lists the tree so the mount shows what changed on the server
// (after `remotefs run`), waiting at most max.
func (d *daemon) catchUp(max time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), max)
	defer cancel()
	if st, err := d.store.Preload(ctx, prune(d.cfg)); err != nil {
		d.log.Warn("catching up with the server", "err", err, "done", st.String())
	}
}

// flush waits for the journal to drain, reporting progress every second.
func (d *daemon) flush(ctx context.Context, progress func(string)) error {
	done := make(chan error, 1)
	go func() { done <- d.store.Flush(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			st := d.store.Status()
			progress(fmt.Sprintf("%d changes (%s) still to deliver", st.Pending, cli.HumanBytes(st.PendingBytes)))
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
