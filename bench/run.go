package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"remotefs/internal/netproxy"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

const (
	projDir   = "proj"
	bigPath   = "big/big.bin"
	cappedBig = "big/capped.bin" // read by the capread step: uncached when it starts
	alias     = "benchbox"
)

var errCanceled = errors.New("canceled")

type bench struct {
	cfg   *config
	rep   *report
	start time.Time
	cl    cleanups

	work   string // everything lives here
	bin    string // the remotefs binary
	srv    *sshdtest.Server
	proxy  *netproxy.Proxy
	alias  string
	proj   *project
	gitEnv []string
	bulk   *bulkSet // the bulk step's archive
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.progress == nil {
		return
	}
	fmt.Fprintf(b.cfg.progress, "[%7.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// moduleRoot finds the directory of remotefs's go.mod from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module remotefs\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the benchmark inside the remotefs module (go run ./bench)")
		}
		dir = parent
	}
}

// run sets everything up, measures every selected system and returns the
// report. The report is returned even when err is not nil (with what was
// measured).
func run(ctx context.Context, cfg *config) (rep *report, err error) {
	b := &bench{cfg: cfg, start: time.Now(), alias: alias}
	b.rep = newReport(cfg)
	rep = b.rep
	defer b.cl.run()

	b.work, err = os.MkdirTemp("", "remotefs-bench-")
	if err != nil {
		return rep, err
	}
	b.cl.add(func() { b.removeWork() })

	if err := b.setup(ctx); err != nil {
		rep.notef("setup failed: %v", err)
		return rep, err
	}
	if cfg.hold {
		return nil, b.hold(ctx)
	}
	for _, sys := range cfg.only {
		if ctx.Err() != nil {
			break
		}
		b.runSystem(ctx, sys)
	}
	if ctx.Err() != nil {
		rep.notef("interrupted: the table is incomplete")
		return rep, errors.New("interrupted")
	}
	return rep, nil
}

// removeWork removes the work directory unless -keep, or unless a mount
// could not be cleared (removing through a live mount would delete server
// files). With errors, logs are copied out first.
func (b *bench) removeWork() {
	if b.rep.failed() {
		logs := filepath.Join(os.TempDir(), "remotefs-bench-logs-"+time.Now().Format("20060102-150405"))
		if os.MkdirAll(logs, 0o755) == nil {
			filepath.WalkDir(b.work, func(p string, d os.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() && (d.Name() == projDir || d.Name() == "mnt" || d.Name() == "big" || d.Name() == "cache") {
					return filepath.SkipDir
				}
				if !d.IsDir() && (strings.HasSuffix(p, ".log") || strings.Contains(p, "/state/")) {
					rel, _ := filepath.Rel(b.work, p)
					dst := filepath.Join(logs, strings.ReplaceAll(rel, "/", "_"))
					if data, err := os.ReadFile(p); err == nil {
						os.WriteFile(dst, data, 0o644)
					}
				}
				return nil
			})
			b.rep.notef("logs (sshd, sshfs, remotefs daemon) copied to %s", logs)
		}
	}
	if b.cfg.keep {
		b.rep.notef("work directory kept: %s", b.work)
		return
	}
	for _, sys := range allSystems {
		for _, mnt := range []string{filepath.Join(b.work, "mnt-"+sys), filepath.Join(b.work, "mnt-"+sys+freshSuffix)} {
			if mounted(mnt) {
				b.rep.notef("NOT removing %s: %s is still mounted", b.work, mnt)
				return
			}
		}
	}
	os.RemoveAll(b.work)
}

