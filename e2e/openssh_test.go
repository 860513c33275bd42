package e2e

import (
	"testing"

	"remotefs/internal/sshdtest"
)

// With --ssh=openssh, ssh itself follows the host's configuration: here a
// ProxyCommand (an `ssh -W` hop through the same sshd), run by the user's
// ssh, not by remotefs; the mount reads and writes through it.
func TestOpenSSHProxyCommand(t *testing.T) {
	w := newWorld(t)
	w.sshFlags = []string{"--ssh=openssh"}
	hop := "ssh -F " + w.srv.ConfigFile + " -W %h:%p testbox"
	if err := w.srv.AddHost(sshdtest.Host{Alias: "viacmd", Lines: []string{"ProxyCommand " + hop}}); err != nil {
		t.Fatal(err)
	}
	w.roundTripThroughHop("viacmd", "ProxyCommand")
}
