package conn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// The agent a connection started stays on the server for the next
// connection, which reaches it over a socket channel instead of paying
// the login shell again (a second here, as a conda or pyenv init takes);
// once no connection used it for its linger time it exits and removes
// its socket. Where sshd forwards no unix sockets, the next connection
// starts its own agent over exec, as without persistence.
func TestAgentPersistsForNextConnection(t *testing.T) {
	helperBinary(t)
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash) + " __agent --listen"
	sock := agentSocket(watchHelperDir, lh.hash)
	for _, forwarding := range []bool{true, false} {
		t.Run(map[bool]string{true: "reused", false: "no socket forwarding"}[forwarding], func(t *testing.T) {
			const delay = time.Second
			sopts := sshdtest.Options{LoginShellDelay: delay}
			if !forwarding {
				sopts.ExtraConfig = "AllowStreamLocalForwarding no\n"
			}
			srv := sshdtest.StartWith(t, sopts)
			logins := testenv.CountLogins(t, srv.RemoteHome, delay)
			root := filepath.Join(srv.Dir, "tree")
			if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "sub", "f.txt"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			opts := srvOpts(srv)
			const linger = 3 * time.Second
			opts.AgentLinger = linger
			// connect dials, checks that the agent serves (a walk through
			// it), and returns the agent processes meanwhile.
			connect := func(what string) (*Client, []string) {
				t.Helper()
				c := mustDial(t, "testbox:"+root, opts)
				awaitAgent(t, c)
				var got []string
				if err := c.WalkTree(context.Background(), nil, func(p string, _ FileInfo) error {
					got = append(got, p)
					return nil
				}); err != nil || !slices.Equal(got, []string{"sub", "sub/f.txt"}) {
					t.Fatalf("%s: walk %q, %v", what, got, err)
				}
				return c, procsMentioning(mark)
			}
			c1, first := connect("first connection")
			if len(first) != 1 {
				t.Fatalf("first connection: agents %q, want one", first)
			}
			if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
				t.Fatalf("the agent's socket: %v, %v", fi, err)
			}
			c1.Close()
			before := logins()
			c2, second := connect("second connection")
			// Long enough for a login shell that was not cut short to
			// finish and be counted.
			time.Sleep(delay + 500*time.Millisecond)
			n := logins() - before
			t.Logf("second connection: %d login shell(s), agents %q", n, second)
			if forwarding {
				// The exec started beside the socket is cut short; its
				// login shell still runs ~/.bashrc to its end where the
				// signal is refused (a root login: sshd without privilege
				// separation), so it may be counted.
				if !slices.Equal(second, first) || n > 1 {
					t.Errorf("second connection: agents %q (first %q), %d login shells: want the first agent and at most the one cut short", second, first, n)
				}
			} else {
				if len(second) != 2 || !slices.Contains(second, first[0]) || n != 1 {
					t.Errorf("second connection: agents %q (first %q), %d login shells: want one more agent, over exec", second, first, n)
				}
			}
			c2.Close()
			// No connection uses it: the agent exits after its linger time
			// and removes its socket (the second one, run over exec, with
			// its connection).
			for deadline := time.Now().Add(linger + 10*time.Second); len(procsMentioning(mark)) > 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("agents still running %v after the last connection: %q", linger+10*time.Second, procsMentioning(mark))
				}
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("the socket is left: %v", err)
			}
		})
	}
}

// While the agent's start sends its binary (the first connection of a
// build), a subtree walk does not start a find of its own, which would
// pay the login shell the agent's start is already paying: it fails with
// ErrNoTreeWalk (the cache lists the folder over SFTP meanwhile). Once
// the agent runs, the walk goes through it.
func TestWalkSubtreeWhileAgentSends(t *testing.T) {
	helperBinary(t)
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash)) // sent again
	const delay = time.Second
	srv := sshdtest.StartWith(t, sshdtest.Options{LoginShellDelay: delay})
	logins := testenv.CountLogins(t, srv.RemoteHome, delay)
	root := filepath.Join(srv.Dir, "tree")
	if err := os.MkdirAll(filepath.Join(root, "node_modules", "pkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "node_modules", "pkg", "index.js"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, "testbox:"+root, srvOpts(srv))
	defer c.Close()
	var got []string
	walk := func() error {
		got = nil
		return c.WalkSubtree(context.Background(), "node_modules", func(p string, _ FileInfo) error {
			got = append(got, p)
			return nil
		})
	}
	if err := walk(); !errors.Is(err, ErrNoTreeWalk) || len(got) != 0 {
		t.Fatalf("subtree walk while the agent starts: %q, %v; want ErrNoTreeWalk and nothing (agent %s)", got, err, c.Agent())
	}
	awaitAgent(t, c)
	if err := walk(); err != nil || !slices.Equal(got, []string{"node_modules/pkg", "node_modules/pkg/index.js"}) {
		t.Fatalf("subtree walk through the agent: %q, %v", got, err)
	}
	// Long enough for a login shell started by the walk to be counted.
	time.Sleep(delay + 500*time.Millisecond)
	if n := logins(); n != 1 {
		t.Errorf("%d login shells, want the agent's only", n)
	}
}

// awaitAgent waits until c's agent runs.
func awaitAgent(t *testing.T, c *Client) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); c.Agent() != "running"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("agent %s", c.Agent())
		}
	}
}
