package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"remotefs/agent/proto"
)

// watcherRun is runWatcher going on a temp dir in-process.
type watcherRun struct {
	t     *testing.T
	root  string
	stdin *io.PipeWriter
	recs  chan string // "K path"
	done  chan error
}

func startWatcher(t *testing.T, cfg watcherConfig) *watcherRun {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	if cfg.Idle == 0 {
		cfg.Idle = time.Minute
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	r := &watcherRun{t: t, root: cfg.Root, stdin: inW, recs: make(chan string, 10000), done: make(chan error, 1)}
	go func() {
		err := runWatcher(context.Background(), cfg, inR, outW)
		outW.Close()
		r.done <- err
	}()
	go func() {
		br := bufio.NewReader(outR)
		for {
			k, err := br.ReadString(0)
			if err != nil {
				close(r.recs)
				return
			}
			p, err := br.ReadString(0)
			if err != nil {
				t.Errorf("truncated record %q", k)
				close(r.recs)
				return
			}
			r.recs <- k[:len(k)-1] + " " + p[:len(p)-1]
		}
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("watcher still running 5s after stdin EOF")
		}
	})
	return r
}

// expect waits until every record in want arrived (others may come too)
// and returns everything received meanwhile.
func (r *watcherRun) expect(what string, want ...string) []string {
	r.t.Helper()
	var got []string
	deadline := time.After(3 * time.Second)
	for {
		missing := 0
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case rec, ok := <-r.recs:
			if !ok {
				r.t.Fatalf("%s: output ended; got %q, want %q", what, got, want)
			}
			got = append(got, rec)
		case <-deadline:
			r.t.Fatalf("%s: got %q, want %q", what, got, want)
		}
	}
}

// quiet returns what arrives within d.
func (r *watcherRun) quiet(d time.Duration) []string {
	var got []string
	deadline := time.After(d)
	for {
		select {
		case rec, ok := <-r.recs:
			if !ok {
				return got
			}
			got = append(got, rec)
		case <-deadline:
			return got
		}
	}
}

func TestWatcherReportsChanges(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "old/deep"), 0o755)
	os.WriteFile(filepath.Join(root, "old/deep/f"), nil, 0o644)
	os.MkdirAll(filepath.Join(root, "node_modules/pkg"), 0o755)
	w := startWatcher(t, watcherConfig{Root: root, Ignore: []string{"node_modules", "*.tmpdir"}})
	p := func(s string) string { return filepath.Join(root, s) }
	w.expect("start", "S ")

	os.WriteFile(p("a"), []byte("x"), 0o644)
	w.expect("create", "C a")
	fh, _ := os.OpenFile(p("a"), os.O_WRONLY|os.O_APPEND, 0)
	for i := 0; i < 50; i++ {
		fh.Write([]byte("more"))
	}
	fh.Close()
	got := w.expect("modify", "C a")
	got = append(got, w.quiet(100*time.Millisecond)...)
	// Repeats within one read batch are dropped; across batches they may
	// come again, but not one per event (MODIFY per write, then
	// CLOSE_WRITE, with the record of the create before them).
	if n := strings.Count(strings.Join(got, "|"), "C a"); n > 53 {
		t.Errorf("%d records for 50 writes: %q", n, got)
	}
	os.Chmod(p("a"), 0o600)
	w.expect("chmod", "C a")

	// A folder made with contents at once: the contents are reported
	// from the walk even if they came before the watch.
	os.MkdirAll(p("n/m/k"), 0o755)
	os.WriteFile(p("n/m/k/f"), nil, 0o644)
	w.expect("mkdir -p", "D n", "D n/m", "D n/m/k", "C n/m/k/f")
	os.WriteFile(p("n/m/k/g"), nil, 0o644)
	w.expect("write in the new folder", "C n/m/k/g")

	// A moved folder: the old watches go, the new name is watched.
	// A rename is the old name's record followed by R, and the moved
	// folder's contents are not reported again (the mount moves them).
	os.WriteFile(p("b"), nil, 0o644)
	w.expect("create b", "C b")
	os.Rename(p("b"), p("b2"))
	got = w.expect("file rename", "G b", "R b2")
	if !slices.Equal(got[len(got)-2:], []string{"G b", "R b2"}) {
		t.Errorf("file rename: R does not follow G: %q", got)
	}
	os.Rename(p("old"), p("n/renamed"))
	w.expect("folder rename", "H old", "R n/renamed")
	os.WriteFile(p("n/renamed/deep/h"), nil, 0o644)
	got = w.expect("write in the moved folder", "C n/renamed/deep/h")
	for _, r := range got {
		if strings.Contains(r, "old/") {
			t.Errorf("reported under the old name: %q", r)
		}
	}

	// Ignored folders: reported themselves, never their contents.
	os.WriteFile(p("node_modules/pkg/i.js"), nil, 0o644)
	os.MkdirAll(p("x.tmpdir/sub"), 0o755)
	os.WriteFile(p("x.tmpdir/sub/f"), nil, 0o644)
	// Temporary upload files: never; their rename onto a name: yes.
	tmp := p(proto.TempPrefix + "69000000abcdef01-up")
	os.WriteFile(tmp, []byte("data"), 0o644)
	os.Rename(tmp, p("up"))
	got = w.expect("ignored and temporary", "D x.tmpdir", "C up")
	got = append(got, w.quiet(200*time.Millisecond)...)
	for _, r := range got {
		if strings.Contains(r, "node_modules/") || strings.Contains(r, "x.tmpdir/") || strings.Contains(r, proto.TempPrefix) {
			t.Errorf("reported %q", r)
		}
	}

	os.Remove(p("a"))
	os.RemoveAll(p("n"))
	w.expect("delete", "G a", "G n/m/k/f", "H n/m/k", "H n/m", "H n")

	w.stdin.Close()
	select {
	case err := <-w.done:
		w.done <- err
		if !errors.Is(err, errWatcherStdinClosed) {
			t.Errorf("at stdin EOF: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watcher still running 2s after stdin EOF")
	}
}

