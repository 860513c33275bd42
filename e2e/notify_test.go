package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventWatcher runs a program that prints one line per inotify event,
// "EVENTS PATH" (EVENTS comma-separated), and collects the lines.
type eventWatcher struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen []string
}

// startEventWatcher starts args, waits for readyLine on its output (or
// stderr when fromStderr), and collects the events it prints.
func startEventWatcher(t *testing.T, name string, args []string, readyLine string, fromStderr bool) *eventWatcher {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	w := &eventWatcher{t: t, name: name, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan struct{})
	var once sync.Once
	collect := func(sc *bufio.Scanner, isReady bool) {
		for sc.Scan() {
			line := sc.Text()
			if isReady && strings.Contains(line, readyLine) {
				once.Do(func() { close(ready) })
				continue
			}
			w.mu.Lock()
			w.seen = append(w.seen, line)
			w.mu.Unlock()
		}
	}
	go collect(bufio.NewScanner(stdout), !fromStderr)
	go collect(bufio.NewScanner(stderr), fromStderr)
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start watching: %q", name, w.lines(0))
	}
	return w
}

func (w *eventWatcher) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

func (w *eventWatcher) lines(from int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen[from:]...)
}

// has reports whether a line after from names every event in events
// (comma-separated) for path.
func (w *eventWatcher) has(from int, events, path string) bool {
	for _, l := range w.lines(from) {
		got, p, ok := strings.Cut(l, " ")
		if !ok || p != path {
			continue
		}
		all := true
		for _, e := range strings.Split(events, ",") {
			if !strings.Contains(","+got+",", ","+e+",") {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}

type wantEvent struct{ events, path string }

// The server changes a file, creates, deletes and renames one, makes a
// folder with files and changes a mode: programs watching the mount with
// inotify (inotifywait, and plain inotify system calls from Python) see
// the matching events within 2 s, while nothing of it goes back to the
// server.
func TestServerChangesRaiseInotifyEvents(t *testing.T) {
	forEachSSH(t, func(t *testing.T, _ string, setup func(*world) *world) {
		serverChangesRaiseInotifyEvents(t, setup(newWorld(t)))
	})
}

func serverChangesRaiseInotifyEvents(t *testing.T, w *world) {
	requireCommand(t, "inotifywait")
	requireCommand(t, "python3")
	w.writeServer("proj/main.py", "print(1)\n", 0o644)
	w.writeServer("proj/old.txt", "old\n", 0o644)
	w.writeServer("proj/name.txt", "name\n", 0o644)
	w.writeServer("proj/mode.sh", "echo\n", 0o644)
	w.mount("--watch", "helper")
	eventually(t, 10*time.Second, "the change feed to start", func() bool { return w.status().Watch == "helper" })
	if st := w.status(); st.Notify != "on" {
		t.Fatalf("status notify = %q, want on", st.Notify)
	}
	if b, err := os.ReadFile(w.m("proj/main.py")); err != nil || string(b) != "print(1)\n" {
		t.Fatalf("main.py = %q, %v", b, err)
	}
	proj := w.m("proj")
	watchers := []*eventWatcher{
		startEventWatcher(t, "inotifywait", []string{"inotifywait", "-m", "-r", "--format", "%e %w%f", proj}, "Watches established", true),
		startEventWatcher(t, "python inotify", []string{"python3", "testdata/inotify_watch.py", proj}, "ready", false),
	}
	// What the server has after each change, to check that no echo
	// touches it.
	serverState := map[string]string{}
	record := func(rel string) {
		fi, err := os.Lstat(w.s(rel))
		if err != nil {
			delete(serverState, rel)
			return
		}
		b, _ := os.ReadFile(w.s(rel))
		serverState[rel] = fmt.Sprintf("%v %d %s %q", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano), b)
	}
	for _, rel := range []string{"proj/main.py", "proj/old.txt", "proj/name.txt", "proj/mode.sh"} {
		record(rel)
	}

	step := func(what string, change func(), want ...wantEvent) {
		t.Helper()
		marks := make([]int, len(watchers))
		for i, wt := range watchers {
			marks[i] = wt.mark()
		}
		start := time.Now()
		change()
		for i, wt := range watchers {
			for _, e := range want {
				p := filepath.Join(proj, e.path)
				for !wt.has(marks[i], e.events, p) {
					if time.Since(start) > 2*time.Second {
						t.Fatalf("%s: %s saw no %s on %s within 2s; it saw %q", what, wt.name, e.events, p, wt.lines(marks[i]))
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			t.Logf("%s: %s saw it after %v", what, wt.name, time.Since(start).Round(time.Millisecond))
		}
	}
	// The same size, often within the second of the first version: the
	// feed's report is what tells the change apart.
	step("edit", func() {
		w.writeServer("proj/main.py", "print(2)\n", 0o644)
		record("proj/main.py")
	}, wantEvent{"MODIFY", "main.py"}, wantEvent{"CLOSE_WRITE", "main.py"})
	if b, _ := os.ReadFile(w.m("proj/main.py")); string(b) != "print(2)\n" {
		t.Fatalf("after the edit event the mount shows %q", b)
	}
	step("create", func() {
		w.writeServer("proj/new.txt", "new\n", 0o644)
		record("proj/new.txt")
	}, wantEvent{"CREATE", "new.txt"})
	step("delete", func() {
		os.Remove(w.s("proj/old.txt"))
		record("proj/old.txt")
	}, wantEvent{"DELETE", "old.txt"})
	step("rename", func() {
		os.Rename(w.s("proj/name.txt"), w.s("proj/renamed.txt"))
		record("proj/name.txt")
		record("proj/renamed.txt")
	}, wantEvent{"MOVED_FROM", "name.txt"}, wantEvent{"MOVED_TO", "renamed.txt"})
	step("folder with files", func() {
		w.writeServer("proj/run1/metrics.json", "{}", 0o644)
		w.writeServer("proj/run1/ckpt.txt", "weights", 0o644)
		record("proj/run1/metrics.json")
		record("proj/run1/ckpt.txt")
	}, wantEvent{"CREATE,ISDIR", "run1"}, wantEvent{"CREATE", "run1/metrics.json"}, wantEvent{"CREATE", "run1/ckpt.txt"})
	step("chmod", func() {
		os.Chmod(w.s("proj/mode.sh"), 0o755)
		record("proj/mode.sh")
	}, wantEvent{"ATTRIB", "mode.sh"})

	// The mount shows the server's tree, and the echoes changed nothing
	// on the server and queued nothing for it.
	if _, err := os.Stat(w.m("proj/old.txt")); !os.IsNotExist(err) {
		t.Errorf("old.txt still on the mount: %v", err)
	}
	if b, _ := os.ReadFile(w.m("proj/renamed.txt")); string(b) != "name\n" {
		t.Errorf("renamed.txt on the mount = %q", b)
	}
	if fi, err := os.Stat(w.m("proj/mode.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode.sh on the mount: %v, %v", fi, err)
	}
	// Anything an echo had queued would be on the server after a flush.
	w.must(binary, "flush", w.mnt)
	if st := w.status(); len(st.Conflicts) != 0 {
		t.Errorf("echoes made conflicts: %+v", st.Conflicts)
	}
	for rel, want := range serverState {
		fi, err := os.Lstat(w.s(rel))
		if err != nil {
			t.Errorf("%s gone from the server: %v", rel, err)
			continue
		}
		b, _ := os.ReadFile(w.s(rel))
		if got := fmt.Sprintf("%v %d %s %q", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano), b); got != want {
			t.Errorf("server's %s changed by the mount: %s, was %s", rel, got, want)
		}
	}
	for _, rel := range []string{"proj/old.txt", "proj/name.txt"} {
		if _, err := os.Lstat(w.s(rel)); err == nil {
			t.Errorf("server's %s came back", rel)
		}
	}
	entries, _ := os.ReadDir(w.s("proj"))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".conflict-") {
			t.Errorf("conflict copy on the server: %s", e.Name())
		}
	}
}

// With --no-notify, server changes still show on the mount but raise no
// inotify events.
func TestNoNotifyRaisesNoEvents(t *testing.T) {
	requireCommand(t, "inotifywait")
	w := newWorld(t)
	w.writeServer("proj/a.txt", "a\n", 0o644)
	w.mount("--watch", "helper", "--no-notify")
	eventually(t, 10*time.Second, "the change feed to start", func() bool { return w.status().Watch == "helper" })
	if st := w.status(); !strings.HasPrefix(st.Notify, "off") {
		t.Fatalf("status notify = %q, want off", st.Notify)
	}
	os.ReadDir(w.m("proj"))
	wt := startEventWatcher(t, "inotifywait", []string{"inotifywait", "-m", "-r", "--format", "%e %w%f", w.m("proj")}, "Watches established", true)
	w.writeServer("proj/b.txt", "b\n", 0o644)
	// Seen through readdir, which puts no name in the kernel's cache (a
	// lookup would, and would make an echo's create fail: the test would
	// pass with echoes on).
	eventually(t, 5*time.Second, "b.txt in the mount's listing", func() bool {
		ents, _ := os.ReadDir(w.m("proj"))
		for _, e := range ents {
			if e.Name() == "b.txt" {
				return true
			}
		}
		return false
	})
	// Echoes come within about 100 ms of the change reaching the mount;
	// none may come at all.
	time.Sleep(500 * time.Millisecond)
	if got := wt.lines(0); wt.has(0, "CREATE", w.m("proj/b.txt")) {
		t.Fatalf("events with --no-notify: %q", got)
	}
}

// A user saving a file on the mount while the server rewrites the same
// file, again and again: every save of the user's reaches the server,
// under the file's name or as a conflict copy, never lost to an echo.
func TestEchoesDoNotLoseConcurrentWrites(t *testing.T) {
	w := newWorld(t)
	w.writeServer("proj/shared.txt", "server 0\n", 0o644)
	w.mount("--watch", "helper")
	eventually(t, 10*time.Second, "the change feed to start", func() bool { return w.status().Watch == "helper" })
	os.ReadFile(w.m("proj/shared.txt"))
	const rounds = 15
	for i := 1; i <= rounds; i++ {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			os.WriteFile(w.s("proj/shared.txt"), fmt.Appendf(nil, "server %d\n", i), 0o644)
		}()
		go func() {
			defer wg.Done()
			if err := os.WriteFile(w.m("proj/shared.txt"), fmt.Appendf(nil, "user %d\n", i), 0o644); err != nil {
				t.Errorf("save %d: %v", i, err)
			}
		}()
		wg.Wait()
		time.Sleep(time.Duration(i%4) * 40 * time.Millisecond)
	}
	w.must(binary, "flush", w.mnt)
	// Every save of the user's is on the server: the last one at least,
	// under the name or in a conflict copy; earlier ones may have been
	// replaced by later saves of the user's own (that is editing).
	found := map[string]bool{}
	entries, _ := os.ReadDir(w.s("proj"))
	for _, e := range entries {
		b, _ := os.ReadFile(w.s("proj/" + e.Name()))
		found[string(b)] = true
	}
	t.Logf("on the server: %v; conflicts: %d", found, len(w.status().Conflicts))
	last := fmt.Sprintf("user %d\n", rounds)
	if !found[last] {
		t.Fatalf("the user's last save %q is nowhere on the server: %v", last, found)
	}
	// And the mount agrees with the server once things settle.
	eventually(t, 10*time.Second, "the mount to show the server's shared.txt", func() bool {
		a, _ := os.ReadFile(w.m("proj/shared.txt"))
		b, _ := os.ReadFile(w.s("proj/shared.txt"))
		return string(a) == string(b)
	})
}

// requireCommand fails the test when a program it drives is missing
// (scripts/install-deps.sh installs them all).
func requireCommand(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for this test (scripts/install-deps.sh installs it): %v", name, err)
	}
}
