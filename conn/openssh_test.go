package conn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

func requireSSH(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh program")
	}
}

const opensshConfig = `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile {{KEY}}
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile {{HOME}}/.ssh/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
`

// The user's ssh carries SFTP and commands: stdin, stdout, exit codes, a
// pseudo-terminal, ctx ending a command; and the connection dies with the
// server.
func TestOpenSSHTransport(t *testing.T) {
	requireSSH(t)
	srv := sshdtest.Start(t)
	// Settings for interactive use that must not get in the way.
	opts := clientHome(t, srv, opensshConfig+"  RemoteCommand exec bash -l\n  RequestTTY yes\n", "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	c, err := dialSpec(t, "testbox:"+srv.Dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.PutAtomic(ctx, "a.txt", strings.NewReader("over sftp\n"), 0o644, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Content comes on a session of its own, through the same master.
	buf := make([]byte, 64)
	if n, _, err := c.ReadAt(ctx, "a.txt", buf, 0); string(buf[:n]) != "over sftp\n" || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
	if n := c.content.sessions(); n < 1 {
		t.Errorf("%d content sessions after a read, want at least 1", n)
	}
	var out, errb bytes.Buffer
	code, err := c.Exec(ctx, "cat "+srv.Dir+"/a.txt - ; echo oops >&2; exit 3", strings.NewReader("from stdin\n"), &out, &errb)
	if err != nil || code != 3 || out.String() != "over sftp\nfrom stdin\n" || errb.String() != "oops\n" {
		t.Fatalf("exec: code %d, err %v, stdout %q, stderr %q", code, err, out.String(), errb.String())
	}

	// Every command rode the one login of the master.
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 1 {
		t.Errorf("%d logins for sftp and two commands, want 1 (ControlMaster)", n)
	}

	// A command killed by a signal reports 128+N.
	p, err := c.Start(ctx, "exec sh -c 'kill -TERM $$'", ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 143 {
		t.Fatalf("killed by TERM: %+v, %v", st, err)
	}

	// On a pseudo-terminal of the asked size.
	out.Reset()
	p, err = c.Start(ctx, "tty; stty size", ExecOptions{Stdout: &out, PTY: &PTY{Term: "xterm", Rows: 31, Cols: 97}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "31 97") {
		t.Fatalf("pty: %+v, %v, %q", st, err, out.String())
	}

	// ctx ends a command that would run long.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Exec(cctx, "sleep 30", nil, nil, nil); err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("exec past its ctx: %v after %v", err, time.Since(start))
	}

	// The server goes away: the connection dies, its calls fail offline.
	srv.Stop()
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("connection still alive 20s after sshd stopped")
	}
	if _, err := c.Lstat(ctx, "a.txt"); !errors.Is(err, ErrOffline) {
		t.Fatalf("lstat after the server went: %v", err)
	}
}

// Dial errors from ssh keep their kinds: unknown host key, refused key,
// nothing listening.
func TestOpenSSHDialErrors(t *testing.T) {
	requireSSH(t)
	srv := sshdtest.Start(t)

	opts := clientHome(t, srv, opensshConfig) // empty known_hosts
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	_, err := dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrHostKeyUnknown, "ssh testbox failed", "Host key verification failed")

	opts = clientHome(t, srv, strings.Replace(opensshConfig, "{{KEY}}", "{{HOME}}/.ssh/nokey", 1), "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	_, err = dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrAuth, "Permission denied")

	opts = clientHome(t, srv, strings.Replace(opensshConfig, "{{PORT}}", "1", 1), "[127.0.0.1]:1 {{HOSTKEY}}")
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	_, err = dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrOffline, "Connection refused")
}

// A ControlPath of the user's own is used as configured: with
// ControlPersist the master outlives the mount, and the next mount logs in
// no more.
func TestOpenSSHUsersControlMaster(t *testing.T) {
	requireSSH(t)
	srv := sshdtest.Start(t)
	cm := t.TempDir() + "/cm"
	opts := clientHome(t, srv, opensshConfig+"  ControlMaster auto\n  ControlPath "+cm+"\n  ControlPersist 30\n", "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	t.Cleanup(func() { exec.Command("ssh", "-o", "ControlPath="+cm, "-O", "exit", "testbox").Run() })
	for i := range 2 {
		c, err := dialSpec(t, "testbox:"+srv.Dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if code, err := c.Exec(context.Background(), "true", nil, nil, nil); err != nil || code != 0 {
			t.Fatalf("exec %d: %d, %v", i, code, err)
		}
		c.Close()
	}
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 1 {
		t.Errorf("%d logins for two connections, want 1 (the user's ControlPersist master)", n)
	}
}

// Behind a master of the user's that was started without ServerAlive
// settings, an idle link that goes dead is still noticed (SFTP pings).
func TestOpenSSHUsersMasterDeadLink(t *testing.T) {
	requireSSH(t)
	srv := sshdtest.Start(t)
	p := startBlackholeProxy(t, srv.Addr)
	cm := t.TempDir() + "/cm"
	config := strings.Replace(opensshConfig, "{{PORT}}", strconv.Itoa(p.port()), 1) +
		"  ControlMaster auto\n  ControlPath " + cm + "\n  ControlPersist 60\n"
	opts := clientHome(t, srv, config, "[127.0.0.1]:"+strconv.Itoa(p.port())+" {{HOSTKEY}}")
	opts.SSH, opts.RuntimeDir = SSHOpenSSH, t.TempDir()
	// The user's master, started by hand with no keepalives.
	master := exec.Command("ssh", "-F", opts.Home+"/.ssh/config", "-o", "ServerAliveInterval=0", "-fNM", "testbox")
	if out, err := master.CombinedOutput(); err != nil {
		t.Fatalf("starting a master: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ssh", "-o", "ControlPath="+cm, "-O", "exit", "testbox").Run() })
	opts.KeepaliveInterval, opts.KeepaliveCountMax = 500*time.Millisecond, 2
	opts.OpTimeout = time.Minute // only the keepalive may notice
	c, err := dialSpec(t, "testbox:"+srv.Dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 1 {
		t.Fatalf("%d logins, want 1: the connection should ride the user's master", n)
	}
	p.Blackhole()
	start := time.Now()
	select {
	case <-c.Done():
		t.Logf("dead link noticed after %v: %v", time.Since(start).Round(time.Millisecond), c.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("a dead link behind the user's master went unnoticed for 10s")
	}
}
