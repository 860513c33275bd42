package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"remotefs/agent"
	"remotefs/internal/netproxy"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// randomTree makes a tree of rng's choosing under root: folders several
// deep, files of many sizes, symlinks, a FIFO, odd names, special modes.
// It returns the root-relative paths of its regular files.
func randomTree(t *testing.T, root string, rng *rand.Rand) []string {
	t.Helper()
	names := []string{"a", "b b", "quote'd", "new\nline", "ünï", "x.py", "node_modules", "-dash", "*star"}
	dirs := []string{""}
	var files []string
	for i := range 120 {
		dir := dirs[rng.IntN(len(dirs))]
		name := fmt.Sprintf("%s%d", names[rng.IntN(len(names))], i)
		if i%13 == 0 {
			name = "node_modules" // pruned wherever it is
		}
		p := filepath.Join(dir, name)
		full := filepath.Join(root, p)
		switch k := rng.IntN(10); {
		case k < 3 || name == "node_modules":
			if err := os.MkdirAll(full, fs.FileMode(0o700+rng.IntN(0o100))); err != nil {
				t.Fatal(err)
			}
			if name != "node_modules" {
				dirs = append(dirs, p)
			} else {
				os.WriteFile(filepath.Join(full, "pruned"), nil, 0o644) // never listed
			}
		case k < 8:
			data := make([]byte, []int{0, 1, 100, 4096, 70000}[rng.IntN(5)]+rng.IntN(10))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			if err := os.WriteFile(full, data, 0o644); err != nil {
				t.Fatal(err)
			}
			mt := time.Unix(1600000000+rng.Int64N(1e8), rng.Int64N(1e9))
			os.Chtimes(full, mt, mt)
			os.Chmod(full, []fs.FileMode{0o644, 0o600, 0o755, 0o4755 | fs.ModeSetuid, 0o1777 | fs.ModeSticky}[rng.IntN(5)])
			files = append(files, p)
		case k < 9:
			os.Symlink([]string{"a", "../x", "/etc/passwd", "dangling"}[rng.IntN(4)], full)
		default:
			syscall.Mkfifo(full, 0o640)
		}
	}
	return files
}

