package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"remotefs/agent/proto"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// The real helper: cmd/remotefs built once per test process, and a
// server-side helper folder of the test's own (the "server" is this
// machine).
var watchBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if watchBin.dir != "" {
		os.RemoveAll(watchBin.dir)
	}
	os.Exit(code)
}

// helperBinary builds cmd/remotefs and makes it the watch helper.
func helperBinary(t *testing.T) string {
	t.Helper()
	watchBin.once.Do(func() {
		watchBin.dir, watchBin.err = os.MkdirTemp("", "remotefs-watch-test-")
		if watchBin.err != nil {
			return
		}
		watchBin.path = filepath.Join(watchBin.dir, "remotefs")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if watchBin.err = testenv.BuildRemotefs(ctx, "", watchBin.path, false); watchBin.err != nil {
			return
		}
		watchHelperDir = filepath.Join(watchBin.dir, "server-cache")
		p := watchBin.path
		SetWatchHelper(func() (string, error) { return p, nil })
	})
	if watchBin.err != nil {
		t.Fatal(watchBin.err)
	}
	return watchBin.path
}

// changeLog records what Watch hands over.
type changeLog struct {
	t             *testing.T
	allowOverflow atomic.Bool
	mu            sync.Mutex
	all           []Change
	batches       int
	kick          chan struct{}
}

func newChangeLog(t *testing.T) *changeLog {
	return &changeLog{t: t, kick: make(chan struct{}, 1)}
}

func (l *changeLog) handle(batch []Change) {
	seen := map[string]bool{}
	for _, ch := range batch {
		if !ch.Overflow && seen[ch.Path] {
			l.t.Errorf("path %q twice in one batch %v", ch.Path, batch)
		}
		seen[ch.Path] = true
		if strings.Contains(ch.Path, TempPrefix) {
			l.t.Errorf("temporary file reported: %+v", ch)
		}
		if ch.Overflow && (!l.allowOverflow.Load() || len(batch) != 1) {
			l.t.Errorf("unexpected overflow in %+v", batch)
		}
	}
	l.mu.Lock()
	l.all = append(l.all, batch...)
	l.batches++
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *changeLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func (l *changeLog) since(mark int) []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all[mark:])
}

// expect waits until every change in want came after mark.
func (l *changeLog) expect(what string, mark int, within time.Duration, want ...Change) {
	l.t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		got := l.since(mark)
		missing := []Change{}
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			l.t.Logf("%s: %v after %v", what, got, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-l.kick:
		case <-deadline.C:
			l.t.Fatalf("%s: missing %+v within %v; got %+v", what, missing, within, got)
		}
	}
}

// procsMentioning lists the processes (other than this one) whose command
// line contains s.
func procsMentioning(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid := e.Name()
		if pid == "" || pid[0] < '0' || pid[0] > '9' || pid == fmt.Sprint(os.Getpid()) {
			continue
		}
		b, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, s) {
			out = append(out, pid+": "+cmd)
		}
	}
	return out
}

// noProcsLeft fails unless nothing mentioning s runs within a moment.
func noProcsLeft(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := procsMentioning(s)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left on the server:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type watchHandle struct {
	log     *changeLog
	cancel  context.CancelFunc
	done    chan error
	mode    string
	started chan string
}

// startWatch runs Watch in the background and waits until it is live.
func startWatch(t *testing.T, c *Client, o WatchOptions) *watchHandle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &watchHandle{log: newChangeLog(t), cancel: cancel, done: make(chan error, 1), started: make(chan string, 1)}
	if o.Logger == nil {
		o.Logger = quietLogger
	}
	go func() {
		h.done <- c.Watch(ctx, o, func(mode string) { h.started <- mode }, h.log.handle)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its ctx ended")
		}
	})
	select {
	case h.mode = <-h.started:
	case err := <-h.done:
		t.Fatalf("Watch ended before going live: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("Watch not live within 15s")
	}
	return h
}

// stop cancels Watch and waits for it to return.
func (h *watchHandle) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return within 10s of its ctx ending")
		return nil
	}
}

const testPollInterval = 500 * time.Millisecond

