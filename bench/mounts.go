package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"remotefs/internal/testenv"
)

// cleanups run in reverse order, once, however the benchmark ends.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *cleanups) run() {
	for {
		c.mu.Lock()
		if len(c.fns) == 0 {
			c.mu.Unlock()
			return
		}
		f := c.fns[len(c.fns)-1]
		c.fns = c.fns[:len(c.fns)-1]
		c.mu.Unlock()
		f()
	}
}

// mountPoint is one system under test: where the served directory appears
// and how to get rid of it.
type mountPoint struct {
	b      *bench
	name   string // remotefs, sshfs, local
	root   string // the server directory as this system shows it
	dir    string // mountpoint ("" for local)
	remote bool   // a network filesystem (close-to-server is measured)
	env    []string
	connID int // FUSE connection number (for /sys/fs/fuse/connections), -1 unknown
	pid    int // process serving the mount (remotefs daemon, sshfs)

	sshfs     *exec.Cmd
	sshfsDone chan struct{}
	logFile   string

	releaseOnce sync.Once
	releaseNote string // how the unmount went
}

// mounted reports whether dir is a mount point.
var mounted = testenv.Mounted

// fuseConnID is the FUSE connection number of the mount at dir: the minor
// number of its device.
func fuseConnID(dir string) int {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return -1
	}
	dev := uint64(st.Dev)
	return int((dev & 0xff) | ((dev >> 12) & 0xfff00))
}

// abortFUSE aborts the mount's FUSE connection, so every request stuck on
// it fails at once (needs fusectl at /sys/fs/fuse/connections; best effort).
func (m *mountPoint) abortFUSE() {
	if m.connID < 0 || m.dir == "" {
		return
	}
	os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", m.connID), []byte("1"), 0)
}

// runCmd runs a command with a deadline and returns its combined output.
func runCmd(ctx context.Context, timeout time.Duration, env []string, dir, name string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if cctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%s %s: no answer after %v", name, strings.Join(args, " "), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

// mount makes the system live and returns how long that took.
func (m *mountPoint) mount(ctx context.Context) (time.Duration, error) {
	switch m.name {
	case "local":
		return 0, nil
	case "remotefs":
		return m.mountRemotefs(ctx)
	case "sshfs":
		return m.mountSSHFS(ctx)
	}
	return 0, fmt.Errorf("unknown system %q", m.name)
}

func (m *mountPoint) mountRemotefs(ctx context.Context) (time.Duration, error) {
	b := m.b
	m.b.cl.add(m.release)
	t0 := time.Now()
	_, err := runCmd(ctx, 3*time.Minute, m.env, "", b.bin, "mount", b.alias+":"+b.srv.Dir, m.dir)
	d := time.Since(t0)
	if err != nil {
		return d, err
	}
	if !mounted(m.dir) {
		return d, fmt.Errorf("remotefs mount exited 0 but %s is not a mount point", m.dir)
	}
	if _, err := os.Stat(m.dir); err != nil {
		return time.Since(t0), fmt.Errorf("stat of the fresh remotefs mount: %v", err)
	}
	d = time.Since(t0)
	m.connID = fuseConnID(m.dir)
	if st, err := m.remotefsStatus(ctx); err == nil {
		m.pid = st.PID
	}
	return d, nil
}

// rfStatus is the part of `remotefs status --json` the benchmark reads.
type rfStatus struct {
	State         string `json:"state"`
	LastError     string `json:"last_error"`
	PID           int    `json:"pid"`
	Pending       int    `json:"pending"`
	PendingBytes  int64  `json:"pending_bytes"`
	UploadError   string `json:"upload_error"`
	Conflicts     []any  `json:"conflicts"`
	CacheBytes    int64  `json:"cache_bytes"`
	CachedEntries int    `json:"cached_entries"`
}

func (m *mountPoint) remotefsStatus(ctx context.Context) (*rfStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, m.b.bin, "status", "--json", m.dir)
	cmd.Env = m.env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("remotefs status: %v", err)
	}
	// One mount: an object; tolerate a list too.
	var st rfStatus
	if err := json.Unmarshal(out, &st); err != nil {
		var list []rfStatus
		if err2 := json.Unmarshal(out, &list); err2 != nil || len(list) == 0 {
			return nil, fmt.Errorf("remotefs status --json: %v: %s", err, out)
		}
		st = list[0]
	}
	return &st, nil
}

