package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf is recorded, not fatal.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	calls := 0
	rec := &fatalRecorder{TB: t}
	Eventually(rec, 5*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if rec.msg != "" || calls != 3 {
		t.Fatalf("a condition that came true failed: %q after %d calls", rec.msg, calls)
	}

	t0 := time.Now()
	Eventually(rec, 200*time.Millisecond, "never", func() bool { return false })
	took := time.Since(t0)
	if rec.msg != "timed out after 200ms waiting for never" {
		t.Fatalf("timeout message %q", rec.msg)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("gave up after %v, want about 200ms", took)
	}
}

func TestPoll(t *testing.T) {
	start := time.Now()
	if !Poll(5*time.Second, time.Millisecond, func() bool { return time.Since(start) > 30*time.Millisecond }) {
		t.Fatal("Poll gave up on a condition that came true")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a condition true after 30ms took %v to be seen", took)
	}
	if Poll(20*time.Millisecond, time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll reported a condition that never held")
	}
}

func TestWriteFileAndCopyFile(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	root := t.TempDir()
	WriteFile(t, root, "a/b/c.txt", "hello", 0o664)
	p := filepath.Join(root, "a", "b", "c.txt")
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o664 {
		t.Fatalf("mode %v, want 0664 whatever the umask", st.Mode())
	}
	if b, _ := os.ReadFile(p); string(b) != "hello" {
		t.Fatalf("content %q", b)
	}
	WriteFile(t, root, "a/b/c.txt", "again", 0o600)
	if b, _ := os.ReadFile(p); string(b) != "again" {
		t.Fatalf("rewritten content %q", b)
	}

	to := filepath.Join(root, "x", "copy")
	CopyFile(t, p, to, 0o755)
	st, err = os.Stat(to)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("copy: %v %v", st, err)
	}
	if b, _ := os.ReadFile(to); string(b) != "again" {
		t.Fatalf("copied content %q", b)
	}
}

func TestMounted(t *testing.T) {
	if !Mounted("/") {
		t.Fatal("/ is not a mount point")
	}
	if Mounted(t.TempDir()) {
		t.Fatal("a fresh temporary folder is a mount point")
	}
}

func TestLockedBuffer(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "%d", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Fatalf("%d bytes, want 400", n)
	}
}

// Outside the module the build fails with go's own reason.
func TestBuildRemotefsOutsideModule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := BuildRemotefs(ctx, t.TempDir(), filepath.Join(t.TempDir(), "remotefs"), false)
	if err == nil || !strings.Contains(err.Error(), "building remotefs") {
		t.Fatalf("build outside the module: %v", err)
	}
}

func TestDaemonEnv(t *testing.T) {
	base := t.TempDir()
	in := make([]string, 1, 8)
	in[0] = "HOME=/h"
	env := DaemonEnv(in, base)
	want := []string{"HOME=/h", "XDG_CACHE_HOME=" + base + "/cache", "XDG_RUNTIME_DIR=" + base + "/run", "XDG_STATE_HOME=" + base + "/state"}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Fatalf("env %q", env)
	}
	other := DaemonEnv(in, base+"/2")
	if env[1] != want[1] || other[1] == env[1] {
		t.Fatalf("two environments from one slice share their entries: %q %q", env, other)
	}
	st, err := os.Stat(filepath.Join(base, "run"))
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("runtime dir: %v %v", st, err)
	}
}

// Two repositories made apart with GitIdentity get the same commit.
func TestGitIdentityMakesTheSameCommit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	var heads []string
	for i := range 2 {
		dir := t.TempDir()
		env := append(append(os.Environ(), "HOME="+dir), GitIdentity("Tester")...)
		for _, args := range [][]string{{"init", "-q"}, {"commit", "-q", "--allow-empty", "-m", "one"}, {"rev-parse", "HEAD"}} {
			cmd := exec.Command("git", args...)
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("repo %d: git %v: %v\n%s", i, args, err, out)
			}
			if args[0] == "rev-parse" {
				heads = append(heads, strings.TrimSpace(string(out)))
			}
		}
		if i == 0 {
			time.Sleep(1100 * time.Millisecond) // the clock moves on to another second
		}
	}
	if heads[0] != heads[1] || len(heads[0]) < 40 {
		t.Fatalf("commits %q", heads)
	}
}

// No package of the product imports the test set-up: only tests, the
// benchmark and the test-support packages do.
func TestOnlyTestsImportTheTestSetup(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "remotefs/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	support := map[string]bool{
		"remotefs/bench": true, "remotefs/e2e": true, "remotefs/conn/conntest": true,
		"remotefs/internal/sshdtest": true, "remotefs/internal/testenv": true,
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || support[f[0]] {
			continue
		}
		checked++
		for _, dep := range f[1:] {
			if dep == "remotefs/internal/testenv" || dep == "remotefs/internal/sshdtest" {
				t.Errorf("%s imports %s", f[0], dep)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d product packages listed:\n%s", checked, out)
	}
}
