package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"remotefs/internal/control"
	"remotefs/internal/sshdtest"
)

// echoServer listens on loopback and echoes every line back, prefixed so
// the test knows it is this server answering.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "echo: %s\n", sc.Text())
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// echoVia sends one line through a connection made by dial and returns the
// answer (or the error); it never waits more than 5s.
func echoVia(dial func() (net.Conn, error), line string) (string, error) {
	c, err := dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func tcpDialer(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }
}

// socksDialer connects to target through a SOCKS5 proxy at proxy (CONNECT
// by domain name, no authentication), written out by hand.
func socksDialer(proxy, target string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", proxy, 2*time.Second)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		host, portStr, _ := net.SplitHostPort(target)
		port, _ := strconv.Atoi(portStr)
		req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
		req = append(req, host...)
		req = append(req, byte(port>>8), byte(port))
		if _, err := c.Write(req); err != nil {
			c.Close()
			return nil, err
		}
		var reply [2 + 10]byte
		if _, err := io.ReadFull(c, reply[:]); err != nil {
			c.Close()
			return nil, err
		}
		if reply[0] != 5 || reply[1] != 0 || reply[3] != 0 {
			c.Close()
			return nil, fmt.Errorf("SOCKS reply % x", reply)
		}
		c.SetDeadline(time.Time{})
		return c, nil
	}
}

func forwardState(st control.Status, listen string) string {
	for _, f := range st.Forwards {
		if f.Listen == listen {
			return f.State
		}
	}
	return "absent"
}

