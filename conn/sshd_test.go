package conn

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// clientHome makes a fresh client home for srv: .ssh/config from config
// (with {{PORT}}, {{USER}}, {{KEY}}, {{HOME}} replaced), .ssh/known_hosts
// from known (lines; {{HOSTKEY}} and {{PORT}} replaced), and the user key
// at .ssh/id_ed25519. It returns Options using that home only.
func clientHome(t *testing.T, srv *sshdtest.Server, config string, known ...string) Options {
	t.Helper()
	home := t.TempDir()
	sshDir := filepath.Join(home, ".ssh")
	os.MkdirAll(sshDir, 0o700)
	key := filepath.Join(sshDir, "id_ed25519")
	copyFile(t, srv.UserKeyFile, key)
	copyFile(t, srv.UserKeyFile+".pub", key+".pub")
	r := strings.NewReplacer("{{PORT}}", strconv.Itoa(srv.Port), "{{USER}}", srv.User, "{{KEY}}", key,
		"{{HOME}}", home, "{{HOSTKEY}}", srv.HostKeyPub)
	if err := os.WriteFile(filepath.Join(sshDir, "config"), []byte(r.Replace(config)), 0o600); err != nil {
		t.Fatal(err)
	}
	var kh strings.Builder
	for _, l := range known {
		kh.WriteString(r.Replace(l) + "\n")
	}
	if err := os.WriteFile(filepath.Join(sshDir, "known_hosts"), []byte(kh.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return Options{Home: home, SystemConfigFile: "none", Logger: quietLogger}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	testenv.CopyFile(t, from, to, 0o600)
}

// srvOpts uses the server's own generated home (Host testbox).
func srvOpts(srv *sshdtest.Server) Options {
	return Options{Home: srv.Home, SystemConfigFile: "none", Logger: quietLogger}
}

func dialSpec(t *testing.T, spec string, opts Options) (*Client, error) {
	t.Helper()
	s, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, s, opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDial(t *testing.T, spec string, opts Options) *Client {
	t.Helper()
	c, err := dialSpec(t, spec, opts)
	if err != nil {
		t.Fatalf("Dial(%s): %v", spec, err)
	}
	return c
}

// wantDialError checks the error kind and that the message is one line
// containing every part of want.
func wantDialError(t *testing.T, err error, kind error, want ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want one matching %v", err, kind)
	}
	msg := err.Error()
	t.Logf("message: %s", msg)
	if strings.Contains(msg, "\n") {
		t.Errorf("multi-line message: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q\n  lacks %q", msg, w)
		}
	}
}

func TestSSHRemoteSuite(t *testing.T) {
	srv := sshdtest.Start(t)
	runRemoteSuiteIn(t, srv.Dir, func(t *testing.T, dir string) Remote {
		c := mustDial(t, "testbox:"+dir, srvOpts(srv))
		if !c.fsync || !c.posixRename || !c.hardlink || !c.statvfs {
			t.Errorf("OpenSSH extensions not detected: fsync %v rename %v link %v statvfs %v", c.fsync, c.posixRename, c.hardlink, c.statvfs)
		}
		return c
	})
}

// An alias defined in an included file, with a wildcard Host pattern and
// %h in HostName.
func TestDialConfigAlias(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Include conf.d/*.conf
Host *
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[localhost]:{{PORT}} {{HOSTKEY}}")
	os.MkdirAll(filepath.Join(opts.Home, ".ssh/conf.d"), 0o700)
	os.WriteFile(filepath.Join(opts.Home, ".ssh/conf.d/box.conf"), []byte(fmt.Sprintf(`
Host local*
  HostName %%h
  Port %d
  User %s
  IdentityFile ~/.ssh/id_ed25519
  IdentitiesOnly yes
`, srv.Port, srv.User)), 0o600)
	c := mustDial(t, "localhost:"+srv.Dir, opts)
	if c.RootPath() != srv.Dir || c.HostLabel() != "localhost" {
		t.Fatalf("root %s label %s", c.RootPath(), c.HostLabel())
	}
	if _, err := c.Lstat(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}

// user@127.0.0.1 with the port from a Host block, everything else default:
// ~/.ssh/id_ed25519 and ~/.ssh/known_hosts under Options.Home.
func TestDialUserAtAddress(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Host 127.0.0.1
  Port {{PORT}}
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	c := mustDial(t, srv.User+"@127.0.0.1:"+srv.Dir, opts)
	if c.HostLabel() != srv.User+"@127.0.0.1" {
		t.Fatalf("label %s", c.HostLabel())
	}
	// A wrong user in the spec wins over the local default and fails auth.
	_, err := dialSpec(t, "nosuchuser@127.0.0.1:"+srv.Dir, opts)
	wantDialError(t, err, ErrAuth, "authentication to nosuchuser@127.0.0.1 failed")
}

func TestDialProxyJump(t *testing.T) {
	srv := sshdtest.Start(t)
	config := `
Host jump
  HostName 127.0.0.1
Host inner inner2
  HostName 127.0.0.1
Host inner
  ProxyJump jump
Host inner2
  ProxyJump jump,{{USER}}@127.0.0.1:{{PORT}}
Host *
  Port {{PORT}}
  User {{USER}}
  IdentityFile {{KEY}}
  IdentitiesOnly yes
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`
	opts := clientHome(t, srv, config, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	before := strings.Count(srv.Log(), "server_request_direct_tcpip")
	c := mustDial(t, "inner:"+srv.Dir, opts)
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if len(c.transport) != 2 {
		t.Fatalf("transport chain %d, want 2", len(c.transport))
	}
	c2 := mustDial(t, "inner2:"+srv.Dir, opts)
	if len(c2.transport) != 3 {
		t.Fatalf("transport chain %d, want 3", len(c2.transport))
	}
	if n := strings.Count(srv.Log(), "server_request_direct_tcpip") - before; n < 3 {
		t.Errorf("sshd saw %d forwarding requests, want 3", n)
	}
	// Killing the first hop kills the connection through it.
	c.transport[0].Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("proxied connection survived its jump host")
	}
}

func TestHostKeyUnknown(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking no
`)
	_, err := dialSpec(t, "testbox:", opts)
	kh := opts.Home + "/.ssh/known_hosts"
	wantDialError(t, err, ErrHostKeyUnknown,
		fmt.Sprintf("host key for testbox (127.0.0.1:%d) is not in known_hosts (%s, %s2)", srv.Port, kh, kh),
		"; verify it and add it, e.g. by running: ssh testbox",
		ssh.FingerprintSHA256(srv.HostKey))
	if errors.Is(err, ErrOffline) || errors.Is(err, ErrHostKeyChanged) {
		t.Errorf("unknown key error matches other kinds: %v", err)
	}
	// With a ConfigFile the hint names it.
	opts.ConfigFile = filepath.Join(opts.Home, ".ssh/config")
	_, err = dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrHostKeyUnknown, "ssh -F "+opts.ConfigFile+" testbox")
}

func TestHostKeyChanged(t *testing.T) {
	srv := sshdtest.Start(t)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other)
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "# first line", "[127.0.0.1]:{{PORT}} "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherPub))))
	_, err := dialSpec(t, "testbox:", opts)
	kh := opts.Home + "/.ssh/known_hosts"
	wantDialError(t, err, ErrHostKeyChanged,
		"host key for testbox does not match "+kh+":2 — possible man-in-the-middle; ",
		"ssh-keygen -R '[127.0.0.1]:"+strconv.Itoa(srv.Port)+"' -f "+kh)
	if errors.Is(err, ErrHostKeyUnknown) {
		t.Errorf("changed key matches ErrHostKeyUnknown")
	}
}

// known_hosts has only the server's RSA key while the server also has an
// ed25519 key (which clients prefer): the RSA key must be asked for, not
// the ed25519 key reported as a mismatch.
func TestHostKeyAlgorithmFollowsKnownHosts(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := ssh.MarshalPrivateKey(rsaKey, "")
	rsaFile := filepath.Join(dir, "rsa_host")
	os.WriteFile(rsaFile, pem.EncodeToMemory(block), 0o600)
	rsaPub, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	srv := sshdtest.StartWith(t, sshdtest.Options{ExtraConfig: "HostKey " + rsaFile})

	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaPub))))
	mustDial(t, "testbox:", opts)

	// Only an ECDSA key known, which the server does not have: unknown,
	// with the reason.
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPub, _ := ssh.NewPublicKey(&ec.PublicKey)
	opts = clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ecPub))))
	_, err = dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrHostKeyUnknown, "has only ecdsa-sha2-nistp256 keys for", "offers none of those types")
}

func TestAuthFailure(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/stranger
  IdentityFile ~/.ssh/missing
  IdentitiesOnly yes
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	os.WriteFile(filepath.Join(opts.Home, ".ssh/stranger"), pem.EncodeToMemory(block), 0o600)
	_, err := dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrAuth, fmt.Sprintf("authentication to %s@testbox failed (tried: ~/.ssh/stranger)", srv.User))
	if errors.Is(err, ErrOffline) || errors.Is(err, ErrKeyPassphrase) {
		t.Errorf("auth error matches other kinds: %v", err)
	}

	// No key at all.
	opts = clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  IdentityFile ~/.ssh/none
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	_, err = dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrAuth, "no key to offer", "~/.ssh/none")
}

// writeEncryptedKey writes a passphrase-protected key (and its .pub) and
// authorizes it on srv.
func writeEncryptedKey(t *testing.T, srv *sshdtest.Server, file string) ed25519.PrivateKey {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "locked", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, pem.EncodeToMemory(block), 0o600)
	sshPub, _ := ssh.NewPublicKey(pub)
	os.WriteFile(file+".pub", ssh.MarshalAuthorizedKey(sshPub), 0o644)
	if err := srv.Authorize(sshPub); err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestPassphraseKeyWithoutAgent(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/locked
  IdentityAgent none
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	file := filepath.Join(opts.Home, ".ssh/locked")
	writeEncryptedKey(t, srv, file)
	_, err := dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrKeyPassphrase,
		fmt.Sprintf("key %s is protected by a passphrase; add it to ssh-agent (ssh-add %s) and retry", file, file))
	if !errors.Is(err, ErrAuth) {
		t.Errorf("passphrase error does not match ErrAuth")
	}
}

// startAgent serves an in-process agent holding keys on a unix socket.
func startAgent(t *testing.T, keys ...any) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "agent") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); os.RemoveAll(dir) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(kr, c); c.Close() }()
		}
	}()
	return sock
}

func TestAgentAuth(t *testing.T) {
	srv := sshdtest.Start(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	srv.Authorize(sshPub)
	sock := startAgent(t, priv)

	// Agent keys without any identity file.
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/nothing-here
  IdentityAgent `+sock+`
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	mustDial(t, "testbox:", opts)

	// SSH_AUTH_SOCK when IdentityAgent is not set.
	t.Setenv("SSH_AUTH_SOCK", sock)
	opts = clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/nothing-here
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	mustDial(t, "testbox:", opts)

	// IdentitiesOnly: the agent's key is not used unless an IdentityFile
	// names it...
	opts = clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/locked
  IdentitiesOnly yes
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	file := filepath.Join(opts.Home, ".ssh/locked")
	lockedPriv := writeEncryptedKey(t, srv, file)
	_, err := dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrKeyPassphrase, "ssh-add "+file)
	// ...and then the agent signs for the passphrase-protected file.
	t.Setenv("SSH_AUTH_SOCK", startAgent(t, priv, lockedPriv))
	mustDial(t, "testbox:", opts)
}

func TestRemotePathErrors(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := srvOpts(srv)
	_, err := dialSpec(t, "testbox:/nonexistent/remotefs", opts)
	wantDialError(t, err, ErrRemotePath, "remote path /nonexistent/remotefs does not exist on testbox")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("not ErrNotExist: %v", err)
	}
	file := filepath.Join(srv.Dir, "file")
	os.WriteFile(file, nil, 0o644)
	_, err = dialSpec(t, "testbox:"+file, opts)
	wantDialError(t, err, ErrRemotePath, "remote path "+file+" on testbox is not a directory")
	_, err = dialSpec(t, "testbox:nope", opts)
	wantDialError(t, err, ErrRemotePath, "remote path "+srv.RemoteHome+"/nope does not exist on testbox")
}

// A relative path (and ~, ~/x, empty) is taken from the remote home.
func TestRelativeRoot(t *testing.T) {
	srv := sshdtest.Start(t)
	os.MkdirAll(filepath.Join(srv.RemoteHome, "proj/sub"), 0o755)
	for spec, want := range map[string]string{
		"testbox:":                  srv.RemoteHome,
		"testbox:~":                 srv.RemoteHome,
		"testbox:proj":              srv.RemoteHome + "/proj",
		"testbox:~/proj/sub":        srv.RemoteHome + "/proj/sub",
		"testbox:proj/../proj/sub/": srv.RemoteHome + "/proj/sub",
		"testbox:" + srv.Dir:        srv.Dir,
	} {
		c := mustDial(t, spec, srvOpts(srv))
		if c.RootPath() != want {
			t.Errorf("%s: root %s, want %s", spec, c.RootPath(), want)
		}
		c.Close()
	}
}

func TestExec(t *testing.T) {
	srv := sshdtest.Start(t)
	c := mustDial(t, "testbox:", srvOpts(srv))
	ctx := context.Background()
	var out, errOut bytes.Buffer
	code, err := c.Exec(ctx, "echo out; echo err >&2; exit 3", nil, &out, &errOut)
	if err != nil || code != 3 || out.String() != "out\n" || errOut.String() != "err\n" {
		t.Fatalf("code %d err %v out %q stderr %q", code, err, out.String(), errOut.String())
	}
	out.Reset()
	code, err = c.Exec(ctx, "tr a-z A-Z", strings.NewReader("hello"), &out, nil)
	if err != nil || code != 0 || out.String() != "HELLO" {
		t.Fatalf("stdin: code %d err %v out %q", code, err, out.String())
	}
	code, err = c.Exec(ctx, "kill -9 $$", nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "signal") {
		t.Fatalf("killed: code %d err %v", code, err)
	}
	// Cancellation returns at once and the connection stays usable.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Exec(cctx, "sleep 30", nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("cancel: %v after %v", err, time.Since(start))
	}
	if code, err := c.Exec(ctx, "true", nil, nil, nil); err != nil || code != 0 {
		t.Fatalf("after cancel: %d %v", code, err)
	}
	// Many at once, alongside SFTP.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o bytes.Buffer
			if code, err := c.Exec(ctx, fmt.Sprintf("echo %d", i), nil, &o, nil); err != nil || code != 0 || o.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("parallel exec %d: %d %v %q", i, code, err, o.String())
			}
			if _, err := c.ReadDir(ctx, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestDialErrors(t *testing.T) {
	srv := sshdtest.Start(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	silentPort := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, then say nothing
		}
	}()
	defer ln.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	opts := clientHome(t, srv, fmt.Sprintf(`
Host refused
  HostName 127.0.0.1
  Port %d
Host silent
  HostName 127.0.0.1
  Port %d
  ConnectTimeout 1
Host nxdomain
  HostName nonexistent.invalid
Host *
  IdentityAgent none
`, closedPort, silentPort))
	opts.ConnectTimeout = 0

	_, err := dialSpec(t, "refused:", opts)
	wantDialError(t, err, ErrOffline, fmt.Sprintf("cannot connect to refused at 127.0.0.1:%d: connection refused", closedPort))

	start := time.Now()
	_, err = dialSpec(t, "silent:", opts)
	wantDialError(t, err, ErrOffline, fmt.Sprintf("ssh handshake with silent at 127.0.0.1:%d timed out after 1s", silentPort))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ConnectTimeout 1 took %v", d)
	}

	opts.ConnectTimeout = 3 * time.Second
	_, err = dialSpec(t, "nxdomain:", opts)
	wantDialError(t, err, ErrOffline, "nonexistent.invalid", "(for nxdomain)")
}

// blackholeProxy forwards TCP to target until Blackhole is called; from
// then on bytes vanish in both directions and nothing is closed, like a
// dead link without a TCP reset.
type blackholeProxy struct {
	ln   net.Listener
	dead atomic.Bool
	wg   sync.WaitGroup
}

func startBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.dead.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				if !p.dead.Load() {
					dst.Close()
				}
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			p.wg.Add(2)
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return p
}

func (p *blackholeProxy) port() int  { return p.ln.Addr().(*net.TCPAddr).Port }
func (p *blackholeProxy) Blackhole() { p.dead.Store(true) }

func proxyOpts(t *testing.T, srv *sshdtest.Server, p *blackholeProxy) Options {
	return clientHome(t, srv, fmt.Sprintf(`
Host viaproxy
  HostName 127.0.0.1
  Port %d
  User {{USER}}
  IdentityFile {{KEY}}
  IdentityAgent none
  HostKeyAlias testbox-key
`, p.port()), "testbox-key {{HOSTKEY}}")
}

// Keepalive notices a link that silently stopped carrying packets: the
// Manager goes Offline within about interval*count, and calls then fail at
// once.
func TestKeepaliveDetectsDeadLink(t *testing.T) {
	srv := sshdtest.Start(t)
	p := startBlackholeProxy(t, srv.Addr)
	opts := proxyOpts(t, srv, p)
	opts.KeepaliveInterval = 100 * time.Millisecond
	opts.KeepaliveCountMax = 3
	opts.OpTimeout = time.Minute // only keepalive may notice
	spec, _ := ParseSpec("viaproxy:" + srv.Dir)
	states := make(chan State, 16)
	m := NewManager(spec, opts, func(s State, err error) { states <- s })
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := m.State(); s != Online {
		t.Fatalf("state %v", s)
	}
	p.Blackhole()
	start := time.Now()
	waitState(t, states, Offline, 3*time.Second)
	took := time.Since(start)
	// A keepalive sent just before the blackhole may already be pending:
	// at least 2 intervals, about 3-4 typically.
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("went offline after %v, want about 300-400ms", took)
	}
	_, _, lastErr := m.State()
	if !errors.Is(lastErr, ErrOffline) || !strings.Contains(lastErr.Error(), "keepalive") {
		t.Errorf("last error %v", lastErr)
	}
	start = time.Now()
	if _, err := m.Lstat(context.Background(), ""); !errors.Is(err, ErrOffline) || time.Since(start) > 50*time.Millisecond {
		t.Errorf("offline call: %v after %v", err, time.Since(start))
	}
}

// An operation on a dead link returns after OpTimeout with ErrOffline,
// even before keepalive notices.
func TestOpTimeoutOverSSH(t *testing.T) {
	srv := sshdtest.Start(t)
	p := startBlackholeProxy(t, srv.Addr)
	opts := proxyOpts(t, srv, p)
	opts.KeepaliveInterval = time.Hour
	opts.OpTimeout = 300 * time.Millisecond
	c := mustDial(t, "viaproxy:"+srv.Dir, opts)
	p.Blackhole()
	start := time.Now()
	_, err := c.ReadDir(context.Background(), "")
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("connection not declared dead")
	}
}

func waitState(t *testing.T, states <-chan State, want State, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-states:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("state %v not reached within %v", want, timeout)
		}
	}
}

func TestManagerReconnectsAfterRestart(t *testing.T) {
	srv := sshdtest.Start(t)
	var mu sync.Mutex
	var seen []string
	states := make(chan State, 64)
	spec, _ := ParseSpec("testbox:" + srv.Dir)
	opts := srvOpts(srv)
	opts.KeepaliveInterval = 200 * time.Millisecond
	m := NewManager(spec, opts, func(s State, err error) {
		mu.Lock()
		seen = append(seen, s.String())
		mu.Unlock()
		states <- s
	})
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := m.Client()
	os.WriteFile(filepath.Join(srv.Dir, "f"), []byte("x"), 0o644)
	if _, err := m.Lstat(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitState(t, states, Offline, 5*time.Second)
	waitState(t, states, Online, 15*time.Second)
	if m.Client() == first || m.Client() == nil {
		t.Fatal("no new client")
	}
	if _, err := m.Lstat(context.Background(), "f"); err != nil {
		t.Fatalf("after reconnect: %v", err)
	}
	if code, err := m.Exec(context.Background(), "true", nil, nil, nil); err != nil || code != 0 {
		t.Fatalf("exec after reconnect: %d %v", code, err)
	}
	s, since, lastErr := m.State()
	if s != Online || lastErr != nil || time.Since(since) > 15*time.Second {
		t.Errorf("State() = %v %v %v", s, since, lastErr)
	}
	mu.Lock()
	t.Logf("states: %v", seen)
	mu.Unlock()
}

// StartOffline: calls fail at once while the server is down; the Manager
// connects by itself once it is up.
func TestManagerStartOffline(t *testing.T) {
	srv := sshdtest.Start(t)
	srv.Stop()
	spec, _ := ParseSpec("testbox:" + srv.Dir)
	states := make(chan State, 64)
	m := NewManager(spec, srvOpts(srv), func(s State, err error) { states <- s })
	defer m.Close()
	err := m.Connect(context.Background())
	wantDialError(t, err, ErrOffline, "connection refused")
	m.StartOffline()
	start := time.Now()
	_, err = m.ReadDir(context.Background(), "")
	if !errors.Is(err, ErrOffline) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("offline call: %v after %v", err, time.Since(start))
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("offline error does not say why: %v", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitState(t, states, Online, 15*time.Second)
	if _, err := m.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}

// Close stops everything, also while redialing, and is safe with
// concurrent callers (run with -race).
func TestManagerCloseWhileBusy(t *testing.T) {
	srv := sshdtest.Start(t)
	spec, _ := ParseSpec("testbox:" + srv.Dir)
	m := NewManager(spec, srvOpts(srv), nil)
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := m.ReadDir(context.Background(), "")
				if err != nil && !errors.Is(err, ErrOffline) {
					t.Errorf("ReadDir: %v", err)
					return
				}
				m.State()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	m.Client().Close() // the loop starts redialing
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
	close(stop)
	wg.Wait()
	if _, err := m.Lstat(context.Background(), ""); !errors.Is(err, ErrOffline) {
		t.Fatalf("after Close: %v", err)
	}
	if s, _, _ := m.State(); s != Offline {
		t.Fatalf("state after Close %v", s)
	}
}

// With a long backoff, the Manager comes back when something needs the
// server (Redial, called for each access while offline), not when the
// timer fires; a storm of such calls makes few dials.
func TestManagerRedialsOnAccess(t *testing.T) {
	srv := sshdtest.Start(t)
	spec, _ := ParseSpec("testbox:" + srv.Dir)
	opts := srvOpts(srv)
	opts.RedialMin, opts.RedialMax = time.Minute, time.Minute
	states := make(chan State, 1024)
	var mu sync.Mutex
	connecting := 0
	m := NewManager(spec, opts, func(s State, err error) {
		if s == Connecting {
			mu.Lock()
			connecting++
			mu.Unlock()
		}
		states <- s
	})
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !m.OfflineSince().IsZero() {
		t.Errorf("OfflineSince while online: %v", m.OfflineSince())
	}
	lost := time.Now()
	srv.Stop()
	waitState(t, states, Offline, 10*time.Second)
	if since := m.OfflineSince(); since.Before(lost) || since.After(time.Now()) {
		t.Errorf("OfflineSince %v, want the moment the connection was lost (after %v)", since, lost)
	}
	// A storm of calls while the server is down: every one fails at once.
	mu.Lock()
	connecting = 0
	mu.Unlock()
	stormStart := time.Now()
	for time.Since(stormStart) < time.Second {
		if _, err := m.Lstat(context.Background(), ""); !errors.Is(err, ErrOffline) {
			t.Fatalf("Lstat with the server down: %v", err)
		}
		m.Redial()
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	dials := connecting
	mu.Unlock()
	t.Logf("a second of calls while the server is down started %d dials", dials)
	if dials > 6 {
		t.Errorf("a second of calls while the server is down started %d dials, want at most a few", dials)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for {
		_, err := m.Lstat(context.Background(), "")
		if err == nil {
			break
		}
		m.Redial()
		if time.Since(back) > 5*time.Second {
			t.Fatalf("still offline %v after the server came back (backoff 1m): %v", time.Since(back), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("online %v after the server came back, with a 1m backoff", time.Since(back).Round(time.Millisecond))
	if !m.OfflineSince().IsZero() {
		t.Errorf("OfflineSince once online again: %v", m.OfflineSince())
	}
}
