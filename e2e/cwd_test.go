package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// getcwdLoop calls getcwd(2) in a tight loop for argv[1] seconds and exits 3
// with the error the first time it fails.
const getcwdLoop = `
import os, sys, time
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    try:
        os.getcwd()
    except OSError as e:
        print("getcwd failed after %d calls: %s" % (n, e))
        sys.exit(3)
    n += 1
print(n)
`

// TestCwdKeptWhileListingStreams: processes whose working directory is a
// folder of a fresh mount keep it (getcwd(2) answers, git status runs)
// while the mount's tree listing, its pruned-folder listing and, after a
// remount with the cache kept, the re-listing stream in, and while the
// server changes those folders' contents (new files, sibling renames)
// reported by the change feed. The kernel must never unhash the entry of a
// folder that is still the same folder: "fatal: Unable to read current
// working directory".
func TestCwdKeptWhileListingStreams(t *testing.T) {
	// A login shell that takes a while to start, so the tree listing (by
	// the server's agent, started through the shell) comes in after the
	// first lookups.
	w := newWorldWith(t, sshdtest.Options{LoginShellDelay: time.Second})
	p := w.viaProxy()
	p.SetLatency(25 * time.Millisecond)

	// A project with nested folders, and pruned folders (__pycache__,
	// node_modules) listed only after the tree listing.
	var deep []string
	for a := 0; a < 6; a++ {
		for b := 0; b < 3; b++ {
			dir := fmt.Sprintf("repo/pkg%d/mod%d/sub/inner", a, b)
			deep = append(deep, dir)
			for i := 0; i < 12; i++ {
				w.writeServer(fmt.Sprintf("%s/f%d.py", dir, i), fmt.Sprintf("x = %d\n", i), 0o644)
				w.writeServer(fmt.Sprintf("repo/pkg%d/mod%d/m%d.py", a, b, i), "y = 1\n", 0o644)
				w.writeServer(fmt.Sprintf("repo/pkg%d/mod%d/__pycache__/m%d.pyc", a, b, i), "pyc", 0o644)
				w.writeServer(fmt.Sprintf("%s/__pycache__/f%d.pyc", dir, i), "pyc", 0o644)
			}
		}
		for i := 0; i < 40; i++ {
			w.writeServer(fmt.Sprintf("repo/pkg%d/node_modules/lib%d/index.js", a, i), "module.exports = 1\n", 0o644)
			w.writeServer(fmt.Sprintf("repo/pkg%d/node_modules/lib%d/lib/util.js", a, i), "module.exports = 2\n", 0o644)
		}
		// Bulk, so the listings take a while to stream in.
		for g := 0; g < 10; g++ {
			for i := 0; i < 20; i++ {
				w.writeServer(fmt.Sprintf("repo/pkg%d/gen/g%d/d%d.txt", a, g, i), "d\n", 0o644)
			}
		}
	}
	// Processes inside pruned folders too.
	for a := 0; a < 6; a++ {
		deep = append(deep, fmt.Sprintf("repo/pkg%d/node_modules/lib%d/lib", a, 7*a), fmt.Sprintf("repo/pkg%d/node_modules/lib%d/lib", a, 7*a+3),
			fmt.Sprintf("repo/pkg%d/mod1/sub/inner/__pycache__", a))
	}
	w.writeServer("repo/.gitignore", "__pycache__/\nnode_modules/\nnew*\n", 0o644)
	repo := w.s("repo")
	w.mustIn(repo, "git", "init", "-q")
	w.mustIn(repo, "git", "add", "-A")
	w.mustIn(repo, "git", "commit", "-q", "-m", "init")

	// The real interpreter, not a shim script (pyenv) run by a shell.
	py := strings.TrimSpace(w.must("python3", "-c", "import sys; print(sys.executable)"))
	const phase = 4 * time.Second
	for round := 0; round < 6; round++ {
		remount := round == 1 || round == 4
		label := fmt.Sprintf("round %d, fresh mount", round)
		if remount {
			label = fmt.Sprintf("round %d, remount with the cache kept", round)
		}
		w.mount()
		w.stayInFolders(t, label, py, deep, round, phase)
		w.unmount()
		if round != 0 && round != 3 {
			// The next mount starts from an empty cache.
			if err := os.RemoveAll(filepath.Join(w.xdg, "cache", "remotefs")); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// stayInFolders runs, as soon as the mount answers, a getcwd loop in every
// folder of dirs and git status over and over in some of them, while the
// server adds files in those folders and renames their siblings; it fails
// the test when any of them loses its working directory.
func (w *world) stayInFolders(t *testing.T, label, py string, dirs []string, round int, d time.Duration) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	fail := func(s string) {
		mu.Lock()
		errs = append(errs, s)
		mu.Unlock()
	}
	deadline := time.Now().Add(d)
	// One process after another in each folder, each calling getcwd for a
	// while: the first ones start as soon as the mount answers, later ones
	// chdir into the folder while the listings stream in.
	for _, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cmd := exec.Command(py, "-c", getcwdLoop, "0.7")
				cmd.Dir = w.m(dir)
				cmd.Env = w.env
				if out, err := cmd.CombinedOutput(); err != nil {
					fail(fmt.Sprintf("getcwd loop in %s: %v: %s", cmd.Dir, err, out))
					return
				}
			}
		}()
	}
	for i, dir := range dirs {
		if i%3 != 0 {
			continue
		}
		wg.Add(1)
		go func(dir string) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cmd := exec.Command("git", "status", "--porcelain")
				cmd.Dir = w.m(dir)
				cmd.Env = w.env
				if out, err := cmd.CombinedOutput(); err != nil {
					fail(fmt.Sprintf("git status in %s: %v: %s", dir, err, out))
					return
				}
			}
		}(dir)
	}
	// Server-side changes in those folders, which the feed reports.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline); i++ {
			time.Sleep(30 * time.Millisecond)
			dir := dirs[i%len(dirs)]
			if err := os.WriteFile(w.s(fmt.Sprintf("%s/new%d-%d.txt", dir, round, i)), []byte("new\n"), 0o644); err != nil {
				fail(err.Error())
				return
			}
			// A file beside the folder's parent renamed, and back.
			if !strings.HasSuffix(dir, "/sub/inner") {
				continue
			}
			mod := filepath.Dir(filepath.Dir(dir))
			from, to := w.s(filepath.Join(mod, "m0.py")), w.s(filepath.Join(mod, "newm0.py"))
			if _, err := os.Stat(from); err != nil {
				from, to = to, from
			}
			if err := os.Rename(from, to); err != nil {
				fail(err.Error())
				return
			}
		}
	}()
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%s: %d processes lost their working directory:\n%s", label, len(errs), strings.Join(errs, "\n"))
	}
}

