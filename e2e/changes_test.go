package e2e

import (
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// Files a `remotefs run` command writes on the server are on the mount as
// soon as run returns.
func TestRunOutputVisibleAtOnce(t *testing.T) {
	w := newWorld(t)
	w.writeServer("proj/train.py", "print('training')\n", 0o644)
	w.mount()
	if _, err := os.ReadDir(w.m("proj")); err != nil {
		t.Fatal(err)
	}
	w.mustIn(w.m("proj"), binary, "run", "sh", "-c", "mkdir -p results && echo 'loss 0.1' > results/metrics.txt && rm train.py")
	b, err := os.ReadFile(w.m("proj/results/metrics.txt"))
	if err != nil || string(b) != "loss 0.1\n" {
		t.Fatalf("results/metrics.txt right after run: %q, %v", b, err)
	}
	if _, err := os.Stat(w.m("proj/train.py")); !os.IsNotExist(err) {
		t.Fatalf("train.py removed by the command still visible: %v", err)
	}
}

// Changes made on the server appear on the mount without a remount or a
// cache timeout: a file edited, created and deleted, a new folder with
// files, a rename. Measured per change; the bound is generous (a hang
// check), the typical times are logged.
func TestServerChangesAppear(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		bound time.Duration
	}{{"helper", 2 * time.Second}, {"poll", 5 * time.Second}} {
		t.Run(tc.mode, func(t *testing.T) {
			w := newWorld(t)
			w.writeServer("proj/results/log.txt", "epoch 1\n", 0o644)
			w.writeServer("proj/old.txt", "old\n", 0o644)
			w.writeServer("proj/name.txt", "name\n", 0o644)
			// Long TTLs so that only the change feed can explain what is seen.
			w.mount("--watch", tc.mode, "--poll-interval", "1s", "--dir-ttl", "1h", "--attr-ttl", "1h")
			eventually(t, 10*time.Second, "the change feed to start", func() bool { return w.status().Watch == tc.mode })
			// Warm the cache (and the kernel's).
			if b, _ := os.ReadFile(w.m("proj/results/log.txt")); string(b) != "epoch 1\n" {
				t.Fatalf("log = %q", b)
			}
			os.ReadDir(w.m("proj"))
			os.Stat(w.m("proj/new.txt"))

			var times []time.Duration
			step := func(what string, change func(), seen func() bool) {
				t.Helper()
				start := time.Now()
				change()
				deadline := start.Add(tc.bound)
				for !seen() {
					if time.Now().After(deadline) {
						t.Fatalf("%s: not visible on the mount after %v", what, tc.bound)
					}
					time.Sleep(20 * time.Millisecond)
				}
				times = append(times, time.Since(start))
				t.Logf("%s: visible after %v", what, time.Since(start).Round(time.Millisecond))
			}
			step("edit", func() {
				w.writeServer("proj/results/log.txt", "epoch 1\nepoch 2\n", 0o644)
			}, func() bool {
				b, _ := os.ReadFile(w.m("proj/results/log.txt"))
				return string(b) == "epoch 1\nepoch 2\n"
			})
			step("create", func() { w.writeServer("proj/new.txt", "new\n", 0o644) }, func() bool {
				b, err := os.ReadFile(w.m("proj/new.txt"))
				return err == nil && string(b) == "new\n"
			})
			step("delete", func() { os.Remove(w.s("proj/old.txt")) }, func() bool {
				_, err := os.Stat(w.m("proj/old.txt"))
				return os.IsNotExist(err)
			})
			step("new folder with files", func() {
				w.writeServer("proj/runs/1/metrics.json", "{}", 0o644)
				w.writeServer("proj/runs/1/ckpt.txt", "weights", 0o644)
			}, func() bool {
				b, err := os.ReadFile(w.m("proj/runs/1/ckpt.txt"))
				return err == nil && string(b) == "weights"
			})
			step("rename", func() { os.Rename(w.s("proj/name.txt"), w.s("proj/renamed.txt")) }, func() bool {
				_, errOld := os.Stat(w.m("proj/name.txt"))
				b, _ := os.ReadFile(w.m("proj/renamed.txt"))
				return os.IsNotExist(errOld) && string(b) == "name\n"
			})
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			t.Logf("%s: median %v", tc.mode, times[len(times)/2].Round(time.Millisecond))

			w.unmount()
			// Nothing of the mount keeps running on the server.
			eventually(t, 10*time.Second, "the watcher to exit on the server", func() bool {
				return !watcherRunning(w.root)
			})
		})
	}
}

// watcherRunning reports whether a watcher process whose command line mentions s
// is running (the server is this machine in tests).
func watcherRunning(s string) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, s) && (strings.Contains(cmd, "__watch") || strings.Contains(cmd, "find ") || strings.Contains(cmd, "inotifywait")) {
			return true
		}
	}
	return false
}
