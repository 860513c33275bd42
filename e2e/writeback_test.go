package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUnmountDeliversBurst saves many files over a slow link and unmounts
// at once: unmount must deliver every save before it returns 0.
func TestUnmountDeliversBurst(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	w.mount()
	p.SetLatency(10 * time.Millisecond) // 20 ms round trips
	const n = 60
	start := time.Now()
	for i := 0; i < n; i++ {
		name := w.m(fmt.Sprintf("f%02d.txt", i))
		if err := os.WriteFile(name, []byte(fmt.Sprintf("save %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	saving := time.Since(start)
	st := w.status()
	t.Logf("%d saves took %v; pending right after: %d", n, saving, st.Pending)
	w.unmount()
	for i := 0; i < n; i++ {
		b, err := os.ReadFile(w.s(fmt.Sprintf("f%02d.txt", i)))
		if err != nil || string(b) != fmt.Sprintf("save %d\n", i) {
			t.Errorf("f%02d.txt on the server: %q, %v", i, b, err)
		}
	}
	noTempFiles(t, w.root)
	if ents, _ := os.ReadDir(w.root); len(ents) != n {
		t.Errorf("server has %d entries, want %d", len(ents), n)
	}
	_ = filepath.Join
}
