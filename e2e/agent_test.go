package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// A mount starts the server's login shell once, however many helpers it
// uses: the walk at mount, reads of small files, the change feed and
// uploads all go to the one agent the connection starts. The login shell
// here takes a second to start (a conda/pyenv init in ~/.bashrc) and
// counts its starts. The agent stays for the next mount, which reaches it
// without a login shell, and exits once unused for its linger time.
func TestOneLoginShellPerMount(t *testing.T) {
	const delay = time.Second
	w := newWorldWith(t, sshdtest.Options{LoginShellDelay: delay})
	const linger = 5 * time.Second
	w.env = append(w.env, "REMOTEFS_TEST_AGENT_LINGER="+linger.String())
	logins := testenv.CountLogins(t, w.srv.RemoteHome, delay)
	want := map[string]string{}
	for i := range 60 {
		p := fmt.Sprintf("proj/pkg%d/sub%d/mod%d.py", i%6, i%3, i)
		want[p] = fmt.Sprintf("# module %d\n%s", i, strings.Repeat("x", i*37))
		w.writeServer(p, want[p], 0o644)
	}

	// The first mount sends the binary (the walk does not wait for that:
	// it may run over an exec channel of its own) and starts the agent;
	// the second one finds the agent the first left. Its exec, started
	// beside the socket in case there is none, is cut short; its login
	// shell still runs ~/.bashrc to its end where the signal is refused
	// (a root login: sshd without privilege separation), so it may count.
	var agents []string
	for round, logins0 := range [][2]int{{1, 3}, {0, 1}} {
		if round > 0 {
			os.RemoveAll(filepath.Join(w.xdg, "cache")) // a cold cache again
		}
		before := logins()
		mountAndUse(t, w, want, round, delay)
		n := logins() - before
		now := agentProcs(w.srv.RemoteHome)
		t.Logf("mount %d: %d login shell(s) for the walk, reads, change feed and uploads; agents %q", round+1, n, now)
		if n < logins0[0] || n > logins0[1] {
			t.Errorf("mount %d: %d login shells, want %d to %d", round+1, n, logins0[0], logins0[1])
		}
		if round == 0 && len(now) != 1 || round > 0 && !slices.Equal(now, agents) {
			t.Errorf("mount %d: agents %q, want one (the first mount's: %q)", round+1, now, agents)
		}
		agents = now
		w.unmount()
	}
	// Unused for its linger time, the agent exits: nothing is left
	// running on the server.
	eventually(t, linger+10*time.Second, "the agent to exit", func() bool { return len(agentProcs(w.srv.RemoteHome)) == 0 })
}

// mountAndUse mounts w and lists, reads, watches and saves through it.
func mountAndUse(t *testing.T, w *world, want map[string]string, round int, delay time.Duration) {
	start := time.Now()
	w.mount()
	mountTime := time.Since(start)
	if _, err := os.ReadDir(w.m("proj")); err != nil {
		t.Fatal(err)
	}
	listTime := time.Since(start)
	entries := 0
	err := filepath.WalkDir(w.m("proj"), func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			entries++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	walkTime := time.Since(start)
	if wantEntries := 1 + 6 + 6 + 60 + 5*round; entries != wantEntries {
		t.Errorf("walk found %d entries, want %d", entries, wantEntries)
	}
	for p, content := range want {
		if b, err := os.ReadFile(w.m(p)); err != nil || string(b) != content {
			t.Fatalf("%s: %q, %v", p, b, err)
		}
	}
	eventually(t, 20*time.Second, "the change feed to start", func() bool { return w.status().Watch == "helper" })
	feed := fmt.Sprintf("proj/from-server%d.txt", round)
	w.writeServer(feed, "hello\n", 0o644)
	eventually(t, 5*time.Second, "a server change to show", func() bool {
		b, _ := os.ReadFile(w.m(feed))
		return string(b) == "hello\n"
	})
	for i := range 3 {
		name := fmt.Sprintf("proj/saved%d-%d.txt", round, i)
		if err := os.WriteFile(w.m(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "an upload to land", func() bool {
			b, _ := os.ReadFile(w.s(name))
			return string(b) == name
		})
	}
	eventually(t, 10*time.Second, "uploads through the helper", func() bool { return w.status().Uploads == "helper" })
	if err := os.WriteFile(w.m(fmt.Sprintf("proj/saved-last%d.txt", round)), []byte("last"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.must(binary, "flush", w.mnt)
	if b, _ := os.ReadFile(w.s(fmt.Sprintf("proj/saved-last%d.txt", round))); string(b) != "last" {
		t.Fatalf("the last save did not land: %q", b)
	}
	t.Logf("mount %d, login shell %v: mount %v, mount + first listing %v, mount + walk of %d entries %v",
		round+1, delay, mountTime.Round(time.Millisecond), listTime.Round(time.Millisecond), entries, walkTime.Round(time.Millisecond))
}

// agentProcs lists the processes running an agent installed under home.
func agentProcs(home string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.HasPrefix(cmd, home+"/") && strings.Contains(cmd, " __agent") {
			out = append(out, e.Name()+": "+cmd)
		}
	}
	return out
}
