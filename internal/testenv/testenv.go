// Package testenv is the test set-up that the tests of conn, cache, e2e,
// internal/netproxy and the benchmark share, so that each piece exists
// once: waiting for a condition, writing a server tree, a buffer two
// goroutines can share, building the remotefs binary, the environment a
// mount's commands run in (their own cache, runtime and state folders;
// git's fixed identity), and the checks that this machine can mount with
// FUSE and that a folder is a mount point. The real sshd and its client
// files (keys, known_hosts, ssh_config Host blocks) are
// internal/sshdtest's; the latency and dead-link proxy is
// internal/netproxy's.
//
// It is for tests and the benchmark only: no product package imports it
// or sshdtest (TestOnlyTestsImportTheTestSetup checks). Nothing here holds
// a lock across a wait, and every wait is bounded: Eventually by its
// duration, BuildRemotefs by its context.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"remotefs/internal/mountinfo"
)

// Eventually polls cond every 50 ms until it holds, and fails t if it
// does not within d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	EventuallyEvery(t, d, 50*time.Millisecond, what, cond)
}

// EventuallyEvery is Eventually polling every every: for conditions a
// test must catch soon after they come to hold (an upload in flight).
func EventuallyEvery(t testing.TB, d, every time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(d, every, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Poll is EventuallyEvery for callers that handle the timeout
// themselves: it reports whether cond came to hold within d.
func Poll(d, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// LockedBuffer is a bytes.Buffer that a writing goroutine (a process's
// stdout) and a reading test can share.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// WriteFile writes content to root/rel, making the folders on the way
// (0755), and gives the file mode exactly (the umask aside). Tests use it
// to put files on the server side directly, behind the mount's back.
func WriteFile(t testing.TB, root, rel, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// CopyFile copies the file from to the file to (made as WriteFile makes
// it), with mode: a key into a client home, a program under another name.
func CopyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Dir(to), filepath.Base(to), string(b), mode)
}

// DaemonEnv is env for remotefs commands whose mounts keep their cache,
// control sockets and logs apart under base: XDG_CACHE_HOME, XDG_RUNTIME_DIR
// (made, mode 0700, as a login session's is) and XDG_STATE_HOME.
func DaemonEnv(env []string, base string) []string {
	os.MkdirAll(filepath.Join(base, "run"), 0o700)
	return append(env[:len(env):len(env)],
		"XDG_CACHE_HOME="+filepath.Join(base, "cache"),
		"XDG_RUNTIME_DIR="+filepath.Join(base, "run"),
		"XDG_STATE_HOME="+filepath.Join(base, "state"))
}

// GitIdentity is the environment that makes git's commits the same on
// every run and machine: author and committer name (with the e-mail
// address name@example.com, lower case), a fixed date for both, and no
// system-wide git configuration.
func GitIdentity(name string) []string {
	email := strings.ToLower(name) + "@example.com"
	return []string{
		"GIT_AUTHOR_NAME=" + name, "GIT_AUTHOR_EMAIL=" + email,
		"GIT_COMMITTER_NAME=" + name, "GIT_COMMITTER_EMAIL=" + email,
		"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z",
		"GIT_CONFIG_NOSYSTEM=1",
	}
}

// RequireFUSE skips t when this machine cannot mount (no /dev/fuse or no
// fusermount3), unless REMOTEFS_REQUIRE_FUSE=1 (CI, make test), where it
// fails t.
func RequireFUSE(t testing.TB) {
	t.Helper()
	_, errDev := os.Stat("/dev/fuse")
	_, errBin := exec.LookPath("fusermount3")
	if errDev == nil && errBin == nil {
		return
	}
	msg := fmt.Sprintf("FUSE not usable here (/dev/fuse: %v, fusermount3: %v)", errDev, errBin)
	if os.Getenv("REMOTEFS_REQUIRE_FUSE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Mounted reports whether dir is a mount point of this process's mount
// namespace, by /proc/self/mountinfo (through internal/mountinfo; the
// mount itself is not touched, so a hung mount does not hang the caller).
func Mounted(dir string) bool {
	_, ok := mountinfo.Lookup(dir)
	return ok
}

// BuildRemotefs builds the remotefs command (remotefs/cmd/remotefs) into
// out, with the race detector when race is set. The go command runs in dir
// ("" for the current folder), which must be inside the module. It takes
// go from PATH, or else from the running toolchain's GOROOT.
func BuildRemotefs(ctx context.Context, dir, out string, race bool) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goTool, append(args, "-o", out, "remotefs/cmd/remotefs")...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building remotefs: %v\n%s", err, b)
	}
	return nil
}

// CountLogins gives the account whose home is remoteHome (an sshdtest
// server's RemoteHome, which sshd runs commands with as $HOME) a
// ~/.bashrc that takes delay to start, as sshdtest's LoginShellDelay does,
// and also counts its starts: every exec channel is one, the SFTP
// subsystem (internal-sftp, with LoginShellDelay) none. It returns the
// count so far.
func CountLogins(t testing.TB, remoteHome string, delay time.Duration) func() int {
	t.Helper()
	log := filepath.Join(t.TempDir(), "logins")
	if err := os.WriteFile(log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(log), 0o777) // the login user may not be this one
	rc := fmt.Sprintf("sleep %.3f\necho \"$$\" >> '%s'\n", delay.Seconds(), log)
	if err := os.WriteFile(filepath.Join(remoteHome, ".bashrc"), []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() int {
		b, _ := os.ReadFile(log)
		return bytes.Count(b, []byte("\n"))
	}
}
