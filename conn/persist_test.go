package conn

import (
	"context"
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
				for deadline := time.Now().Add(20 * time.Second); c.Agent() != "running"; time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("%s: agent %s", what, c.Agent())
					}
				}
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