// Every mode, forced, against a real sshd: each kind of change is
// reported in time, temporary files never are, nothing inside an ignored
// folder is, and nothing is left running on the server afterwards.
func TestWatchModes(t *testing.T) {
	helperBinary(t)
	srv := sshdtest.Start(t)
	// "helper-exec": the helper over an exec channel of its own, not on
	// the connection's agent.
	for _, name := range []string{WatchHelper, "helper-exec", WatchInotifywait, WatchPoll} {
		t.Run(name, func(t *testing.T) {
			mode := strings.TrimSuffix(name, "-exec")
			if mode == WatchInotifywait {
				if _, err := exec.LookPath("inotifywait"); err != nil {
					t.Skip("inotifywait not installed")
				}
			}
			root := filepath.Join(srv.Dir, "modes-"+name)
			os.MkdirAll(filepath.Join(root, "node_modules"), 0o755)
			os.MkdirAll(filepath.Join(root, "old"), 0o755)
			os.WriteFile(filepath.Join(root, "old", "keep"), []byte("k"), 0o644)
			o := srvOpts(srv)
			if name != mode {
				o.Agent = AgentOff
			}
			c := mustDial(t, "testbox:"+root, o)
			h := startWatch(t, c, WatchOptions{Mode: mode, PollInterval: testPollInterval, Ignore: []string{"node_modules"}})
			if h.mode != mode {
				t.Fatalf("started in mode %q", h.mode)
			}
			within := 2 * time.Second
			poll := mode == WatchPoll
			if poll {
				within = 2 * testPollInterval
			}
			l := h.log
			f := func(p string) string { return filepath.Join(root, p) }
			file := func(p string) Change { return Change{Path: p} }
			dir := func(p string) Change { return Change{Path: p, Dir: true} }
			gone := func(p string) Change { return Change{Path: p, Gone: true} }
			rootDir := Change{Path: "", Dir: true}

			m := l.mark()
			os.WriteFile(f("a.txt"), []byte("one"), 0o644)
			l.expect("create", m, within, file("a.txt"))

			m = l.mark()
			fh, _ := os.OpenFile(f("a.txt"), os.O_WRONLY|os.O_APPEND, 0)
			for i := 0; i < 20; i++ {
				fh.Write([]byte("more"))
			}
			fh.Close()
			l.expect("modify", m, within, file("a.txt"))

			m = l.mark()
			os.Chmod(f("a.txt"), 0o600)
			l.expect("chmod", m, within, file("a.txt"))

			m = l.mark()
			os.Rename(f("a.txt"), f("b.txt"))
			switch mode {
			case WatchPoll:
				l.expect("rename", m, within, file("b.txt"), rootDir)
			case WatchHelper:
				l.expect("rename", m, within, Change{Path: "b.txt", From: "a.txt"}, gone("a.txt"))
			default:
				l.expect("rename", m, within, file("b.txt"), gone("a.txt"))
			}

			m = l.mark()
			os.Remove(f("b.txt"))
			if poll {
				l.expect("delete", m, within, rootDir)
			} else {
				l.expect("delete", m, within, gone("b.txt"))
			}

			m = l.mark()
			os.MkdirAll(f("d/sub"), 0o755)
			os.WriteFile(f("d/x"), []byte("x"), 0o644)
			os.WriteFile(f("d/sub/y"), []byte("y"), 0o644)
			if mode == WatchInotifywait {
				// Files made before inotifywait watches the new folder are
				// missed: the consumer lists a new folder.
				l.expect("folder with files", m, within, dir("d"))
			} else {
				l.expect("folder with files", m, within, dir("d"), file("d/x"), file("d/sub/y"))
			}
			m = l.mark()
			os.WriteFile(f("d/sub/z"), []byte("z"), 0o644)
			l.expect("write in the new folder", m, within, file("d/sub/z"))

			m = l.mark()
			os.Rename(f("old"), f("new"))
			switch mode {
			case WatchPoll:
				l.expect("folder rename", m, within, dir("new"), rootDir)
			case WatchInotifywait: // the consumer lists the new folder
				l.expect("folder rename", m, within, dir("new"), Change{Path: "old", Gone: true, Dir: true})
			default: // the helper reports the rename itself
				l.expect("folder rename", m, within, Change{Path: "new", From: "old"}, Change{Path: "old", Gone: true, Dir: true})
			}
			m = l.mark()
			os.WriteFile(f("new/after"), []byte("z"), 0o644)
			l.expect("write in the renamed folder", m, within, file("new/after"))

			// An upload: a temporary file renamed onto the final name.
			m = l.mark()
			tmp := f(TempName("up.txt"))
			os.WriteFile(tmp, []byte("uploaded"), 0o644)
			os.Chmod(tmp, 0o640)
			os.Rename(tmp, f("up.txt"))
			// Inside an ignored folder: never reported.
			os.WriteFile(f("node_modules/pkg.js"), []byte("x"), 0o644)
			l.expect("upload", m, within, file("up.txt"))
			time.Sleep(within / 2)
			for _, ch := range l.since(0) {
				if strings.HasPrefix(ch.Path, "node_modules/") {
					t.Errorf("change inside an ignored folder reported: %+v", ch)
				}
			}
			l.mu.Lock()
			t.Logf("%d changes in %d batches", len(l.all), l.batches)
			l.mu.Unlock()

			stopAt := time.Now()
			defer func() { t.Logf("stopped and checked in %v", time.Since(stopAt)) }()
			if err := h.stop(t); !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v after cancel, want context.Canceled", err)
			}
			noProcsLeft(t, root)
		})
	}
}

