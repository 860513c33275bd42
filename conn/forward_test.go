package conn

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"remotefs/internal/netproxy"
	"remotefs/internal/sshdtest"
)

// A Manager that starts with the server out of reach holds its local
// forward ports at once (listed, refusing at once), and carries them over
// the connection once it comes.
func TestManagerForwardsStartOffline(t *testing.T) {
	srv := sshdtest.Start(t)
	p, err := netproxy.New("127.0.0.1:0", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	_, pport, _ := net.SplitHostPort(p.Addr())

	// The forward's target: a line server on this side, reached from sshd.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "got %s", line)
			}()
		}
	}()
	lp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := lp.Addr().String()
	lp.Close()

	// Resolving the configuration runs a slow command (Match exec).
	t.Setenv("SHELL", "/bin/sh")
	opts := clientHome(t, srv, fmt.Sprintf(`
Match originalhost fw exec "sleep 2"
  ServerAliveInterval 5
Host fw
  HostName 127.0.0.1
  Port %s
  HostKeyAlias srvkey
  LocalForward %s %s
`, pport, local, target.Addr())+commonHost, "srvkey {{HOSTKEY}}")
	opts.Forwards = true
	spec, _ := ParseSpec("fw:" + srv.Dir)
	m := NewManager(spec, opts, nil)
	defer m.Close()
	start := time.Now()
	m.StartOffline()
	if took := time.Since(start); took > time.Second {
		t.Errorf("StartOffline took %v: it waited for the configuration's Match exec", took)
	}

	waitFor(t, "the forward listed", func() bool { return len(m.Forwards()) == 1 })
	fs := m.Forwards()
	if len(fs) != 1 || fs[0].State != "waiting for connection" || fs[0].Listen != local {
		t.Fatalf("forwards while offline: %+v", fs)
	}
	ask := func() (string, error) {
		c, err := net.DialTimeout("tcp", local, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "ping\n")
		return bufio.NewReader(c).ReadString('\n')
	}
	start = time.Now()
	if got, err := ask(); err == nil {
		t.Errorf("answered while offline: %q", got)
	} else if time.Since(start) > 2*time.Second {
		t.Errorf("offline refusal took %v", time.Since(start))
	}

	if err := p.Refuse(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "online", func() bool { s, _, _ := m.State(); return s == Online })
	if got, err := ask(); err != nil || strings.TrimSpace(got) != "got ping" {
		t.Fatalf("through the forward: %q %v", got, err)
	}
	if fs := m.Forwards(); fs[0].State != "active" {
		t.Errorf("state %+v", fs)
	}
	m.Close()
	if _, err := net.DialTimeout("tcp", local, time.Second); err == nil {
		t.Error("forward port still open after Close")
	}
}
