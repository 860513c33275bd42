package conn

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// fakeStartSession is a session whose start waits for the test, and which
// records whether anyone waited for it (reaped it).
type fakeStartSession struct {
	started chan struct{} // closed when start is reached
	release chan struct{} // start returns once closed
	waited  chan struct{} // closed by wait
	killed  bool
}

func (s *fakeStartSession) setIO(io.Reader, io.Writer, io.Writer) {}
func (s *fakeStartSession) requestPty(string, int, int) error     { return nil }
func (s *fakeStartSession) windowChange(int, int) error           { return nil }
func (s *fakeStartSession) close() error                          { return nil }
func (s *fakeStartSession) signal(name string) error              { s.killed = name == "KILL"; return nil }
func (s *fakeStartSession) start(string) error                    { close(s.started); <-s.release; return nil }
func (s *fakeStartSession) wait() (sessionExit, error)            { close(s.waited); return sessionExit{}, nil }
func (t *fakeStartSession) newSession() (session, error)          { return t, nil }

// A Start given up by its caller (ctx cancelled) while the command was
// being started kills the command and still waits for it: with the user's
// ssh (--ssh=openssh) every session is a child process, which would stay
// a zombie unless waited for.
func TestAbandonedStartReapsTheSession(t *testing.T) {
	s := &fakeStartSession{started: make(chan struct{}), release: make(chan struct{}), waited: make(chan struct{})}
	c := newClientShell("fake", Options{OpTimeout: 10 * time.Second, Logger: quietLogger}, nil)
	c.ssh = s
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.started; cancel(); time.Sleep(50 * time.Millisecond); close(s.release) }()
	if _, err := c.Start(ctx, "sleep 100", ExecOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want cancelled", err)
	}
	select {
	case <-s.waited:
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned session was never waited for (a zombie ssh with --ssh=openssh)")
	}
	if !s.killed {
		t.Error("the abandoned command was not killed")
	}
}

// A burst of network changes (a container starting adds links, addresses
// and routes) makes a probe or two of a live connection, not one keepalive
// per change; a change after the burst is still probed.
func TestNetworkChangeProbesThrottled(t *testing.T) {
	c := newClientShell("fake", Options{OpTimeout: 10 * time.Second, Logger: quietLogger}, nil)
	var pings atomic.Int64
	c.ping = func() error { pings.Add(1); time.Sleep(20 * time.Millisecond); return nil }
	for i := 0; i < 1000; i++ {
		c.probeAfterChange(time.Second)
	}
	time.Sleep(3 * probeSpacing)
	if n := pings.Load(); n < 1 || n > 2 {
		t.Errorf("a burst of 1,000 changes made %d probes, want 1 or 2", n)
	}
	before := pings.Load()
	c.probeAfterChange(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for pings.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("a change after the burst was never probed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.Err() != nil {
		t.Errorf("the probes killed a live connection: %v", c.Err())
	}
}
