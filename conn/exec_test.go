package conn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":            "''",
		"plain":       "plain",
		"a/b-c_d.e":   "a/b-c_d.e",
		"k=v,x:y@z%":  "k=v,x:y@z%",
		"a b":         "'a b'",
		"it's":        `'it'\''s'`,
		"$HOME":       "'$HOME'",
		"*":           "'*'",
		"~":           "'~'",
		"a\nb":        "'a\nb'",
		`back\slash`:  `'back\slash'`,
		"'":           `''\'''`,
		"semi;colon":  "'semi;colon'",
		"`id`":        "'`id`'",
		"-n":          "-n",
		"héllo":       "'héllo'",
		"tab\there":   "'tab\there'",
		"x>y":         "'x>y'",
		"(sub)":       "'(sub)'",
		"a&&b||c|d&e": "'a&&b||c|d&e'",
	} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestShellQuoteRoundTrip: every shell on this machine reads each quoted
// word back as exactly the original.
func TestShellQuoteRoundTrip(t *testing.T) {
	words := []string{"", "a b", "it's", "''", `"`, "$HOME", "${x:-y}", "`id`", "$(id)", "*", "?", "[a]",
		"~", "~root", "a\nb", "\t", `\`, `\\'`, "!", "!!", "#c", "a;b", "a|b", "a&b", "<x", ">y", "(", ")", "{}",
		"-e", "-n", "--", "%s", "é", "\x01\x7f", strings.Repeat("'x", 50)}
	for _, sh := range []string{"sh", "dash", "bash", "zsh", "ksh"} {
		if _, err := exec.LookPath(sh); err != nil {
			continue
		}
		var script strings.Builder
		script.WriteString("printf '%s\\000'")
		for _, w := range words {
			script.WriteString(" " + ShellQuote(w))
		}
		out, err := exec.Command(sh, "-c", script.String()).Output()
		if err != nil {
			t.Errorf("%s: %v", sh, err)
			continue
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if len(got) != len(words) {
			t.Errorf("%s: %d words back, want %d: %q", sh, len(got), len(words), got)
			continue
		}
		for i := range words {
			if got[i] != words[i] {
				t.Errorf("%s: word %d = %q, want %q", sh, i, got[i], words[i])
			}
		}
	}
}

func TestRemoteCommand(t *testing.T) {
	got, err := RemoteCommand("/srv/my proj", []string{"python", "train.py", "--name", "it's"})
	if want := `cd -- '/srv/my proj' && exec python train.py --name 'it'\''s'`; err != nil || got != want {
		t.Errorf("RemoteCommand = %s, %v; want %s", got, err, want)
	}
	for _, bad := range []struct {
		dir  string
		args []string
	}{
		{"/x", nil},
		{"/x", []string{""}},
		{"relative", []string{"ls"}},
		{"/x", []string{"ls", "a\x00b"}},
		{"/x\x00", []string{"ls"}},
	} {
		if _, err := RemoteCommand(bad.dir, bad.args); err == nil {
			t.Errorf("RemoteCommand(%q, %q) accepted", bad.dir, bad.args)
		}
	}
}

func TestPIDFilter(t *testing.T) {
	const marker = "remotefs-pid-0123abcd "
	for _, tc := range []struct {
		name, in, out string
		pid           int
	}{
		{"first", marker + "4242\nerr line\n", "err line\n", 4242},
		{"after noise", "bashrc says hi\n" + marker + "7\nerr\n", "bashrc says hi\nerr\n", 7},
		{"absent", "just errors\nmore\n", "just errors\nmore\n", 0},
		{"near miss", "remotefs-pid-0123abcX 5\n" + marker + "x\n" + marker + "12a\n", "remotefs-pid-0123abcX 5\n" + marker + "x\n" + marker + "12a\n", 0},
		{"only once", marker + "1\n" + marker + "2\n", marker + "2\n", 1},
		{"partial at end", "remotefs-pid-01", "remotefs-pid-01", 0},
		{"empty", "", "", 0},
	} {
		// Every split of the stream into two writes, and one byte at a time.
		for cut := 0; cut <= len(tc.in); cut++ {
			for _, bytewise := range []bool{false, true} {
				var out bytes.Buffer
				pid := 0
				f := &pidFilter{marker: marker, w: &out, onPID: func(p int) { pid = p }}
				write := func(s string) {
					if bytewise {
						for i := range len(s) {
							f.Write([]byte{s[i]})
						}
						return
					}
					if n, err := f.Write([]byte(s)); n != len(s) || err != nil {
						t.Fatalf("Write = %d, %v", n, err)
					}
				}
				write(tc.in[:cut])
				write(tc.in[cut:])
				f.flush()
				if out.String() != tc.out || pid != tc.pid {
					t.Fatalf("%s (cut %d, bytewise %v): out %q pid %d, want %q %d", tc.name, cut, bytewise, out.String(), pid, tc.out, tc.pid)
				}
			}
		}
	}
	// Without the marker in the first maxPIDSearch bytes it stops looking.
	var out bytes.Buffer
	f := &pidFilter{marker: marker, w: &out, onPID: func(int) { t.Error("pid reported") }}
	big := strings.Repeat("x\n", maxPIDSearch/2+10) + marker + "3\n"
	f.Write([]byte(big))
	f.flush()
	if out.String() != big {
		t.Errorf("long stderr altered (%d bytes in, %d out)", len(big), out.Len())
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type lockedBuffer = testenv.LockedBuffer

// waitFor fails t unless cond holds within 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, what, cond)
}

func TestStart(t *testing.T) {
	srv := sshdtest.Start(t)
	c := mustDial(t, "testbox:"+srv.Dir, srvOpts(srv))
	ctx := context.Background()
	dir := c.RootPath()
	start := func(t *testing.T, args []string, opts ExecOptions) *Process {
		t.Helper()
		cmd, err := RemoteCommand(dir, args)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Start(ctx, cmd, opts)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("StreamsAndStatus", func(t *testing.T) {
		var out, errOut bytes.Buffer
		p := start(t, []string{"sh", "-c", "pwd; echo err >&2; exit 3"}, ExecOptions{Stdout: &out, Stderr: &errOut})
		st, err := p.Wait()
		if err != nil || st.Code != 3 || st.Signal != "" || out.String() != dir+"\n" || errOut.String() != "err\n" {
			t.Fatalf("status %+v err %v stdout %q stderr %q", st, err, out.String(), errOut.String())
		}
	})

	t.Run("StdinEOF", func(t *testing.T) {
		var out bytes.Buffer
		p := start(t, []string{"wc", "-c"}, ExecOptions{Stdin: strings.NewReader("hello"), Stdout: &out})
		if st, err := p.Wait(); err != nil || st.Code != 0 || strings.TrimSpace(out.String()) != "5" {
			t.Fatalf("status %+v err %v stdout %q", st, err, out.String())
		}
	})

	t.Run("SignalDeath", func(t *testing.T) {
		p := start(t, []string{"sh", "-c", "kill -USR1 $$"}, ExecOptions{})
		if st, err := p.Wait(); err != nil || st.Code != 128+10 || st.Signal != "USR1" {
			t.Fatalf("status %+v err %v", st, err)
		}
	})

	t.Run("InterruptReachesGroup", func(t *testing.T) {
		// The background sleep keeps stdout open: the session ends only
		// when the whole group got the signal.
		out := &lockedBuffer{}
		p := start(t, []string{"sh", "-c", "echo ready; sleep 30 & wait"}, ExecOptions{Stdout: out})
		waitFor(t, "ready", func() bool { return out.String() == "ready\n" })
		waitFor(t, "the pid", func() bool { return p.pgid.Load() > 0 })
		began := time.Now()
		if err := p.Signal("TERM"); err != nil {
			t.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil || st.Code != 128+15 || time.Since(began) > 5*time.Second {
			t.Fatalf("status %+v err %v after %v", st, err, time.Since(began))
		}
		if err := p.Signal("bad;name"); err == nil {
			t.Error("bad signal name accepted")
		}
	})

	t.Run("Kill", func(t *testing.T) {
		out := &lockedBuffer{}
		p := start(t, []string{"sh", "-c", "echo ready; exec sleep 30"}, ExecOptions{Stdout: out})
		waitFor(t, "ready", func() bool { return out.String() == "ready\n" })
		began := time.Now()
		p.Kill()
		p.Wait()
		if time.Since(began) > 5*time.Second {
			t.Fatalf("Kill took %v", time.Since(began))
		}
	})

	t.Run("PTY", func(t *testing.T) {
		inR, inW := io.Pipe()
		defer inW.Close()
		out := &lockedBuffer{}
		p := start(t, []string{"sh", "-c", "tty; echo $TERM; stty size; read x; stty size"},
			ExecOptions{Stdin: inR, Stdout: out, PTY: &PTY{Term: "xterm-256color", Rows: 33, Cols: 101}})
		waitFor(t, "first size", func() bool { return strings.Contains(out.String(), "33 101") })
		if err := p.Resize(40, 120); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		inW.Write([]byte("\n"))
		st, err := p.Wait()
		text := strings.ReplaceAll(out.String(), "\r\n", "\n")
		lines := strings.Split(strings.TrimSpace(text), "\n")
		if err != nil || st.Code != 0 || len(lines) < 4 || !strings.HasPrefix(lines[0], "/dev/pts/") ||
			lines[1] != "xterm-256color" || lines[2] != "33 101" || lines[len(lines)-1] != "40 120" {
			t.Fatalf("status %+v err %v output %q", st, err, text)
		}
	})

	t.Run("PTYInterrupt", func(t *testing.T) {
		inR, inW := io.Pipe()
		defer inW.Close()
		out := &lockedBuffer{}
		p := start(t, []string{"sh", "-c", "echo ready; exec sleep 30"}, ExecOptions{Stdin: inR, Stdout: out, PTY: &PTY{Term: "dumb"}})
		waitFor(t, "ready", func() bool { return strings.Contains(out.String(), "ready") })
		inW.Write([]byte{3})
		if st, err := p.Wait(); err != nil || st.Code != 130 || st.Signal != "INT" {
			t.Fatalf("status %+v err %v", st, err)
		}
	})

	t.Run("Canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Start(cctx, "true", ExecOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start with a canceled ctx: %v", err)
		}
	})

	t.Run("ConnectionLost", func(t *testing.T) {
		c2 := mustDial(t, "testbox:"+srv.Dir, srvOpts(srv))
		p, err := c2.Start(ctx, "sleep 30", ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c2.Close()
		if _, err := p.Wait(); !errors.Is(err, ErrOffline) {
			t.Fatalf("Wait after the connection closed: %v", err)
		}
	})
}
