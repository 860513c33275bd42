package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/control"
)

// newCheckedWorld is newWorld with quick CLI calls, and a check, after
// everything is torn down, that no daemon reported a data race or panic.
func newCheckedWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(t)
	w.quickCLI()
	// Runs before the world's own cleanup: unmount the same way, then read
	// the logs before the temporary folders go.
	t.Cleanup(func() {
		w.forceUnmount()
		w.checkDaemonLogs()
	})
	return w
}

// quickCLI makes the race-enabled binary exit at once: by default the race
// runtime sleeps 1s at exit (GORACE atexit_sleep_ms=1000), so every
// remotefs status/flush call would take a second, and a test could not act
// at a chosen moment.
func (w *world) quickCLI() {
	w.env = append(w.env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// checkDaemonLogs fails the test when a daemon of this world reported a
// data race or a panic: the daemon is built with -race, but its reports
// only go to its log file.
func (w *world) checkDaemonLogs() {
	w.t.Helper()
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	keep := os.Getenv("REMOTEFS_KEEP_LOGS") // a folder to copy daemon logs to
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		s := string(b)
		if keep != "" {
			dst := filepath.Join(keep, strings.ReplaceAll(w.t.Name(), "/", "_")+"-"+filepath.Base(l))
			if err := os.WriteFile(dst, b, 0o644); err == nil {
				w.t.Logf("daemon log kept as %s", dst)
			}
		}
		for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
			if i := strings.Index(s, bad); i >= 0 {
				w.t.Errorf("daemon log %s reports %q:\n%s", l, bad, tailString(s[i:], 4000))
			}
		}
	}
}