// TestCwdKeptWhenFeedGoesDown: when the change feed goes down (the link is
// lost) the kernel's cached names and attributes are dropped, but a process
// whose working directory is a folder of the mount keeps it: getcwd(2)
// answers during the outage and after the mount is back online.
func TestCwdKeptWhenFeedGoesDown(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	w.writeServer("proj/a/b/c/file.txt", "x\n", 0o644)
	w.writeServer("proj/a/side.txt", "y\n", 0o644)
	w.mount()
	eventually(t, 30*time.Second, "the change feed to be live", func() bool { return w.daemonLogHas("change feed live") })
	py := strings.TrimSpace(w.must("python3", "-c", "import sys; print(sys.executable)"))
	// Processes started before the outage, that stay in their folders.
	type proc struct {
		dir string
		cmd *exec.Cmd
		in  *os.File
		out *lockedBuffer
	}
	var procs []proc
	for _, dir := range []string{"proj", "proj/a", "proj/a/b/c"} {
		r, wr, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		out := &lockedBuffer{}
		cmd := exec.Command(py, "-c", "import os, sys\nfor line in sys.stdin:\n    try:\n        print(os.getcwd(), flush=True)\n    except OSError as e:\n        print('getcwd failed:', e, flush=True)\n")
		cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = w.m(dir), r, out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		procs = append(procs, proc{dir, cmd, wr, out})
	}
	// ask has every process answer once more, and waits for the
	// answers: each getcwd happens in the state the test is in.
	asked := 0
	ask := func(when string) {
		asked++
		for _, pr := range procs {
			if _, err := pr.in.WriteString("\n"); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 20*time.Second, "getcwd answered "+when, func() bool {
			for _, pr := range procs {
				if strings.Count(pr.out.String(), "\n") < asked {
					return false
				}
			}
			return true
		})
	}
	ask("before the outage")
	p.Blackhole(true)
	eventually(t, 30*time.Second, "the mount to notice the dead link", func() bool { return w.status().State == "offline" })
	eventually(t, 10*time.Second, "the kernel's caches dropped", func() bool { return w.daemonLogHas("change feed down") })
	ask("during the outage")
	if st := w.status().State; st != "offline" {
		t.Fatalf("the outage ended before getcwd was asked in it: state %s", st)
	}
	p.Blackhole(false)
	eventually(t, 60*time.Second, "the mount to go back online", func() bool { return w.status().State == "online" })
	ask("after the outage")
	for _, pr := range procs {
		pr.in.Close()
		if err := pr.cmd.Wait(); err != nil {
			t.Errorf("process in %s: %v", pr.dir, err)
		}
		want := strings.Repeat(w.m(pr.dir)+"\n", 3)
		if got := pr.out.String(); got != want {
			t.Errorf("getcwd in %s before, during and after the outage:\n%s\nwant:\n%s", pr.dir, got, want)
		}
	}
}
