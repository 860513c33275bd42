package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// While the change feed is live the kernel keeps folder listings across
// opens (a warm walk reads no folder from the daemon), and every change
// made on the server still shows in the next listing: with inotify
// echoes (which replay the change through the kernel) and without.
func TestListingKeptWhileFeedLive(t *testing.T) {
	for _, flags := range [][]string{nil, {"--no-notify"}} {
		t.Run(strings.Join(append([]string{"mount"}, flags...), " "), func(t *testing.T) {
			listingKeptWhileFeedLive(t, flags)
		})
	}
}

func listingKeptWhileFeedLive(t *testing.T, flags []string) {
	w := newWorld(t)
	for _, n := range []string{"a.txt", "b.txt", "c.txt"} {
		w.writeServer("src/"+n, n, 0o644)
	}
	w.mount(append([]string{"--debug", "--dir-ttl", "100ms"}, flags...)...)
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	names := func() []string { t.Helper(); return w.listNames(t, "src") }
	dirReads := func() int {
		n := 0
		for _, l := range w.daemonLogLines("<- Read [") {
			if strings.Contains(l, " dir=true ") {
				n++
			}
		}
		return n
	}
	// The folder was listed before the feed started: the first listing
	// after it is confirmed with the server, then the kernel keeps it.
	eventually(t, 10*time.Second, "the kernel to keep the confirmed listing", func() bool {
		b := dirReads()
		names()
		return dirReads() == b
	})
	before := dirReads()
	for i := 0; i < 3; i++ {
		if got := names(); !slices.Equal(got, []string{"a.txt", "b.txt", "c.txt"}) {
			t.Fatalf("listing %v", got)
		}
	}
	if n := dirReads() - before; n != 0 {
		t.Errorf("three listings of an unchanged folder sent %d folder reads to the daemon, want 0 (kernel-cached)", n)
	}

	// Files read again: from the kernel's page cache, and a close after
	// a read costs no FLUSH request.
	for i := 0; i < 2; i++ {
		if b, err := os.ReadFile(w.m("src/c.txt")); err != nil || string(b) != "c.txt" {
			t.Fatalf("read c.txt: %q, %v", b, err)
		}
	}
	reads, flushes := len(w.daemonLogLines("<- Read [")), len(w.daemonLogLines("<- Flush ["))
	for i := 0; i < 3; i++ {
		if b, err := os.ReadFile(w.m("src/c.txt")); err != nil || string(b) != "c.txt" {
			t.Fatalf("read c.txt: %q, %v", b, err)
		}
	}
	if n, f := len(w.daemonLogLines("<- Read ["))-reads, len(w.daemonLogLines("<- Flush ["))-flushes; n != 0 || f != 0 {
		t.Errorf("three warm reads of a file sent %d reads and %d flushes to the daemon, want none", n, f)
	}
	// A close after a write still flushes (it reports write errors).
	if err := os.WriteFile(w.m("src/c.txt"), []byte("c, edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := len(w.daemonLogLines("<- Flush [")) - flushes; f == 0 {
		t.Error("closing a written file sent no flush")
	}

	shows := func(what string, want []string) {
		t.Helper()
		eventually(t, 10*time.Second, what, func() bool { return slices.Equal(names(), want) })
	}
	w.writeServer("src/d.txt", "new on the server", 0o644)
	shows("a file made on the server", []string{"a.txt", "b.txt", "c.txt", "d.txt"})
	if err := os.Remove(w.s("src/a.txt")); err != nil {
		t.Fatal(err)
	}
	shows("a file removed on the server", []string{"b.txt", "c.txt", "d.txt"})
	if err := os.Rename(w.s("src/b.txt"), w.s("src/b2.txt")); err != nil {
		t.Fatal(err)
	}
	shows("a file renamed on the server", []string{"b2.txt", "c.txt", "d.txt"})
	if err := os.WriteFile(w.m("src/local.txt"), []byte("made here"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"b2.txt", "c.txt", "d.txt", "local.txt"}) {
		t.Errorf("after a create through the mount: %v", got)
	}
	if !strings.Contains(w.must("ls", w.m("src")), "local.txt") {
		t.Error("ls does not show the file made through the mount")
	}
}
