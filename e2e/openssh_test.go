package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// With --ssh=openssh, ssh itself follows the host's configuration: here a
// ProxyCommand (an `ssh -W` hop through the same sshd), run by the user's
// ssh, not by remotefs; the mount reads and writes through it.
func TestOpenSSHProxyCommand(t *testing.T) {
	w := newWorld(t)
	w.sshFlags = []string{"--ssh=openssh"}
	cfg, err := os.OpenFile(w.srv.ConfigFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	hop := "ssh -F " + w.srv.ConfigFile + " -W %h:%p testbox"
	cfg.WriteString("\nHost viacmd\n  HostName 127.0.0.1\n  Port " + strconv.Itoa(w.srv.Port) +
		"\n  User " + w.srv.User + "\n  IdentityFile " + w.srv.UserKeyFile + "\n  IdentitiesOnly yes\n  IdentityAgent none\n" +
		"  UserKnownHostsFile " + w.srv.KnownHostsFile + "\n  GlobalKnownHostsFile /dev/null\n  ProxyCommand " + hop + "\n")
	cfg.Close()
	w.writeServer("proj/hello.txt", "through a ProxyCommand\n", 0o644)
	w.alias = "viacmd"
	w.mount()
	if b, err := os.ReadFile(w.m("proj/hello.txt")); err != nil || string(b) != "through a ProxyCommand\n" {
		t.Fatalf("read through the ProxyCommand: %q, %v", b, err)
	}
	if err := os.WriteFile(w.m("proj/back.txt"), []byte("and back\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.unmount()
	if b, _ := os.ReadFile(w.s("proj/back.txt")); string(b) != "and back\n" {
		t.Fatalf("server back.txt = %q", b)
	}
	// The hop really carried it: sshd logged the forwarding of ssh -W.
	if !strings.Contains(w.srv.Log(), "direct-tcpip") && !strings.Contains(w.srv.Log(), "forwarding") {
		t.Errorf("sshd log shows no forwarded connection; was the ProxyCommand used?")
	}
}
