// Package e2e drives the real remotefs binary against a real OpenSSH sshd
// on loopback and a real kernel FUSE mount, with ordinary programs. The
// mount is always served by the binary in its own process.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/control"
	"remotefs/internal/netproxy"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "remotefs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "remotefs")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err = testenv.BuildRemotefs(ctx, "", binary, true)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireFUSE skips when this machine cannot mount, unless
// REMOTEFS_REQUIRE_FUSE=1 (CI), where it fails.
var requireFUSE = testenv.RequireFUSE

// world is one sshd, one client HOME and one mountpoint.
type world struct {
	t     *testing.T
	srv   *sshdtest.Server
	mnt   string // mountpoint
	root  string // remote root on the server side (srv.Dir)
	xdg   string
	env   []string
	alias string // ssh_config alias the mount uses
	// cred: the local user commands run as (nil: the test's own).
	cred *syscall.Credential
	// sshFlags are given to every mount (--ssh=openssh in the openssh
	// runs of the core tests).
	sshFlags []string
}

// sshModes are the ssh implementations the core tests run over.
var sshModes = []string{"builtin", "openssh"}

// forEachSSH runs test once per ssh implementation, as subtests; the
// world it is given mounts with that implementation.
func forEachSSH(t *testing.T, test func(t *testing.T, mode string, setup func(*world) *world)) {
	for _, mode := range sshModes {
		t.Run(mode, func(t *testing.T) {
			if mode == "openssh" {
				if _, err := exec.LookPath("ssh"); err != nil {
					t.Skip("no ssh program")
				}
			}
			test(t, mode, func(w *world) *world {
				w.sshFlags = nil
				if mode != "builtin" {
					w.sshFlags = []string{"--ssh=" + mode}
				}
				return w
			})
		})
	}
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, sshdtest.Options{})
}

// newWorldWith is newWorld with a server started with opts.
func newWorldWith(t *testing.T, opts sshdtest.Options) *world {
	t.Helper()
	requireFUSE(t)
	return newWorldAt(t, sshdtest.StartWith(t, opts), t.TempDir())
}

// newWorldAt is newWorld with a given server and base folder.
func newWorldAt(t *testing.T, srv *sshdtest.Server, base string) *world {
	t.Helper()
	w := &world{t: t, srv: srv, mnt: filepath.Join(base, "mnt"), root: srv.Dir, xdg: base, alias: sshdtest.Alias}
	if err := os.Mkdir(w.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	w.env = append(append(testenv.DaemonEnv(srv.Env(), base), testenv.GitIdentity("Test")...),
		"GORACE=atexit_sleep_ms=0", // the race-built binary would wait 1s at every exit
	)
	if mode := os.Getenv("REMOTEFS_E2E_SSH"); mode != "" && mode != "builtin" {
		// The whole suite over another ssh implementation:
		// REMOTEFS_E2E_SSH=openssh go test ./e2e/
		w.sshFlags = []string{"--ssh=" + mode}
	}
	t.Cleanup(w.cleanup)
	return w
}

// forceUnmount takes down whatever is still mounted at the mountpoint:
// remotefs unmount --force, and a lazy fusermount3 -u -z when that fails.
func (w *world) forceUnmount() {
	if mounted(w.mnt) {
		w.run(binary, "unmount", "--force", w.mnt)
	}
	if mounted(w.mnt) {
		exec.Command("fusermount3", "-u", "-z", w.mnt).Run()
	}
}

func (w *world) cleanup() {
	w.forceUnmount()
	if w.t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			n := 6000
			if os.Getenv("REMOTEFS_FULL_LOG") == "1" {
				n = len(b)
			}
			w.t.Logf("daemon log %s:\n%s", l, tailString(string(b), n))
		}
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// result of a command.
type result struct {
	code           int
	stdout, stderr string
}

// run runs a command with the world's environment, in no particular dir.
func (w *world) run(name string, args ...string) result {
	return w.runIn("", name, args...)
}

func (w *world) runIn(dir, name string, args ...string) result {
	w.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = w.env
	cmd.Dir = dir
	if w.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: w.cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("start %s: %v", name, err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		w.t.Fatalf("%s %v: still running after 90s (hung)", name, args)
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("%s: %v", name, err)
	}
	return r
}

// must runs a command and fails the test if it exits non-zero.
func (w *world) must(name string, args ...string) string {
	w.t.Helper()
	r := w.run(name, args...)
	if r.code != 0 {
		w.t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (w *world) mustIn(dir, name string, args ...string) string {
	w.t.Helper()
	r := w.runIn(dir, name, args...)
	if r.code != 0 {
		w.t.Fatalf("(in %s) %s %s: exit %d\nstdout: %s\nstderr: %s", dir, name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (w *world) spec() string { return w.alias + ":" + w.root }

func (w *world) mount(extra ...string) {
	w.t.Helper()
	args := append(append([]string{"mount"}, w.sshFlags...), extra...)
	args = append(args, w.spec(), w.mnt)
	w.must(binary, args...)
	if !mounted(w.mnt) {
		w.t.Fatalf("remotefs mount returned 0 but %s is not mounted", w.mnt)
	}
	if len(w.sshFlags) > 0 && !strings.Contains(w.srv.Log(), "remote software version OpenSSH") {
		w.t.Fatalf("mounted with %v, but sshd saw no OpenSSH client", w.sshFlags)
	}
}

func (w *world) unmount() {
	w.t.Helper()
	w.must(binary, "unmount", w.mnt)
	if mounted(w.mnt) {
		w.t.Fatalf("still mounted after unmount")
	}
}

func (w *world) status() control.Status {
	w.t.Helper()
	out := w.must(binary, "status", "--json", w.mnt)
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		w.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// m is a path on the mount; s the same path on the server.
func (w *world) m(rel string) string { return filepath.Join(w.mnt, rel) }
func (w *world) s(rel string) string { return filepath.Join(w.root, rel) }

// mounted reports whether dir is a mount point.
var mounted = testenv.Mounted

// eventually polls cond until it holds or the deadline passes.
var eventually = testenv.Eventually

// writeServer creates a file on the server side directly.
func (w *world) writeServer(rel, content string, mode os.FileMode) {
	w.t.Helper()
	testenv.WriteFile(w.t, w.root, rel, content, mode)
}

// viaProxy makes the world's mounts reach sshd through a netproxy (for
// latency and dead-link tests) under the ssh_config alias "proxybox".
func (w *world) viaProxy() *netproxy.Proxy {
	w.t.Helper()
	return w.viaProxyWith("")
}

// viaProxyWith is viaProxy with extra ssh_config lines for the proxybox
// host (e.g. "ServerAliveInterval 1").
func (w *world) viaProxyWith(extraConfig string) *netproxy.Proxy {
	w.t.Helper()
	p, err := netproxy.New("127.0.0.1:0", w.srv.Addr)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(p.Close)
	if err := w.srv.AddProxyHost("proxybox", p.Addr(), strings.Split(extraConfig, "\n")...); err != nil {
		w.t.Fatal(err)
	}
	w.alias = "proxybox"
	return p
}
