package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"remotefs/internal/control"
)

// The cache, the control socket and the logs belong to the user alone, and
// other users cannot look into the mount (no allow_other).
func TestPrivateFilesAndMount(t *testing.T) {
	w := newWorld(t)
	w.writeServer("secret/plan.txt", "private\n", 0o644)
	w.mount()
	if _, err := os.ReadFile(w.m("secret/plan.txt")); err != nil {
		t.Fatal(err)
	}
	st := w.status()
	checkMode := func(p string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s has mode %o, want at most %o", p, got, want)
		}
	}
	checkMode(st.CacheDir, 0o700)
	checkMode(filepath.Join(st.CacheDir, "meta.db"), 0o600)
	checkMode(filepath.Join(st.CacheDir, "journal.wal"), 0o600)
	checkMode(filepath.Join(st.CacheDir, "content"), 0o700)
	sockDir := filepath.Join(w.xdg, "run", "remotefs")
	checkMode(sockDir, 0o700)
	var sock string
	for _, kv := range w.env {
		if strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			os.Setenv("XDG_RUNTIME_DIR", strings.TrimPrefix(kv, "XDG_RUNTIME_DIR="))
			sock = control.SocketPath(w.mnt)
			os.Unsetenv("XDG_RUNTIME_DIR")
		}
	}
	checkMode(sock, 0o600)
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	if len(logs) == 0 {
		t.Error("no log file")
	}
	for _, l := range logs {
		checkMode(l, 0o600)
		b, _ := os.ReadFile(l)
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("log %s contains key material", l)
		}
	}
	// Another user: the kernel refuses access to a FUSE mount not made
	// with allow_other.
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("setpriv"); err == nil {
			out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls", w.m("secret")).CombinedOutput()
			if err == nil {
				t.Errorf("another user listed the mount: %s", out)
			} else if !strings.Contains(string(out), "ermission denied") {
				t.Logf("another user's ls failed (as it should) with: %s", out)
			}
		}
	}
}

// Connections reset in the middle of uploads over a slow, throttled link:
// everything still arrives, once, with no temporary files left.
func TestResetsDuringThrottledUploads(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	w.mount()
	p.SetLatency(5 * time.Millisecond)
	p.SetBandwidth(256 << 10)                               // 256 KiB/s
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if err := os.WriteFile(w.m("big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := os.WriteFile(w.m(fmt.Sprintf("small%d.txt", i)), []byte(fmt.Sprintf("small %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		time.Sleep(700 * time.Millisecond)
		p.ResetAll()
	}
	p.SetBandwidth(0)
	eventually(t, 60*time.Second, "everything to be delivered after the resets", func() bool {
		st := w.status()
		return st.State == "online" && st.Pending == 0
	})
	w.must(binary, "flush", w.mnt)
	if b, err := os.ReadFile(w.s("big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("big.bin on the server: %d bytes, %v", len(b), err)
	}
	for i := 0; i < 10; i++ {
		if b, _ := os.ReadFile(w.s(fmt.Sprintf("small%d.txt", i))); string(b) != fmt.Sprintf("small %d\n", i) {
			t.Errorf("small%d.txt = %q", i, b)
		}
	}
	w.unmount()
	noTempFiles(t, w.root)
}
