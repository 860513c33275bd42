package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshot is what a program sees walking a tree: every entry's type,
// mode, size, mtime and content or symlink target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().Unix())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			desc += " -> " + tgt
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
			desc += " " + string(b)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("  %s: want %q, got %q", k, v, got[k]))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: unexpected %q", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("%s differs from the online view:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// timed runs f and fails the test if it takes longer than limit (a hang
// bound, far above normal times, not a speed check).
func boundedCall(t *testing.T, what string, limit time.Duration, f func() error) error {
	t.Helper()
	start := time.Now()
	err := f()
	if d := time.Since(start); d > limit {
		t.Errorf("%s took %v, more than the %v bound", what, d, limit)
	}
	return err
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// TestOfflineIsReadOnlyMirror cuts the link the way dropped Wi-Fi does
// (packets vanish, no reset) and checks that the cached tree stays exactly
// as it was online, that nothing blocks past the bound, and that the mount
// comes back by itself. Then it mounts from the cache alone, and with the
// server down: both read-only (without --offline-edits).
func TestOfflineIsReadOnlyMirror(t *testing.T) {
	forEachSSH(t, func(t *testing.T, _ string, setup func(*world) *world) {
		offlineIsReadOnlyMirror(t, setup(newWorld(t)))
	})
}

func offlineIsReadOnlyMirror(t *testing.T, w *world) {
	p := w.viaProxyWith("ServerAliveInterval 1\nServerAliveCountMax 3\nConnectTimeout 3")
	w.writeServer("proj/src/main.py", "print('main')\n", 0o644)
	w.writeServer("proj/src/lib/util.py", "def f(): pass\n", 0o644)
	w.writeServer("proj/run.sh", "#!/bin/sh\necho hi\n", 0o755)
	w.writeServer("proj/README.md", "# readme\n", 0o644)
	os.Symlink("src/main.py", w.s("proj/main-link"))
	w.writeServer("notseen/big.dat", strings.Repeat("z", 300000), 0o644) // not prefetched (over 256 KiB)

	w.mount()
	online := snapshot(t, w.m("proj"))
	if len(online) < 6 {
		t.Fatalf("online snapshot too small: %v", online)
	}
	// Listed but never read: its content is not cached.
	if _, err := os.Stat(w.m("notseen/big.dat")); err != nil {
		t.Fatal(err)
	}

	p.Blackhole(true)
	eventually(t, 30*time.Second, "the mount to notice the dead link", func() bool { return w.status().State == "offline" })

	sameSnapshot(t, "offline view", online, timedSnapshot(t, w.m("proj")))
	bound := 12 * time.Second
	err := boundedCall(t, "read of uncached content", bound, func() error { _, err := os.ReadFile(w.m("notseen/big.dat")); return err })
	if err == nil {
		t.Errorf("reading uncached content offline succeeded")
	}

	p.Blackhole(false)
	eventually(t, 60*time.Second, "the mount to go back online by itself", func() bool { return w.status().State == "online" })
	if err := os.WriteFile(w.m("proj/after.txt"), []byte("back online\n"), 0o644); err != nil {
		t.Fatalf("write after reconnect: %v", err)
	}
	w.must(binary, "flush", w.mnt)
	if b, _ := os.ReadFile(w.s("proj/after.txt")); string(b) != "back online\n" {
		t.Fatalf("server after.txt = %q", b)
	}
	online = snapshot(t, w.m("proj"))
	w.unmount()

	// --offline mounts from the cache alone while the server is unreachable.
	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	w.mount("--offline")
	sameSnapshot(t, "--offline view", online, snapshot(t, w.m("proj")))
	wantErrno(t, "create in --offline mount", os.WriteFile(w.m("proj/x"), nil, 0o644), syscall.EROFS)
	w.unmount()

	// A plain mount with the server unreachable but a cache starts offline,
	// says so, and goes online by itself when the server is back.
	r := w.run(binary, "mount", w.spec(), w.mnt)
	if r.code != 0 || !strings.Contains(r.stderr, "offline") {
		t.Fatalf("mount with server down: exit %d, stderr %q; want 0 and a warning", r.code, r.stderr)
	}
	if st := w.status(); st.State == "online" {
		t.Fatalf("state %q with the server down", st.State)
	}
	sameSnapshot(t, "view when mounted offline", online, snapshot(t, w.m("proj")))
	// Started without its server and without --offline-edits: read-only.
	wantErrno(t, "create in a mount started offline", os.WriteFile(w.m("proj/x"), nil, 0o644), syscall.EROFS)
	if err := p.Refuse(false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the offline-started mount to go online", func() bool { return w.status().State == "online" })
	w.unmount()
}

func timedSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	start := time.Now()
	s := snapshot(t, root)
	if d := time.Since(start); d > 12*time.Second {
		t.Errorf("walking the cached tree offline took %v", d)
	}
	return s
}

// TestNoCacheNoServer: with neither, mount fails clearly.
func TestNoCacheNoServer(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	r := w.run(binary, "mount", w.spec(), w.mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "no cache") {
		t.Fatalf("exit %d, stderr %q: want failure mentioning that there is no cache", r.code, r.stderr)
	}
	if mounted(w.mnt) {
		t.Fatal("left mounted")
	}
	r = w.run(binary, "mount", "--offline", w.spec(), w.mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "no cache") {
		t.Fatalf("--offline without cache: exit %d, stderr %q", r.code, r.stderr)
	}
}