func TestWatcherHeartbeatTimeout(t *testing.T) {
	w := startWatcher(t, watcherConfig{Idle: 300 * time.Millisecond})
	w.expect("start", "S ")
	for i := 0; i < 5; i++ {
		time.Sleep(100 * time.Millisecond)
		w.stdin.Write([]byte{'\n'})
	}
	select {
	case err := <-w.done:
		t.Fatalf("exited despite heartbeats: %v", err)
	default:
	}
	last := time.Now()
	select {
	case err := <-w.done:
		w.done <- err
		if !errors.Is(err, errWatcherNoHeartbeat) {
			t.Errorf("got %v, want errWatcherNoHeartbeat", err)
		}
		if d := time.Since(last); d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("exited %v after the last heartbeat, want about 300ms", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("watcher ignores the heartbeat timeout")
	}
}

// The root removed: an overflow, then an error record, then exit.
func TestWatcherRootGone(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	os.Mkdir(root, 0o755)
	w := startWatcher(t, watcherConfig{Root: root})
	w.expect("start", "S ")
	os.Remove(root)
	w.expect("root gone", "X root removed or moved", "E "+errWatcherRootGone.Error())
	if err := <-w.done; !errors.Is(err, errWatcherRootGone) {
		t.Errorf("got %v", err)
	}
	w.done <- nil
}

func TestWatcherMissingRoot(t *testing.T) {
	w := startWatcher(t, watcherConfig{Root: filepath.Join(t.TempDir(), "nope")})
	got := w.expect("error", "E stat "+w.root+": no such file or directory")
	if len(got) != 1 {
		t.Errorf("records %q", got)
	}
}

// The watch limit: an overflow and an L record, then exit, whether it
// is hit at the start or later.
func TestWatcherLimit(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	w := startWatcher(t, watcherConfig{Root: root, maxWatches: 2})
	w.expect("limit at start", "X ", "L "+errWatcherLimit.Error())
	if err := <-w.done; !errors.Is(err, errWatcherLimit) {
		t.Errorf("got %v", err)
	}
	w.done <- nil

	w = startWatcher(t, watcherConfig{Root: root, maxWatches: 4})
	w.expect("start", "S ")
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	w.expect("limit later", "D d", "X ", "L "+errWatcherLimit.Error())
	if err := <-w.done; !errors.Is(err, errWatcherLimit) {
		t.Errorf("got %v", err)
	}
	w.done <- nil
}

func TestWatchUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"a", "b"}, {"--heartbeat-timeout", "0s", "x"}, {"--nope", "x"}, {"--ignore", "[", "x"}} {
		if err := Watch(context.Background(), args, strings.NewReader(""), io.Discard); !errors.Is(err, ErrUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
