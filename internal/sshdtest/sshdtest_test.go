package sshdtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The generated files work with the real OpenSSH client: the config,
// known_hosts and key are what `ssh testbox` needs.
func TestOpenSSHClientLogsIn(t *testing.T) {
	s := Start(t)
	out, err := s.Command("echo", "hello from", "$HOME").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh testbox: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "hello from") {
		t.Fatalf("output %q", out)
	}
	if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() || !filepath.IsAbs(s.Dir) {
		t.Fatalf("Dir %q: %v", s.Dir, err)
	}
}

// Restart keeps port and keys and kills the sessions of the old server.
func TestRestartKillsSessions(t *testing.T) {
	s := Start(t)
	cmd := s.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait for the session to exist on the server.
	for i := 0; i < 200 && len(descendants(s.cmd.Process.Pid)) < 2; i++ {
		sleep()
	}
	port := s.Port
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("ssh session survived the restart")
	}
	if s.Port != port {
		t.Fatalf("port changed")
	}
	if out, err := s.Command("true").CombinedOutput(); err != nil {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
}

// Stop leaves no process behind.
func TestStopKillsEverything(t *testing.T) {
	s := Start(t)
	cmd := s.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := s.cmd.Process.Pid
	for i := 0; i < 200 && len(descendants(pid)) < 2; i++ {
		sleep()
	}
	kids := descendants(pid)
	if len(kids) == 0 {
		t.Fatal("no session processes seen")
	}
	s.Stop()
	for _, k := range kids {
		if alive(k) {
			st, _ := os.ReadFile(filepath.Join("/proc", itoa(k), "stat"))
			t.Errorf("process %d still alive after Stop: %s", k, st)
		}
	}
}

// With LoginShellDelay every exec channel pays the slow shell start-up and
// the SFTP subsystem does not; without it neither does.
func TestLoginShellDelay(t *testing.T) {
	const delay = 700 * time.Millisecond
	slow := StartWith(t, Options{LoginShellDelay: delay})
	execT, sftpT, err := slow.StartTimes()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slow shell: exec %v, sftp %v", execT, sftpT)
	if execT < delay {
		t.Errorf("exec took %v, less than the shell delay %v: ~/.bashrc was not run", execT, delay)
	}
	if sftpT >= delay/2 {
		t.Errorf("sftp subsystem took %v to start: it should not run the slow shell", sftpT)
	}
	// The real OpenSSH client's commands pay it too, and still work.
	t0 := time.Now()
	if out, err := slow.Command("echo", "ok").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("ssh echo ok: %v: %q", err, out)
	}
	if d := time.Since(t0); d < delay {
		t.Errorf("ssh echo took %v, less than the shell delay", d)
	}

	fast := Start(t)
	execT, sftpT, err = fast.StartTimes()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default shell: exec %v, sftp %v", execT, sftpT)
	if execT >= delay/2 || sftpT >= delay/2 {
		t.Errorf("without LoginShellDelay: exec %v, sftp %v", execT, sftpT)
	}
}
