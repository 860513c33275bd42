package e2e

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	binenc "encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// A server that logs in with a password and then a one-time code, the way
// university clusters do: a real OpenSSH sshd with PAM, whose stack asks
// "Password: " (pam_exec with expose_authtok, checked by a script) and then
// an HOTP code (pam_oath, from Debian's libpam-oath), over
// keyboard-interactive only. sshd uses its program name as its PAM
// service, so the test runs a copy of sshd under its own name with its own
// /etc/pam.d file and leaves the system's sshd alone.

const (
	pamModules  = "/lib/x86_64-linux-gnu/security"
	loginSecret = "correct horse battery staple"
)

type pamServer struct {
	w       *world
	oathKey []byte
	counter uint64 // next HOTP counter
}

func newPAMWorld(t *testing.T) *pamServer {
	t.Helper()
	need := func(ok bool, why string) {
		if ok {
			return
		}
		if os.Getenv("REMOTEFS_REQUIRE_SSHD") == "1" && os.Geteuid() == 0 {
			t.Fatalf("%s (REMOTEFS_REQUIRE_SSHD=1; scripts/install-deps.sh installs libpam-oath)", why)
		}
		t.Skip(why)
	}
	need(os.Geteuid() == 0, "PAM logins need sshd running as root")
	mods := pamModules
	if _, err := os.Stat(filepath.Join(mods, "pam_oath.so")); err != nil {
		mods = "/usr/lib/security"
	}
	_, err := os.Stat(filepath.Join(mods, "pam_oath.so"))
	need(err == nil, "pam_oath.so not installed (apt-get install libpam-oath)")
	sshd, err := sshdtest.FindSSHD()
	need(err == nil, "sshd not installed")

	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	var tag [4]byte
	rand.Read(tag[:])
	service := "remotefs-kbd-" + hex.EncodeToString(tag[:])
	prog := filepath.Join(dir, service)
	testenv.CopyFile(t, sshd, prog, 0o755)

	check := filepath.Join(dir, "check-password")
	writeFile(t, check, fmt.Sprintf("#!/bin/sh\n# pam_exec expose_authtok: the password on stdin, NUL-terminated\npw=$(tr -d '\\000')\n[ \"$pw\" = '%s' ]\n", loginSecret), 0o755)
	key := make([]byte, 20)
	rand.Read(key)
	users := filepath.Join(dir, "users.oath")
	writeFile(t, users, fmt.Sprintf("HOTP root - %s\n", hex.EncodeToString(key)), 0o600)
	pamFile := filepath.Join("/etc/pam.d", service)
	writeFile(t, pamFile, fmt.Sprintf(`# remotefs e2e test (removed when the test ends)
auth optional %[1]s/pam_echo.so Use your password, then your one-time code.
auth required %[1]s/pam_exec.so expose_authtok quiet %[2]s
auth required %[1]s/pam_oath.so usersfile=%[3]s window=20 digits=6
account required %[1]s/pam_permit.so
session required %[1]s/pam_permit.so
`, mods, check, users), 0o644)
	t.Cleanup(func() { os.Remove(pamFile) })

	w := newWorldWith(t, sshdtest.Options{SSHD: prog, UsePAM: true, ExtraConfig: `
Match all
  PermitRootLogin yes
  AuthenticationMethods keyboard-interactive
`})
	return &pamServer{w: w, oathKey: key}
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	testenv.WriteFile(t, filepath.Dir(p), filepath.Base(p), content, mode)
}

// nextCode is the next HOTP code (RFC 4226) pam_oath accepts.
func (s *pamServer) nextCode() string {
	var msg [8]byte
	binenc.BigEndian.PutUint64(msg[:], s.counter)
	s.counter++
	m := hmac.New(sha1.New, s.oathKey)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0xf
	v := binenc.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1000000)
}

// answer waits for one more occurrence of prompt on the terminal r and
// types answer.
func answer(t *testing.T, r *ptyRun, prompt, answer string) {
	t.Helper()
	skip := strings.Count(r.out.String(), prompt)
	eventually(t, 30*time.Second, fmt.Sprintf("the prompt %q (terminal so far: %q)", prompt, r.out.String()), func() bool {
		return strings.Count(r.out.String(), prompt) > skip
	})
	if _, err := io.WriteString(r.master, answer+"\n"); err != nil {
		t.Fatal(err)
	}
}

