package conn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"remotefs/internal/sshdtest"
)

// commonHost is the tail of the test configs: how every host logs in.
const commonHost = `
Host *
  User {{USER}}
  IdentityFile {{KEY}}
  IdentitiesOnly yes
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`

func needNC(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nc"); err != nil {
		if os.Getenv("REMOTEFS_REQUIRE_SSHD") == "1" {
			t.Fatal("nc not installed (apt-get install netcat-openbsd)")
		}
		t.Skip("nc not installed (apt-get install netcat-openbsd)")
	}
}

// ncServer starts sshd and a client home where host viaNC is reached
// through proxyCommand.
func ncServer(t *testing.T, proxyCommand string) (*sshdtest.Server, Options) {
	t.Helper()
	needNC(t)
	srv := sshdtest.Start(t)
	t.Setenv("SHELL", "/bin/sh")
	opts := clientHome(t, srv, `
Host viaNC
  HostName 127.0.0.1
  Port {{PORT}}
  ProxyCommand `+proxyCommand+`
`+commonHost, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	return srv, opts
}

// A ProxyCommand hop through nc: the connection is the command's stdin and
// stdout (sshd sees a plain TCP client, no forwarding request), its stderr
// goes to the log, closing the connection ends the command, and a command
// that exits is a lost link.
func TestDialProxyCommandNC(t *testing.T) {
	srv, opts := ncServer(t, `sh -c 'echo "hop to %h:%p as %r for %n" >&2; exec nc %h %p'`)
	var logBuf lockedBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	c := mustDial(t, "viaNC:"+srv.Dir, opts)
	if err := os.WriteFile(filepath.Join(srv.Dir, "f"), []byte("through nc"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	if _, err := c.Fetch(context.Background(), "f", &buf); err != nil || buf.String() != "through nc" {
		t.Fatalf("fetch %q %v", buf.String(), err)
	}
	pid := ncPid(t, srv.Port)
	if strings.Contains(srv.Log(), "server_request_direct_tcpip") {
		t.Error("sshd saw a forwarding request: not through the command")
	}
	want := fmt.Sprintf("hop to 127.0.0.1:%d as %s for vianc", srv.Port, srv.User)
	waitFor(t, "stderr in the log", func() bool { return strings.Contains(logBuf.String(), want) })

	// Closing ends the command (its process group).
	c.Close()
	waitFor(t, "ProxyCommand to exit after Close", func() bool { return !alive(pid) })

	// The command exiting is a lost link.
	c = mustDial(t, "viaNC:"+srv.Dir, opts)
	pid = ncPid(t, srv.Port)
	syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-c.Done():
		if !errors.Is(c.Err(), ErrOffline) {
			t.Errorf("err %v", c.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection survived its ProxyCommand")
	}
}

// A ProxyJump whose first hop is itself reached through a ProxyCommand,
// as ssh -J would reach it.
func TestDialProxyJumpOverProxyCommand(t *testing.T) {
	srv, opts := ncServer(t, "nc %h %p")
	f, err := os.OpenFile(filepath.Join(opts.Home, ".ssh", "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\nHost inner\n  HostName 127.0.0.1\n  Port %d\n  ProxyJump viaNC\n", srv.Port)
	f.Close()
	// (User and keys for inner come from ncServer's "Host *".)
	before := strings.Count(srv.Log(), "server_request_direct_tcpip")
	c := mustDial(t, "inner:"+srv.Dir, opts)
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	ncPid(t, srv.Port) // the first hop runs through nc
	if n := strings.Count(srv.Log(), "server_request_direct_tcpip") - before; n != 1 {
		t.Errorf("sshd saw %d forwarding requests, want 1 (the jump)", n)
	}
}

// A ProxyCommand that fails: the error is a lost link (try again later)
// and carries what the command said.
func TestDialProxyCommandFails(t *testing.T) {
	_, opts := ncServer(t, `sh -c 'echo "bastion: no route to %h" >&2; exit 1'`)
	_, err := dialSpec(t, "viaNC:", opts)
	wantDialError(t, err, ErrOffline, "viaNC", "ProxyCommand", "bastion: no route to 127.0.0.1")
}

// A Manager runs the ProxyCommand again after it exits.
func TestManagerRedialsProxyCommand(t *testing.T) {
	srv, opts := ncServer(t, "nc %h %p")
	spec, _ := ParseSpec("viaNC:" + srv.Dir)
	m := NewManager(spec, opts, nil)
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := m.Client()
	pid := ncPid(t, srv.Port)
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "a new connection", func() bool {
		c := m.Client()
		return c != nil && c != first
	})
	if _, err := m.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if newPid := ncPid(t, srv.Port); newPid == pid {
		t.Fatal("same ProxyCommand process")
	}
}

// A ProxyCommand "ssh -W %h:%p bastion" through a second sshd, with the
// real OpenSSH client.
func TestDialProxyCommandSSHW(t *testing.T) {
	srv := sshdtest.Start(t)
	bastion := sshdtest.Start(t)
	t.Setenv("SHELL", "/bin/sh")
	opts := clientHome(t, srv, `
Host target
  HostName 127.0.0.1
  Port {{PORT}}
  ProxyCommand ssh -F `+bastion.ConfigFile+` -o BatchMode=yes -W %h:%p `+sshdtest.Alias+`
`+commonHost, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	before := strings.Count(bastion.Log(), "server_request_direct_tcpip")
	c := mustDial(t, "target:"+srv.Dir, opts)
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(bastion.Log(), "server_request_direct_tcpip") - before; n != 1 {
		t.Errorf("bastion saw %d forwarding requests, want 1", n)
	}
}

// A user certificate: sshd trusts only the CA (the key is not in
// authorized_keys); the certificate as <key>-cert.pub, as CertificateFile,
// and held by a real ssh-agent.
func TestCertificateLogin(t *testing.T) {
	srv := sshdtest.StartWith(t, sshdtest.Options{UserCA: true})
	opts := clientHome(t, srv, `
Host nocert
  IdentityFile ~/.ssh/ck
Host beside
  IdentityFile ~/.ssh/ck
Host certfile
  IdentityFile ~/.ssh/ck
  CertificateFile ~/.ssh/certs/ck.cert
Host agent
  IdentityFile ~/.ssh/nothing-here
  IdentitiesOnly no
  IdentityAgent ~/agent.sock
Host agentpub
  IdentityFile ~/.ssh/pubonly
  IdentityAgent ~/agent.sock
Host *
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentitiesOnly yes
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	key := filepath.Join(opts.Home, ".ssh", "ck")
	if _, err := sshdtest.NewUserKey(key); err != nil {
		t.Fatal(err)
	}
	// Without a certificate the key is refused: what makes the rest count.
	_, err := dialSpec(t, "nocert:", opts)
	wantDialError(t, err, ErrAuth)

	certFile, err := srv.SignUserKey(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	mustDial(t, "beside:", opts)

	os.MkdirAll(filepath.Join(opts.Home, ".ssh", "certs"), 0o700)
	if err := os.Rename(certFile, filepath.Join(opts.Home, ".ssh", "certs", "ck.cert")); err != nil {
		t.Fatal(err)
	}
	_, err = dialSpec(t, "beside:", opts)
	wantDialError(t, err, ErrAuth)
	mustDial(t, "certfile:", opts)

	// ssh-agent holding the key and its certificate (ssh-add adds both
	// when <key>-cert.pub is beside the key).
	copyFile(t, filepath.Join(opts.Home, ".ssh", "certs", "ck.cert"), certFile)
	sock := startSSHAgent(t, filepath.Join(opts.Home, "agent.sock"))
	sshAdd(t, sock, key)
	mustDial(t, "agent:", opts)
	// IdentitiesOnly with only the public half of the key on disk: the
	// agent's key and its certificate for it are offered.
	copyFile(t, key+".pub", filepath.Join(opts.Home, ".ssh", "pubonly.pub"))
	mustDial(t, "agentpub:", opts)
	// The agent with the bare key only is refused.
	sshAdd(t, sock, "-D")
	os.Remove(certFile)
	sshAdd(t, sock, key)
	_, err = dialSpec(t, "agent:", opts)
	wantDialError(t, err, ErrAuth)
	_, err = dialSpec(t, "agentpub:", opts)
	wantDialError(t, err, ErrAuth)
}

// startSSHAgent runs a throwaway OpenSSH ssh-agent on sock.
func startSSHAgent(t *testing.T, sock string) string {
	t.Helper()
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Skipf("ssh-agent: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "ssh-agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	return sock
}

func sshAdd(t *testing.T, sock string, args ...string) {
	t.Helper()
	cmd := exec.Command("ssh-add", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add %v: %v: %s", args, err, out)
	}
}

// A host certificate checked against an @cert-authority line, with no
// plain host key in known_hosts.
func TestHostCertificate(t *testing.T) {
	srv := sshdtest.StartWith(t, sshdtest.Options{HostCert: true})
	config := `
Host box
  HostName 127.0.0.1
  Port {{PORT}}
` + commonHost
	opts := clientHome(t, srv, config, "@cert-authority * "+srv.HostCAPub)
	mustDial(t, "box:"+srv.Dir, opts)
	opts = clientHome(t, srv, config, "@cert-authority [127.0.0.1]:{{PORT}} "+srv.HostCAPub)
	mustDial(t, "box:"+srv.Dir, opts)

	// Another CA is not trusted.
	other := filepath.Join(t.TempDir(), "other_ca")
	otherPub, err := sshdtest.NewUserKey(other)
	if err != nil {
		t.Fatal(err)
	}
	opts = clientHome(t, srv, config, "@cert-authority * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherPub))))
	_, err = dialSpec(t, "box:"+srv.Dir, opts)
	wantDialError(t, err, ErrHostKeyUnknown)
}

// Match exec selects the entry that reaches the server.
func TestDialMatchExec(t *testing.T) {
	srv := sshdtest.Start(t)
	t.Setenv("SHELL", "/bin/sh")
	opts := clientHome(t, srv, `
Match originalhost box exec "test -f %d/use-testbox"
  HostName 127.0.0.1
  Port {{PORT}}
Host box
  HostName 127.0.0.1
  Port 1
`+commonHost, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	_, err := dialSpec(t, "box:"+srv.Dir, opts)
	wantDialError(t, err, ErrOffline, "127.0.0.1:1")
	if err := os.WriteFile(filepath.Join(opts.Home, "use-testbox"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustDial(t, "box:"+srv.Dir, opts)
}

func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(data[i+1:])), "Z")
}

// ncPid finds the one live "nc 127.0.0.1 PORT" process.
func ncPid(t *testing.T, port int) int {
	t.Helper()
	want := "nc\x00127.0.0.1\x00" + strconv.Itoa(port) + "\x00"
	entries, _ := os.ReadDir("/proc")
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if string(cmdline) == want && alive(pid) {
			if found != 0 {
				t.Fatalf("two nc processes: %d %d", found, pid)
			}
			found = pid
		}
	}
	if found == 0 {
		t.Fatal("no nc process")
	}
	return found
}

// The whole Remote suite over a ProxyCommand connection: the bytes go
// through the command's pipes, large transfers included.
func TestProxyCommandRemoteSuite(t *testing.T) {
	srv, opts := ncServer(t, "nc %h %p")
	runRemoteSuiteIn(t, srv.Dir, func(t *testing.T, dir string) Remote {
		return mustDial(t, "viaNC:"+dir, opts)
	})
}
