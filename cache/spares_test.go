package cache

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Create takes a ready spare content file (a rename, not a create), the
// file holds what was written, and no spare outlives the store.
func TestCreateUsesSpareContentFiles(t *testing.T) {
	e := newEnv(t)
	spares := func() []string {
		l, _ := filepath.Glob(filepath.Join(e.dir, "content", ".spare-*"))
		return l
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.s.spares) < spareCount {
		if time.Now().After(deadline) {
			t.Fatalf("%d spares ready after 10s, want %d", len(e.s.spares), spareCount)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := spares()
	if len(before) < spareCount {
		t.Fatalf("%d spare files on disk, want at least %d", len(before), spareCount)
	}
	e.mustWrite("new.txt", "written into a spare")
	ino := e.mustLookup("new.txt").Ino
	b, err := os.ReadFile(e.s.contentPath(ino))
	if err != nil || string(b) != "written into a spare" {
		t.Fatalf("content file: %q, %v", b, err)
	}
	taken := 0
	for _, p := range before {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			taken++
		}
	}
	if taken != 1 {
		t.Fatalf("%d spares taken by one create, want 1", taken)
	}
	e.flush()
	if got := e.serverContent("new.txt"); got != "written into a spare" {
		t.Fatalf("server has %q", got)
	}
	e.reopen()
	e.s.Close()
	if l := spares(); len(l) != 0 {
		t.Fatalf("spares left after Close: %v", l)
	}
}