func (b *bench) setup(ctx context.Context) error {
	cfg := b.cfg
	root, err := moduleRoot()
	if err != nil {
		return err
	}

	if cfg.bin != "" {
		if b.bin, err = filepath.Abs(cfg.bin); err != nil {
			return err
		}
	} else {
		b.logf("building remotefs")
		b.bin = filepath.Join(b.work, "bin", "remotefs")
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := testenv.BuildRemotefs(bctx, root, b.bin, false); err != nil {
			return err
		}
	}

	if _, err := sshdtest.FindSSHD(); err != nil {
		return err
	}
	b.logf("starting sshd and the latency proxy (rtt %v)", cfg.rtt)
	b.srv, err = sshdtest.StartServer(filepath.Join(b.work, "sshd"), sshdtest.Options{LogLevel: "INFO", LoginShellDelay: cfg.slowLogin})
	if err != nil {
		return fmt.Errorf("starting sshd: %v", err)
	}
	b.cl.add(b.srv.Stop)
	execT, sftpT, err := b.srv.StartTimes()
	if err != nil {
		return fmt.Errorf("measuring the server's start-up times: %v", err)
	}
	if cfg.slowLogin > 0 && execT < cfg.slowLogin {
		return fmt.Errorf("-slow-login %v: an exec channel took only %v: the account's ~/.bashrc was not run", cfg.slowLogin, execT)
	}
	b.proxy, err = netproxy.New("127.0.0.1:0", b.srv.Addr)
	if err != nil {
		return err
	}
	b.cl.add(b.proxy.Close)
	b.proxy.SetLatency(cfg.rtt / 2)
	b.proxy.SetBandwidth(cfg.bandwidth)
	if err := b.srv.AddProxyHost(b.alias, b.proxy.Addr(), "StrictHostKeyChecking yes"); err != nil {
		return err
	}

	b.gitEnv = benchGitEnv(filepath.Join(b.work, "githome"))

	t0 := time.Now()
	if cfg.repo == "small" {
		b.logf("generating the project (%d files) and the big file (%s)", cfg.files, fmtSize(cfg.bigfile))
		b.proj = generateProject(cfg.files)
	} else {
		b.logf("generating the realistic repository (-repo %s: %d tracked files, %s of history, seed %d) and the big file (%s)",
			cfg.repo, cfg.shape.tracked, fmtSize(cfg.shape.history), cfg.seed, fmtSize(cfg.bigfile))
		b.proj = generateRealProject(cfg.shape)
	}
	if err := b.proj.create(ctx, filepath.Join(b.srv.Dir, projDir), b.gitEnv, b.logf); err != nil {
		return fmt.Errorf("generating the project: %v", err)
	}
	if err := writeBigFile(filepath.Join(b.srv.Dir, bigPath), cfg.bigfile, 0); err != nil {
		return fmt.Errorf("writing the big file: %v", err)
	}
	if slices.Contains(cfg.steps, "capread") {
		if err := writeBigFile(filepath.Join(b.srv.Dir, cappedBig), cfg.bigfile, 1); err != nil {
			return fmt.Errorf("writing the big file: %v", err)
		}
	}
	if slices.Contains(cfg.steps, "bulk") {
		if b.bulk, err = makeBulkSet(filepath.Join(b.work, "bulk.tar"), cfg.bulk, cfg.seed); err != nil {
			return fmt.Errorf("making the bulk step's archive: %v", err)
		}
	}
	b.logf("project ready in %s", fmtDur(time.Since(t0)))
	entries, err := walkTree(ctx, filepath.Join(b.srv.Dir, projDir))
	if err != nil {
		return err
	}
	objects := 0
	for rel := range entries {
		if strings.HasPrefix(rel, ".git/objects/") && len(rel) == len(".git/objects/xx/")+38 {
			objects++
		}
	}
	var gst gitStats
	if b.proj.real != nil {
		if gst, err = readGitStats(ctx, filepath.Join(b.srv.Dir, projDir), b.gitEnv); err != nil {
			return err
		}
	}
	b.rep.describe(b, len(entries), objects, gst, execT, sftpT)
	return nil
}

// benchGitEnv is the environment git runs in: its own empty HOME (created)
// and fixed identities and dates, so nothing of the user's configuration
// changes what it does or makes.
func benchGitEnv(home string) []string {
	os.MkdirAll(home, 0o755)
	env := append(cleanEnv("HOME", "SSH_AUTH_SOCK", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "LC_ALL", "LANG"),
		"HOME="+home, "LC_ALL=C", "GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=safe.directory", "GIT_CONFIG_VALUE_0=*")
	return append(env, testenv.GitIdentity("Bench")...)
}

// cleanEnv is os.Environ without the named variables.
func cleanEnv(drop ...string) []string {
	var env []string
outer:
	for _, kv := range os.Environ() {
		for _, d := range drop {
			if strings.HasPrefix(kv, d+"=") {
				continue outer
			}
		}
		env = append(env, kv)
	}
	return env
}