// collectWalk parses a walk's output, failing on anything out of order
// (a path before its folder) and on a missing root record; it returns the
// root's device as parseFindStream does.
func collectWalk(t *testing.T, out []byte) (map[string]FileInfo, []string, uint64) {
	t.Helper()
	got := map[string]FileInfo{}
	var order []string
	dev, err := parseFindStream(bytes.NewReader(out), func(p string, fi FileInfo) error {
		if d := filepath.Dir(p); d != "." {
			if _, ok := got[d]; !ok {
				return fmt.Errorf("%q before its folder", p)
			}
		}
		got[p] = fi
		order = append(order, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dev == 0 {
		t.Fatal("no root record")
	}
	return got, order, dev
}

// The agent's walk, stat and fetch produce exactly what GNU find and tar
// produce on the same tree (the formats conn reads from both), read by the
// same parsers. Seeded; the seed is logged.
func TestAgentOutputsMatchFindAndTar(t *testing.T) {
	for _, tool := range []string{"find", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	root := t.TempDir()
	files := randomTree(t, root, rng)
	prune := []string{"node_modules", "*.never"}
	ctx := context.Background()

	walk := func(dir string, prune []string) []byte {
		var out, stderr bytes.Buffer
		argv := walkArgv(root, dir, prune)[1:]
		if err := agent.Walk(ctx, argv, &out, &stderr); err != nil {
			t.Fatalf("walk: %v %s", err, stderr.String())
		}
		return out.Bytes()
	}
	find := func(dir string, prune []string) []byte {
		out, err := exec.Command("sh", "-c", findCommand(root, dir, prune)).Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	walk(root, prune) // reading folders may move their atime once (relatime)
	want, _, wantDev := collectWalk(t, find(root, prune))
	got, order, gotDev := collectWalk(t, walk(root, prune))
	if len(want) < 80 {
		t.Fatalf("find listed only %d entries", len(want))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if wantDev != st.Dev|1<<63 || gotDev != wantDev {
		t.Errorf("root device: find %x, agent %x, stat %x", wantDev, gotDev, st.Dev)
	}
	for p, fi := range got {
		if fi.Ino == 0 {
			t.Errorf("%q: no inode number, on the root's filesystem", p)
		}
	}
	// Pre-order: a folder's subtree is complete before its next sibling.
	for i, p := range order {
		for _, q := range order[i+1:] {
			if strings.HasPrefix(q, p+"/") && slices.ContainsFunc(order[i+1:slices.Index(order, q)], func(r string) bool {
				return filepath.Dir(r) == filepath.Dir(p) && r != p
			}) {
				t.Fatalf("%q after a sibling of its folder %q", q, p)
			}
		}
	}

	// Batch stat: the same records for the paths that exist.
	var list bytes.Buffer
	asked := []string{}
	for p := range want {
		if rng.IntN(3) == 0 {
			asked = append(asked, p)
		}
	}
	asked = append(asked, "no/such", "../escape")
	for _, p := range asked {
		list.WriteString(p + "\x00")
	}
	var statOut bytes.Buffer
	if err := agent.Stat(ctx, []string{"--", root}, &list, &statOut, io.Discard); err != nil {
		t.Fatal(err)
	}
	stats, statDev := collectWalkUnordered(t, statOut.Bytes())
	if statDev != wantDev {
		t.Errorf("stat: root device %x, want %x", statDev, wantDev)
	}
	for _, p := range asked {
		w, exists := want[p]
		if g, ok := stats[p]; ok != exists || g != w {
			t.Errorf("stat %q: %+v (%v), want %+v (%v)", p, g, ok, w, exists)
		}
	}

	// A subtree's walk: the same entries (paths relative to the folder),
	// the root's record first in both (after the
	// stat: entering pruned folders moves their atime).
	noAtime := func(f FileInfo) FileInfo { f.Atime = time.Time{}; return f }
	subtrees := 0
	for p, w := range want {
		if !w.Mode.IsDir() || w.Name == "node_modules" || subtrees == 3 {
			continue
		}
		subWant, _, dw := collectWalk(t, find(filepath.Join(root, p), nil))
		subGot, _, dg := collectWalk(t, walk(filepath.Join(root, p), nil))
		if dw != wantDev || dg != wantDev {
			t.Errorf("subtree %q: root device find %x agent %x, want %x", p, dw, dg, wantDev)
		}
		for q, sw := range subWant {
			whole, listed := want[p+"/"+q] // not when under a pruned folder
			if noAtime(subGot[q]) != noAtime(sw) || listed && noAtime(sw) != noAtime(whole) {
				t.Errorf("subtree %q: %q: agent %+v, find %+v, whole walk %+v", p, q, subGot[q], sw, whole)
			}
		}
		if len(subGot) != len(subWant) {
			t.Errorf("subtree %q: agent %d entries, find %d", p, len(subGot), len(subWant))
		}
		if len(subWant) > 0 {
			subtrees++
		}
	}
	if subtrees == 0 {
		t.Error("no subtree walked")
	}

	// Fetch: the same files, contents and attributes as tar's, and the
	// same skips (not regular, missing).
	fetchList := func() *bytes.Buffer {
		var b bytes.Buffer
		for _, p := range append(slices.Clone(files), "no/such", "a0") {
			b.WriteString(p + "\x00")
		}
		return &b
	}
	type fetched struct {
		fi   FileInfo
		data string
	}
	readAll := func(r io.Reader) map[string]fetched {
		m := map[string]fetched{}
		err := readTar(r, func(p string, fi FileInfo, r io.Reader) error {
			b, err := io.ReadAll(r)
			m[p] = fetched{fi, string(b)}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var tarOut, tarErr bytes.Buffer
	tarCmd := exec.Command("tar", "-C", root, "--null", "--no-recursion", "--ignore-failed-read", "-cf", "-", "-T", "-")
	tarCmd.Stdin, tarCmd.Stdout, tarCmd.Stderr = fetchList(), &tarOut, &tarErr
	tarCmd.Run()
	var agentOut, agentErr bytes.Buffer
	if err := agent.Fetch(ctx, []string{"--", root}, fetchList(), &agentOut, &agentErr); err != nil {
		t.Fatal(err)
	}
	wantF, gotF := readAll(&tarOut), readAll(&agentOut)
	if len(wantF) != len(files) {
		t.Errorf("tar sent %d of %d files", len(wantF), len(files))
	}
	for p, w := range wantF {
		if g := gotF[p]; g != w {
			t.Errorf("fetch %q: agent %+v, tar %+v", p, g.fi, w.fi)
		}
	}
	if len(gotF) != len(wantF) {
		t.Errorf("agent sent %d files, tar %d", len(gotF), len(wantF))
	}
	if !strings.Contains(agentErr.String(), "no/such") {
		t.Errorf("a missing file is not named on stderr: %q", agentErr.String())
	}
	if len(tarChanged(agentErr.String())) != 0 {
		t.Errorf("unchanged files reported as changed: %q", agentErr.String())
	}
}

func collectWalkUnordered(t *testing.T, out []byte) (map[string]FileInfo, uint64) {
	t.Helper()
	got := map[string]FileInfo{}
	dev, err := parseFindStream(bytes.NewReader(out), func(p string, fi FileInfo) error {
		got[p] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, dev
}

// A connection with the agent starts the server's login shell once, for
// every helper (walk, fetch, batch stat, the change feed, uploads), where
// running each helper over its own exec channel starts it for each; and
// each result is the same. The login shell takes a second, as a conda or
// pyenv init does.
func TestAgentOneLoginPerConnection(t *testing.T) {
	helperBinary(t)
	const delay = time.Second
	srv := sshdtest.StartWith(t, sshdtest.Options{LoginShellDelay: delay})
	logins := testenv.CountLogins(t, srv.RemoteHome, delay)
	root := filepath.Join(srv.Dir, "tree")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	files := randomTree(t, root, rng)
	for _, d := range []string{"node_modules", "a"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	ctx := context.Background()

	type outcome struct {
		walk      map[string]FileInfo
		fetched   map[string]string
		stats     int
		logins    int
		firstWalk time.Duration
		total     time.Duration
	}
	session := func(agentMode string, sending bool) outcome {
		t.Helper()
		var o outcome
		before := logins()
		start := time.Now()
		opts := srvOpts(srv)
		opts.Agent = agentMode
		opts.UploadHelper = UploadEager
		c := mustDial(t, "testbox:"+root, opts)
		o.walk = map[string]FileInfo{}
		if err := c.WalkTree(ctx, []string{"node_modules"}, func(p string, fi FileInfo) error {
			o.walk[p] = fi
			return nil
		}); err != nil {
			t.Fatalf("agent %q: walk: %v", agentMode, err)
		}
		o.firstWalk = time.Since(start)
		if agentMode == AgentAuto && !sending && c.Agent() != "running" {
			t.Fatalf("agent: %s", c.Agent())
		}

		o.fetched = map[string]string{}
		if err := c.FetchFiles(ctx, files, func(p string, fi FileInfo, r io.Reader) error {
			b, err := io.ReadAll(r)
			o.fetched[p] = string(b)
			return err
		}); err != nil {
			t.Fatalf("agent %q: fetch: %v", agentMode, err)
		}

		err := c.StatMany(ctx, files, func(p string, fi FileInfo) error {
			w := o.walk[p]
			w.Atime = fi.Atime // the fetch read it
			if fi != w {
				return fmt.Errorf("stat %q: %+v, the walk said %+v", p, fi, o.walk[p])
			}
			o.stats++
			return nil
		})
		switch {
		case agentMode == AgentOff && !errors.Is(err, ErrUnsupported):
			t.Errorf("batch stat without the agent: %v", err)
		case sending && errors.Is(err, ErrUnsupported):
			o.stats = len(files) // the binary was still on its way
		case agentMode != AgentOff && err != nil:
			t.Fatal(err)
		}

		// The change feed, and an upload through the helper.
		var mu sync.Mutex
		var seen []Change
		wctx, stop := context.WithCancel(ctx)
		live := make(chan string, 1)
		watched := make(chan error, 1)
		go func() {
			watched <- c.Watch(wctx, WatchOptions{}, func(m string) { live <- m }, func(b []Change) {
				mu.Lock()
				seen = append(seen, b...)
				mu.Unlock()
			})
		}()
		select {
		case m := <-live:
			if m != WatchHelper {
				t.Errorf("agent %q: watch mode %q", agentMode, m)
			}
		case err := <-watched:
			t.Fatalf("agent %q: watch: %v", agentMode, err)
		case <-time.After(30 * time.Second):
			t.Fatal("watch not live after 30s")
		}
		for c.Uploads() != UploadsHelper {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("uploads %q", c.Uploads())
			}
			time.Sleep(10 * time.Millisecond)
		}
		name := "uploaded-" + strings.TrimSpace(agentMode+"x")
		if _, err := c.Put(ctx, name, strings.NewReader("new"), PutOptions{Mode: 0o644, Mtime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if c.uploads.helperPuts.Load() != 1 {
			t.Errorf("agent %q: the upload did not go through the helper", agentMode)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			ok := slices.ContainsFunc(seen, func(ch Change) bool { return ch.Path == name })
			mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %q: the change feed did not report %s", agentMode, name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		<-watched
		os.Remove(filepath.Join(root, name))
		o.total = time.Since(start)
		o.logins = logins() - before
		c.Close()
		return o
	}

	installing := session(AgentAuto, true) // sends the binary through the start-up channel
	withAgent := session(AgentAuto, false)
	withoutAgent := session(AgentOff, false)
	t.Logf("with the agent, binary sent first: %d login shell(s); dial + first walk %v; everything %v",
		installing.logins, installing.firstWalk.Round(time.Millisecond), installing.total.Round(time.Millisecond))
	t.Logf("with the agent: %d login shell(s); dial + first walk %v; everything %v",
		withAgent.logins, withAgent.firstWalk.Round(time.Millisecond), withAgent.total.Round(time.Millisecond))
	t.Logf("one exec per helper: %d login shells; dial + first walk %v; everything %v",
		withoutAgent.logins, withoutAgent.firstWalk.Round(time.Millisecond), withoutAgent.total.Round(time.Millisecond))
	if withAgent.logins != 1 {
		t.Errorf("%d login shells with the agent, want 1", withAgent.logins)
	}
	// While the binary is sent, the walk and fetch do not wait for it.
	if installing.logins < 1 || installing.logins > 3 {
		t.Errorf("%d login shells while the agent was installed, want 1 to 3", installing.logins)
	}
	if withoutAgent.logins < 4 {
		t.Errorf("only %d login shells without the agent: the count is broken", withoutAgent.logins)
	}
	if len(withAgent.walk) < 50 || len(withAgent.walk) != len(withoutAgent.walk) {
		t.Errorf("walks listed %d and %d entries", len(withAgent.walk), len(withoutAgent.walk))
	}
	for p, w := range withoutAgent.walk {
		g := withAgent.walk[p]
		g.Atime, w.Atime = time.Time{}, time.Time{} // a read in between moves it
		if g != w {
			t.Errorf("%q: agent %+v, find %+v", p, g, w)
		}
	}
	// FetchFiles leaves out names starting with "-" (tar would take them
	// for options); each other file is sent.
	fetchable := slices.DeleteFunc(slices.Clone(files), func(p string) bool { return strings.HasPrefix(p, "-") })
	if len(withAgent.fetched) != len(fetchable) || withAgent.stats != len(files) {
		t.Errorf("agent fetched %d of %d and stat'ed %d of %d files", len(withAgent.fetched), len(fetchable), withAgent.stats, len(files))
	}
	for _, p := range fetchable {
		if withAgent.fetched[p] != withoutAgent.fetched[p] {
			t.Errorf("%q: fetched contents differ", p)
		}
		if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != withAgent.fetched[p] {
			t.Errorf("%q: fetched content is not the file's", p)
		}
	}
}

// An agent that stops answering (SIGSTOP) cannot hold a request: after
// OpTimeout without a word from it, while a ping is out, its session is
// closed, the request fails (a walk with ErrNoTreeWalk, so the caller
// lists with SFTP), the connection stays up, and helpers run one exec
// each until a new agent is due.
func TestAgentHungIsDropped(t *testing.T) {
	helperBinary(t)
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "hung")
	os.MkdirAll(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d", "f"), []byte("x"), 0o644)
	o := srvOpts(srv)
	o.OpTimeout = 2 * time.Second
	c := mustDial(t, "testbox:"+root, o)
	ctx := context.Background()
	walk := func() (int, error) {
		n := 0
		err := c.WalkTree(ctx, nil, func(string, FileInfo) error { n++; return nil })
		return n, err
	}
	for deadline := time.Now().Add(20 * time.Second); c.Agent() != "running"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("agent %s", c.Agent())
		}
	}
	if n, err := walk(); err != nil || n != 2 {
		t.Fatalf("walk %d, %v; agent %s", n, err, c.Agent())
	}
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash) + " __agent"
	var stopped []*os.Process
	for _, p := range procsMentioning(mark) {
		var pid int
		fmt.Sscanf(p, "%d:", &pid)
		if proc, err := os.FindProcess(pid); err == nil && proc.Signal(syscall.SIGSTOP) == nil {
			stopped = append(stopped, proc)
		}
	}
	if len(stopped) == 0 {
		t.Fatal("no agent to stop")
	}
	defer func() {
		for _, p := range stopped {
			p.Signal(syscall.SIGCONT)
		}
	}()
	start := time.Now()
	_, err = walk()
	took := time.Since(start)
	t.Logf("walk on a stopped agent: %v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, ErrNoTreeWalk) || errors.Is(err, ErrOffline) {
		t.Errorf("walk on a stopped agent: %v, want ErrNoTreeWalk", err)
	}
	if took > agentPing+3*o.OpTimeout {
		t.Errorf("the walk took %v", took)
	}
	if c.Err() != nil {
		t.Fatalf("the connection died with the agent: %v", c.Err())
	}
	if n, err := walk(); err != nil || n != 2 {
		t.Fatalf("walk after the agent was dropped: %d, %v", n, err)
	}
	if a := c.Agent(); a != "not running" {
		t.Errorf("agent %q after it was dropped", a)
	}
}

// The look for the binary may end after its start did, or after a new
// start began: it must mark only the start it looked for, once.
func TestAgentMarkSendingLate(t *testing.T) {
	a := &agentRunner{state: agentStarting, sendingCh: make(chan struct{})}
	first := a.sendingCh
	a.markSending(first) // the script said "need"
	a.markSending(first) // the SFTP look agrees, later
	a.state = agentIdle  // that start ended
	a.markSending(first)
	a.state, a.sendingCh, a.sending = agentStarting, make(chan struct{}), false
	a.markSending(first) // a stale look: not this start's
	if a.sending {
		t.Fatal("a stale look marked the new start")
	}
	select {
	case <-first:
	default:
		t.Fatal("the first start was not marked")
	}
}

// Sending the binary over a slow link may take many times OpTimeout: the
// start fails only when nothing moves for that long.
func TestAgentSlowSendOutlastsOpTimeout(t *testing.T) {
	helperBinary(t)
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash)) // sent again
	srv := sshdtest.Start(t)
	p, err := netproxy.New("127.0.0.1:0", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const rate = 4 << 20
	p.SetBandwidth(rate)
	_, port, _ := net.SplitHostPort(p.Addr())
	o := clientHome(t, srv, `
Host slowlink
  HostName 127.0.0.1
  Port `+port+`
  User {{USER}}
  IdentityFile {{KEY}}
  IdentityAgent none
  HostKeyAlias testbox-key
`, "testbox-key {{HOSTKEY}}")
	o.OpTimeout = time.Second
	c := mustDial(t, "slowlink:"+srv.Dir, o)
	start := time.Now()
	for c.Agent() != "running" {
		if a := c.Agent(); strings.HasPrefix(a, "off") || a == "not running" || time.Since(start) > 60*time.Second {
			t.Fatalf("agent %s after %v", a, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("agent running after %v (%d MiB binary at %d MiB/s, OpTimeout %v)", took.Round(time.Millisecond), lh.size>>20, rate>>20, o.OpTimeout)
	if took < 2*o.OpTimeout {
		t.Errorf("the send took only %v: the link was not slow enough to test anything", took)
	}
}

// A connection closed during an upload through the agent leaves no
// temporary file on the server: the agent gives its commands time to
// clean up before it exits.
func TestAgentConnectionClosedMidUpload(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "closed")
	os.Mkdir(root, 0o755)
	c := helperClient(t, srv, root, helperOnAgent)
	data := randomBytes(3 << 20)
	r := newGatedReader(data[:1<<20], data[1<<20:])
	tmp := TempNameAt("f", time.Now(), 7)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Put(context.Background(), "f", r, PutOptions{Mode: 0o644, Mtime: time.Now(), TempName: tmp})
		errc <- err
	}()
	<-r.reached
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(root, tmp)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no temporary file")
		}
	}
	c.Close()
	close(r.gate)
	if err := <-errc; !errors.Is(err, ErrOffline) {
		t.Errorf("put on a closed connection: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(root, tmp)); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the temporary file is still there 5s after the connection closed")
		}
	}
	if _, err := os.Stat(filepath.Join(root, "f")); err == nil {
		t.Error("a partial file landed")
	}
}
