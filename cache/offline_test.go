package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
)

// A store that has been connected accepts changes while offline and
// delivers them on return with the conflict rules; one never connected is
// read-only offline unless OfflineEdits.
func TestOfflineEdits(t *testing.T) {
	e := newEnv(t)
	e.server("src/a.py", "a1\n")
	e.server("src/b.py", "b1\n")
	e.server("src/c.py", "c1\n")
	e.server("src/gone.py", "gone\n")
	e.mustRead("src/a.py")
	e.mustRead("src/c.py")
	e.mustRead("src/gone.py")
	e.s.Connected()

	e.remote.offline.Store(true)
	if err := e.write("src/new.py", "new\n"); err != nil {
		t.Fatalf("create offline after a connection: %v", err)
	}
	// In place, cached: fine.
	h, err := e.s.Open(context.Background(), e.mustLookup("src/c.py").Ino, os.O_RDWR)
	if err != nil {
		t.Fatalf("open cached file for writing offline: %v", err)
	}
	h.WriteAt([]byte("C"), 0)
	h.Release()
	// In place, not cached: ErrOffline, saying why.
	b := e.mustLookup("src/b.py")
	if _, err := e.s.Open(context.Background(), b.Ino, os.O_RDWR); !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "replaced whole") {
		t.Fatalf("open uncached file for writing offline: %v, want ErrOffline saying it can be replaced whole", err)
	}
	// Replaced whole: fine.
	if err := e.write("src/b.py", "b2\n"); err != nil {
		t.Fatalf("replace uncached file offline: %v", err)
	}
	// The server changes a.py meanwhile; the offline edit becomes a copy.
	e.server("src/a.py", "a2 from the server, longer\n")
	if err := e.write("src/a.py", "a2 local\n"); err != nil {
		t.Fatal(err)
	}
	// Deleted offline: gone.py unchanged on the server (deleted there).
	src := e.mustLookup("src")
	if err := e.s.Unlink(context.Background(), src.Ino, "gone.py"); err != nil {
		t.Fatalf("unlink offline: %v", err)
	}
	if st := e.s.Status(); st.Pending == 0 || st.OldestPending == nil {
		t.Fatalf("status offline: %+v", st)
	}

	e.remote.offline.Store(false)
	e.flush()
	for p, want := range map[string]string{"src/new.py": "new\n", "src/c.py": "C1\n", "src/b.py": "b2\n", "src/a.py": "a2 from the server, longer\n"} {
		if got := e.serverContent(p); got != want {
			t.Errorf("server %s = %q, want %q", p, got, want)
		}
	}
	if _, err := os.Lstat(e.remote.p("src/gone.py")); err == nil {
		t.Errorf("src/gone.py still on the server")
	}
	st := e.s.Status()
	if len(st.Conflicts) != 1 || st.Conflicts[0].Path != "src/a.py" {
		t.Fatalf("conflicts = %+v, want one on src/a.py", st.Conflicts)
	}
	if got := e.serverContent(st.Conflicts[0].CopyPath); got != "a2 local\n" {
		t.Errorf("conflict copy = %q", got)
	}

	// A store never connected: read-only offline, unless OfflineEdits.
	e.reopen()
	e.remote.offline.Store(true)
	if err := e.write("src/x.py", "x"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("create offline, never connected: %v, want ErrReadOnly", err)
	}
	e.s.Close()
	s, err := Open(Options{Dir: e.dir, Remote: e.remote, Online: func() bool { return !e.remote.offline.Load() },
		Now: e.clock.Now, ConflictLabel: "laptop", OfflineEdits: true})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	t.Cleanup(func() { s.Close() })
	if err := e.write("src/x.py", "x\n"); err != nil {
		t.Fatalf("create offline with OfflineEdits: %v", err)
	}
	e.remote.offline.Store(false)
	e.flush()
	if got := e.serverContent("src/x.py"); got != "x\n" {
		t.Errorf("server src/x.py = %q", got)
	}
}