// sysState is what one system's run has changed so far.
type sysState struct {
	modified  map[string]bool // project files saved (git status shows them)
	saveFiles []string
	safeFiles []string
}

func (b *bench) pickSaveFiles() (saves, safes []string) {
	py := b.proj.pyFiles
	n := b.cfg.saves
	for k := 0; k < 2*n; k++ {
		f := py[(k*len(py)/(2*n)+k/len(py))%len(py)]
		if k%2 == 0 {
			saves = append(saves, f)
		} else {
			safes = append(safes, f)
		}
	}
	return saves, safes
}

func (b *bench) runSystem(ctx context.Context, sys string) {
	rep := b.rep
	if sys == "sshfs" {
		if _, err := exec.LookPath("sshfs"); err != nil {
			rep.markAll(sys, cell{kind: cellNA})
			rep.notef("sshfs is not installed: its columns say n/a")
			b.logf("sshfs not installed: skipped")
			return
		}
	}
	if sys != "local" {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			rep.markAll(sys, cell{kind: cellError, note: "/dev/fuse: " + err.Error()})
			return
		}
	}

	b.logf("%s: regenerating the project on the server", sys)
	if err := b.proj.reset(ctx, filepath.Join(b.srv.Dir, projDir), b.gitEnv); err != nil {
		rep.markAll(sys, cell{kind: cellError, note: "regenerating the project: " + err.Error()})
		return
	}

	m := b.newMountPoint(sys, "")
	// m changes when a capped step leaves the mount to be replaced.
	defer func() { b.finishSystem(ctx, sys, m) }()

	st := &sysState{modified: map[string]bool{}}
	st.saveFiles, st.safeFiles = b.pickSaveFiles()

	// Mount (cold; its time is also added to the first step).
	b.logf("%s: mounting", sys)
	var mountTime time.Duration
	{
		cells, out := b.within(ctx, m, b.cfg.stepTimeout, func(sctx context.Context) map[string]cell {
			d, err := m.mount(sctx)
			if err != nil {
				return map[string]cell{"mount": {kind: cellError, d: d, note: "mount: " + err.Error()}}
			}
			return map[string]cell{"mount": {kind: cellOK, d: d}}
		}, "mount")
		c := cells["mount"]
		if out == outcomeTimeout {
			c = cell{kind: cellTimeout, note: fmt.Sprintf("no mount after %v", b.cfg.stepTimeout)}
			m.abortFUSE()
		}
		if sys == "local" {
			c = cell{kind: cellDash}
		}
		rep.set("mount", sys+"/cold", c)
		if out != outcomeDone || c.kind == cellError || c.kind == cellTimeout {
			b.logf("%s: mount failed: %s", sys, c.note)
			rep.markRest(sys)
			return
		}
		mountTime = c.d
		b.logf("%s: mounted in %s", sys, fmtDur(mountTime))
	}

	for _, pass := range []string{"cold", "warm"} {
		col := sys + "/" + pass
		for i, step := range b.cfg.steps {
			if ctx.Err() != nil {
				rep.markRest(sys)
				return
			}
			limit, capped := b.cfg.stepTimeout, false
			if c := b.stepCap(sys); c > 0 && c < limit {
				limit, capped = c, true
			}
			if h := b.cfg.hooks.beforeStep; h != nil {
				h(b, sys, pass, step)
			}
			sm := m
			cells, out := b.within(ctx, m, limit, func(sctx context.Context) map[string]cell {
				return b.runStep(sctx, sm, st, step, pass)
			}, step)
			if out == outcomeTimeout && capped {
				if m = b.afterCap(ctx, m, st, step, pass, limit, cells); m == nil {
					rep.markRest(sys)
					return
				}
				continue
			}
			switch out {
			case outcomeTimeout:
				for _, r := range stepRows(step) {
					rep.set(r, col, cell{kind: cellTimeout, note: fmt.Sprintf("%s %s: no result after %v; mount abandoned", sys, step, b.cfg.stepTimeout)})
				}
				b.logf("%s %s %s: TIMEOUT after %v", sys, pass, step, b.cfg.stepTimeout)
				m.abortFUSE()
				rep.markRest(sys)
				return
			case outcomeInterrupted:
				rep.markRest(sys)
				return
			}
			if pass == "cold" && i == 0 && addsMount(step) && m.dir != "" {
				c := cells[step]
				if c.kind == cellOK {
					c.d += mountTime
					c.note = strings.TrimPrefix(c.note+"; includes the mount ("+fmtDur(mountTime)+")", "; ")
					cells[step] = c
				}
			}
			for _, r := range stepRows(step) {
				c, ok := cells[r]
				if !ok {
					c = cell{kind: cellDash}
				}
				rep.set(r, col, c)
				b.logf("%s %s %-9s %s", sys, pass, r, c.logString())
			}
		}
	}
}