// killDaemon kills the mount's daemon (pid, from status) with SIGKILL and
// waits until it is gone.
func (w *world) killDaemon(pid int) {
	w.t.Helper()
	if pid <= 0 {
		w.t.Fatalf("status reports pid %d", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		w.t.Fatalf("kill -9 %d: %v", pid, err)
	}
	// The thread group leader turns zombie before the other threads are
	// gone, and the control socket stays open until the last one is: wait
	// for both, as a user running `remotefs unmount` later would see it.
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) || controlAnswers(w.mnt) {
		if time.Now().After(deadline) {
			w.t.Fatalf("daemon %d still alive (or its control socket still open) 10s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// controlAnswers reports whether something accepts connections on the
// control socket of the mount at mnt.
func controlAnswers(mnt string) bool {
	c, err := net.DialTimeout("unix", control.SocketPath(mnt), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// clearDeadMount removes the mount a killed daemon left behind, the way a
// user would: `remotefs unmount` (which knows the daemon is gone).
func (w *world) clearDeadMount() {
	w.t.Helper()
	r := w.run(binary, "unmount", w.mnt)
	w.t.Logf("remotefs unmount of the dead mount: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if mounted(w.mnt) {
		w.t.Errorf("remotefs unmount left the dead mount in place (exit %d: %s); using fusermount3 -u", r.code, r.stderr)
		exec.Command("fusermount3", "-u", w.mnt).Run()
	}
	if mounted(w.mnt) {
		w.t.Fatalf("could not clear the dead mount at %s", w.mnt)
	}
}

// timed runs f in its own goroutine and fails the test when it takes
// longer than max (a hung syscall is left behind; the world's cleanup
// unmounts lazily).
func timed(t *testing.T, what string, max time.Duration, f func() error) (error, time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		d := time.Since(start)
		if d > max {
			t.Errorf("%s took %v (bound %v)", what, d.Round(time.Millisecond), max)
		}
		return err, d
	case <-time.After(max + 5*time.Second):
		t.Errorf("%s: no answer after %v (bound %v): hung", what, max+5*time.Second, max)
		return errors.New("hung"), max + 5*time.Second
	}
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

// TestKill9DuringWriteback writes files over a slow link (each closed, so
// acknowledged), kills the daemon with SIGKILL at a random point of the
// write-back, clears the dead mount, mounts again and flushes: every file
// must be on the server with its content, and no upload temporaries may be
// left there.
func TestKill9DuringWriteback(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)

	want := map[string]string{} // every acknowledged file, latest content
	const rounds, n = 4, 12
	for round := 0; round < rounds; round++ {
		w.mount()
		pid := w.status().PID
		p.SetLatency(50 * time.Millisecond) // 100 ms round trips: uploads take a while
		start := time.Now()
		for i := 0; i < n; i++ {
			// Some files are rewritten in later rounds, some new; sizes
			// from a few bytes to a few hundred KiB.
			name := fmt.Sprintf("k/f%02d.txt", i)
			if i%3 == 0 {
				name = fmt.Sprintf("k/r%d-f%02d.bin", round, i)
			}
			if i == 0 {
				os.MkdirAll(w.m("k"), 0o755)
			}
			size := 10 + rng.IntN(4000)
			if i%4 == 1 {
				size = 100*1024 + rng.IntN(300*1024)
			}
			content := strings.Repeat(fmt.Sprintf("round %d file %d\n", round, i), size/20+1)
			if err := os.WriteFile(w.m(name), []byte(content), 0o644); err != nil {
				t.Fatalf("round %d: write %s: %v", round, name, err)
			}
			want[name] = content
		}
		wrote := time.Since(start)
		// Kill points: right after the last close, during the uploads, and
		// at random points.
		var delay time.Duration
		switch round {
		case 0:
		case 1:
			delay = 400 * time.Millisecond
		default:
			delay = time.Duration(rng.IntN(2000)) * time.Millisecond
		}
		time.Sleep(delay)
		w.killDaemon(pid)
		t.Logf("round %d: wrote %d files in %v, killed daemon %d %v after the last close",
			round, n, wrote.Round(time.Millisecond), pid, delay)
		w.clearDeadMount()
		time.Sleep(300 * time.Millisecond) // what the link still carried has arrived
		if tmps, _ := filepath.Glob(w.s("k/" + conn.TempPrefix + "*")); len(tmps) > 0 {
			t.Logf("round %d: the kill left %d upload temporaries on the server", round, len(tmps))
		}

		p.SetLatency(0)
		w.mount()
		if r := w.run(binary, "flush", w.mnt); r.code != 0 {
			t.Errorf("round %d: flush after the crash: exit %d: %s", round, r.code, r.stderr)
		}
		for name, c := range want {
			b, err := os.ReadFile(w.s(name))
			if err != nil || string(b) != c {
				t.Errorf("round %d: %s on the server: %d bytes, err %v; want %d bytes", round, name, len(b), err, len(c))
			}
			if mb, err := os.ReadFile(w.m(name)); err != nil || string(mb) != c {
				t.Errorf("round %d: %s on the mount: %d bytes, err %v; want %d bytes", round, name, len(mb), err, len(c))
			}
		}
		if t.Failed() {
			break
		}
		w.unmount()
	}
	// Upload temporaries a killed daemon left behind must be gone once a
	// later mount has delivered everything.
	noTempFiles(t, w.root)
	ents, _ := os.ReadDir(w.s("k"))
	var names []string
	for _, e := range ents {
		if !conn.IsTempName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	if len(names) != len(want) {
		t.Errorf("server has %d files in k/, want %d: %v", len(names), len(want), names)
	}
}

// TestBlackholeOffline cuts the link silently (packets vanish, no reset):
// the mount must notice and go offline within ~20s, answer every syscall
// within a bound meanwhile (cached data as it was, changes accepted into
// the journal, uncached content ENETDOWN at once), come back online by
// itself when the link returns, and deliver the changes made offline.
func TestBlackholeOffline(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	files := map[string]string{
		"docs/a.txt":      "alpha\n",
		"docs/b.txt":      strings.Repeat("bravo\n", 5000),
		"docs/sub/c.txt":  "charlie\n",
		"uncached.txt":    "never read before the outage\n",
		"other/never.txt": "in a folder never listed\n",
	}
	for name, c := range files {
		w.writeServer(name, c, 0o644)
	}
	// Too big for any read-ahead to have fetched it.
	bigUncached := bytes.Repeat([]byte("big and never read\n"), 2<<20)
	if err := os.WriteFile(w.s("big-uncached.bin"), bigUncached, 0o644); err != nil {
		t.Fatal(err)
	}
	w.mount()
	// Cache: read the docs files and list their folders.
	for _, name := range []string{"docs/a.txt", "docs/b.txt", "docs/sub/c.txt"} {
		if b, err := os.ReadFile(w.m(name)); err != nil || string(b) != files[name] {
			t.Fatalf("read %s before the outage: %q, %v", name, b, err)
		}
	}
	listing := func(dir string) (string, error) {
		ents, err := os.ReadDir(w.m(dir))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), err
	}
	rootBefore, _ := listing("")
	docsBefore, _ := listing("docs")
	t.Logf("root: %s; docs: %s", rootBefore, docsBefore)
	// One file written through the mount and delivered before the outage.
	if err := os.WriteFile(w.m("docs/mine.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.must(binary, "flush", w.mnt)
	docsBefore, _ = listing("docs")
	// Let the attribute TTLs expire so opens would like to revalidate.
	time.Sleep(1500 * time.Millisecond)

	// First cut, on an idle mount: only keepalive can notice (nothing here
	// asks the server: stat and status are answered from memory, and stay
	// instant meanwhile).
	p.Blackhole(true)
	cut := time.Now()
	t.Logf("link blackholed (idle mount)")
	for {
		timed(t, "stat docs/a.txt while the link is dead but not yet noticed", time.Second, func() error {
			_, err := os.Stat(w.m("docs/a.txt"))
			return err
		})
		st := w.status()
		if st.State == "offline" {
			t.Logf("offline %v after the cut (last error: %s)", time.Since(cut).Round(time.Millisecond), st.LastError)
			break
		}
		// A keepalive every 5s, 3 missed: the first unanswered one goes
		// out at most 5s after the cut, so offline at most 20s after it.
		if time.Since(cut) > 21500*time.Millisecond {
			t.Fatalf("still %q %v after the link went dead (keepalive every 5s, 3 missed should make it offline within 20s)",
				st.State, time.Since(cut).Round(time.Millisecond))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Offline: every syscall answers at once.
	const bound = 2 * time.Second
	check := func(what string, wantErrno syscall.Errno, f func() error) {
		t.Helper()
		err, d := timed(t, what, bound, f)
		got := errnoOf(err)
		switch {
		case wantErrno == 0 && err != nil:
			t.Errorf("offline: %s: %v (after %v), want success", what, err, d.Round(time.Millisecond))
		case wantErrno != 0 && got != wantErrno:
			t.Errorf("offline: %s: got %v (errno %d), want %v", what, err, got, wantErrno)
		default:
			t.Logf("offline: %s: %v in %v", what, err, d.Round(time.Millisecond))
		}
	}
	check("ls /", 0, func() error {
		got, err := listing("")
		if err == nil && got != rootBefore {
			return fmt.Errorf("listing %q, before the outage %q", got, rootBefore)
		}
		return err
	})
	check("ls docs", 0, func() error {
		got, err := listing("docs")
		if err == nil && got != docsBefore {
			return fmt.Errorf("listing %q, before the outage %q", got, docsBefore)
		}
		return err
	})
	for _, name := range []string{"docs/a.txt", "docs/b.txt", "docs/sub/c.txt"} {
		check("cat "+name, 0, func() error {
			b, err := os.ReadFile(w.m(name))
			if err == nil && string(b) != files[name] {
				return fmt.Errorf("content %d bytes, want %d", len(b), len(files[name]))
			}
			return err
		})
	}
	check("cat docs/mine.txt (written here)", 0, func() error {
		b, err := os.ReadFile(w.m("docs/mine.txt"))
		if err == nil && string(b) != "mine\n" {
			return fmt.Errorf("content %q", b)
		}
		return err
	})
	check("stat docs/b.txt", 0, func() error {
		fi, err := os.Stat(w.m("docs/b.txt"))
		if err == nil && fi.Size() != int64(len(files["docs/b.txt"])) {
			return fmt.Errorf("size %d", fi.Size())
		}
		return err
	})
	check("stat uncached.txt (listed, not read)", 0, func() error {
		_, err := os.Stat(w.m("uncached.txt"))
		return err
	})
	// Content never read, and a folder never opened, may have been fetched
	// ahead (bulk listing, prefetch); if not, they fail at once with
	// ENETDOWN. Either way the answer is immediate and never wrong.
	orNetDown := func(what string, f func() (string, error), want string) {
		t.Helper()
		var got string
		err, d := timed(t, what, bound, func() error {
			var err error
			got, err = f()
			return err
		})
		switch {
		case err == nil && got != want:
			t.Errorf("offline: %s: %q, want %q or ENETDOWN", what, got, want)
		case err != nil && errnoOf(err) != syscall.ENETDOWN:
			t.Errorf("offline: %s: %v, want the content or ENETDOWN", what, err)
		default:
			t.Logf("offline: %s: %v in %v", what, err, d.Round(time.Millisecond))
		}
	}
	orNetDown("cat uncached.txt", func() (string, error) {
		b, err := os.ReadFile(w.m("uncached.txt"))
		return string(b), err
	}, files["uncached.txt"])
	orNetDown("cat big-uncached.bin", func() (string, error) {
		b, err := os.ReadFile(w.m("big-uncached.bin"))
		if err == nil && !bytes.Equal(b, bigUncached) {
			return fmt.Sprintf("%d bytes, not the server's", len(b)), nil
		}
		return "ok", err
	}, "ok")
	orNetDown("ls other (never opened)", func() (string, error) { return listing("other") }, "never.txt")
	// Changes keep going into the journal: a lost link never fails a save.
	check("append to docs/a.txt", 0, func() error {
		f, err := os.OpenFile(w.m("docs/a.txt"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString("more\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	check("create docs/new.txt", 0, func() error {
		return os.WriteFile(w.m("docs/new.txt"), []byte("x"), 0o644)
	})
	check("rm docs/mine.txt", 0, func() error { return os.Remove(w.m("docs/mine.txt")) })
	check("mv docs/new.txt docs/z.txt", 0, func() error {
		return os.Rename(w.m("docs/new.txt"), w.m("docs/z.txt"))
	})
	check("mkdir docs/newdir", 0, func() error { return os.Mkdir(w.m("docs/newdir"), 0o755) })
	check("chmod docs/sub/c.txt", 0, func() error { return os.Chmod(w.m("docs/sub/c.txt"), 0o600) })
	check("truncate docs/b.txt", 0, func() error { return os.Truncate(w.m("docs/b.txt"), 6) })
	files["docs/b.txt"] = "bravo\n" // the mount shows it so from now on
	check("ln -s", 0, func() error { return os.Symlink("a.txt", w.m("docs/link")) })
	// Content never fetched cannot be changed in place.
	check("append to big-uncached.bin (content not cached)", syscall.ENETDOWN, func() error {
		f, err := os.OpenFile(w.m("big-uncached.bin"), os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			f.Close()
		}
		return err
	})
	if st := w.status(); st.Pending == 0 || st.OldestPending == nil || !st.OfflineEdits {
		t.Errorf("offline with changes made: status pending %d, oldest %v, offline_edits %v", st.Pending, st.OldestPending, st.OfflineEdits)
	}
	check("remotefs status", 0, func() error {
		r := w.run(binary, "status", "--json", w.mnt)
		if r.code != 0 {
			return fmt.Errorf("exit %d", r.code)
		}
		return nil
	})
	check("remotefs flush (changes pending, server offline)", 0, func() error {
		r := w.run(binary, "flush", w.mnt)
		if r.code == 0 || !strings.Contains(r.stderr, "unreachable") {
			return fmt.Errorf("exit %d: %s; want a failure saying the server is offline", r.code, strings.TrimSpace(r.stderr))
		}
		return nil
	})
	// The server is untouched during the outage.
	for name, c := range files {
		if name == "docs/b.txt" {
			c = strings.Repeat("bravo\n", 5000)
		}
		if name == "uncached.txt" || strings.HasPrefix(name, "other/") || name == "big-uncached.bin" {
			continue
		}
		if b, _ := os.ReadFile(w.s(name)); string(b) != c {
			t.Errorf("server's %s changed during the outage", name)
		}
	}

	// The link comes back: the mount reconnects by itself.
	outage := time.Since(cut)
	p.Blackhole(false)
	back := time.Now()
	for {
		st := w.status()
		if st.State == "online" {
			t.Logf("online again %v after the link returned (outage %v)", time.Since(back).Round(time.Millisecond), outage.Round(time.Second))
			break
		}
		// A dial in flight when the link returns lost its bytes and waits
		// for its connect timeout (10s); the next one is at most 30s later.
		if time.Since(back) > 45*time.Second {
			t.Fatalf("still %q %v after the link returned (last error %s)", st.State, time.Since(back).Round(time.Millisecond), st.LastError)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Second cut, with a read in flight: a cached file whose attributes
	// are due for revalidation (without a change feed). The read may wait
	// for one operation deadline (--op-timeout, 10s), then must serve the
	// cached content.
	time.Sleep(1200 * time.Millisecond) // attributes older than --attr-ttl
	p.Blackhole(true)
	cut = time.Now()
	err, d := timed(t, "cat docs/b.txt right after the second cut", 13*time.Second, func() error {
		b, err := os.ReadFile(w.m("docs/b.txt"))
		if err == nil && string(b) != files["docs/b.txt"] {
			return fmt.Errorf("content %d bytes, want %d", len(b), len(files["docs/b.txt"]))
		}
		return err
	})
	t.Logf("cat of a cached file right after the second cut: %v in %v", err, d.Round(time.Millisecond))
	if err != nil {
		t.Errorf("cat of a cached file right after the second cut: %v, want the cached content", err)
	}
	// With the change feed live the read needs no server call at all, so
	// the dead link is noticed by the keepalive instead.
	eventually(t, 30*time.Second, "offline after the second cut", func() bool { return w.status().State == "offline" })
	check("create after the second cut", 0, func() error {
		return os.WriteFile(w.m("docs/new2.txt"), []byte("x"), 0o644)
	})
	p.Blackhole(false)
	back = time.Now()
	eventually(t, 45*time.Second, "online after the second cut", func() bool { return w.status().State == "online" })
	t.Logf("online again %v after the link returned", time.Since(back).Round(time.Millisecond))

	if err := os.WriteFile(w.m("docs/after.txt"), []byte("after the outage\n"), 0o644); err != nil {
		t.Fatalf("write after reconnecting: %v", err)
	}
	if err := os.Rename(w.m("docs/a.txt"), w.m("docs/a-renamed.txt")); err != nil {
		t.Fatalf("rename after reconnecting: %v", err)
	}
	w.must(binary, "flush", w.mnt)
	if b, err := os.ReadFile(w.s("docs/after.txt")); err != nil || string(b) != "after the outage\n" {
		t.Errorf("docs/after.txt on the server: %q, %v", b, err)
	}
	if b, err := os.ReadFile(w.s("docs/a-renamed.txt")); err != nil || string(b) != files["docs/a.txt"]+"more\n" {
		t.Errorf("docs/a-renamed.txt on the server: %q, %v", b, err)
	}
	// What was changed offline reached the server.
	for name, want := range map[string]string{"docs/z.txt": "x", "docs/b.txt": "bravo\n", "docs/new2.txt": "x"} {
		if b, err := os.ReadFile(w.s(name)); err != nil || string(b) != want {
			t.Errorf("%s on the server: %q, %v; want %q", name, b, err, want)
		}
	}
	for _, gone := range []string{"docs/mine.txt", "docs/new.txt"} {
		if _, err := os.Lstat(w.s(gone)); err == nil {
			t.Errorf("%s is still on the server", gone)
		}
	}
	if fi, err := os.Stat(w.s("docs/newdir")); err != nil || !fi.IsDir() {
		t.Errorf("docs/newdir on the server: %v", err)
	}
	if fi, err := os.Stat(w.s("docs/sub/c.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("docs/sub/c.txt on the server: %v, %v; want mode 600", fi, err)
	}
	if tgt, err := os.Readlink(w.s("docs/link")); err != nil || tgt != "a.txt" {
		t.Errorf("docs/link on the server: %q, %v", tgt, err)
	}
	if b, err := os.ReadFile(w.m("uncached.txt")); err != nil || string(b) != files["uncached.txt"] {
		t.Errorf("uncached.txt after reconnecting: %q, %v", b, err)
	}
	w.unmount()
}

// TestSSHDRestart restarts sshd while writes are still pending: the mount
// reconnects by itself and delivers them.
func TestSSHDRestart(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	w.mount()
	p.SetLatency(30 * time.Millisecond) // uploads take a while
	const n = 20
	content := func(i int) string { return strings.Repeat(fmt.Sprintf("restart file %d\n", i), 200*(i%4)+1) }
	for i := 0; i < n; i++ {
		if err := os.WriteFile(w.m(fmt.Sprintf("r%02d.txt", i)), []byte(content(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := w.status()
	t.Logf("pending before the restart: %d", st.Pending)
	if st.Pending == 0 {
		t.Logf("everything was delivered before the restart; the test shows less than it should")
	}
	if err := w.srv.Restart(); err != nil {
		t.Fatalf("restart sshd: %v", err)
	}
	restarted := time.Now()
	p.SetLatency(0)
	// The mount notices (the connection is closed) and comes back.
	sawOffline := false
	for {
		st := w.status()
		if st.State != "online" {
			sawOffline = true
		}
		if sawOffline && st.State == "online" {
			t.Logf("online again %v after the restart", time.Since(restarted).Round(time.Millisecond))
			break
		}
		if !sawOffline && time.Since(restarted) > 3*time.Second {
			// The restart may have come and gone between two polls.
			t.Logf("never saw the mount offline")
			break
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("still %q 30s after sshd restarted (last error %s)", st.State, st.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Writes after the restart work too.
	if err := os.WriteFile(w.m("after.txt"), []byte("after\n"), 0o644); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
	// flush fails at once while offline; retry until it succeeds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := w.run(binary, "flush", w.mnt)
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flush still failing 30s after the restart: %s", r.stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("r%02d.txt", i)
		if b, err := os.ReadFile(w.s(name)); err != nil || string(b) != content(i) {
			t.Errorf("%s on the server: %d bytes, %v; want %d bytes", name, len(b), err, len(content(i)))
		}
	}
	if b, err := os.ReadFile(w.s("after.txt")); err != nil || string(b) != "after\n" {
		t.Errorf("after.txt on the server: %q, %v", b, err)
	}
	noTempFiles(t, w.root)
	w.unmount()
}

// TestServerDiskFull: a server folder on a tiny tmpfs. A file larger than
// the free space is accepted locally (write-back), flush fails saying the
// server has no space (status shows the upload error), and once space is
// freed on the server the upload goes through.
func TestServerDiskFull(t *testing.T) {
	w := newCheckedWorld(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	small := w.s("small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", small).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", small, err, out)
		}
	})
	// Ballast: half the space taken on the server.
	ballast := filepath.Join(small, "ballast")
	if err := os.WriteFile(ballast, bytes.Repeat([]byte("B"), 600*1024), 0o644); err != nil {
		t.Fatal(err)
	}
	w.mount()
	big := bytes.Repeat([]byte("0123456789abcdef"), 700*1024/16) // 700 KiB: fits only without the ballast
	if err := os.WriteFile(w.m("small/big.bin"), big, 0o644); err != nil {
		t.Fatalf("write (and close) on the mount: %v, want success (write-back)", err)
	}
	r := w.run(binary, "flush", w.mnt)
	t.Logf("flush: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if r.code == 0 {
		t.Fatalf("flush exited 0 while the server has no space for small/big.bin")
	}
	msg := strings.ToLower(r.stderr)
	if !strings.Contains(msg, "no space") && !strings.Contains(msg, "disk full") && !strings.Contains(msg, "quota") {
		t.Errorf("flush's message does not say the server is out of space: %s", strings.TrimSpace(r.stderr))
	}
	st := w.status()
	t.Logf("status: pending %d, upload_error %q", st.Pending, st.UploadError)
	if st.UploadError == "" {
		t.Errorf("status --json has no upload_error while the upload fails")
	}
	if st.Pending == 0 {
		t.Errorf("status --json shows nothing pending while small/big.bin is not delivered")
	}
	// Nothing half-written under the final name, no temporaries kept.
	if _, err := os.Stat(filepath.Join(small, "big.bin")); err == nil {
		t.Errorf("a partial small/big.bin is on the server")
	}
	noTempFiles(t, small)
	// The mount still shows the file as written.
	if b, err := os.ReadFile(w.m("small/big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("small/big.bin on the mount: %d bytes, %v", len(b), err)
	}

	// Free space on the server: the retry succeeds.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for {
		r := w.run(binary, "flush", w.mnt)
		if r.code == 0 {
			t.Logf("flush succeeded %v after space was freed", time.Since(freed).Round(time.Millisecond))
			break
		}
		if time.Since(freed) > 45*time.Second {
			t.Fatalf("flush still failing 45s after space was freed: %s", r.stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(small, "big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("small/big.bin on the server: %d bytes, %v; want %d", len(b), err, len(big))
	}
	if st := w.status(); st.UploadError != "" || st.Pending != 0 {
		t.Errorf("after delivery: pending %d, upload_error %q", st.Pending, st.UploadError)
	}
	noTempFiles(t, w.root)
	w.unmount()
}

// TestConflictKeepsBoth: a file open for writing on the mount changes on
// the server; the local save must not overwrite it. The server's version
// stays under the name, the local one appears as NAME.conflict-*, and
// status lists the conflict.
func TestConflictKeepsBoth(t *testing.T) {
	w := newCheckedWorld(t)
	w.writeServer("notes/doc.txt", "version 1\n", 0o644)
	w.mount(strings.Fields(os.Getenv("REMOTEFS_DEBUG_MOUNT"))...)
	if b, err := os.ReadFile(w.m("notes/doc.txt")); err != nil || string(b) != "version 1\n" {
		t.Fatalf("read before editing: %q, %v", b, err)
	}
	f, err := os.OpenFile(w.m("notes/doc.txt"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Someone else saves on the server meanwhile: other size, newer mtime.
	serverVersion := "version 2, saved on the server by someone else\n"
	if err := os.WriteFile(w.s("notes/doc.txt"), []byte(serverVersion), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(5 * time.Second)
	os.Chtimes(w.s("notes/doc.txt"), future, future)

	localVersion := "version 2, local edit\n"
	if _, err := f.WriteAt([]byte(localVersion), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(localVersion))); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	w.must(binary, "flush", w.mnt)

	if b, _ := os.ReadFile(w.s("notes/doc.txt")); string(b) != serverVersion {
		t.Errorf("server's notes/doc.txt is %q, want the server's version %q kept", b, serverVersion)
	}
	copies, _ := filepath.Glob(w.s("notes/doc.txt.conflict-*"))
	if len(copies) != 1 {
		ents, _ := os.ReadDir(w.s("notes"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("want one notes/doc.txt.conflict-* on the server, have %v", names)
	}
	if b, _ := os.ReadFile(copies[0]); string(b) != localVersion {
		t.Errorf("%s is %q, want the local version %q", filepath.Base(copies[0]), b, localVersion)
	}
	base := filepath.Base(copies[0])
	host, _ := os.Hostname()
	if !strings.HasPrefix(base, "doc.txt.conflict-") || len(base) < len("doc.txt.conflict-")+len("YYYYmmdd-HHMMSS") {
		t.Errorf("conflict copy name %q is not NAME.conflict-HOST-YYYYmmdd-HHMMSS", base)
	} else if stamp := base[len(base)-len("20060102-150405"):]; func() bool { _, err := time.ParseInLocation("20060102-150405", stamp, time.Local); return err != nil }() {
		t.Errorf("conflict copy name %q does not end in a YYYYmmdd-HHMMSS time", base)
	} else if host != "" && !strings.Contains(base, host) {
		t.Logf("conflict copy name %q does not contain the hostname %q", base, host)
	}
	st := w.status()
	found := false
	for _, c := range st.Conflicts {
		t.Logf("conflict: %+v", c)
		if c.Path == "notes/doc.txt" || strings.HasSuffix(c.Path, "/notes/doc.txt") {
			found = true
			if filepath.Base(c.CopyPath) != base {
				t.Errorf("status names the copy %q, the server has %q", c.CopyPath, base)
			}
		}
	}
	if !found {
		t.Errorf("status --json does not list the conflict on notes/doc.txt: %+v", st.Conflicts)
	}
	// The mount shows both versions too.
	var shown string
	var shownErr error
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(w.m("notes/doc.txt"))
		shown, shownErr = string(b), err
		if (err == nil && shown == serverVersion) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if shownErr != nil || shown != serverVersion {
		fi, _ := os.Stat(w.m("notes/doc.txt"))
		t.Errorf("5s after the flush the mount shows notes/doc.txt as %q (err %v, stat %v), want the server's version %q", shown, shownErr, fi, serverVersion)
	}
	if b, err := os.ReadFile(w.m("notes/" + base)); err != nil || string(b) != localVersion {
		t.Errorf("the conflict copy on the mount: %q, %v", b, err)
	}
	w.unmount()
	noTempFiles(t, w.root)
}

// TestRenameOverWhileFirstUploadInFlight: a new file is saved twice in
// quick succession (the first upload is still on its way when the second
// close queues another) and then renamed over an existing file, as an
// editor's "write temp, rename over" save does. The server must end up
// with the new content under the final name only: no conflict copy (the
// replaced file did not change on the server), nothing left under the
// temporary name, and later changes to that name must still go through.
func TestRenameOverWhileFirstUploadInFlight(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	w.writeServer("doc.txt", "original\n", 0o644)
	w.mount()
	if b, err := os.ReadFile(w.m("doc.txt")); err != nil || string(b) != "original\n" {
		t.Fatalf("read: %q, %v", b, err)
	}
	p.SetLatency(100 * time.Millisecond) // an upload takes over a second
	if err := os.WriteFile(w.m("doc.txt.tmp"), []byte("new content, first write\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the first upload of doc.txt.tmp is under way
	f, err := os.OpenFile(w.m("doc.txt.tmp"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("second write\n")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(w.m("doc.txt.tmp"), w.m("doc.txt")); err != nil {
		t.Fatal(err)
	}
	// The temporary name is used again at once (editors do).
	if err := os.Symlink("doc.txt", w.m("doc.txt.tmp")); err != nil {
		t.Fatal(err)
	}
	p.SetLatency(0)
	r := w.run(binary, "flush", w.mnt)
	if r.code != 0 {
		t.Errorf("flush: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	want := "new content, first write\nsecond write\n"
	if b, _ := os.ReadFile(w.s("doc.txt")); string(b) != want {
		t.Errorf("server's doc.txt is %q, want %q", b, want)
	}
	if tgt, err := os.Readlink(w.s("doc.txt.tmp")); err != nil || tgt != "doc.txt" {
		fi, _ := os.Lstat(w.s("doc.txt.tmp"))
		t.Errorf("server's doc.txt.tmp: readlink %q, %v (lstat %v); want the symlink to doc.txt", tgt, err, fi)
	}
	if copies, _ := filepath.Glob(w.s("doc.txt.conflict-*")); len(copies) > 0 {
		t.Errorf("spurious conflict copies on the server: %v", copies)
	}
	if st := w.status(); len(st.Conflicts) > 0 || st.UploadError != "" || st.Pending != 0 {
		t.Errorf("status: conflicts %v, upload_error %q, pending %d", st.Conflicts, st.UploadError, st.Pending)
	}
	w.unmount()
}

// TestUnmountAnswers mounts and unmounts repeatedly: `remotefs unmount`
// must exit 0 every time it unmounted (the daemon must send its answer
// before it exits, however quickly it exits).
func TestUnmountAnswers(t *testing.T) {
	w := newCheckedWorld(t)
	for i := 0; i < 15; i++ {
		w.mount()
		if err := os.WriteFile(w.m(fmt.Sprintf("u%02d.txt", i)), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := w.run(binary, "unmount", w.mnt)
		if r.code != 0 {
			t.Errorf("cycle %d: remotefs unmount exited %d (%s); still mounted: %v",
				i, r.code, strings.TrimSpace(r.stderr), mounted(w.mnt))
		}
		if mounted(w.mnt) {
			t.Fatalf("cycle %d: still mounted", i)
		}
	}
	for i := 0; i < 15; i++ {
		if b, err := os.ReadFile(w.s(fmt.Sprintf("u%02d.txt", i))); err != nil || string(b) != "x\n" {
			t.Errorf("u%02d.txt on the server: %q, %v", i, b, err)
		}
	}
}

// TestRenameChainWhileUploadsInFlight: a new file is saved (its upload
// starts) and saved again, another new file replaces it by rename, and the
// result is moved into a folder, all before the first upload finishes. The server must end
// up with exactly what the mount shows: the second file's content under
// the final name, nothing under the intermediate names, no conflict.
func TestRenameChainWhileUploadsInFlight(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	w.mount()
	if err := os.Mkdir(w.m("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	w.must(binary, "flush", w.mnt)
	p.SetLatency(100 * time.Millisecond)
	first := strings.Repeat("first file, replaced before its upload finished\n", 2000)
	second := strings.Repeat("second file, the one that must survive\n", 100)
	if err := os.WriteFile(w.m("a"), []byte(first), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the upload of a is under way
	// a is saved once more: a second upload queues behind the first.
	first += "one more line\n"
	if err := os.WriteFile(w.m("a"), []byte(first), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.m("d"), []byte(second), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(w.m("d"), w.m("a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(w.m("a"), w.m("dir/c")); err != nil {
		t.Fatal(err)
	}
	p.SetLatency(0)
	if r := w.run(binary, "flush", w.mnt); r.code != 0 {
		t.Errorf("flush: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	want := map[string]string{"dir": "dir 755", "dir/c": fmt.Sprintf("file 640 %d", len(second))}
	got := map[string]string{}
	for k, v := range manifest(t, w.root) {
		f := strings.Fields(v)
		if f[0] == "file" {
			v = strings.Join(f[:3], " ")
		}
		got[k] = v
	}
	diffManifests(t, "the server", want, got)
	if b, _ := os.ReadFile(w.s("dir/c")); string(b) != second {
		t.Errorf("server's dir/c: %d bytes, want the second file (%d bytes)", len(b), len(second))
	}
	w.unmount()
	w.mount()
	if b, _ := os.ReadFile(w.m("dir/c")); string(b) != second {
		t.Errorf("after a remount the mount's dir/c: %d bytes, want the second file (%d bytes)", len(b), len(second))
	}
	w.unmount()
}

// TestReplaceFreshlyMovedEntry: a new symlink (or file) is created and
// renamed, and a new file is renamed over it, before any of it reached the
// server. Nothing on the server changed behind the mount's back, so there
// must be no conflict: the server ends up with the file under the name.
func TestReplaceFreshlyMovedEntry(t *testing.T) {
	for _, kind := range []string{"symlink", "file"} {
		t.Run(kind, func(t *testing.T) {
			w := newCheckedWorld(t)
			p := w.viaProxy()
			w.mount()
			p.SetLatency(10 * time.Millisecond)
			if kind == "symlink" {
				if err := os.Symlink("target", w.m("b")); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(w.m("b"), []byte("first\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(w.m("b"), w.m("d")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(w.m("b"), []byte("the file that replaces it\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(w.m("b"), w.m("d")); err != nil {
				t.Fatal(err)
			}
			if r := w.run(binary, "flush", w.mnt); r.code != 0 {
				t.Errorf("flush: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			}
			want := map[string]string{"d": "file 700 26"}
			got := map[string]string{}
			for k, v := range manifest(t, w.root) {
				if f := strings.Fields(v); f[0] == "file" {
					v = strings.Join(f[:3], " ")
				}
				got[k] = v
			}
			diffManifests(t, "the server", want, got)
			if st := w.status(); len(st.Conflicts) > 0 {
				t.Errorf("status lists conflicts: %+v", st.Conflicts)
			}
			if b, err := os.ReadFile(w.m("d")); err != nil || string(b) != "the file that replaces it\n" {
				t.Errorf("the mount's d: %q, %v", b, err)
			}
			w.unmount()
		})
	}
}
