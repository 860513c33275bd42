package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/testenv"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t      *testing.T
	remote *dirRemote
	dir    string
	clock  *fakeClock
	s      *Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, remote: &dirRemote{root: t.TempDir()}, dir: t.TempDir(),
		clock: &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	e.open()
	return e
}

func (e *env) open() {
	e.t.Helper()
	s, err := Open(Options{Dir: e.dir, Remote: e.remote, Online: func() bool { return !e.remote.offline.Load() },
		Now: e.clock.Now, ConflictLabel: "laptop"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	e.t.Cleanup(func() { s.Close() })
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// crash makes the store start again from what is on disk now, as a mount
// after a kill -9 does: the cache directory is copied as it is (the
// running store is not told), the store closed, and the copy opened.
func (e *env) crash() {
	e.t.Helper()
	crashed := e.copyDir()
	e.s.Close()
	e.dir = crashed
	e.open()
}

// copyDir copies the cache directory as it is on disk now.
func (e *env) copyDir() string {
	e.t.Helper()
	crashed := e.t.TempDir()
	if err := filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(e.dir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(crashed, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(crashed, rel), b, 0o600)
	}); err != nil {
		e.t.Fatal(err)
	}
	return crashed
}

// server writes a file directly on the "server".
func (e *env) server(rel, content string) {
	e.t.Helper()
	testenv.WriteFile(e.t, e.remote.root, rel, content, 0o644)
}

func (e *env) serverContent(rel string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.remote.p(rel))
	if err != nil {
		e.t.Fatalf("server %s: %v", rel, err)
	}
	return string(b)
}

// lookup resolves a slash path through the store.
func (e *env) lookup(p string) (Attr, error) {
	a := Attr{Ino: RootIno}
	for _, name := range strings.Split(p, "/") {
		var err error
		a, err = e.s.Lookup(context.Background(), a.Ino, name)
		if err != nil {
			return a, err
		}
	}
	return a, nil
}

func (e *env) mustLookup(p string) Attr {
	e.t.Helper()
	a, err := e.lookup(p)
	if err != nil {
		e.t.Fatalf("lookup %s: %v", p, err)
	}
	return a
}

func (e *env) read(p string) (string, error) {
	a, err := e.lookup(p)
	if err != nil {
		return "", err
	}
	h, err := e.s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer h.Release()
	b, err := io.ReadAll(io.NewSectionReader(h, 0, 1<<30))
	return string(b), err
}

func (e *env) mustRead(p string) string {
	e.t.Helper()
	s, err := e.read(p)
	if err != nil {
		e.t.Fatalf("read %s: %v", p, err)
	}
	return s
}

// write creates or truncates p (parent must exist) and writes content, like
// open(O_CREAT|O_TRUNC)+write+close.
func (e *env) write(p, content string) error {
	dir, name := filepath.Split(p)
	parent := Attr{Ino: RootIno}
	if dir != "" {
		var err error
		if parent, err = e.lookup(strings.TrimSuffix(dir, "/")); err != nil {
			return err
		}
	}
	_, h, err := e.s.Create(context.Background(), parent.Ino, name, 0o644, os.O_RDWR|os.O_TRUNC, false)
	if err != nil {
		return err
	}
	if _, err := h.WriteAt([]byte(content), 0); err != nil {
		return err
	}
	return h.Release()
}

func (e *env) mustWrite(p, content string) {
	e.t.Helper()
	if err := e.write(p, content); err != nil {
		e.t.Fatalf("write %s: %v", p, err)
	}
}

func (e *env) flush() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.s.Flush(ctx); err != nil {
		e.t.Fatalf("flush: %v", err)
	}
}

func noTempFiles(t *testing.T, root string) {
	t.Helper()
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), conn.TempPrefix) {
			t.Errorf("temporary file left on the server: %s", p)
		}
		return nil
	})
}

func TestReadThroughAndOffline(t *testing.T) {
	e := newEnv(t)
	e.server("src/a.py", "print('a')\n")
	e.server("src/b.py", "print('b')\n")
	if got := e.mustRead("src/a.py"); got != "print('a')\n" {
		t.Fatalf("read = %q", got)
	}
	ents, err := e.s.ReadDir(context.Background(), e.mustLookup("src").Ino)
	if err != nil || len(ents) != 2 || ents[0].Name != "a.py" || ents[1].Name != "b.py" {
		t.Fatalf("readdir = %v, %v", ents, err)
	}

	e.remote.offline.Store(true)
	if got := e.mustRead("src/a.py"); got != "print('a')\n" {
		t.Fatalf("offline cached read = %q", got)
	}
	if _, err := e.read("src/b.py"); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline uncached read: err = %v, want ErrOffline", err)
	}
	if err := e.write("src/c.py", "x"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("offline create: err = %v, want ErrReadOnly", err)
	}
	a := e.mustLookup("src/a.py")
	if _, err := e.s.Open(context.Background(), a.Ino, os.O_RDWR); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("offline open for write: err = %v", err)
	}
	if err := e.s.Unlink(context.Background(), e.mustLookup("src").Ino, "a.py"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("offline unlink: err = %v", err)
	}

	// The cache survives a restart and is browsable offline.
	e.reopen()
	if got := e.mustRead("src/a.py"); got != "print('a')\n" {
		t.Fatalf("after reopen, offline read = %q", got)
	}
	if _, err := e.lookup("src/b.py"); err != nil {
		t.Fatalf("after reopen, lookup of listed file: %v", err)
	}
}

func TestWriteBackCreateAndEdit(t *testing.T) {
	e := newEnv(t)
	e.server("a.txt", "old")
	e.mustWrite("new.txt", "hello")
	e.mustWrite("a.txt", "new content")
	e.flush()
	if got := e.serverContent("new.txt"); got != "hello" {
		t.Fatalf("server new.txt = %q", got)
	}
	if got := e.serverContent("a.txt"); got != "new content" {
		t.Fatalf("server a.txt = %q", got)
	}
	noTempFiles(t, e.remote.root)
	if st := e.s.Status(); st.Pending != 0 || len(st.Conflicts) != 0 {
		t.Fatalf("status = %+v", st)
	}
}