// loginOnPTY runs remotefs with args on a terminal, answers the password
// and the next one-time code, and checks it succeeds without showing the
// password.
func (s *pamServer) loginOnPTY(args ...string) string {
	t := s.w.t
	t.Helper()
	r := startOnPTY(t, "", s.w.env, 24, 80, args...)
	answer(t, r, "Password: ", loginSecret)
	answer(t, r, otpPrompt, s.nextCode())
	if code := r.wait(t); code != 0 {
		t.Fatalf("remotefs %s on a terminal: exit %d; terminal: %q", args[0], code, r.out.String())
	}
	if strings.Contains(r.out.String(), loginSecret) {
		t.Fatalf("remotefs %s showed the password on the terminal: %q", args[0], r.out.String())
	}
	return r.out.String()
}

const otpPrompt = "One-time password (OATH) for `root': "

// TestKeyboardInteractiveLogin: `remotefs mount` asks the server's two
// prompts on the terminal (the password without echo), mounts, and after a
// reconnect that needs them again the mount serves its cache, says "login
// needed", keeps a save, and `remotefs login` asks again and resumes.
func TestKeyboardInteractiveLogin(t *testing.T) {
	forEachSSH(t, func(t *testing.T, mode string, setup func(*world) *world) {
		s := newPAMWorld(t)
		setup(s.w)
		keyboardInteractiveLogin(t, s)
	})
}