func (m *mountPoint) mountSSHFS(ctx context.Context) (time.Duration, error) {
	b := m.b
	logf, err := os.Create(m.logFile)
	if err != nil {
		return 0, err
	}
	// -f keeps sshfs attached so the benchmark owns its process; the
	// options are sshfs's defaults otherwise.
	cmd := exec.Command("sshfs", "-f", "-F", b.srv.ConfigFile, b.alias+":"+b.srv.Dir, m.dir)
	cmd.Env = m.env
	cmd.Stdout, cmd.Stderr = logf, logf
	m.b.cl.add(m.release)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, err
	}
	m.sshfs, m.pid = cmd, cmd.Process.Pid
	m.sshfsDone = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(m.sshfsDone)
	}()
	deadline := time.After(3 * time.Minute)
	for !mounted(m.dir) {
		select {
		case <-m.sshfsDone:
			log, _ := os.ReadFile(m.logFile)
			return time.Since(t0), fmt.Errorf("sshfs exited: %s", strings.TrimSpace(string(log)))
		case <-deadline:
			return time.Since(t0), errors.New("sshfs did not mount within 3 minutes")
		case <-ctx.Done():
			return time.Since(t0), ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	// The mount is live once it answers: stat its root.
	if _, err := os.Stat(m.dir); err != nil {
		return time.Since(t0), fmt.Errorf("stat of the fresh sshfs mount: %v", err)
	}
	d := time.Since(t0)
	m.connID = fuseConnID(m.dir)
	return d, nil
}

// release unmounts however it takes: the polite way first (remotefs
// unmount delivers pending writes), then force, then fusermount3 -u, then
// an aborted connection and a lazy unmount, then killing the server
// process. It never hangs for long. It records what happened.
func (m *mountPoint) release() {
	m.releaseOnce.Do(func() {
		if m.dir == "" {
			return
		}
		var notes []string
		polite := func() {
			t0 := time.Now()
			var err error
			switch m.name {
			case "remotefs":
				_, err = runCmd(context.Background(), 3*time.Minute, m.env, "", m.b.bin, "unmount", m.dir)
			case "sshfs":
				_, err = runCmd(context.Background(), time.Minute, m.env, "", "fusermount3", "-u", m.dir)
			}
			if err != nil {
				notes = append(notes, fmt.Sprintf("unmount failed after %s: %v", fmtDur(time.Since(t0)), err))
			} else {
				notes = append(notes, fmt.Sprintf("unmount took %s", fmtDur(time.Since(t0))))
			}
		}
		if mounted(m.dir) {
			polite()
		}
		if m.name == "remotefs" && mounted(m.dir) {
			if _, err := runCmd(context.Background(), time.Minute, m.env, "", m.b.bin, "unmount", "--force", m.dir); err != nil {
				notes = append(notes, "unmount --force: "+err.Error())
			} else {
				notes = append(notes, "needed unmount --force")
			}
		}
		if mounted(m.dir) {
			if _, err := runCmd(context.Background(), 30*time.Second, nil, "", "fusermount3", "-u", m.dir); err == nil {
				notes = append(notes, "needed fusermount3 -u")
			}
		}
		if mounted(m.dir) {
			m.abortFUSE()
			runCmd(context.Background(), 30*time.Second, nil, "", "fusermount3", "-u", "-z", m.dir)
			notes = append(notes, "needed a lazy unmount (fusermount3 -u -z)")
		}
		// The process that served the mount must be gone too.
		if m.sshfs != nil {
			select {
			case <-m.sshfsDone:
			case <-time.After(10 * time.Second):
				m.sshfs.Process.Signal(syscall.SIGTERM)
				select {
				case <-m.sshfsDone:
				case <-time.After(5 * time.Second):
					m.sshfs.Process.Kill()
					notes = append(notes, "had to kill sshfs")
				}
			}
		} else if m.pid > 0 {
			if waitGone(m.pid, 15*time.Second) == false {
				syscall.Kill(m.pid, syscall.SIGTERM)
				if !waitGone(m.pid, 5*time.Second) {
					syscall.Kill(m.pid, syscall.SIGKILL)
				}
				notes = append(notes, fmt.Sprintf("had to kill the remotefs daemon (pid %d)", m.pid))
			}
		}
		if mounted(m.dir) {
			notes = append(notes, "STILL MOUNTED at "+m.dir)
		}
		m.releaseNote = strings.Join(notes, "; ")
	})
}

// waitGone waits until pid has exited (or is a zombie).
func waitGone(pid int, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z")) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonLogs lists the remotefs daemon logs of this mount's state dir.
func (m *mountPoint) daemonLogs() []string {
	var logs []string
	for _, kv := range m.env {
		if d, ok := strings.CutPrefix(kv, "XDG_STATE_HOME="); ok {
			logs, _ = filepath.Glob(filepath.Join(d, "remotefs", "*"))
		}
	}
	return logs
}
