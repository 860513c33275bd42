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

// A save never waits for the server: over a link with a 600 ms round trip,
// write+close returns in far less than one round trip, and the file still
// reaches the server by itself.
func TestSaveDoesNotWaitForTheServer(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	w.writeServer("proj/main.py", "v0\n", 0o644)
	w.mount()
	if _, err := os.ReadFile(w.m("proj/main.py")); err != nil {
		t.Fatal(err)
	}
	// The mount starts the upload helper on the server right away.
	eventually(t, 20*time.Second, "uploads through the server-side helper", func() bool { return w.status().Uploads == "helper" })
	// And the change feed: without it an open re-checks a file whose
	// attributes are older than --attr-ttl (close-to-open), which is one
	// round trip (the kernel opens before it truncates).
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	p.SetLatency(300 * time.Millisecond)
	const rtt = 600 * time.Millisecond
	for i := 1; i <= 5; i++ {
		content := fmt.Sprintf("v%d\n", i)
		start := time.Now()
		if err := os.WriteFile(w.m("proj/main.py"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if took >= rtt/2 {
			t.Errorf("save %d took %v: it waited for the server (round trip %v)", i, took, rtt)
		}
		saved := time.Now()
		eventually(t, 30*time.Second, "the save to reach the server", func() bool {
			b, _ := os.ReadFile(w.s("proj/main.py"))
			return string(b) == content
		})
		onServer := time.Since(saved)
		t.Logf("save %d: close returned after %v; on the server %v after close", i, took.Round(time.Microsecond), onServer.Round(time.Millisecond))
		// One round trip plus the transfer (a few bytes), plus this test's
		// 50ms polling: within two round trips. Plain SFTP takes four.
		if onServer > 2*rtt {
			t.Errorf("save %d reached the server %v after close: more than two round trips (%v)", i, onServer.Round(time.Millisecond), 2*rtt)
		}
	}
	eventually(t, 10*time.Second, "nothing pending", func() bool { return w.status().Pending == 0 })
}