func keyboardInteractiveLogin(t *testing.T, s *pamServer) {
	w := s.w
	w.writeServer("notes.txt", "from the server\n", 0o644)
	p := w.viaProxyWith("ServerAliveInterval 1\nServerAliveCountMax 2\nConnectTimeout 3")

	// Without a terminal, a mount that needs answers fails at once.
	start := time.Now()
	cmd := exec.Command(binary, append(append([]string{"mount"}, w.sshFlags...), w.spec(), w.mnt)...)
	cmd.Env = w.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	out, err := cmd.CombinedOutput()
	if err == nil || mounted(w.mnt) {
		t.Fatalf("mount without a terminal succeeded: %s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("mount without a terminal: %v, want exit status 3 (login needed)", err)
	}
	if !strings.Contains(string(out), "remotefs login") || !strings.Contains(string(out), "Password:") {
		t.Fatalf("mount without a terminal: want a message naming the prompt and remotefs login, got %q", out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("mount without a terminal took %v to fail", d)
	} else {
		t.Logf("mount without a terminal failed after %v", d.Round(time.Millisecond))
	}

	// Ctrl-C at the prompt: the mount gives up at once, nothing is
	// mounted, and the terminal echoes again.
	r := startOnPTY(t, "", w.env, 24, 80, append(append([]string{"mount"}, w.sshFlags...), w.spec(), w.mnt)...)
	eventually(t, 30*time.Second, "the password prompt", func() bool { return strings.Contains(r.out.String(), "Password: ") })
	r.master.Write([]byte{3})
	if code := r.wait(t); code == 0 || mounted(w.mnt) {
		t.Fatalf("mount interrupted at the prompt: exit %d, mounted %v; terminal %q", code, mounted(w.mnt), r.out.String())
	}
	r.checkRestored(t)
	eventually(t, 10*time.Second, "the daemon to give up", func() bool { return !remotefsDaemonRunning(w) })

	// On a terminal: the server's prompts, exactly, and no echo of the password.
	shown := s.loginOnPTY(append(append([]string{"mount"}, w.sshFlags...), w.spec(), w.mnt)...)
	if !strings.Contains(shown, "Use your password, then your one-time code.") {
		t.Errorf("the server's message is not on the terminal: %q", shown)
	}
	if !mounted(w.mnt) {
		t.Fatal("not mounted")
	}
	if b, err := os.ReadFile(w.m("notes.txt")); err != nil || string(b) != "from the server\n" {
		t.Fatalf("read through the mount: %q, %v", b, err)
	}
	if st := w.status(); st.State != "online" {
		t.Fatalf("state %q after the login, want online", st.State)
	}
	assertSecretNowhere(t, w, loginSecret)

	// The link drops; the reconnect is asked for the password again.
	p.ResetAll()
	dropped := time.Now()
	eventually(t, 30*time.Second, "status to say login needed", func() bool { return w.status().State == "login needed" })
	t.Logf("login needed %v after the link dropped", time.Since(dropped).Round(time.Millisecond))
	if out := w.must(binary, "status", w.mnt); !strings.Contains(out, "remotefs login") {
		t.Fatalf("status does not say what to do: %s", out)
	}
	// Meanwhile the mount works as offline: the cache is served and a save
	// is kept in the journal.
	if b, err := os.ReadFile(w.m("notes.txt")); err != nil || string(b) != "from the server\n" {
		t.Fatalf("cached read while login needed: %q, %v", b, err)
	}
	if err := os.WriteFile(w.m("notes.txt"), []byte("saved while logged out\n"), 0o644); err != nil {
		t.Fatalf("save while login needed: %v", err)
	}
	time.Sleep(2 * time.Second) // the state must hold: no redial loop logs in by itself
	if st := w.status(); st.State != "login needed" || st.Pending == 0 {
		t.Fatalf("after 2s: state %q, pending %d; want login needed with the save pending", st.State, st.Pending)
	}

	// A wrong password is refused and the mount keeps waiting.
	bad := startOnPTY(t, "", w.env, 24, 80, "login", w.mnt)
	answer(t, bad, "Password: ", "wrong")
	answer(t, bad, otpPrompt, "000000") // PAM asks every module of a "required" stack
	if code := bad.wait(t); code == 0 {
		t.Fatalf("login with a wrong password succeeded: %q", bad.out.String())
	}
	if st := w.status(); st.State != "login needed" {
		t.Fatalf("after a failed login: state %q", st.State)
	}

	s.loginOnPTY("login", w.mnt)
	eventually(t, 30*time.Second, "online after login", func() bool { return w.status().State == "online" })
	w.must(binary, "flush", w.mnt)
	if b, _ := os.ReadFile(w.s("notes.txt")); string(b) != "saved while logged out\n" {
		t.Fatalf("server has %q after login and flush", b)
	}
	assertSecretNowhere(t, w, loginSecret)
	w.unmount()

	// --foreground asks on its own terminal too.
	fg := startOnPTY(t, "", w.env, 24, 80, append(append([]string{"mount", "--foreground"}, w.sshFlags...), w.spec(), w.mnt)...)
	answer(t, fg, "Password: ", loginSecret)
	answer(t, fg, otpPrompt, s.nextCode())
	eventually(t, 30*time.Second, "the foreground mount", func() bool { return mounted(w.mnt) })
	if b, err := os.ReadFile(w.m("notes.txt")); err != nil || string(b) != "saved while logged out\n" {
		t.Fatalf("read through the foreground mount: %q, %v", b, err)
	}
	w.unmount()
	if code := fg.wait(t); code != 0 || strings.Contains(fg.out.String(), loginSecret) {
		t.Fatalf("foreground mount: exit %d, terminal %q", code, fg.out.String())
	}
}

// remotefsDaemonRunning reports whether a remotefs daemon of w's mount
// runs.
func remotefsDaemonRunning(w *world) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "__daemon") && strings.Contains(string(b), w.mnt) {
			return true
		}
	}
	return false
}

// assertSecretNowhere checks the daemon's log, cache and state files, and
// every process's argv and environment for secret.
func assertSecretNowhere(t *testing.T, w *world, secret string) {
	t.Helper()
	filepath.Walk(w.xdg, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), secret) {
			t.Errorf("the password is written in %s", p)
		}
		return nil
	})
	// Every process: remotefs's, and the ssh and askpass processes of
	// --ssh=openssh.
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, pd := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			if b, err := os.ReadFile(pd + "/" + f); err == nil && strings.Contains(string(b), secret) {
				t.Errorf("the password is in %s/%s", pd, f)
			}
		}
	}
}