// A file the server changed after it was deleted offline is kept, as a
// conflict copy, and what replaced it here still goes through.
func TestOfflineDeleteKeepsServerChange(t *testing.T) {
	e := newEnv(t)
	e.server("f.txt", "one\n")
	e.mustRead("f.txt")
	e.s.Connected()
	e.remote.offline.Store(true)
	if err := e.s.Unlink(context.Background(), RootIno, "f.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Symlink(context.Background(), RootIno, "f.txt", "elsewhere"); err != nil {
		t.Fatal(err)
	}
	e.server("f.txt", "two, changed on the server\n")
	e.remote.offline.Store(false)
	e.flush()
	st := e.s.Status()
	if len(st.Conflicts) != 1 || st.Conflicts[0].Path != "f.txt" {
		t.Fatalf("conflicts = %+v, want one on f.txt", st.Conflicts)
	}
	if got := e.serverContent(st.Conflicts[0].CopyPath); got != "two, changed on the server\n" {
		t.Errorf("copy %s = %q, want the server's change", st.Conflicts[0].CopyPath, got)
	}
	// The mount lists the copy as soon as the flush returns.
	ents, err := e.s.ReadDir(context.Background(), RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ents, func(d DirEntry) bool { return d.Name == st.Conflicts[0].CopyPath }) {
		t.Errorf("the mount's listing lacks the copy %s right after the flush: %+v", st.Conflicts[0].CopyPath, ents)
	}
	if got, err := e.read(st.Conflicts[0].CopyPath); err != nil || got != "two, changed on the server\n" {
		t.Errorf("the mount's %s: %q %v, want the server's change", st.Conflicts[0].CopyPath, got, err)
	}
	if tgt, err := os.Readlink(e.remote.p("f.txt")); err != nil || tgt != "elsewhere" {
		t.Errorf("server f.txt: %q, %v; want the symlink made here", tgt, err)
	}
}

// Each connection starts with the cached listings unconfirmed: a name the
// cache lacks is asked of the server before ErrNotExist.
func TestLookupConfirmsUnknownNames(t *testing.T) {
	e := newEnv(t)
	e.server("d/a", "a")
	e.s.Connected()
	e.mustLookup("d/a")
	e.server("d/b", "b") // the cache's listing of d does not have it
	if _, err := e.lookup("d/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lookup in a folder listed in this connection: %v, want ErrNotExist from the cache", err)
	}
	e.s.Connected() // a reconnect
	if _, err := e.lookup("d/b"); err != nil {
		t.Fatalf("lookup after a reconnect of a name the server made meanwhile: %v", err)
	}
	if _, err := e.lookup("d/c"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lookup of a name nowhere: %v", err)
	}
}

// In a huge folder the one name is looked up rather than the folder
// listed again.
func TestLookupConfirmsInHugeFolder(t *testing.T) {
	e := newEnv(t)
	for i := 0; i <= confirmListMax; i++ {
		e.server(fmt.Sprintf("big/f%05d", i), "")
	}
	e.s.Connected()
	e.mustLookup("big/f00000")
	e.server("big/new", "new")
	e.s.Connected()
	if _, err := e.lookup("big/new"); err != nil {
		t.Fatalf("lookup after a reconnect of a name the server made meanwhile, huge folder: %v", err)
	}
	if _, err := e.lookup("big/nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lookup of a name nowhere: %v", err)
	}
}

// TestNewFolderNeedsNoNameChecks: a folder made through the mount has only
// the names the mount gives it, so looking up a name it lacks (as every
// create in it does) asks the server nothing, even with its mkdir still
// on the way.
func TestNewFolderNeedsNoNameChecks(t *testing.T) {
	e := newEnv(t)
	e.server("src/a.py", "a\n")
	src := e.mustLookup("src")
	e.s.Connected()
	e.mustLookup("src/a.py")
	e.remote.putGate = make(chan struct{}) // keep the journal busy
	defer close(e.remote.putGate)
	e.mustWrite("src/a.py", "held\n")
	// The upload's own look at the server comes before the gate: count
	// from when it waits there.
	eventuallyT(t, "the upload to reach the gate", func() bool { return e.remote.gated.Load() > 0 })
	d, err := e.s.Mkdir(context.Background(), src.Ino, "build", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	before := e.remote.lstats.Load() + e.remote.readDirs.Load()
	for i := 0; i < 5; i++ {
		if _, err := e.s.Lookup(context.Background(), d.Ino, "missing.o"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("lookup: %v", err)
		}
	}
	if n := e.remote.lstats.Load() + e.remote.readDirs.Load() - before; n != 0 {
		t.Errorf("%d server requests for names a new folder lacks, want none", n)
	}
}