// auto picks the helper, uploads it once, and reuses it the next time.
func TestWatchAutoUsesHelper(t *testing.T) {
	helperBinary(t)
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "auto")
	os.Mkdir(root, 0o755)
	c := mustDial(t, "testbox:"+root, srvOpts(srv))
	h := startWatch(t, c, WatchOptions{})
	if h.mode != WatchHelper {
		t.Fatalf("auto mode chose %q, want helper", h.mode)
	}
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash)
	fi, err := os.Stat(installed)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 || fi.Size() != lh.size {
		t.Errorf("installed helper mode %v size %d, want 0700 and %d", fi.Mode(), fi.Size(), lh.size)
	}
	if di, _ := os.Stat(watchHelperDir); di == nil || di.Mode().Perm() != 0o700 {
		t.Errorf("helper folder mode %v, want 0700", di.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(watchHelperDir, TempPrefix+"*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	m := h.log.mark()
	os.WriteFile(filepath.Join(root, "x"), nil, 0o644)
	h.log.expect("create", m, 2*time.Second, Change{Path: "x"})
	h.stop(t)

	// The second time it is not uploaded again.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(installed, old, old)
	h2 := startWatch(t, c, WatchOptions{Mode: WatchAuto})
	if fi, _ := os.Stat(installed); !fi.ModTime().Equal(old) {
		t.Errorf("helper uploaded again")
	}
	if h2.mode != WatchHelper {
		t.Errorf("second run chose %q", h2.mode)
	}
	h2.stop(t)
	noProcsLeft(t, root)
}

// Without a helper binary, auto falls back to inotifywait (installed
// here); a forced helper fails at once.
func TestWatchAutoFallback(t *testing.T) {
	helperBinary(t)
	if _, err := exec.LookPath("inotifywait"); err != nil {
		t.Skip("inotifywait not installed")
	}
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "fallback")
	os.Mkdir(root, 0o755)
	o := srvOpts(srv)
	o.Agent = AgentOff // started at dial, it would have the helper
	c := mustDial(t, "testbox:"+root, o)
	saved := watchHelper.Load()
	SetWatchHelper(nil)
	defer watchHelper.Store(saved)

	h := startWatch(t, c, WatchOptions{})
	if h.mode != WatchInotifywait {
		t.Fatalf("auto without a helper chose %q, want inotifywait", h.mode)
	}
	h.stop(t)
	err := c.Watch(context.Background(), WatchOptions{Mode: WatchHelper, Logger: quietLogger}, nil, func([]Change) {})
	if err == nil || errors.Is(err, ErrOffline) {
		t.Fatalf("forced helper without one: %v", err)
	}
	t.Logf("forced helper: %v", err)
	noProcsLeft(t, root)
}

// A dead connection ends Watch with ErrOffline, and the server side goes
// away by itself.
func TestWatchConnectionDies(t *testing.T) {
	helperBinary(t)
	srv := sshdtest.Start(t)
	for _, mode := range []string{WatchHelper, WatchInotifywait, WatchPoll} {
		t.Run(mode, func(t *testing.T) {
			if mode == WatchInotifywait {
				if _, err := exec.LookPath("inotifywait"); err != nil {
					t.Skip("inotifywait not installed")
				}
			}
			root := filepath.Join(srv.Dir, "dies-"+mode)
			os.Mkdir(root, 0o755)
			c := mustDial(t, "testbox:"+root, srvOpts(srv))
			h := startWatch(t, c, WatchOptions{Mode: mode, PollInterval: testPollInterval})
			c.transport[0].Close() // the TCP connection
			select {
			case err := <-h.done:
				h.done <- err
				if !errors.Is(err, ErrOffline) {
					t.Fatalf("Watch returned %v, want ErrOffline", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch still running 5s after the connection died")
			}
			noProcsLeft(t, root)
		})
	}
}

// A helper that dies is restarted, and the restart reports an Overflow:
// the helper over exec, and the agent that runs it (the restart then runs
// it over exec until the agent is started again).
func TestWatchHelperRestarts(t *testing.T) {
	helperBinary(t)
	srv := sshdtest.Start(t)
	for _, onAgent := range []bool{true, false} {
		t.Run(fmt.Sprint("agent=", onAgent), func(t *testing.T) { testWatchHelperRestarts(t, srv, onAgent) })
	}
}

func testWatchHelperRestarts(t *testing.T, srv *sshdtest.Server, onAgent bool) {
	root := filepath.Join(srv.Dir, fmt.Sprint("restart-", onAgent))
	os.Mkdir(root, 0o755)
	o := srvOpts(srv)
	mark := WatchHelperCommand + " --heartbeat-timeout"
	if onAgent {
		mark = filepath.Join(watchHelperDir, "remotefs-helper-")
	} else {
		o.Agent = AgentOff
	}
	c := mustDial(t, "testbox:"+root, o)
	h := startWatch(t, c, WatchOptions{Mode: WatchAuto})
	if h.mode != WatchHelper {
		t.Fatalf("mode %q", h.mode)
	}
	h.log.allowOverflow.Store(true)
	procs := procsMentioning(mark)
	var killed int
	for _, p := range procs {
		if (onAgent && strings.HasSuffix(p, " "+proto.AgentCommand+" ")) || strings.HasSuffix(p, " -- "+root+" ") {
			var pid int
			fmt.Sscanf(p, "%d:", &pid)
			if proc, err := os.FindProcess(pid); err == nil && proc.Kill() == nil {
				killed++
			}
		}
	}
	if killed == 0 || (!onAgent && killed != 1) {
		t.Fatalf("killed %d helpers; processes: %q", killed, procs)
	}
	m := h.log.mark()
	h.log.expect("restart", m, 5*time.Second, Change{Overflow: true})
	m = h.log.mark()
	os.WriteFile(filepath.Join(root, "after"), nil, 0o644)
	h.log.expect("after the restart", m, 2*time.Second, Change{Path: "after"})
	h.stop(t)
	noProcsLeft(t, root)
}

func TestManagerWatchOffline(t *testing.T) {
	m := NewManager(Spec{Host: "nowhere", Path: "x"}, Options{Logger: quietLogger}, nil)
	defer m.Close()
	err := m.Watch(context.Background(), WatchOptions{}, nil, func([]Change) { t.Error("handled") })
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("got %v, want ErrOffline", err)
	}
}

// A client without ssh (no exec) cannot watch; bad options fail at once.
func TestWatchErrors(t *testing.T) {
	c := pipeClient(t, t.TempDir(), Options{}, nil)
	err := c.Watch(context.Background(), WatchOptions{Mode: WatchPoll, Logger: quietLogger}, nil, func([]Change) {})
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("poll over a pipe client: %v, want ErrUnsupported", err)
	}
	if err := c.Watch(context.Background(), WatchOptions{Mode: "fanotify"}, nil, nil); err == nil {
		t.Error("unknown mode accepted")
	}
	if err := c.Watch(context.Background(), WatchOptions{Ignore: []string{"a/b"}}, nil, nil); err == nil {
		t.Error("ignore pattern with a slash accepted")
	}
	if err := c.Watch(context.Background(), WatchOptions{Ignore: []string{"[x"}}, nil, nil); err == nil {
		t.Error("malformed ignore pattern accepted")
	}
}

// The helper binary, run locally as the server would: it exits when its
// stdin is silent for the heartbeat timeout, and at once at stdin EOF.
func TestWatchHelperHeartbeat(t *testing.T) {
	bin := helperBinary(t)
	root := t.TempDir()
	run := func(closeStdin bool) time.Duration {
		cmd := exec.Command(bin, WatchHelperCommand, "--heartbeat-timeout", "2s", "--", root)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if !closeStdin {
			// Heartbeats keep it alive past the timeout.
			for i := 0; i < 5; i++ {
				time.Sleep(500 * time.Millisecond)
				stdin.Write([]byte{'\n'})
			}
		} else {
			time.Sleep(300 * time.Millisecond) // started
		}
		select {
		case err := <-exited:
			t.Fatalf("helper exited despite heartbeats: %v; output %q", err, out.String())
		default:
		}
		last := time.Now()
		if closeStdin {
			stdin.Close()
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Fatal("helper still running 10s after the last heartbeat")
		}
		if !closeStdin && !strings.HasPrefix(out.String(), "S\x00\x00") {
			t.Errorf("output %q, want a start record first", out.String())
		}
		stdin.Close()
		return time.Since(last)
	}
	if d := run(false); d < 1500*time.Millisecond || d > 4*time.Second {
		t.Errorf("without heartbeats the helper exited after %v, want about 2s", d)
	}
	if d := run(true); d > time.Second {
		t.Errorf("at stdin EOF the helper exited after %v", d)
	}
}

// FuzzWatchStream: the client's parsers must not panic on any input (the
// record format itself is fuzzed in agent/proto).
func FuzzWatchStream(f *testing.F) {
	f.Add([]byte("S\x00\x00C\x00a/b\x00D\x00\x00H\x00x\x00R\x00y\x00"))
	f.Add([]byte("G\x00../x\x00"))
	f.Add([]byte("X\x00\x00E\x00msg\x00L\x00\x00"))
	f.Add([]byte("C\x00a\x00C"))
	f.Add([]byte("CREATE,ISDIR|/r/a\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &watchRun{b: newBatcher()}
		w.parseHelper(bytes.NewReader(data), streamState{live: func() {}, limit: new(string), message: new(string), mu: &sync.Mutex{}})
		_ = parseInotifywaitStream(bytes.NewReader(data), "/r", func(Change) {})
		_, _ = parsePollStream(bytes.NewReader(data), func(byte, string, string) {})
	})
}

func TestParseInotifywaitStream(t *testing.T) {
	in := "CREATE|/r/a\x00CLOSE_WRITE,CLOSE|/r/a\x00CREATE,ISDIR|/r/d\x00DELETE|/r/d/x\x00" +
		"MOVED_FROM,ISDIR|/r/old\x00MOVED_TO|/r/new\nline\x00DELETE_SELF|/r/d/\x00ATTRIB,ISDIR|/r/\x00" +
		"Q_OVERFLOW|\x00MOVE_SELF|/r/\x00"
	var got []Change
	if err := parseInotifywaitStream(strings.NewReader(in), "/r", func(c Change) { got = append(got, c) }); err != nil {
		t.Fatal(err)
	}
	want := []Change{{Path: "a"}, {Path: "a"}, {Path: "d", Dir: true}, {Path: "d/x", Gone: true},
		{Path: "old", Gone: true, Dir: true}, {Path: "new\nline"}, {Path: "", Dir: true}, {Overflow: true}, {Overflow: true}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"CREATE|/elsewhere/a\x00", "CREATE /r/a\x00", "CREATE|/r/a/../../b\x00", "CREATE|/r/a"} {
		if err := parseInotifywaitStream(strings.NewReader(bad), "/r", func(Change) {}); !errors.Is(err, errWatchStream) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestParsePollStream(t *testing.T) {
	in := "1700000000.250000000\nd\x001700000000.1\x00\x00f\x001700000000.2\x00a b\x00d\x001.0\x00sub/dir\x00"
	var got []string
	now, err := parsePollStream(strings.NewReader(in), func(typ byte, ctime, p string) {
		got = append(got, string(typ)+" "+ctime+" "+p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !now.Equal(time.Unix(1700000000, 250000000)) {
		t.Errorf("time %v", now)
	}
	want := []string{"d 1700000000.1 ", "f 1700000000.2 a b", "d 1.0 sub/dir"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if now, err := parsePollStream(strings.NewReader("1700000000.N\n"), func(byte, string, string) {}); err != nil || now.Unix() != 1700000000 {
		t.Errorf("date without %%N: %v %v", now, err)
	}
	for _, bad := range []string{"", "x\n", "1\nf\x001\x00", "1\nf\x001\x00../x\x00", "1\nff\x001\x00x\x00"} {
		if _, err := parsePollStream(strings.NewReader(bad), func(byte, string, string) {}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestBatcher(t *testing.T) {
	b := newBatcher()
	b.add(Change{Path: "a"})
	b.add(Change{Path: "b", Dir: true})
	b.add(Change{Path: "a", Gone: true})
	b.add(Change{Path: "c"})
	b.add(Change{Path: "b", Dir: true})
	got := b.take()
	want := []Change{{Path: "a", Gone: true}, {Path: "c"}, {Path: "b", Dir: true}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got := b.take(); len(got) != 0 {
		t.Fatalf("second take %+v", got)
	}
	b.add(Change{Path: "a"})
	b.add(Change{Overflow: true})
	b.add(Change{Path: "z"})
	if got := b.take(); !slices.Equal(got, []Change{{Overflow: true}}) {
		t.Fatalf("after overflow %+v", got)
	}
	for i := 0; i <= watchMaxPending; i++ {
		b.add(Change{Path: fmt.Sprint(i)})
	}
	if got := b.take(); !slices.Equal(got, []Change{{Overflow: true}}) {
		t.Fatalf("too many pending: %d changes", len(got))
	}

	// run coalesces what comes within the window into one batch.
	var mu sync.Mutex
	var batches [][]Change
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(ctx, func(c []Change) { mu.Lock(); batches = append(batches, c); mu.Unlock() })
	}()
	for i := 0; i < 10; i++ {
		b.add(Change{Path: "f"})
		b.add(Change{Path: fmt.Sprint("g", i%3)})
	}
	time.Sleep(4 * watchCoalesce)
	cancel()
	<-done
	if len(batches) != 1 || len(batches[0]) != 4 {
		t.Fatalf("batches %+v, want one of 4 changes", batches)
	}
}

func TestWatchFilter(t *testing.T) {
	f := watchFilter{ignore: []string{"node_modules", "*.cache"}}
	for p, skip := range map[string]bool{
		"a.txt": false, TempPrefix + "1234-a.txt": true, "d/" + TempPrefix + "x": true,
		"node_modules": false, "node_modules/x": true, "a/node_modules/b/c": true,
		"x.cache": false, "x.cache/y": true, "src/main.go": false, "": false,
	} {
		if got := f.skip(p); got != skip {
			t.Errorf("skip(%q) = %v, want %v", p, got, skip)
		}
	}
}

func TestIgnoreRegexp(t *testing.T) {
	re := regexp.MustCompile(ignoreRegexp([]string{"node_modules", "*.cache", "b?ild", "[ot]arget", "a.b", `x\*`}))
	for p, match := range map[string]bool{
		"/r/node_modules/x": true, "/r/node_modules": false, "/r/a/node_modules/": true, "/r/node_modulesx/y": false,
		"/r/pip.cache/f": true, "/r/a/b.cache/": true, "/r/build/x": true, "/r/target/": true, "/r/oarget/": true,
		"/r/aXb/": false, "/r/a.b/": true, "/r/x*/": true, "/r/xy/": false, "/r/src/main.go": false,
	} {
		if got := re.MatchString(p); got != match {
			t.Errorf("%q: match %v, want %v (re %s)", p, got, match, re)
		}
	}
	if ignoreRegexp(nil) != "" {
		t.Error("no globs, yet a regexp")
	}
}

func TestUnameToGo(t *testing.T) {
	for in, want := range map[string]string{
		"Linux x86_64": "linux/amd64", "Linux aarch64": "linux/arm64", "Darwin arm64": "darwin/arm64",
		"Linux mips": "linux/", "weird": "/",
	} {
		os, arch := unameToGo(in)
		if got := os + "/" + arch; got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}