// freshSuffix names the second mount of a system, made by the freshgit
// step (its own mount point, cache and state).
const freshSuffix = "-fresh"

// newMountPoint describes a mount of sys; suffix "" is the system's main
// mount, freshSuffix the freshgit step's.
func (b *bench) newMountPoint(sys, suffix string) *mountPoint {
	m := &mountPoint{b: b, name: sys, root: b.srv.Dir, connID: -1}
	if sys != "local" {
		m.remote = true
		m.dir = filepath.Join(b.work, "mnt-"+sys+suffix)
		m.root = m.dir
		os.MkdirAll(m.dir, 0o755)
		base := filepath.Join(b.work, sys+suffix)
		m.env = testenv.DaemonEnv(b.srv.Env(), base)
		m.logFile = filepath.Join(b.work, sys+suffix+".log")
	}
	return m
}

// finishSystem reads remotefs's final status, unmounts, and checks that
// the unmount was clean and that nothing stray was left on the server.
func (b *bench) finishSystem(ctx context.Context, sys string, m *mountPoint) {
	rep := b.rep
	if m.dir != "" && mounted(m.dir) && sys == "remotefs" && ctx.Err() == nil {
		b.checkRemotefs(ctx, sys, m)
	}
	m.release()
	if m.releaseNote != "" {
		rep.notef("%s: %s", sys, m.releaseNote)
	}
	// Nothing but the saved files may have changed on the server: no temp
	// files or conflict copies left behind.
	if after, err := walkTree(context.Background(), filepath.Join(b.srv.Dir, projDir)); err == nil {
		var stray []string
		for p := range after {
			if strings.Contains(p, ".bench-save~") || strings.Contains(p, ".conflict-") {
				stray = append(stray, p)
			}
		}
		if len(stray) > 0 {
			slices.Sort(stray)
			rep.problemf("%s left %d stray file(s) on the server after unmount: %s", sys, len(stray), clip(strings.Join(stray, ", "), 500))
		}
	}
	if releaseFailed(m.releaseNote) {
		rep.problemf("%s did not unmount cleanly: %s", sys, m.releaseNote)
	}
	b.logf("%s: done (%s)", sys, m.releaseNote)
}

// checkRemotefs flushes a remotefs mount and reads its status: nothing
// may be pending, and there may be no conflicts, since nothing but the
// benchmark's own mounts changed the server.
func (b *bench) checkRemotefs(ctx context.Context, what string, m *mountPoint) {
	rep := b.rep
	t0 := time.Now()
	if _, err := runCmd(ctx, 2*time.Minute, m.env, "", b.bin, "flush", m.dir); err != nil {
		rep.problemf("%s: remotefs flush at the end of the run: %v", what, err)
	} else {
		rep.notef("%s: remotefs flush at the end of the run took %s", what, fmtDur(time.Since(t0)))
	}
	s, err := m.remotefsStatus(ctx)
	if err != nil {
		rep.notef("%s: %v", what, err)
		return
	}
	rep.notef("%s after the run: state %s, pending %d (%s), conflicts %d, cache %s, %d cached entries%s%s", what,
		s.State, s.Pending, fmtSize(s.PendingBytes), len(s.Conflicts), fmtSize(s.CacheBytes), s.CachedEntries,
		ifNotEmpty(", last error: ", s.LastError), ifNotEmpty(", upload error: ", s.UploadError))
	if hwm, rss, err := daemonMemory(s.PID); err == nil {
		rep.notef("%s: daemon (pid %d) peak resident size %s, now %s", what, s.PID, fmtSize(hwm), fmtSize(rss))
	}
	if len(s.Conflicts) > 0 {
		rep.problemf("%s reported %d conflict(s) although nothing but the benchmark's mounts changed the server (see the daemon log)", what, len(s.Conflicts))
	}
	if s.UploadError != "" || s.Pending > 0 {
		rep.problemf("%s: %d write(s) still pending at the end of the run%s", what, s.Pending, ifNotEmpty(", upload error: ", s.UploadError))
	}
}

