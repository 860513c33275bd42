package cache

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDecodeOpRefusesDamage(t *testing.T) {
	good := &op{Seq: 7, Kind: opRename, Path: "a/b", Path2: "c", DestExpect: &expect{Versions: []Version{{Size: 1, Mtime: 2}}}}
	got, err := decodeOp(encodeOp(good))
	if err != nil || got.Seq != 7 || got.Path2 != "c" || !got.DestExpect.allows(Version{1, 2}) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{
		`{"seq":1,"k":"put","p":"../x"}`,
		`{"seq":1,"k":"put","p":"/abs"}`,
		`{"seq":1,"k":"rename","p":"a"}`,
		`{"seq":1,"k":"explode","p":"a"}`,
		`{"seq":1,"k":"mkdir","p":""}`,
		`{"seq":1,"k":"mkdir","p":"a//b"}`,
		`not json`,
	} {
		if o, err := decodeOp([]byte(bad)); err == nil {
			t.Errorf("accepted %s as %+v", bad, o)
		}
	}
}

func FuzzDecodeOp(f *testing.F) {
	f.Add(encodeOp(&op{Seq: 1, Kind: opPut, Path: "src/a.py", Ino: 9}))
	f.Add(encodeOp(&op{Seq: 2, Kind: opRename, Path: "a", Path2: "b/c"}))
	f.Add([]byte(`{"seq":3,"k":"symlink","p":"l","l":"../../etc"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOp(b)
		if err != nil {
			return
		}
		for _, p := range o.paths() {
			if !validRelPath(p) {
				t.Fatalf("decoded op with unsafe path %q", p)
			}
		}
		again, err := decodeOp(encodeOp(o))
		if err != nil || again.Kind != o.Kind || again.Path != o.Path || again.Path2 != o.Path2 {
			t.Fatalf("re-encoding changed the op: %+v -> %+v, %v", o, again, err)
		}
	})
}

// A metadata store that cannot be read is kept aside and rebuilt; the
// mount works (from an empty cache) instead of failing or serving garbage.
func TestBrokenStoreIsRebuilt(t *testing.T) {
	dir := t.TempDir()
	rem := &dirRemote{root: t.TempDir()}
	os.WriteFile(filepath.Join(rem.root, "f.txt"), []byte("server"), 0o644)
	os.MkdirAll(filepath.Join(dir, "content"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "meta.db"), []byte("this is not a bbolt database, just garbage bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A commit log written on top of the damaged store: replayed onto a
	// fresh one, it would queue a change against a tree that is gone.
	w, _, err := openWAL(filepath.Join(dir, walName))
	if err != nil {
		t.Fatal(err)
	}
	b := newWALBatch()
	b.journal[1] = encodeOp(&op{Seq: 1, Kind: opMkdir, Path: "from-the-old-store", Mode: 0o755})
	if err := w.append(b.encode(1)); err != nil {
		t.Fatal(err)
	}
	w.close()
	s, err := Open(Options{Dir: dir, Remote: rem})
	if err != nil {
		t.Fatalf("open over a broken store: %v", err)
	}
	defer s.Close()
	e := &env{t: t, remote: rem, s: s, dir: dir}
	if got := e.mustRead("f.txt"); got != "server" {
		t.Fatalf("read = %q", got)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "meta.db.damaged-*"))
	if len(aside) != 1 {
		t.Fatalf("damaged store not kept aside: %v", aside)
	}
	if logs, _ := filepath.Glob(filepath.Join(dir, walName+".damaged-*")); len(logs) != 1 {
		t.Fatalf("the damaged store's commit log not kept aside with it: %v", logs)
	}
	if st := s.Status(); st.Pending != 0 {
		t.Fatalf("%d changes pending from the damaged store's log", st.Pending)
	}
}

func TestRelatedPaths(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"a", "a", true}, {"", "x/y", true}, {"a", "a/b", true}, {"a/b", "a", true},
		{"a", "ab", false}, {"ab", "a", false}, {"a/b", "a/c", false}, {"a/b", "a/bc/d", false},
		{"a/bc", "a/b", false}, {"a/b/c", "a/b", true},
	} {
		if got := related(c.a, c.b); got != c.want {
			t.Errorf("related(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