func TestSafeSaveIsOneUploadOfTheFinalName(t *testing.T) {
	e := newEnv(t)
	e.server("main.py", "v1")
	e.mustRead("main.py")
	e.s.mu.Lock()
	e.s.opts.Uploads = 1 // one upload at a time, so the save queues behind other.txt
	e.s.mu.Unlock()
	// Hold uploads so the whole save is queued before the writer runs.
	e.remote.mu.Lock()
	e.remote.putGate = make(chan struct{})
	gate := e.remote.putGate
	e.remote.mu.Unlock()
	e.mustWrite("other.txt", "x") // occupies the writer
	waitInflight(t, e.s, 1)
	e.mustWrite(".main.py.swp", "v2")
	if err := e.s.Rename(context.Background(), RootIno, ".main.py.swp", RootIno, "main.py"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	e.flush()
	if got := e.serverContent("main.py"); got != "v2" {
		t.Fatalf("server main.py = %q", got)
	}
	if _, err := os.Lstat(e.remote.p(".main.py.swp")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temp name reached the server: %v", err)
	}
	if n := e.remote.puts.Load(); n != 2 {
		t.Fatalf("uploads = %d, want 2 (other.txt and main.py)", n)
	}
	noTempFiles(t, e.remote.root)
}

func TestConflictKeepsBothVersions(t *testing.T) {
	e := newEnv(t)
	e.server("nb.ipynb", "server v1")
	e.mustRead("nb.ipynb")
	a := e.mustLookup("nb.ipynb")
	// The editor has the file open; the server changes it meanwhile.
	e.remote.offline.Store(false)
	h, err := e.s.Open(context.Background(), a.Ino, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	e.server("nb.ipynb", "server v2, longer")
	os.Chtimes(e.remote.p("nb.ipynb"), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if _, err := h.WriteAt([]byte("local edit"), 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if got := e.serverContent("nb.ipynb"); got != "server v2, longer" {
		t.Fatalf("server file was overwritten: %q", got)
	}
	copyName := "nb.ipynb.conflict-laptop-20260102-030405"
	if got := e.serverContent(copyName); got != "local edit" {
		t.Fatalf("conflict copy = %q", got)
	}
	st := e.s.Status()
	if len(st.Conflicts) != 1 || st.Conflicts[0].CopyPath != copyName {
		t.Fatalf("conflicts = %+v", st.Conflicts)
	}
	// The mount shows both.
	if got := e.mustRead(copyName); got != "local edit" {
		t.Fatalf("mount copy = %q", got)
	}
	if got := e.mustRead("nb.ipynb"); got != "server v2, longer" {
		t.Fatalf("mount original = %q", got)
	}
}

// An upload that landed on the server but whose answer was lost (the
// mount was killed, the link dropped) is no conflict for the retry, even
// after a restart and a newer local edit.
func TestUnansweredUploadIsNoConflict(t *testing.T) {
	e := newEnv(t)
	e.server("f.py", "v0")
	e.mustRead("f.py")
	gate := make(chan struct{})
	e.remote.mu.Lock()
	e.remote.landThenFail = gate
	e.remote.mu.Unlock()
	e.mustWrite("f.py", "v1 local")
	deadline := time.Now().Add(5 * time.Second)
	for e.serverContent("f.py") != "v1 local" {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt did not land")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.reopen() // the answer was lost; the journal still holds the upload
	waitInflight(t, e.s, 1)
	e.mustWrite("f.py", "v2, a newer local edit")
	close(gate)
	e.flush()
	if st := e.s.Status(); len(st.Conflicts) != 0 {
		t.Fatalf("the retry called its own landed upload a conflict: %+v", st.Conflicts)
	}
	if got := e.serverContent("f.py"); got != "v2, a newer local edit" {
		t.Fatalf("server has %q", got)
	}
	noTempFiles(t, e.remote.root)
}

// A crash right after an upload was delivered: the next mount knows the
// server has it (the journal entry and the new server version reach disk
// together), so a later edit is no conflict.
func TestDeliveryAndItsEffectSurviveACrash(t *testing.T) {
	e := newEnv(t)
	e.server("f.py", "v0")
	e.mustRead("f.py")
	e.mustWrite("f.py", "v1 local")
	e.flush()
	e.crash()
	if st := e.s.Status(); st.Pending != 0 {
		t.Fatalf("%d changes pending after the crash, want 0", st.Pending)
	}
	e.mustWrite("f.py", "v2, the next edit")
	e.flush()
	if st := e.s.Status(); len(st.Conflicts) != 0 {
		t.Fatalf("the next edit found a conflict with its own delivered upload: %+v", st.Conflicts)
	}
	if got := e.serverContent("f.py"); got != "v2, the next edit" {
		t.Fatalf("server has %q", got)
	}
}

// open(O_TRUNC) without atomic truncation reaches the store as a truncate,
// then the open, the write and the close: that is one upload, of the new
// content, not an empty file first.
func TestTruncateThenWriteIsOneUpload(t *testing.T) {
	e := newEnv(t)
	e.server("f.py", "v0 on the server")
	e.mustRead("f.py")
	a := e.mustLookup("f.py")
	// A settle time no slow test machine outlasts between the calls below.
	defer func(d time.Duration) { settleDelay = d }(settleDelay)
	settleDelay = 500 * time.Millisecond
	before := e.remote.puts.Load()
	zero := int64(0)
	if _, err := e.s.SetAttr(context.Background(), a.Ino, nil, &zero, nil, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // as between the kernel's truncate and its open
	h, err := e.s.Open(context.Background(), a.Ino, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("v1 saved"), 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if got := e.serverContent("f.py"); got != "v1 saved" {
		t.Fatalf("server has %q", got)
	}
	if n := e.remote.puts.Load() - before; n != 1 {
		t.Errorf("%d uploads for one save, want 1", n)
	}
}

// A "safe save" (new temporary file, write, fsync, close, rename over the
// file) is one upload to the final name: the server never sees the
// temporary name.
func TestSafeSaveIsOneUpload(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.server("f.py", "v0 on the server")
	e.mustRead("f.py")
	defer func(d time.Duration) { settleDelay = d }(settleDelay)
	settleDelay = 500 * time.Millisecond
	before := e.remote.puts.Load()
	a, h, err := e.s.Create(ctx, RootIno, ".f.py.swp", 0o644, os.O_RDWR, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("v1 saved safely"), 0); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Fsync(a.Ino); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // as between the editor's fsync and close
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Rename(ctx, RootIno, ".f.py.swp", RootIno, "f.py"); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if got := e.serverContent("f.py"); got != "v1 saved safely" {
		t.Fatalf("server has %q", got)
	}
	if n := e.remote.puts.Load() - before; n != 1 {
		t.Errorf("%d uploads for one save, want 1", n)
	}
	if n := e.remote.renames.Load(); n != 0 {
		t.Errorf("the temporary name reached the server (%d renames there)", n)
	}
	if st := e.s.Status(); len(st.Conflicts) != 0 {
		t.Errorf("conflicts: %+v", st.Conflicts)
	}
}

// A new file renamed over a file whose upload is in flight, then renamed
// again, before its own upload started: the replaced file must not stay on
// the server under the middle name.
func TestRenameChainOverAnUploadInFlight(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Mkdir(ctx, RootIno, "dir", 0o755); err != nil {
		t.Fatal(err)
	}
	e.flush()
	gate := make(chan struct{})
	e.remote.mu.Lock()
	e.remote.putGate = gate
	e.remote.mu.Unlock()
	defer func(d time.Duration) { settleDelay = d }(settleDelay)
	settleDelay = 0
	e.mustWrite("a", "first file")
	waitInflight(t, e.s, 1)
	settleDelay = 500 * time.Millisecond // d's upload has not started when it is renamed
	e.mustWrite("d", "second file, the one that must survive")
	if err := e.s.Rename(ctx, RootIno, "d", RootIno, "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Rename(ctx, RootIno, "a", e.mustLookup("dir").Ino, "c"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	e.flush()
	if _, err := os.Lstat(e.remote.p("a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the replaced file stayed on the server as a: %v", err)
	}
	if got := e.serverContent("dir/c"); got != "second file, the one that must survive" {
		t.Errorf("server dir/c = %q", got)
	}
	if st := e.s.Status(); len(st.Conflicts) != 0 {
		t.Errorf("conflicts: %+v", st.Conflicts)
	}
	noTempFiles(t, e.remote.root)
}

func TestJournalSurvivesCrashAndKeepsOrder(t *testing.T) {
	e := newEnv(t)
	e.remote.mu.Lock()
	e.remote.putErr = &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	e.remote.mu.Unlock()
	ctx := context.Background()
	e.mustWrite("a.txt", "A")
	if _, err := e.s.Mkdir(ctx, RootIno, "d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Rename(ctx, RootIno, "a.txt", e.mustLookup("d").Ino, "b.txt"); err != nil {
		t.Fatal(err)
	}
	e.mustWrite("gone.txt", "G")
	if err := e.s.Unlink(ctx, RootIno, "gone.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Symlink(ctx, RootIno, "link", "d/b.txt"); err != nil {
		t.Fatal(err)
	}
	// Flush reports the server's reason and keeps the data.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := e.s.Flush(fctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("flush with a full server: err = %v", err)
	}
	// "Crash": close with everything pending, then start again with space.
	e.reopen()
	e.remote.mu.Lock()
	e.remote.putErr = nil
	e.remote.mu.Unlock()
	e.flush()
	if got := e.serverContent("d/b.txt"); got != "A" {
		t.Fatalf("server d/b.txt = %q", got)
	}
	if _, err := os.Lstat(e.remote.p("a.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a.txt should have been renamed away")
	}
	if _, err := os.Lstat(e.remote.p("gone.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("gone.txt should not exist")
	}
	if tgt, err := os.Readlink(e.remote.p("link")); err != nil || tgt != "d/b.txt" {
		t.Fatalf("link = %q, %v", tgt, err)
	}
	noTempFiles(t, e.remote.root)
}

func TestDamagedContentIsRefetched(t *testing.T) {
	e := newEnv(t)
	e.server("data.csv", "1,2,3\n4,5,6\n")
	e.mustRead("data.csv")
	a := e.mustLookup("data.csv")
	if err := os.Truncate(filepath.Join(e.dir, "content", itoa(a.Ino)), 3); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	if got := e.mustRead("data.csv"); got != "1,2,3\n4,5,6\n" {
		t.Fatalf("read after damage = %q", got)
	}
	// Offline, a damaged file is an error, never wrong content.
	os.Truncate(filepath.Join(e.dir, "content", itoa(a.Ino)), 3)
	e.remote.offline.Store(true)
	if got, err := e.read("data.csv"); err == nil {
		t.Fatalf("damaged content served offline: %q", got)
	}
}

func TestOpenRevalidatesAfterTTL(t *testing.T) {
	e := newEnv(t)
	e.server("cfg.yaml", "lr: 1")
	e.mustRead("cfg.yaml")
	e.server("cfg.yaml", "lr: 0.01")
	os.Chtimes(e.remote.p("cfg.yaml"), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	e.clock.Advance(2 * time.Second)
	if got := e.mustRead("cfg.yaml"); got != "lr: 0.01" {
		t.Fatalf("after server change and TTL: %q", got)
	}
}

func TestListingKeepsPendingLocalChanges(t *testing.T) {
	e := newEnv(t)
	e.server("dir/keep.txt", "k")
	e.mustLookup("dir/keep.txt")
	e.remote.mu.Lock()
	e.remote.putErr = errors.New("held")
	e.remote.mu.Unlock()
	e.mustWrite("dir/local.txt", "L")
	if err := e.s.Unlink(context.Background(), e.mustLookup("dir").Ino, "keep.txt"); err != nil {
		t.Fatal(err)
	}
	// A listing from the server (which has keep.txt, not local.txt) must
	// not undo the local changes.
	e.clock.Advance(time.Minute)
	if err := e.s.listDir(context.Background(), e.mustLookup("dir").Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lookup("dir/local.txt"); err != nil {
		t.Fatalf("local file vanished: %v", err)
	}
	if _, err := e.lookup("dir/keep.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted file came back: %v", err)
	}
}

func itoa(i Ino) string { return uitoa(uint64(i)) }

func uitoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}

func TestRelatedOpsWaitUnrelatedRunInParallel(t *testing.T) {
	e := newEnv(t)
	e.remote.mu.Lock()
	gate := make(chan struct{})
	e.remote.putGate = gate
	e.remote.mu.Unlock()
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		e.mustWrite(n, "content of "+n)
	}
	if err := e.s.Rename(ctx, RootIno, "a", RootIno, "a2"); err != nil {
		t.Fatal(err)
	}
	// The three uploads are in flight together; the rename waits for a's.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.s.mu.Lock()
		n := e.s.jr.inflight
		e.s.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %d, want 3 parallel uploads", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(gate)
	e.flush()
	if got := e.serverContent("a2"); got != "content of a" {
		t.Fatalf("a2 = %q", got)
	}
	if _, err := os.Lstat(e.remote.p("a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a still on the server")
	}
}

// git writes .git/config through config.lock + rename, several times in a
// row; the second rename replaces a file whose upload is still in flight.
// That must not be taken for a change on the server.
func TestLockFileRenamesWhileUploadInFlightAreNoConflict(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.remote.mu.Lock()
	gate := make(chan struct{})
	e.remote.putGate = gate
	e.remote.mu.Unlock()
	for i, content := range []string{"[core]\n", "[core]\n\tbare = false\n", "[core]\n\tbare = false\n\tfilemode = true\n"} {
		e.mustWrite("config.lock", content)
		if err := e.s.Rename(ctx, RootIno, "config.lock", RootIno, "config"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			waitInflight(t, e.s, 1) // the first upload is under way
		}
	}
	close(gate)
	e.flush()
	if got := e.serverContent("config"); got != "[core]\n\tbare = false\n\tfilemode = true\n" {
		t.Fatalf("server config = %q", got)
	}
	if st := e.s.Status(); len(st.Conflicts) != 0 {
		t.Fatalf("false conflicts: %+v", st.Conflicts)
	}
	noTempFiles(t, e.remote.root)
	if _, err := os.Lstat(e.remote.p("config.lock")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("config.lock left on the server")
	}
}

func TestEvictionKeepsDirtyAndPinnedContent(t *testing.T) {
	e := newEnv(t)
	e.s.mu.Lock()
	e.s.opts.CacheSize = 100
	e.s.mu.Unlock()
	body := strings.Repeat("x", 40)
	for _, n := range []string{"keep/p1", "a1", "a2", "a3", "a4", "a5"} {
		e.server(n, body)
	}
	os.WriteFile(filepath.Join(e.dir, PinnedFile), []byte("keep\n"), 0o600)
	// A dirty file that cannot be uploaded yet.
	e.remote.mu.Lock()
	e.remote.putErr = errors.New("server says no")
	e.remote.mu.Unlock()
	e.mustWrite("dirty.txt", strings.Repeat("d", 60))
	e.mustRead("keep/p1")
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
		e.mustRead(n)
	}
	e.s.mu.Lock()
	total := e.s.recentBytes
	states := map[string]contentState{}
	for _, n := range []string{"dirty.txt", "keep/p1", "a1", "a5"} {
		_, c, _ := e.s.lookupPathLocked(n)
		states[n] = c.content
	}
	e.s.mu.Unlock()
	if states["dirty.txt"] != contentDirty {
		t.Fatalf("dirty content was evicted")
	}
	if states["keep/p1"] == contentNone {
		t.Fatalf("pinned content was evicted")
	}
	if states["a1"] != contentNone {
		t.Fatalf("least recently used clean content was not evicted (total %d)", total)
	}
	if states["a5"] == contentNone {
		t.Fatalf("the most recent file was evicted")
	}
	// Evicted content is fetched again on demand.
	if got := e.mustRead("a1"); got != body {
		t.Fatalf("a1 after eviction = %q", got)
	}
	// And the dirty file still reaches the server when it can.
	e.remote.mu.Lock()
	e.remote.putErr = nil
	e.remote.mu.Unlock()
	e.flush()
	if got := e.serverContent("dirty.txt"); got != strings.Repeat("d", 60) {
		t.Fatalf("server dirty.txt = %q", got)
	}
}

func TestStaleTempFilesAreHiddenAndRemoved(t *testing.T) {
	e := newEnv(t)
	old := fmt.Sprintf("%s%08x%s-main.py", conn.TempPrefix, uint32(time.Now().Add(-2*time.Hour).Unix()), "abcdef01")
	fresh := conn.TempName("other.py")
	e.server(old, "half")
	e.server(fresh, "in flight elsewhere")
	e.server("main.py", "ok")
	ents, err := e.s.ReadDir(context.Background(), RootIno)
	if err != nil || len(ents) != 1 || ents[0].Name != "main.py" {
		t.Fatalf("listing = %v, %v; want only main.py", ents, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errOld := os.Lstat(e.remote.p(old))
		if errors.Is(errOld, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stale temporary file was not removed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Lstat(e.remote.p(fresh)); err != nil {
		t.Fatalf("a fresh temporary file (another upload in flight) was removed: %v", err)
	}
}

func TestPreloadFillsTheMirror(t *testing.T) {
	for _, bulk := range []bool{true, false} {
		t.Run(fmt.Sprintf("bulk=%v", bulk), func(t *testing.T) {
			rem := &dirRemote{root: t.TempDir()}
			var r conn.Remote = rem
			if bulk {
				r = treeRemote{dirRemote: rem}
			}
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir, Remote: r, Online: func() bool { return !rem.offline.Load() }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			e := &env{t: t, remote: rem, dir: dir, s: s, clock: &fakeClock{t: time.Now()}}
			for _, p := range []string{"a/b/c/deep.py", "a/b/x.py", "a/y.py", "top.txt", "node_modules/pkg/index.js", "z/empty/.keep"} {
				e.server(p, "content of "+p)
			}
			os.Symlink("a/y.py", rem.p("link"))
			// A local change not yet on the server must survive the preload.
			rem.mu.Lock()
			rem.putErr = errors.New("held")
			rem.mu.Unlock()
			e.mustWrite("local-only.txt", "mine")

			st, err := s.Preload(context.Background(), []string{"node_modules"})
			if err != nil {
				t.Fatal(err)
			}
			if st.Bulk != bulk || st.Entries < 10 {
				t.Fatalf("stats = %+v", st)
			}
			// Everything is answerable without the server.
			rem.offline.Store(true)
			for _, p := range []string{"a/b/c/deep.py", "a/b/x.py", "a/y.py", "top.txt", "z/empty/.keep", "link", "local-only.txt", "node_modules"} {
				if _, err := e.lookup(p); err != nil {
					t.Errorf("lookup %s offline after preload: %v", p, err)
				}
			}
			if _, err := e.lookup("node_modules/pkg"); !errors.Is(err, ErrOffline) {
				t.Errorf("pruned folder was listed: %v", err)
			}
			if tgt, err := s.Readlink(context.Background(), e.mustLookup("link").Ino); err != nil || tgt != "a/y.py" {
				t.Errorf("readlink = %q, %v", tgt, err)
			}
			ents, _ := s.ReadDir(context.Background(), e.mustLookup("a/b").Ino)
			if len(ents) != 2 {
				t.Errorf("a/b listing = %v", ents)
			}
		})
	}
}

func TestRemoteChangesUpdateMirrorAndInvalidate(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	var (
		mu   sync.Mutex
		invs []Invalidation
	)
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, OnInvalidate: func(inv Invalidation) {
		mu.Lock()
		invs = append(invs, inv)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s, clock: &fakeClock{t: time.Now()}}
	e.server("results/log.txt", "epoch 1\n")
	e.server("code/train.py", "v1")
	e.server("old.txt", "bye")
	if got := e.mustRead("results/log.txt"); got != "epoch 1\n" {
		t.Fatal(got)
	}
	e.mustLookup("code/train.py")
	e.mustLookup("old.txt")
	resultsIno := e.mustLookup("results").Ino
	logIno := e.mustLookup("results/log.txt").Ino
	ctx := context.Background()

	// The server appends to the log, adds a run folder, deletes a file.
	e.server("results/log.txt", "epoch 1\nepoch 2\n")
	e.server("results/run2/metrics.json", "{}")
	os.Remove(rem.p("old.txt"))
	s.ApplyRemoteChanges(ctx, []RemoteChange{
		{Path: "results/log.txt"}, {Path: "results/run2", Dir: true},
		{Path: "results/run2/metrics.json"}, {Path: "old.txt", Gone: true},
		{Path: conn.TempPrefix + "x"},
	})
	if got := e.mustRead("results/log.txt"); got != "epoch 1\nepoch 2\n" {
		t.Fatalf("log after change = %q", got)
	}
	if got := e.mustRead("results/run2/metrics.json"); got != "{}" {
		t.Fatalf("new file = %q", got)
	}
	if _, err := e.lookup("old.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted file still there: %v", err)
	}
	drainInvalidations(t, s, func() []Invalidation { mu.Lock(); defer mu.Unlock(); return invs })
	mu.Lock()
	var sawData, sawNew, sawGone bool
	for _, inv := range invs {
		sawData = sawData || inv.Ino == logIno
		sawNew = sawNew || (inv.Dir == resultsIno && inv.Name == "run2")
		sawGone = sawGone || (inv.Dir == RootIno && inv.Name == "old.txt")
	}
	n := len(invs)
	mu.Unlock()
	if !sawData || !sawNew || !sawGone {
		t.Fatalf("invalidations %+v: data %v new %v gone %v", invs, sawData, sawNew, sawGone)
	}

	// The mount's own save, echoed back by the feed, changes nothing.
	e.mustWrite("code/train.py", "v2 from the laptop")
	e.flush()
	s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "code/train.py"}, {Path: "code", Dir: true}})
	drainInvalidations(t, s, func() []Invalidation { mu.Lock(); defer mu.Unlock(); return invs })
	mu.Lock()
	echoes := invs[n:]
	for i := range echoes {
		if echoes[i].Name == drainMark {
			echoes = append(echoes[:i:i], echoes[i+1:]...)
			break
		}
	}
	mu.Unlock()
	trainIno := e.mustLookup("code/train.py").Ino
	for _, inv := range echoes {
		// The folder's own mtime changes with the upload's rename; that
		// costs an attribute refresh of the folder, nothing more.
		if inv.Ino == trainIno || inv.Name != "" {
			t.Fatalf("own upload echoed as remote change: %+v", echoes)
		}
	}
	if st := s.Status(); len(st.Conflicts) != 0 {
		t.Fatalf("conflicts from an echo: %+v", st.Conflicts)
	}
}

func TestPrefetchFetchesSmallFilesInBulk(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: treeRemote{dirRemote: rem}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s, clock: &fakeClock{t: time.Now()}}
	e.server(".git/HEAD", "ref: refs/heads/main\n")
	e.server("src/a.py", "print(1)\n")
	e.server("node_modules/x/index.js", "skip me")
	e.server("big.bin", strings.Repeat("b", 300<<10))
	if _, err := s.Preload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// A local edit in progress must not be replaced by prefetched data.
	rem.mu.Lock()
	rem.putErr = errors.New("held")
	rem.mu.Unlock()
	e.server("src/mine.py", "server version")
	s.Preload(context.Background(), nil)
	a := e.mustLookup("src/mine.py")
	h, err := s.Open(context.Background(), a.Ino, os.O_RDWR|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	h.WriteAt([]byte("local"), 0)
	h.Release()

	st, err := s.Prefetch(context.Background(), PrefetchOptions{Skip: []string{"node_modules"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 2 {
		t.Fatalf("prefetched %d files, want 2 (.git/HEAD, src/a.py): %v", st.Files, st)
	}
	rem.offline.Store(true)
	if got := e.mustRead(".git/HEAD"); got != "ref: refs/heads/main\n" {
		t.Fatalf("HEAD = %q", got)
	}
	if got := e.mustRead("src/a.py"); got != "print(1)\n" {
		t.Fatalf("a.py = %q", got)
	}
	if got := e.mustRead("src/mine.py"); got != "local" {
		t.Fatalf("local edit replaced: %q", got)
	}
	if _, err := e.read("big.bin"); !errors.Is(err, ErrOffline) {
		t.Fatalf("big file was prefetched: %v", err)
	}
	if _, err := e.read("node_modules/x/index.js"); !errors.Is(err, ErrOffline) {
		t.Fatalf("skipped folder was prefetched: %v", err)
	}
}

// A file removed while open keeps working through its handle, like an
// unlinked file on a local disk, and is forgotten at the last close.
func TestRemovedWhileOpen(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.mustWrite("scratch", "0123456789")
	e.flush()
	a := e.mustLookup("scratch")
	h, err := e.s.Open(ctx, a.Ino, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Unlink(ctx, RootIno, "scratch"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("abc"), 0); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	if _, err := e.s.SetAttr(ctx, a.Ino, nil, ptr(int64(5)), nil, nil); err != nil {
		t.Fatalf("ftruncate after unlink: %v", err)
	}
	if at, err := e.s.GetAttr(a.Ino); err != nil || at.Size != 5 {
		t.Fatalf("fstat after unlink: %+v, %v", at, err)
	}
	buf := make([]byte, 10)
	n, _ := h.ReadAt(buf, 0)
	if string(buf[:n]) != "abc34" {
		t.Fatalf("read after unlink = %q", buf[:n])
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	e.flush()
	if _, err := os.Lstat(e.remote.p("scratch")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed file on the server: %v", err)
	}
	if _, err := e.s.GetAttr(a.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("orphan kept after the last close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "content", itoa(a.Ino))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("orphan content kept: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// A large file is cached by ranges as it is read: a read in the middle
// fetches only what it needs; offline, the fetched part stays readable and
// the rest fails; a full read makes it clean.
func TestLargeFilesAreCachedByRanges(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return !rem.offline.Load() }, LargeFile: 4 << 20, ResumeWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	data := make([]byte, 10<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i/blockSize)
	}
	os.WriteFile(rem.p("big.bin"), data, 0o644)
	a := e.mustLookup("big.bin")
	h, err := s.Open(context.Background(), a.Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	off := int64(5<<20 + 17)
	if n, err := h.ReadAt(buf, off); err != nil || n != len(buf) || string(buf) != string(data[off:off+1000]) {
		t.Fatalf("middle read: %d, %v", n, err)
	}
	st := s.Status()
	if st.CacheBytes > 2*blockSize {
		t.Fatalf("a 1000-byte read cached %d bytes", st.CacheBytes)
	}
	rem.offline.Store(true)
	if _, err := h.ReadAt(buf, off); err != nil {
		t.Fatalf("offline read of a fetched block: %v", err)
	}
	if _, err := h.ReadAt(buf, 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline read of a missing block: %v", err)
	}
	rem.offline.Store(false)
	all := make([]byte, len(data)+10)
	n, _ := h.ReadAt(all, 0)
	if n != len(data) || string(all[:n]) != string(data) {
		t.Fatalf("full read: %d bytes, equal %v", n, string(all[:n]) == string(data))
	}
	h.Release()
	s.mu.Lock()
	state := s.entries[a.Ino].content
	s.mu.Unlock()
	if state != contentClean {
		t.Fatalf("after reading every block the file is %v, want clean", state)
	}
	// Writing needs the whole file; it is there, and the edit goes up.
	h, err = s.Open(context.Background(), a.Ino, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	h.WriteAt([]byte("HEAD"), 0)
	h.Release()
	e.flush()
	got, _ := os.ReadFile(rem.p("big.bin"))
	if string(got[:4]) != "HEAD" || string(got[4:]) != string(data[4:]) {
		t.Fatal("uploaded large file differs")
	}
}

// With a live change feed, opens trust the mirror (no round trip), except
// under folders the feed does not watch; without it, opens re-check.
func TestChangeFeedReplacesOpenRechecks(t *testing.T) {
	e := newEnv(t)
	e.server("src/a.py", "v1")
	e.server("node_modules/m/i.js", "v1")
	e.server("pkg.egg-info/PKG-INFO", "v1") // under a glob pattern: not watched either
	e.s.SetChangeFeed(true, []string{"node_modules", "*.egg-info"})
	e.clock.Advance(time.Second)
	if _, err := e.s.Preload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	e.mustRead("src/a.py")
	e.mustRead("node_modules/m/i.js")
	e.mustRead("pkg.egg-info/PKG-INFO")
	// Changed on the server; the feed would report it, so an open that
	// trusts the feed still sees the old version, with no server call.
	e.server("src/a.py", "v2!")
	e.server("node_modules/m/i.js", "v2!")
	e.server("pkg.egg-info/PKG-INFO", "v2!")
	e.clock.Advance(time.Minute)
	if got := e.mustRead("src/a.py"); got != "v1" {
		t.Fatalf("fed file re-checked on open: %q", got)
	}
	if got := e.mustRead("node_modules/m/i.js"); got != "v2!" {
		t.Fatalf("file in an unwatched folder not re-checked: %q", got)
	}
	if got := e.mustRead("pkg.egg-info/PKG-INFO"); got != "v2!" {
		t.Fatalf("file in a folder matched by an ignore glob not re-checked: %q", got)
	}
	e.s.SetChangeFeed(false, nil)
	if got := e.mustRead("src/a.py"); got != "v2!" {
		t.Fatalf("without the feed, open did not re-check: %q", got)
	}
}

// Server folders: re-checked on every open even with a live change feed,
// and never prefetched.
func TestServerFolders(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	clock := &fakeClock{t: time.Now()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: treeRemote{dirRemote: rem}, Now: clock.Now, ServerFolders: []string{"results", "exp/notebooks"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s, clock: clock}
	e.server("proj/results/metrics.json", "{1}")
	e.server("proj/results/big.bin", strings.Repeat("r", 100<<10))
	e.server("exp/notebooks/a.ipynb", "{nb}")
	e.server("proj/src/a.py", "code")
	s.Preload(context.Background(), nil)
	st, _ := s.Prefetch(context.Background(), PrefetchOptions{})
	if st.Files != 3 {
		t.Fatalf("prefetched %d files, want a.py and the two small server-folder files (not the 100 KiB one)", st.Files)
	}
	e.mustRead("proj/results/metrics.json")
	e.mustRead("proj/src/a.py")
	e.server("proj/results/metrics.json", "{2}!")
	e.server("proj/src/a.py", "code v2")
	// Within the attribute TTL: only the server folder is re-checked.
	if got := e.mustRead("proj/results/metrics.json"); got != "{2}!" {
		t.Fatalf("server folder file not re-checked on open: %q", got)
	}
	if got := e.mustRead("proj/src/a.py"); got != "code" {
		t.Fatalf("ordinary file re-checked within the TTL: %q", got)
	}
	for p, want := range map[string]bool{"proj/results/x": true, "results/x": true, "exp/notebooks/a": true, "notebooks/a": false, "proj/src/a.py": false, "proj/results": false} {
		if got := matchesFolder(p, []string{"results", "exp/notebooks"}, false); got != want {
			t.Errorf("matchesFolder(%q) = %v, want %v", p, got, want)
		}
	}
}

// A sequential read in progress rides out a short outage; a fresh read of
// content never fetched fails at once.
func TestReadInProgressSurvivesShortOutage(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return !rem.offline.Load() }, LargeFile: 1 << 20, ResumeWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	data := []byte(strings.Repeat("0123456789abcdef", 4<<20/16*3)) // 12 MiB
	os.WriteFile(rem.p("big"), data, 0o644)
	os.WriteFile(rem.p("other"), data, 0o644)
	h, err := s.Open(context.Background(), e.mustLookup("big").Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	other, err := s.Open(context.Background(), e.mustLookup("other").Ino, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	buf := make([]byte, 256<<10)
	if _, err := h.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	rem.offline.Store(true)
	go func() { time.Sleep(600 * time.Millisecond); rem.offline.Store(false) }()
	start := time.Now()
	off := int64(9 << 20) // beyond the readahead window
	n, err := h.ReadAt(buf, off)
	if err != nil || string(buf[:n]) != string(data[off:off+int64(n)]) {
		t.Fatalf("read across the outage: %d, %v", n, err)
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Logf("read did not need to wait (block was prefetched)")
	}
	rem.offline.Store(true)
	start = time.Now()
	if _, err := other.ReadAt(buf, off); !errors.Is(err, ErrOffline) {
		t.Fatalf("first read of an uncached file offline: %v, want ErrOffline", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("first read of an uncached file waited %v", d)
	}
}

// A readdir of a folder the bulk listing is streaming waits for the stream
// instead of listing the folder a second time.
func TestReaddirDuringBulkListingWaitsForIt(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: treeRemote{dirRemote: rem, slow: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	for i := 0; i < 20; i++ {
		e.server(fmt.Sprintf("big/f%02d", i), "x")
	}
	e.server("z/last", "x")
	done := make(chan error, 1)
	go func() { _, err := s.Preload(context.Background(), nil); done <- err }()
	// Wait until the stream has the folder's entry, then read it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		_, big, _ := s.lookupPathLocked("big")
		streaming := big != nil && s.listing[big.ino] != nil
		s.mu.Unlock()
		if streaming {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stream never reached big/")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := rem.readDirs.Load()
	ents, err := s.ReadDir(context.Background(), e.mustLookup("big").Ino)
	if err != nil || len(ents) != 20 {
		t.Fatalf("readdir during the stream: %d entries, %v", len(ents), err)
	}
	if n := rem.readDirs.Load() - before; n != 0 {
		t.Fatalf("the folder was listed %d more time(s) while streaming", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitInflight waits until n journal operations are being applied.
func waitInflight(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := s.jr.inflight
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

const drainMark = "\x00drain"

// drainInvalidations queues a marker behind every invalidation queued so
// far and waits until the callback has seen it: everything before it has
// been delivered.
func drainInvalidations(t *testing.T, s *Store, seen func() []Invalidation) {
	t.Helper()
	s.mu.Lock()
	s.notifyLocked(Invalidation{Name: drainMark})
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, inv := range seen() {
			if inv.Name == drainMark {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("invalidations not delivered")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRemoteChangesRaiseEvents: server changes to what the mount showed
// carry the event the FUSE layer replays for inotify watchers; a first
// listing raises none.
func TestRemoteChangesRaiseEvents(t *testing.T) {
	rec := &invRecorder{}
	e := newEnv(t)
	e.s.Close()
	s, err := Open(Options{Dir: t.TempDir(), Remote: e.remote, OnInvalidate: rec.add})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.s, e.clock = s, &fakeClock{t: time.Now()}
	rem := e.remote
	for _, f := range []string{"code/a.py", "code/b.py", "code/old.txt", "code/keep.txt", "other/x.txt"} {
		e.server(f, "v1")
	}
	code := e.mustLookup("code").Ino
	a, b, old := e.mustLookup("code/a.py"), e.mustLookup("code/b.py"), e.mustLookup("code/old.txt")
	ctx := context.Background()
	events := func() []Invalidation {
		t.Helper()
		drainInvalidations(t, s, rec.all)
		var out []Invalidation
		for _, inv := range rec.take() {
			if inv.Event != EventNone {
				out = append(out, inv)
			}
		}
		return out
	}
	events()

	e.server("code/a.py", "v2, longer")
	os.Chmod(rem.p("code/keep.txt"), 0o600)
	e.server("code/c.py", "new")
	os.Remove(rem.p("code/old.txt"))
	os.Rename(rem.p("code/b.py"), rem.p("code/d.py"))
	e.server("code/run1/m.json", "{}")
	s.ApplyRemoteChanges(ctx, []RemoteChange{
		{Path: "code/a.py"}, {Path: "code/keep.txt"}, {Path: "code/c.py"},
		{Path: "code/old.txt", Gone: true},
		{Path: "code/b.py", Gone: true}, {Path: "code/d.py", From: "code/b.py"},
		{Path: "code/run1", Dir: true}, {Path: "code/run1/m.json"},
	})
	got := events()
	keep := e.mustLookup("code/keep.txt").Ino
	run1 := e.mustLookup("code/run1").Ino
	want := map[string]bool{}
	for _, w := range []string{"modified a.py", "attrib keep.txt", "created c.py", "removed old.txt",
		"renamed b.py d.py", "created run1", "created run1/m.json"} {
		want[w] = false
	}
	for _, inv := range got {
		var k string
		switch {
		case inv.Event == EventModified && inv.Ino == a.Ino && inv.Attr.Size == int64(len("v2, longer")):
			k = "modified a.py"
		case inv.Event == EventAttrib && inv.Ino == keep && inv.Attr.Mode.Perm() == 0o600:
			k = "attrib keep.txt"
		case inv.Event == EventCreated && inv.Dir == code && inv.Name == "c.py" && inv.Attr.Size == 3:
			k = "created c.py"
		case inv.Event == EventRemoved && inv.Dir == code && inv.Name == "old.txt" && inv.Attr.Ino == old.Ino:
			k = "removed old.txt"
		case inv.Event == EventRenamed && inv.Dir == code && inv.Name == "b.py" && inv.ToDir == code && inv.ToName == "d.py" && inv.Ino == b.Ino:
			k = "renamed b.py d.py"
		case inv.Event == EventCreated && inv.Dir == code && inv.Name == "run1" && inv.Attr.Mode.IsDir():
			k = "created run1"
		case inv.Event == EventCreated && inv.Dir == run1 && inv.Name == "m.json":
			k = "created run1/m.json"
		default:
			t.Errorf("unexpected event %v %+v", inv.Event, inv)
			continue
		}
		if want[k] {
			t.Errorf("event %q twice", k)
		}
		want[k] = true
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no event %q in %+v", k, got)
		}
	}
	if d := e.mustLookup("code/d.py"); d.Ino != b.Ino {
		t.Errorf("renamed file has ino %d, was %d", d.Ino, b.Ino)
	}
	if _, err := e.lookup("code/b.py"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old name still there: %v", err)
	}

	// A folder listed for the first time: its files are not news.
	e.mustLookup("other/x.txt")
	// The mount's own save coming back through the feed: no event.
	e.mustWrite("code/a.py", "from the laptop")
	e.flush()
	s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "code/a.py"}, {Path: "code", Dir: true}})
	if got := events(); len(got) != 0 {
		t.Errorf("events for a first listing or the mount's own save: %+v", got)
	}
}

// invRecorder collects the invalidations a store delivers.
type invRecorder struct {
	mu   sync.Mutex
	invs []Invalidation
}

func (r *invRecorder) add(inv Invalidation) {
	r.mu.Lock()
	r.invs = append(r.invs, inv)
	r.mu.Unlock()
}

func (r *invRecorder) all() []Invalidation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Invalidation(nil), r.invs...)
}

// take returns what was collected and forgets it.
func (r *invRecorder) take() []Invalidation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.invs
	r.invs = nil
	return out
}

// A server rewrite that keeps the size within the same second keeps the
// version (size, whole seconds): the feed's report still drops the cached
// content, unless the path is the mount's own recent upload.
func TestSameVersionRewriteFromFeed(t *testing.T) {
	rec := &invRecorder{}
	e := newEnv(t)
	e.s.Close()
	s, err := Open(Options{Dir: t.TempDir(), Remote: e.remote, OnInvalidate: rec.add, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.s = s
	ctx := context.Background()
	e.server("status.txt", "epoch 1")
	fi, _ := os.Stat(e.remote.p("status.txt"))
	if got := e.mustRead("status.txt"); got != "epoch 1" {
		t.Fatal(got)
	}
	e.server("status.txt", "epoch 2")
	os.Chtimes(e.remote.p("status.txt"), fi.ModTime(), fi.ModTime())
	e.clock.Advance(time.Second)
	s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "status.txt"}})
	if got := e.mustRead("status.txt"); got != "epoch 2" {
		t.Fatalf("after a same-size rewrite in the same second the mount reads %q", got)
	}
	drainInvalidations(t, s, rec.all)
	ino := e.mustLookup("status.txt").Ino
	modified := 0
	for _, inv := range rec.take() {
		if inv.Event == EventModified && inv.Ino == ino {
			modified++
		}
	}
	if modified != 1 {
		t.Errorf("%d modified events, want 1", modified)
	}

	// The mount's own save of the same size, reported back by the feed:
	// content kept, no event.
	e.mustWrite("status.txt", "epoch 3")
	e.flush()
	e.clock.Advance(time.Second)
	s.ApplyRemoteChanges(ctx, []RemoteChange{{Path: "status.txt"}})
	drainInvalidations(t, s, rec.all)
	for _, inv := range rec.take() {
		if inv.Ino == ino {
			t.Errorf("own upload taken for a server change: %+v", inv)
		}
	}
	s.mu.Lock()
	content := s.entries[ino].content
	s.mu.Unlock()
	if content != contentClean {
		t.Errorf("own upload's content state %v, want clean", content)
	}
}

// TestOwnRenameEchoAfterNameReused: the mount renames a file into another
// folder and writes a new file under the old name; the feed's report of
// the first rename arrives afterwards. The new file must stay where it is
// (moving it would show its content under the renamed file's name) and
// no rename event may be raised for the kernel to replay.
func TestOwnRenameEchoAfterNameReused(t *testing.T) {
	rec := &invRecorder{}
	e := newEnv(t)
	e.s.Close()
	s, err := Open(Options{Dir: t.TempDir(), Remote: e.remote, OnInvalidate: rec.add, ConflictLabel: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.s = s
	e.server("a/x.py", "the first file")
	e.server("b/keep.txt", "k")
	ax, b := e.mustLookup("a/x.py"), e.mustLookup("b")
	a := e.mustLookup("a")
	e.mustLookup("b/keep.txt")
	if err := s.Rename(context.Background(), a.Ino, "x.py", b.Ino, "x.py"); err != nil {
		t.Fatal(err)
	}
	e.mustWrite("a/x.py", "a new file under the old name, longer")
	e.flush()
	drainInvalidations(t, s, rec.all)
	rec.take()

	s.ApplyRemoteChanges(context.Background(), []RemoteChange{
		{Path: "a/x.py", Gone: true}, {Path: "b/x.py", From: "a/x.py"}, {Path: "a/x.py"},
	})
	drainInvalidations(t, s, rec.all)
	for _, inv := range rec.take() {
		if inv.Event == EventRenamed {
			t.Errorf("the mount's own rename raised a rename event: %+v", inv)
		}
	}
	if got := e.mustRead("b/x.py"); got != "the first file" {
		t.Errorf("b/x.py reads %q, want the renamed file", got)
	}
	if got := e.mustLookup("b/x.py"); got.Ino != ax.Ino {
		t.Errorf("b/x.py has ino %d, want the renamed file's %d", got.Ino, ax.Ino)
	}
	if got := e.mustRead("a/x.py"); got != "a new file under the old name, longer" {
		t.Errorf("a/x.py reads %q", got)
	}
}

// TestRelinkRetryLeavesNoTemporary: making a name a hard link again goes
// through a temporary link renamed over the name; when the link drops
// between the two, the retry removes what the first attempt left.
func TestRelinkRetryLeavesNoTemporary(t *testing.T) {
	e := newEnv(t)
	e.server("d/a.txt", "shared content")
	e.server("d/b.txt", "old copy")
	e.mustLookup("d/a.txt")
	o := &op{Kind: opRelink, Path: "d/a.txt", Path2: "d/b.txt", Seq: 7, At: time.Now().UnixNano()}
	e.remote.dropOnRename.Store(true)
	if err := e.s.applyRelink(context.Background(), o); !errors.Is(err, conn.ErrOffline) {
		t.Fatalf("first attempt: %v, want the link to be gone", err)
	}
	e.remote.offline.Store(false)
	if err := e.s.applyRelink(context.Background(), o); err != nil {
		t.Fatalf("retry: %v", err)
	}
	ents, _ := os.ReadDir(e.remote.p("d"))
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	if len(names) != 2 {
		t.Errorf("server folder holds %v, want only a.txt and b.txt", names)
	}
	a, _ := os.Stat(e.remote.p("d/a.txt"))
	b, _ := os.Stat(e.remote.p("d/b.txt"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("d/b.txt is not a hard link of d/a.txt")
	}
}

// TestPrunedFolderListedWithItsSubtree: the tree listing skips what is in
// node_modules; the first look inside lists its whole subtree in one
// streamed walk, so a walk of it costs no listing round trip per folder.
func TestPrunedFolderListedWithItsSubtree(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: treeRemote{dirRemote: rem}, Online: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	e.server("src/main.py", "x")
	for _, p := range []string{"web/node_modules/react/index.js", "web/node_modules/react/lib/a.js", "web/node_modules/dom/lib/b.js", "web/node_modules/dom/lib/deep/c.js"} {
		e.server(p, p)
	}
	if _, err := s.Preload(context.Background(), []string{"node_modules"}); err != nil {
		t.Fatal(err)
	}
	readDirs := rem.readDirs.Load()
	var walk func(ino Ino, p string) int
	walk = func(ino Ino, p string) int {
		ents, err := s.ReadDir(context.Background(), ino)
		if err != nil {
			t.Fatalf("readdir %s: %v", p, err)
		}
		n := 0
		for _, d := range ents {
			n++
			if d.Mode.IsDir() {
				n += walk(d.Ino, p+"/"+d.Name)
			}
		}
		return n
	}
	nm := e.mustLookup("web/node_modules")
	if n := walk(nm.Ino, "web/node_modules"); n != 9 {
		t.Fatalf("node_modules walk found %d entries, want 9", n)
	}
	if got := e.mustRead("web/node_modules/dom/lib/deep/c.js"); got != "web/node_modules/dom/lib/deep/c.js" {
		t.Fatalf("read %q", got)
	}
	if n := rem.readDirs.Load() - readDirs; n != 0 {
		t.Errorf("%d folder listings for the walk of node_modules, want none (one subtree walk)", n)
	}
	if n := rem.subtreeWalks.Load(); n != 1 {
		t.Errorf("%d subtree walks, want 1", n)
	}
}

// TestPrunedFoldersListedAfterTheTree: right after the tree listing,
// PreloadPruned lists every folder Preload pruned (node_modules, __pycache__), each
// with its whole subtree, in ONE request (conn.SubtreesWalker), so a walk
// after mounting pays no round trip per pruned folder: it makes no
// listing request at all.
func TestPrunedFoldersListedAfterTheTree(t *testing.T) {
	rem := &dirRemote{root: t.TempDir()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: subtreesRemote{treeRemote{dirRemote: rem}}, Online: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s}
	want := map[string]bool{}
	for _, p := range []string{"src/main.py", "src/__pycache__/main.pyc", "src/pkg/__pycache__/a.pyc", "src/pkg/a.py",
		"web/node_modules/react/index.js", "web/node_modules/react/node_modules/dep/d.js", "web/node_modules/dom/lib/deep/c.js",
		"tests/__pycache__/t.pyc", "__pycache__/top.pyc"} {
		e.server(p, p)
		for q := p; q != "."; q = path.Dir(q) {
			want[q] = true
		}
	}
	if err := os.MkdirAll(rem.p("docs/__pycache__"), 0o755); err != nil { // an empty pruned folder
		t.Fatal(err)
	}
	want["docs"], want["docs/__pycache__"] = true, true
	if _, err := s.Preload(context.Background(), []string{"node_modules", "__pycache__"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.PreloadPruned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Pruned != 12 || st.PrunedEntries != 13 {
		t.Errorf("preload: %v; want 13 entries in 12 folders of pruned ones", st)
	}
	if n := rem.subtreesWalks.Load(); n != 1 {
		t.Errorf("%d requests for the pruned folders, want 1", n)
	}
	readDirs := rem.readDirs.Load()
	got := map[string]bool{}
	var walk func(ino Ino, p string)
	walk = func(ino Ino, p string) {
		ents, err := s.ReadDir(context.Background(), ino)
		if err != nil {
			t.Fatalf("readdir %s: %v", p, err)
		}
		for _, d := range ents {
			cp := path.Join(p, d.Name)
			got[cp] = true
			if d.Mode.IsDir() {
				walk(d.Ino, cp)
			}
		}
	}
	walk(RootIno, "")
	if !maps.Equal(got, want) {
		t.Errorf("walk found %v\nwant %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	if n := rem.readDirs.Load() - readDirs; n != 0 {
		t.Errorf("%d folder listings for the walk, want none", n)
	}
	if n := rem.subtreeWalks.Load(); n != 0 {
		t.Errorf("%d subtree walks on first use, want none", n)
	}
	if got := e.mustRead("web/node_modules/react/node_modules/dep/d.js"); got != "web/node_modules/react/node_modules/dep/d.js" {
		t.Fatalf("read %q", got)
	}
}

// TestGlobPrunedFolderNotShownEmpty: an ignore pattern may be a glob
// ("*.egg-info"); the tree listing skips the inside of folders it
// matches, and they must then be listed on first use (or ahead, by
// PreloadPruned), never shown empty.
func TestGlobPrunedFolderNotShownEmpty(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		rem := &dirRemote{root: t.TempDir()}
		var remote conn.Remote = treeRemote{dirRemote: rem}
		if ahead {
			remote = subtreesRemote{treeRemote{dirRemote: rem}}
		}
		s, err := Open(Options{Dir: t.TempDir(), Remote: remote, Online: func() bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, remote: rem, s: s}
		e.server("src/pkg.egg-info/PKG-INFO", "info")
		e.server("src/main.py", "x")
		if _, err := s.Preload(context.Background(), []string{"node_modules", "*.egg-info"}); err != nil {
			t.Fatal(err)
		}
		if ahead {
			if st, err := s.PreloadPruned(context.Background()); err != nil || st.Pruned != 1 || st.PrunedEntries != 1 {
				t.Errorf("pruned listing: %v, %v", st, err)
			}
		}
		d := e.mustLookup("src/pkg.egg-info")
		ents, err := s.ReadDir(context.Background(), d.Ino)
		if err != nil || len(ents) != 1 || ents[0].Name != "PKG-INFO" {
			t.Errorf("ahead %v: src/pkg.egg-info lists %v, %v; want PKG-INFO", ahead, ents, err)
		}
		s.Close()
	}
}

// gatedBatches records the batches of FetchFiles, and holds the first one
// until gate is closed.
type gatedBatches struct {
	treeRemote
	mu      sync.Mutex
	batches [][]string
	started chan struct{} // closed when the first batch is asked for
	gate    chan struct{}
}

func (r *gatedBatches) FetchFiles(ctx context.Context, paths []string, yield func(string, conn.FileInfo, io.Reader) error) error {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(paths))
	first := len(r.batches) == 1
	r.mu.Unlock()
	if first {
		close(r.started)
		<-r.gate
	}
	return r.treeRemote.FetchFiles(ctx, paths, yield)
}

// TestPrefetchGitMetadataFirst: git's metadata (its index and pack
// indexes too, above the small-file limit) and .gitignore files are
// prefetched in a first batch of their own, and an open of one of them
// meanwhile waits for that batch instead of downloading the file itself.
func TestPrefetchGitMetadataFirst(t *testing.T) {
	rem := &gatedBatches{treeRemote: treeRemote{dirRemote: &dirRemote{root: t.TempDir()}}, started: make(chan struct{}), gate: make(chan struct{})}
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem.dirRemote, s: s}
	big := strings.Repeat("x", 300<<10) // above the 256 KiB small-file limit
	e.server(".git/HEAD", "ref: refs/heads/main\n")
	e.server(".git/config", "[core]\n")
	e.server(".git/index", big)
	e.server(".git/objects/pack/p.idx", big)
	e.server(".git/objects/pack/p.pack", big) // in a batch of its own, after the first
	e.server(".gitignore", "*.pyc\n")
	e.server("assets/big.bin", big)
	for i := range 20 {
		e.server(fmt.Sprintf("src/m%02d.py", i), "print(1)\n")
	}
	if _, err := e.s.Preload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan PrefetchStats, 1)
	go func() {
		st, err := e.s.Prefetch(context.Background(), PrefetchOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	<-rem.started
	read := make(chan string, 1)
	go func() { read <- e.mustRead(".git/HEAD") }()
	select {
	case got := <-read:
		t.Fatalf("HEAD read (%q) before the batch that brings it arrived", got)
	case <-time.After(100 * time.Millisecond):
	}
	close(rem.gate)
	if got := <-read; got != "ref: refs/heads/main\n" {
		t.Fatalf("HEAD: %q", got)
	}
	st := <-done
	if n := e.remote.fetches.Load(); n != 0 {
		t.Errorf("%d files downloaded one by one, want none (HEAD waits for the batch)", n)
	}
	first := slices.Sorted(slices.Values(rem.batches[0]))
	want := []string{".git/HEAD", ".git/config", ".git/index", ".git/objects/pack/p.idx", ".gitignore"}
	if !slices.Equal(first, want) {
		t.Errorf("first batch %q, want %q", first, want)
	}
	if len(rem.batches) != 3 || !slices.Equal(rem.batches[1], []string{".git/objects/pack/p.pack"}) || len(rem.batches[2]) != 20 {
		t.Errorf("batches %q, want the git batch, the pack, then the 20 sources", rem.batches)
	}
	if st.Files != 26 {
		t.Errorf("prefetched %v, want 26 files", st)
	}
	if got := e.mustRead(".git/index"); got != big || e.remote.fetches.Load() != 0 {
		t.Errorf("the index was not prefetched (%d single downloads)", e.remote.fetches.Load())
	}
}

// TestPrefetchGitPacksNewestFirst: git's packs below LargeFile are
// prefetched whole in a batch of their own right after git's metadata,
// the newest first, up to 32 MiB: a first git status opens the pack that
// holds HEAD's commit (among the newest) after its stat pass, and waited
// for a download of all of it then (0.6-0.8 s for the 9.6 MiB pack of
// the 30k realistic repository's recent commits). A pack from LargeFile
// up is left to range reads, and the oldest pack beyond the budget to
// its first open.
func TestPrefetchGitPacksNewestFirst(t *testing.T) {
	rem := &gatedBatches{treeRemote: treeRemote{dirRemote: &dirRemote{root: t.TempDir()}}, started: make(chan struct{}), gate: make(chan struct{})}
	close(rem.gate)
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return true }, LargeFile: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem.dirRemote, s: s}
	e.server(".git/HEAD", "ref: refs/heads/main\n")
	e.server("src/a.py", "print(1)\n")
	content := map[string]string{}
	pack := func(name string, size int, age int) {
		p := ".git/objects/pack/" + name + ".pack"
		content[p] = strings.Repeat(name[len(name)-1:], size)
		e.server(p, content[p])
		mt := time.Now().Add(-time.Duration(age) * time.Hour)
		os.Chtimes(rem.p(p), mt, mt)
	}
	pack("pack-huge", 9<<20, 10) // >= LargeFile: by ranges
	for i := range 5 {
		pack(fmt.Sprintf("pack-%d", i), 7<<20, 5-i) // pack-4 the newest
	}
	if _, err := s.Preload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prefetch(context.Background(), PrefetchOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{".git/objects/pack/pack-4.pack", ".git/objects/pack/pack-3.pack", ".git/objects/pack/pack-2.pack", ".git/objects/pack/pack-1.pack"}
	if len(rem.batches) != 3 || !slices.Equal(rem.batches[1], want) {
		t.Fatalf("batches %q; want git's metadata, then %q, then the sources", rem.batches, want)
	}
	for _, p := range want {
		if got := e.mustRead(p); got != content[p] {
			t.Fatalf("%s: %d bytes read, not the server's", p, len(got))
		}
	}
	if n := rem.fetches.Load(); n != 0 {
		t.Errorf("%d whole-file downloads reading the prefetched packs, want none", n)
	}
	for _, p := range []string{".git/objects/pack/pack-0.pack", ".git/objects/pack/pack-huge.pack"} {
		if got := e.mustRead(p); got != content[p] {
			t.Fatalf("%s: %d bytes read, not the server's", p, len(got))
		}
	}
}
