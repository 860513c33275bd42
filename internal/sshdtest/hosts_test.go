package sshdtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"remotefs/internal/netproxy"
)

// The Host blocks AddHost and AddProxyHost write log in with the real
// OpenSSH client: directly, through a proxy (whose port known_hosts then
// trusts), and not with a known_hosts that lacks the server or with a
// line that overrides the user.
func TestAddHostLogsIn(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh program")
	}
	s := Start(t)
	run := func(alias string) (string, error) {
		cmd := exec.Command("ssh", "-F", s.ConfigFile, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", alias, "echo", "in-"+alias)
		cmd.Env = s.Env()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if err := s.AddHost(Host{Alias: "otherbox"}); err != nil {
		t.Fatal(err)
	}
	if out, err := run("otherbox"); err != nil || !strings.Contains(out, "in-otherbox") {
		t.Fatalf("otherbox: %v: %s", err, out)
	}

	p, err := netproxy.New("127.0.0.1:0", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := s.AddProxyHost("proxybox", p.Addr(), "", "ConnectTimeout 10"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("proxybox"); err != nil || !strings.Contains(out, "in-proxybox") {
		t.Fatalf("proxybox: %v: %s", err, out)
	}
	if p.BytesUp() == 0 || p.BytesDown() == 0 {
		t.Fatalf("the proxybox login did not go through the proxy (%d bytes up, %d down)", p.BytesUp(), p.BytesDown())
	}
	kh, _ := os.ReadFile(s.KnownHostsFile)
	if !strings.Contains(string(kh), "[127.0.0.1]:"+strings.Split(p.Addr(), ":")[1]+" "+s.HostKeyPub) {
		t.Fatalf("known_hosts lacks the proxy's port:\n%s", kh)
	}

	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHost(Host{Alias: "strangerbox", KnownHostsFile: empty, Lines: []string{"StrictHostKeyChecking yes"}}); err != nil {
		t.Fatal(err)
	}
	if out, err := run("strangerbox"); err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Fatalf("strangerbox with an empty known_hosts: %v: %s", err, out)
	}

	if err := s.AddHost(Host{Alias: "nobodybox", Lines: []string{"User nosuchuser-sshdtest"}}); err != nil {
		t.Fatal(err)
	}
	if out, err := run("nobodybox"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("nobodybox: a User line did not win over the default: %v: %s", err, out)
	}
}
