package conn

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// Dials started while the link was dead stay stuck until their connect
// timeout (their packets are gone: here, a listener that takes the
// connection and never answers, as a lost SYN leaves a connect waiting for
// its next retransmission). Once the link is back, the next access must
// not wait for them: a dial that has heard nothing for a second makes way
// for a new one, and the Manager is online within 2s.
func TestManagerStuckDialsDoNotHoldReconnect(t *testing.T) {
	srv := sshdtest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var dead atomic.Bool
	var swallowed []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		for _, c := range swallowed {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if dead.Load() {
				mu.Lock()
				swallowed = append(swallowed, c) // never answered
				mu.Unlock()
				continue
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	_, pport, _ := net.SplitHostPort(l.Addr().String())
	opts := clientHome(t, srv, fmt.Sprintf(`
Host viaproxy
  HostName 127.0.0.1
  Port %s
  HostKeyAlias srvkey
`, pport)+commonHost, "srvkey {{HOSTKEY}}")
	opts.RedialMin, opts.RedialMax = time.Minute, time.Minute
	opts.ConnectTimeout = 30 * time.Second // stuck dials outlive the test
	spec, _ := ParseSpec("viaproxy:" + srv.Dir)
	states := make(chan State, 1024)
	m := NewManager(spec, opts, func(s State, err error) { states <- s })
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	dead.Store(true)
	m.Client().Close() // the link died
	waitState(t, states, Offline, 10*time.Second)
	// Accesses while the link is dead: every dial they start hangs.
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		m.Redial()
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	stuck := len(swallowed)
	mu.Unlock()
	if stuck == 0 {
		t.Fatal("no dial reached the dead link")
	}
	dead.Store(false)
	back := time.Now()
	for {
		if _, err := m.Lstat(context.Background(), ""); err == nil {
			break
		}
		m.Redial()
		if time.Since(back) > 8*time.Second {
			t.Fatalf("still offline %v after the link returned (%d dials stuck)", time.Since(back).Round(time.Millisecond), stuck)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(back)
	t.Logf("MEASURED: online %v after the link returned, with %d dials stuck since it died", took.Round(time.Millisecond), stuck)
	if took > 2*time.Second {
		t.Errorf("online %v after the link returned; want at most 2s", took.Round(time.Millisecond))
	}
}
