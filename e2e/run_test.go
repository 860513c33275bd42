package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"remotefs/internal/testenv"
)

// runWith runs remotefs with the world's environment in dir, with stdin
// (nil: /dev/null).
func (w *world) runWith(dir string, stdin io.Reader, args ...string) result {
	w.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = w.env
	cmd.Dir = dir
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		w.t.Fatalf("remotefs %v: still running after 60s (hung)", args)
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// serverPath is how the server names a path of the served folder.
func (w *world) serverPath(rel string) string {
	root, err := filepath.EvalSymlinks(w.root)
	if err != nil {
		w.t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// TestRun covers `remotefs run` on a live mount: flush first, the remote
// folder matching the working directory, exit statuses, stdin, separate
// stdout and stderr, quoting.
func TestRun(t *testing.T) {
	forEachSSH(t, func(t *testing.T, _ string, setup func(*world) *world) { testRun(t, setup(newWorld(t))) })
}

func testRun(t *testing.T, w *world) {
	p := w.viaProxy()
	w.mount()
	// With 20 ms each way an upload takes a while: the run must wait for it.
	p.SetLatency(20 * time.Millisecond)

	t.Run("SeesSaveAtOnce", func(t *testing.T) {
		for i := range 3 {
			want := fmt.Sprintf("version %d %s\n", i, strings.Repeat("x", 100*1024))
			if err := os.WriteFile(w.m("notes.txt"), []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			r := w.runWith(w.mnt, nil, "run", "cat", "notes.txt")
			if r.code != 0 || r.stdout != want {
				t.Fatalf("run cat right after a save: exit %d, stdout %d bytes %.20q, stderr %q", r.code, len(r.stdout), r.stdout, r.stderr)
			}
		}
	})

	t.Run("WorkingDirectory", func(t *testing.T) {
		if err := os.MkdirAll(w.m("src/deep dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, rel := range []string{"", "src", "src/deep dir"} {
			r := w.runWith(w.m(rel), nil, "run", "pwd")
			if want := w.serverPath(rel) + "\n"; r.code != 0 || r.stdout != want {
				t.Errorf("run pwd in %q: exit %d, %q, want %q (stderr %q)", rel, r.code, r.stdout, want, r.stderr)
			}
		}
		// A file saved in the subfolder just now is there.
		os.WriteFile(w.m("src/deep dir/a.py"), []byte("print(1)\n"), 0o644)
		r := w.runWith(w.m("src/deep dir"), nil, "run", "--", "ls")
		if r.code != 0 || r.stdout != "a.py\n" {
			t.Errorf("run ls in the subfolder: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("ExitStatus", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want int
		}{
			{[]string{"true"}, 0},
			{[]string{"false"}, 1},
			{[]string{"sh", "-c", "exit 42"}, 42},
			{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
			{[]string{"no-such-program-xyz"}, 127},
		} {
			r := w.runWith(w.mnt, nil, append([]string{"run"}, tc.args...)...)
			if r.code != tc.want {
				t.Errorf("run %v: exit %d, want %d (stderr %q)", tc.args, r.code, tc.want, r.stderr)
			}
			if tc.want < 127 && r.stderr != "" {
				t.Errorf("run %v: unexpected stderr %q", tc.args, r.stderr)
			}
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		r := w.runWith(w.mnt, strings.NewReader("hi\n"), "run", "cat")
		if r.code != 0 || r.stdout != "hi\n" {
			t.Errorf("echo hi | run cat: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
		local := filepath.Join(t.TempDir(), "input")
		data := strings.Repeat("0123456789", 50_000)
		os.WriteFile(local, []byte(data), 0o644)
		f, err := os.Open(local)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r = w.runWith(w.mnt, f, "run", "wc", "-c")
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprint(len(data)) {
			t.Errorf("run wc -c < file: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
		// No stdin at all: the command sees end of file at once.
		r = w.runWith(w.mnt, nil, "run", "cat")
		if r.code != 0 || r.stdout != "" {
			t.Errorf("run cat < /dev/null: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("SeparateStreams", func(t *testing.T) {
		r := w.runWith(w.mnt, nil, "run", "sh", "-c", "echo out; echo err >&2; echo out2")
		if r.code != 0 || r.stdout != "out\nout2\n" || r.stderr != "err\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("Quoting", func(t *testing.T) {
		args := []string{"it's", "a b", "$HOME", "`id`", "x;y", "*", "", "new\nline", `back\slash`, "-n"}
		r := w.runWith(w.mnt, nil, append([]string{"run", "printf", "[%s]\n"}, args...)...)
		var want strings.Builder
		for _, a := range args {
			fmt.Fprintf(&want, "[%s]\n", a)
		}
		if r.code != 0 || r.stdout != want.String() {
			t.Errorf("exit %d, stdout %q, want %q (stderr %q)", r.code, r.stdout, want.String(), r.stderr)
		}
	})

	t.Run("Interrupt", func(t *testing.T) {
		// Without a terminal, SIGINT is passed on to the command.
		cmd := exec.Command(binary, "run", "sh", "-c", "echo ready; exec sleep 30")
		cmd.Env, cmd.Dir = w.env, w.mnt
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "ready", func() bool { return strings.Contains(out.String(), "ready") })
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 || time.Since(start) > 10*time.Second {
			t.Errorf("after SIGINT: %v after %v, output %q", err, time.Since(start), out.String())
		}
	})

	t.Run("ClientKilled", func(t *testing.T) {
		// remotefs killed outright: the mount's process kills the command.
		cmd := exec.Command(binary, "run", "sh", "-c", "echo ready; exec sleep 31.5")
		cmd.Env, cmd.Dir = w.env, w.mnt
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "ready", func() bool { return strings.Contains(out.String(), "ready") })
		if !processRunning("31.5") {
			t.Fatal("the remote sleep is not to be seen")
		}
		cmd.Process.Kill()
		cmd.Wait()
		eventually(t, 10*time.Second, "the remote command to be killed", func() bool { return !processRunning("31.5") })
	})

	if st := w.status(); st.Pending != 0 {
		t.Errorf("pending after the runs: %d", st.Pending)
	}
}

// processRunning reports whether a process on this machine (the server's
// side included) has arg in its command line.
func processRunning(arg string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				return true
			}
		}
	}
	return false
}

// TestRunRefuses: outside a mount and while the mount is offline, run
// says why and runs nothing.
func TestRunRefuses(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	// Notice the dead link within a few seconds.
	cfg, err := os.OpenFile(w.srv.ConfigFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "\nHost proxybox\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n")
	cfg.Close()
	w.mount("--connect-timeout", "2s")
	marker := w.serverPath("marker")

	t.Run("OutsideMount", func(t *testing.T) {
		r := w.runWith(t.TempDir(), nil, "run", "touch", marker)
		if r.code == 0 || !strings.Contains(r.stderr, "not inside a remotefs mount") {
			t.Errorf("outside a mount: exit %d, stderr %q", r.code, r.stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the command ran outside a mount")
		}
	})

	t.Run("NoCommand", func(t *testing.T) {
		r := w.runWith(w.mnt, nil, "run")
		if r.code != 2 || !strings.Contains(r.stderr, "no command") {
			t.Errorf("no command: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("InterruptedWhileFlushing", func(t *testing.T) {
		// A big save over a slow link: ^C while it is being delivered
		// cancels the run before anything starts.
		p.SetLatency(300 * time.Millisecond)
		defer p.SetLatency(0)
		if err := os.WriteFile(w.m("big.bin"), bytes.Repeat([]byte("x"), 4<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "run", "touch", marker)
		cmd.Env, cmd.Dir = w.env, w.mnt
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 || !strings.Contains(errb.String(), "nothing was run") {
			t.Errorf("^C while flushing: %v, stderr %q", err, errb.String())
		}
		p.SetLatency(0)
		w.must(binary, "flush", w.mnt)
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the command ran although it was interrupted before it started")
		}
	})

	t.Run("Offline", func(t *testing.T) {
		p.Blackhole(true)
		eventually(t, 20*time.Second, "the mount to notice the dead link", func() bool {
			return w.status().State != "online"
		})
		r := w.runWith(w.mnt, nil, "run", "touch", marker)
		if r.code != 255 || !strings.Contains(r.stderr, "nothing was run") {
			t.Errorf("offline: exit %d, stderr %q", r.code, r.stderr)
		}
		// Back online, it was not run late either.
		p.Blackhole(false)
		eventually(t, 30*time.Second, "the mount to reconnect", func() bool {
			return w.status().State == "online"
		})
		if r := w.runWith(w.mnt, nil, "run", "true"); r.code != 0 {
			t.Errorf("run after reconnecting: exit %d, stderr %q", r.code, r.stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the command ran although the mount was offline")
		}
	})
}

// TestRunTerminal runs remotefs on a pseudo-terminal: the command gets one
// of its own, of the same size, following resizes; ^C reaches it; the
// local terminal is restored, and nothing typed afterwards is taken.
func TestRunTerminal(t *testing.T) {
	forEachSSH(t, func(t *testing.T, _ string, setup func(*world) *world) { testRunTerminal(t, setup(newWorld(t))) })
}

func testRunTerminal(t *testing.T, w *world) {
	w.mount()
	env := append(w.env, "TERM=xterm-256color")

	t.Run("TTYAndSize", func(t *testing.T) {
		term := startOnPTY(t, w.mnt, env, 33, 101, "run", "sh", "-c", "tty; echo $TERM; stty size")
		if code := term.wait(t); code != 0 {
			t.Fatalf("exit %d, output %q", code, term.out.String())
		}
		out := strings.ReplaceAll(term.out.String(), "\r\n", "\n")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[1] != "xterm-256color" || lines[2] != "33 101" {
			t.Errorf("output %q, want a /dev/pts path, xterm-256color, 33 101", out)
		}
		term.checkRestored(t)
		term.checkInputNotTaken(t)
	})

	t.Run("Resize", func(t *testing.T) {
		term := startOnPTY(t, w.mnt, env, 24, 80, "run", "sh", "-c", "stty size; read x; stty size")
		eventually(t, 10*time.Second, "first size", func() bool { return strings.Contains(term.out.String(), "24 80") })
		term.resize(t, 40, 120)
		time.Sleep(200 * time.Millisecond) // let the window change reach the server before the line
		term.master.Write([]byte("\r"))
		if code := term.wait(t); code != 0 {
			t.Fatalf("exit %d, output %q", code, term.out.String())
		}
		if !strings.Contains(term.out.String(), "40 120") {
			t.Errorf("after the resize: %q", term.out.String())
		}
		term.checkRestored(t)
	})

	t.Run("CtrlC", func(t *testing.T) {
		term := startOnPTY(t, w.mnt, env, 24, 80, "run", "sh", "-c", "echo ready; exec sleep 30")
		eventually(t, 10*time.Second, "ready", func() bool { return strings.Contains(term.out.String(), "ready") })
		start := time.Now()
		term.master.Write([]byte{3}) // ^C, handled by the remote terminal
		if code := term.wait(t); code != 130 || time.Since(start) > 10*time.Second {
			t.Errorf("after ^C: exit %d after %v, output %q", code, time.Since(start), term.out.String())
		}
		term.checkRestored(t)
	})
}

// ptyRun is remotefs running on a pseudo-terminal the test holds.
type ptyRun struct {
	master, slave *os.File
	cmd           *exec.Cmd
	out           *lockedBuffer
	copied        chan struct{}
	before        *unix.Termios
}

func startOnPTY(t *testing.T, dir string, env []string, rows, cols uint16, args ...string) *ptyRun {
	t.Helper()
	master, slave := openPTY(t)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	r := &ptyRun{master: master, slave: slave, out: &lockedBuffer{}, copied: make(chan struct{}), before: before}
	r.resize(t, rows, cols)
	go func() {
		io.Copy(r.out, master)
		close(r.copied)
	}()
	r.cmd = exec.Command(binary, args...)
	r.cmd.Env, r.cmd.Dir = env, dir
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = slave, slave, slave
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
		master.Close()
		slave.Close()
	})
	return r
}

// wait returns remotefs's exit status, once its output has been read.
func (r *ptyRun) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		t.Fatalf("remotefs on a terminal: still running after 30s; output %q", r.out.String())
	}
	// Give the reader a moment to drain what the command wrote last.
	time.Sleep(100 * time.Millisecond)
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

func (r *ptyRun) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(r.slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

// checkRestored: the terminal's modes are what they were before.
func (r *ptyRun) checkRestored(t *testing.T) {
	t.Helper()
	now, err := unix.IoctlGetTermios(int(r.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if now.Lflag != r.before.Lflag || now.Iflag != r.before.Iflag || now.Oflag != r.before.Oflag {
		t.Errorf("terminal not restored: lflag %#x iflag %#x oflag %#x, before %#x %#x %#x",
			now.Lflag, now.Iflag, now.Oflag, r.before.Lflag, r.before.Iflag, r.before.Oflag)
	}
}

// checkInputNotTaken: a line typed after remotefs exited is there for the
// next reader (the shell), not swallowed by the mount's process.
func (r *ptyRun) checkInputNotTaken(t *testing.T) {
	t.Helper()
	r.master.Write([]byte("after\n"))
	fd := int(r.slave.Fd())
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); err != nil || n == 0 {
		t.Fatalf("the line typed after the run never reached the terminal's reader (poll %d, %v)", n, err)
	}
	buf := make([]byte, 100)
	n, err := unix.Read(fd, buf)
	if err != nil || string(buf[:n]) != "after\n" {
		t.Errorf("read after the run: %q, %v", buf[:n], err)
	}
}

// openPTY opens a new pseudo-terminal pair. The terminal end is blocking,
// as a real terminal is.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	// Non-blocking, so Close ends the reading goroutine.
	if err := unix.SetNonblock(mfd, true); err != nil {
		unix.Close(mfd)
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(mfd)
		t.Fatal(err)
	}
	sfd, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(mfd)
		t.Fatal(err)
	}
	return os.NewFile(uintptr(mfd), "ptmx"), os.NewFile(uintptr(sfd), "pts")
}

type lockedBuffer = testenv.LockedBuffer
