package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// After a day's work on a mount (a walk, every file read, files
// rewritten through the mount, an archive extracted into it and removed
// again), a warm walk and a warm grep send no FUSE request once the
// kernel has what it needs: also for the folders the change feed does
// not watch inside (node_modules, __pycache__), whose listings the kernel
// keeps until the cache would refresh them (DirTTL after it confirmed
// them with the server), not just for the kernel TTL. Once DirTTL has
// passed the next walk reads them again, and a server change inside
// them shows.
func TestWarmWalkAfterWorkSendsNoRequests(t *testing.T) {
	w := newWorld(t)
	var files, pruned []string
	for i := range 24 {
		p := fmt.Sprintf("proj/pkg%d/sub%d/mod%d.py", i%4, i%3, i)
		w.writeServer(p, fmt.Sprintf("# module %d\nimport os   \n%s\n", i, strings.Repeat("x = 1  \n", 20+i)), 0o644)
		files = append(files, p)
		c := fmt.Sprintf("proj/pkg%d/sub%d/__pycache__/mod%d.cpython-312.pyc", i%4, i%3, i)
		w.writeServer(c, strings.Repeat("\x00pyc", 30), 0o644)
		pruned = append(pruned, c)
	}
	for i := range 12 {
		p := fmt.Sprintf("proj/web/node_modules/dep%d/lib/sub/index%d.js", i%3, i)
		w.writeServer(p, fmt.Sprintf("module.exports = %d\n", i), 0o644)
		pruned = append(pruned, p)
	}
	w.writeServer("proj/data/big.bin", strings.Repeat("0123456789abcdef", 1<<16), 0o644) // 1 MiB
	w.mount("--debug", "--dir-ttl", "4s")
	w.skipWithoutDirlessOpen(t)
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })

	walk := func() int { t.Helper(); return lstatWalk(t, w.m("proj")) }
	grep := func() {
		t.Helper()
		out, err := exec.Command("grep", "-r", "-l", "--include=*.py", "import os", w.m("proj")).Output()
		if err != nil {
			t.Fatalf("grep: %v", err)
		}
		if n := strings.Count(string(out), "\n"); n != len(files) {
			t.Fatalf("grep found %d files, want %d", n, len(files))
		}
	}

	// The work: a walk, every file read, every source rewritten through
	// the mount (trailing blanks stripped), an archive extracted into the
	// project and removed again.
	entries := walk()
	grep()
	for _, p := range append(files, pruned...) {
		if _, err := os.ReadFile(w.m(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range files {
		b, err := os.ReadFile(w.m(p))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			out = append(out, strings.TrimRight(l, " "))
		}
		if err := os.WriteFile(w.m(p), []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	arch := filepath.Join(t.TempDir(), "a.tar")
	src := t.TempDir()
	for i := range 10 {
		os.MkdirAll(filepath.Join(src, "vendor", fmt.Sprint(i%2)), 0o755)
		os.WriteFile(filepath.Join(src, "vendor", fmt.Sprint(i%2), fmt.Sprintf("f%d.txt", i)), []byte("vendored"), 0o644)
	}
	if out, err := exec.Command("tar", "-cf", arch, "-C", src, "vendor").CombinedOutput(); err != nil {
		t.Fatalf("tar -c: %v: %s", err, out)
	}
	if out, err := exec.Command("tar", "-xf", arch, "-C", w.m("proj")).CombinedOutput(); err != nil {
		t.Fatalf("tar -x into the mount: %v: %s", err, out)
	}
	if err := os.RemoveAll(w.m("proj/vendor")); err != nil {
		t.Fatal(err)
	}
	w.must(binary, "flush", w.mnt)

	// Warm up: the kernel asks for the attributes of each file it read
	// since (a read marks its atime stale) and reads the folders whose
	// listings the mount's own changes reset.
	settle := func() { time.Sleep(300 * time.Millisecond) } // releases are sent after close returns
	eventually(t, 15*time.Second, "a warm walk and grep that send no request", func() bool {
		walk()
		grep()
		settle()
		before := w.fuseRequests()
		if n := walk(); n != entries {
			t.Fatalf("warm walk saw %d entries, want %d", n, entries)
		}
		return len(requestsSince(before, w.fuseRequests())) == 0
	})

	// Past the kernel TTL (1 s), within DirTTL: the listings of the
	// unwatched folders are still the kernel's.
	time.Sleep(1500 * time.Millisecond)
	before := w.fuseRequests()
	walk()
	if got := requestsSince(before, w.fuseRequests()); len(got) != 0 {
		t.Errorf("a warm walk of %d entries 1.5 s after the last sent FUSE requests %v, want none", entries, got)
	}
	before = w.fuseRequests()
	grep()
	var got map[string]int
	eventually(t, 10*time.Second, "a release for every file grep read", func() bool {
		got = requestsSince(before, w.fuseRequests())
		return got["Release"] >= len(files)
	})
	delete(got, "Statfs") // grep's one statfs(2) of the folder it starts in
	if got["Open"] != len(files) || got["Release"] != len(files) || len(got) != 2 {
		t.Errorf("a warm grep of %d files sent %v, want only an open and a release for each", len(files), got)
	}

	// While the mount is in use (here: a file read every 200 ms) the
	// unwatched folders' listings are confirmed with the server before
	// DirTTL runs out, and the kernel keeps them: a walk after three
	// times DirTTL still sends no request.
	inUse := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if _, err := os.ReadFile(w.m(files[0])); err != nil {
				t.Fatal(err)
			}
		}
	}
	inUse(12 * time.Second)
	before = w.fuseRequests()
	walk()
	if got := requestsSince(before, w.fuseRequests()); len(got) != 0 {
		t.Errorf("a warm walk of %d entries after 12 s of use (DirTTL 4 s) sent FUSE requests %v, want none", entries, got)
	}
	// Also when the use is one long read of a big file (one open, a
	// read every 200 ms: readahead off, so each is a request).
	big, err := os.Open(w.m("proj/data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if err := unix.Fadvise(int(big.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := 0; i < 60; i++ {
		if _, err := big.ReadAt(buf, int64(i)*16384); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	before = w.fuseRequests()
	walk()
	got = requestsSince(before, w.fuseRequests())
	if got["Getattr"] == 1 {
		delete(got, "Getattr") // big.bin's: the kernel marks its atime stale after each read
	}
	if len(got) != 0 {
		t.Errorf("a warm walk of %d entries after 12 s of reading one big file (DirTTL 4 s) sent FUSE requests %v, want none", entries, got)
	}

	// A server change inside them shows: at once while the mount is in
	// use, and at the first walk after DirTTL when it is idle.
	w.writeServer("proj/web/node_modules/dep1/lib/sub/added.js", "// new\n", 0o644)
	eventually(t, 15*time.Second, "the server's new file inside node_modules while in use", func() bool {
		inUse(500 * time.Millisecond)
		return walk() == entries+1
	})
	w.writeServer("proj/pkg2/sub1/__pycache__/added.cpython-312.pyc", "pyc", 0o644)
	eventually(t, 15*time.Second, "the server's new file inside __pycache__ on an idle mount", func() bool {
		time.Sleep(500 * time.Millisecond)
		return walk() == entries+2
	})
}
