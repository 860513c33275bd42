package e2e

import (
	"os"
	"strconv"
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
	w.roundTripThroughHop("viacmd", "ProxyCommand")
}