// daemonMemory reads a process's peak and current resident size
// (VmHWM, VmRSS) from /proc.
func daemonMemory(pid int) (hwm, rss int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			hwm = kb << 10
		} else if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			rss = kb << 10
		}
	}
	if hwm == 0 {
		return 0, 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return hwm, rss, nil
}

func ifNotEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func addsMount(step string) bool { return step == "walk" || step == "git" || step == "grep" }

// stepRows are the table rows a step fills.
func stepRows(step string) []string {
	switch step {
	case "save":
		return []string{"save", "savevis"}
	case "safesave":
		return []string{"safesave", "safevis"}
	case "bulk":
		return []string{"bulk", "bulkrm"}
	case "format":
		return []string{"format", "formatgit"}
	}
	return []string{step}
}

// stepGrace is how long a step may take to return after its deadline.
const stepGrace = 10 * time.Second

type outcome int

const (
	outcomeDone outcome = iota
	outcomeTimeout
	outcomeInterrupted
)

// within runs fn with a time limit (the step timeout, or the system's cap).
// A step stuck in a FUSE call cannot be stopped from here: it is left
// behind and the result is nil (its mount is then aborted).
func (b *bench) within(ctx context.Context, m *mountPoint, limit time.Duration, fn func(context.Context) map[string]cell, what string) (map[string]cell, outcome) {
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ch := make(chan map[string]cell, 1)
	go func() { ch <- fn(sctx) }()
	select {
	case r := <-ch:
		if ctx.Err() != nil {
			return r, outcomeInterrupted
		}
		if sctx.Err() != nil {
			return r, outcomeTimeout
		}
		return r, outcomeDone
	case <-sctx.Done():
		// Give a cooperative step a moment to return what it has (a
		// killed command, or a second mount being released, takes a few
		// seconds).
		select {
		case r := <-ch:
			if ctx.Err() != nil {
				return r, outcomeInterrupted
			}
			return r, outcomeTimeout
		case <-time.After(stepGrace):
		}
		if ctx.Err() != nil {
			m.abortFUSE()
			return nil, outcomeInterrupted
		}
		return nil, outcomeTimeout
	}
}

func machineInfo() (cpu string, mem string, kernel string) {
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if cpu == "" {
		cpu = runtime.GOARCH
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(data))
	}
	return
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// execCommand is exec.CommandContext that does not wait forever for
// output pipes held by stray children.
func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// hold mounts the first selected system and waits until ctx ends.
func (b *bench) hold(ctx context.Context) error {
	sys := b.cfg.only[0]
	m := b.newMountPoint(sys, "")
	defer m.release()
	if _, err := m.mount(ctx); err != nil {
		return fmt.Errorf("mount %s: %v", sys, err)
	}
	var env []string
	for _, kv := range m.env {
		for _, k := range []string{"HOME=", "XDG_CACHE_HOME=", "XDG_RUNTIME_DIR=", "XDG_STATE_HOME="} {
			if strings.HasPrefix(kv, k) {
				env = append(env, kv)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "\n%s is mounted and held until Ctrl-C (SIGINT/SIGTERM):\n  mount:      %s\n  project:    %s\n  server dir: %s\n  big file:   %s\n  binary:     %s\n  env:        %s\n  ssh:        ssh -F %s %s\n\n",
		sys, m.root, filepath.Join(m.root, projDir), filepath.Join(b.srv.Dir, projDir), filepath.Join(m.root, bigPath),
		b.bin, strings.Join(env, " "), b.srv.ConfigFile, b.alias)
	<-ctx.Done()
	return nil
}