// The host entry's LocalForward, DynamicForward and RemoteForward are
// open while mounted (through the mount's ssh connection, as sshd's log
// shows), a port already taken is a warning and not a failed mount,
// status lists them, they answer again after the link was blackholed and
// came back, they close at unmount, and --no-forwards leaves them off.
func TestForwardsAcrossReconnect(t *testing.T) {
	w := newCheckedWorld(t)
	echo := echoServer(t)
	local, dynamic, remote := freePort(t), freePort(t), freePort(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	localAddr := fmt.Sprintf("127.0.0.1:%d", local)
	dynAddr := fmt.Sprintf("127.0.0.1:%d", dynamic)
	remoteAddr := fmt.Sprintf("127.0.0.1:%d", remote)
	p := w.viaProxyWith(fmt.Sprintf(`ServerAliveInterval 1
ServerAliveCountMax 2
LocalForward %d %s
LocalForward %s %s
DynamicForward %d
RemoteForward %s %s`, local, echo, busy.Addr(), echo, dynamic, remoteAddr, echo))

	before := strings.Count(w.srv.Log(), "server_request_direct_tcpip")
	// The busy port is a warning from remotefs mount, not a failure.
	r := w.run(binary, "mount", w.spec(), w.mnt)
	if r.code != 0 || !mounted(w.mnt) {
		t.Fatalf("mount with a busy forward port: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "LocalForward "+busy.Addr().String()) || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("no warning about the busy port: %q", r.stderr)
	}
	check := func(when string) {
		t.Helper()
		eventually(t, 20*time.Second, "forwards active "+when, func() bool {
			st := w.status()
			return forwardState(st, localAddr) == "active" && forwardState(st, remoteAddr) == "active"
		})
		for name, dial := range map[string]func() (net.Conn, error){
			"LocalForward":   tcpDialer(localAddr),
			"DynamicForward": socksDialer(dynAddr, echo),
			"RemoteForward":  tcpDialer(remoteAddr),
		} {
			got, err := echoVia(dial, "hello "+when)
			if err != nil || got != "echo: hello "+when {
				t.Fatalf("%s %s: %q, %v", name, when, got, err)
			}
		}
	}
	check("while mounted")
	if n := strings.Count(w.srv.Log(), "server_request_direct_tcpip") - before; n < 2 {
		t.Errorf("sshd saw %d direct-tcpip requests; the forwards did not go through ssh", n)
	}
	st := w.status()
	if s := forwardState(st, busy.Addr().String()); s != "failed" {
		t.Errorf("forward on a busy port: %q (status %+v)", s, st.Forwards)
	}
	text := w.must(binary, "status", w.mnt)
	if !strings.Contains(text, "forward "+localAddr+" -> "+echo+": active") || !strings.Contains(text, "(SOCKS5)") {
		t.Errorf("status does not list the forwards:\n%s", text)
	}

	// Link dead: offline; the local port stays ours and refuses at once.
	p.Blackhole(true)
	eventually(t, 30*time.Second, "offline", func() bool { return w.status().State == "offline" })
	if s := forwardState(w.status(), localAddr); s != "waiting for connection" {
		t.Errorf("forward while offline: %q", s)
	}
	start := time.Now()
	if got, err := echoVia(tcpDialer(localAddr), "offline"); err == nil {
		t.Errorf("forward answered while offline: %q", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a forwarded connection while offline took %v to fail", d)
	}

	p.Blackhole(false)
	p.ResetAll()
	eventually(t, 60*time.Second, "online again", func() bool { return w.status().State == "online" })
	check("after the reconnect")

	w.unmount()
	if _, err := echoVia(tcpDialer(localAddr), "after unmount"); err == nil {
		t.Error("LocalForward still answers after unmount")
	}

	w.mount("--no-forwards")
	if st := w.status(); len(st.Forwards) != 0 {
		t.Errorf("--no-forwards: %+v", st.Forwards)
	}
	if _, err := echoVia(tcpDialer(localAddr), "no forwards"); err == nil {
		t.Error("LocalForward answers with --no-forwards")
	}
}

// A mount whose host is reached through a ProxyCommand: nc, and the real
// OpenSSH client's "ssh -W" through a second sshd. Served, written back,
// and the command ends with the mount.
func TestMountThroughProxyCommand(t *testing.T) {
	for _, via := range []string{"nc", "ssh -W"} {
		t.Run(strings.ReplaceAll(via, " ", ""), func(t *testing.T) {
			if _, err := exec.LookPath(strings.Fields(via)[0]); err != nil {
				t.Skipf("%s not installed (apt-get install netcat-openbsd openssh-client)", via)
			}
			w := newWorld(t)
			command := fmt.Sprintf("nc %%h %d", w.srv.Port)
			pattern := fmt.Sprintf("^nc 127.0.0.1 %d$", w.srv.Port)
			var bastionLog func() string
			if via == "ssh -W" {
				bastion := sshdtest.Start(t)
				bastionLog = bastion.Log
				command = fmt.Sprintf("ssh -F %s -o BatchMode=yes -W %%h:%d %s", bastion.ConfigFile, w.srv.Port, sshdtest.Alias)
				pattern = fmt.Sprintf("^ssh -F %s .*-W 127.0.0.1:%d", bastion.ConfigFile, w.srv.Port)
			}
			proxyProcs := func() int {
				out, _ := exec.Command("pgrep", "-f", pattern).Output()
				return len(strings.Fields(string(out)))
			}
			w.writeServer("hello.txt", "through a proxy command\n", 0o644)
			h := sshdtest.Host{Alias: "viaproxy", Lines: []string{"ProxyCommand " + command, "HostKeyAlias testbox-key"}}
			if err := w.srv.AddHost(h); err != nil {
				t.Fatal(err)
			}
			if err := w.srv.AddKnownHost("testbox-key"); err != nil {
				t.Fatal(err)
			}

			w.alias = "viaproxy"
			w.mount()
			b, err := os.ReadFile(w.m("hello.txt"))
			if err != nil || string(b) != "through a proxy command\n" {
				t.Fatalf("read through %s: %q %v", via, b, err)
			}
			if err := os.WriteFile(w.m("new.txt"), []byte("written\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			w.must(binary, "flush", w.mnt)
			if b, err := os.ReadFile(w.s("new.txt")); err != nil || string(b) != "written\n" {
				t.Fatalf("server copy: %q %v", b, err)
			}
			if n := proxyProcs(); n != 1 {
				t.Errorf("want one %s process while mounted, found %d", via, n)
			}
			if bastionLog != nil && !strings.Contains(bastionLog(), "server_request_direct_tcpip") {
				t.Error("the bastion saw no forwarding request")
			}
			w.unmount()
			eventually(t, 10*time.Second, via+" to exit after unmount", func() bool { return proxyProcs() == 0 })
		})
	}
}

// A mount that logs in with a user certificate (sshd trusts only the CA;
// the key is in no authorized_keys) and knows the server only by its host
// certificate (known_hosts has just an @cert-authority line): first with
// the certificate beside the key, then with key and certificate held by
// a real ssh-agent.
func TestMountWithCertificates(t *testing.T) {
	w := newWorldWith(t, sshdtest.Options{UserCA: true, HostCert: true})
	w.writeServer("hello.txt", "certified\n", 0o644)
	dir := t.TempDir()
	key := filepath.Join(dir, "ck")
	if _, err := sshdtest.NewUserKey(key); err != nil {
		t.Fatal(err)
	}
	certFile, err := w.srv.SignUserKey(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte("@cert-authority * "+w.srv.HostCAPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	cfg, err := os.OpenFile(w.srv.ConfigFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, `
Host certfile
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
Host certagent
  IdentityFile %s/none
  IdentityAgent %s
Host cert*
  HostName 127.0.0.1
  Port %d
  User %s
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
`, key, dir, sock, w.srv.Port, w.srv.User, known)
	cfg.Close()

	check := func(alias string) {
		t.Helper()
		w.alias = alias
		w.mount()
		if b, err := os.ReadFile(w.m("hello.txt")); err != nil || string(b) != "certified\n" {
			t.Fatalf("%s: read %q %v", alias, b, err)
		}
		w.unmount()
	}
	check("certfile")

	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { agent.Process.Kill(); agent.Wait() }()
	eventually(t, 10*time.Second, "ssh-agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	add := exec.Command("ssh-add", key) // adds ck-cert.pub with it
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v %s", err, out)
	}
	// Only the agent has the key now.
	os.Remove(key)
	os.Remove(certFile)
	check("certagent")
}

// A host certificate signed by a CA other than the one known_hosts trusts
// is refused: the mount fails at once, saying the server's host key could
// not be verified, and nothing is mounted (the certificate is no way
// around known_hosts).
func TestHostCertificateFromWrongCARefused(t *testing.T) {
	w := newWorldWith(t, sshdtest.Options{HostCert: true})
	w.writeServer("secret.txt", "not for an impostor's client\n", 0o644)
	dir := t.TempDir()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "other-ca", "-f", filepath.Join(dir, "otherca")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	otherCA, err := os.ReadFile(filepath.Join(dir, "otherca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	// The world's known_hosts trusts only a CA: the right one mounts (the
	// refusal below is the CA's), another one does not.
	known := w.srv.KnownHostsFile
	if err := os.WriteFile(known, []byte("@cert-authority * "+w.srv.HostCAPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.mount()
	w.unmount()
	if err := os.WriteFile(known, []byte("@cert-authority * "+strings.TrimSpace(string(otherCA))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logins := strings.Count(w.srv.Log(), "Accepted publickey")
	start := time.Now()
	r := w.run(binary, "mount", w.spec(), w.mnt)
	if r.code == 0 {
		t.Fatalf("mount with a host certificate from the wrong CA succeeded:\n%s", r.stderr)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the refusal took %v", took.Round(time.Millisecond))
	}
	if !strings.Contains(strings.ToLower(r.stderr), "host key") {
		t.Errorf("the error does not say the host key was not trusted: %q", r.stderr)
	}
	if mounted(w.mnt) {
		t.Fatal("left mounted")
	}
	if strings.Count(w.srv.Log(), "Accepted publickey") != logins {
		t.Errorf("the client logged in to a server it could not verify:\n%s", w.srv.Log())
	}
	t.Logf("refused: %s", strings.TrimSpace(r.stderr))
}
