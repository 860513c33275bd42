package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fuseRequests counts the FUSE requests in the daemon's --debug log by
// operation.
func (w *world) fuseRequests() map[string]int {
	out := map[string]int{}
	for _, l := range w.daemonLogLines(`msg="<- `) {
		// Interrupts are the kernel passing on a signal the caller got
		// (the Go runtime preempts its threads with signals).
		if m := fuseOpRE.FindStringSubmatch(l); m != nil && m[1] != "Interrupt" {
			out[m[1]]++
		}
	}
	return out
}

var fuseOpRE = regexp.MustCompile(`msg="<- ([A-Za-z]+) \[`)

// requestsSince is what reached the daemon since before.
func requestsSince(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for op, n := range after {
		if d := n - before[op]; d > 0 {
			out[op] = d
		}
	}
	return out
}

// lstatWalk walks root as the bench's walk and an IDE's indexer do
// (opendir, getdents, lstat of every entry) and returns how many entries
// it saw, root included.
func lstatWalk(t *testing.T, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// skipWithoutDirlessOpen skips when the kernel cannot open folders without
// a request (FUSE_NO_OPENDIR_SUPPORT, Linux 5.1).
func (w *world) skipWithoutDirlessOpen(t *testing.T) {
	t.Helper()
	if len(w.daemonLogLines("folder_opens=")) == 0 {
		t.Fatal("the daemon did not log how the kernel opens folders")
	}
	if !w.daemonLogHas(`folder_opens="without requests"`) {
		if kernelAtLeast(5, 1) {
			t.Fatal("Linux 5.1 and later open folders without a request, but the mount does not use it")
		}
		t.Skip("this kernel sends a request for every folder open")
	}
}

// listNames lists the folder rel of the mount.
func (w *world) listNames(t *testing.T, rel string) []string {
	t.Helper()
	ents, err := os.ReadDir(w.m(rel))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// kernelAtLeast reports whether the running kernel is major.minor or later
// (true when its release cannot be read: a test then fails, not skips).
func kernelAtLeast(major, minor int) bool {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return true // unknown: assume a current kernel (fail rather than skip)
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	var ma, mi int
	if _, err := fmt.Sscanf(b.String(), "%d.%d", &ma, &mi); err != nil {
		return true // unknown: assume a current kernel (fail rather than skip)
	}
	return ma > major || ma == major && mi >= minor
}

// On a warm mount with a live change feed, walking the tree (opendir,
// getdents, lstat of every entry, as the bench's walk and an IDE's
// indexer do) sends no FUSE request at all, and reading every file again
// sends only its open and release: listings, entries, attributes and
// pages stay in the kernel.
func TestWarmWalkSendsNoRequests(t *testing.T) {
	w := newWorld(t)
	var files []string
	for i := range 40 {
		p := fmt.Sprintf("proj/pkg%d/sub%d/mod%d.py", i%5, i%3, i)
		w.writeServer(p, fmt.Sprintf("# module %d\n%s", i, strings.Repeat("y", 100+i*50)), 0o644)
		files = append(files, p)
	}
	w.mount("--debug")
	w.skipWithoutDirlessOpen(t)
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	walk := func() int { t.Helper(); return lstatWalk(t, w.m("proj")) }
	readAll := func() {
		t.Helper()
		for i, p := range files {
			b, err := os.ReadFile(w.m(p))
			if err != nil || !strings.HasPrefix(string(b), fmt.Sprintf("# module %d\n", i)) {
				t.Fatalf("%s: %q, %v", p, b, err)
			}
		}
	}
	settle := func() { time.Sleep(300 * time.Millisecond) } // releases are sent after close returns
	// Warm up: the kernel reads pages once (and asks for attributes once
	// after that: a read marks its atime stale), and lists again the
	// folders listed before the feed started (then confirmed by the
	// listing of the whole tree the feed's start makes).
	var entries int
	eventually(t, 15*time.Second, "a warm walk that sends no request", func() bool {
		walk()
		readAll()
		walk()
		settle()
		before := w.fuseRequests()
		entries = walk()
		return len(requestsSince(before, w.fuseRequests())) == 0
	})
	before := w.fuseRequests()
	readAll()
	// Releases are sent after close returns: wait for all of them.
	var got map[string]int
	eventually(t, 10*time.Second, "a release for every file read", func() bool {
		got = requestsSince(before, w.fuseRequests())
		return got["Release"] >= len(files)
	})
	if got["Open"] != len(files) || got["Release"] != len(files) || len(got) != 2 {
		t.Errorf("reading %d cached files again sent %v, want only an open and a release for each", len(files), got)
	}
	before = w.fuseRequests()
	walk()
	if got := requestsSince(before, w.fuseRequests()); len(got) != 0 {
		t.Errorf("a warm walk of %d entries after reading every file sent FUSE requests %v, want none", entries, got)
	}

	// Still current: a server change shows in the next walk and read.
	w.writeServer("proj/pkg1/new.py", "# new\n", 0o644)
	w.writeServer(files[3], "# module 3, rewritten on the server\n", 0o644)
	eventually(t, 10*time.Second, "the server's new file in a walk", func() bool { return walk() == entries+1 })
	eventually(t, 10*time.Second, "the server's rewrite", func() bool {
		b, _ := os.ReadFile(w.m(files[3]))
		return string(b) == "# module 3, rewritten on the server\n"
	})
}

// When the change feed goes down (here: the link is lost), the kernel
// stops trusting the listings and attributes it was told it may keep
// while the feed was live: the next listing and stat reach the daemon
// again.
func TestFeedLossDropsKernelCaches(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	for _, n := range []string{"a.txt", "b.txt"} {
		w.writeServer("src/"+n, n, 0o644)
	}
	w.mount("--debug")
	w.skipWithoutDirlessOpen(t)
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	look := func() {
		t.Helper()
		ents, err := os.ReadDir(w.m("src"))
		if err != nil || len(ents) != 2 {
			t.Fatalf("listing: %v, %v", ents, err)
		}
		if fi, err := os.Lstat(w.m("src/b.txt")); err != nil || fi.Size() != 5 {
			t.Fatalf("b.txt: %v, %v", fi, err)
		}
	}
	// Once the folder is confirmed under the live feed, the kernel keeps
	// its listing and the file's attributes.
	eventually(t, 10*time.Second, "a listing and stat answered by the kernel alone", func() bool {
		look()
		before := w.fuseRequests()
		look()
		return len(requestsSince(before, w.fuseRequests())) == 0
	})

	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	defer p.Refuse(false)
	p.ResetAll()
	eventually(t, 20*time.Second, "the feed to go down", func() bool { return w.status().Watch != "helper" })
	var got map[string]int
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		before := w.fuseRequests()
		look()
		if got = requestsSince(before, w.fuseRequests()); got["Read"] > 0 && got["Getattr"]+got["Lookup"] > 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("after the feed went down a listing and a stat sent %v, want a folder read and an attribute request", got)
}

// Without a change feed the kernel keeps a listing only briefly (the
// kernel TTL): the next listing after that reaches the cache, which
// refreshes it from the server once older than --dir-ttl, so a server
// change shows within a few seconds, as with a folder open per listing.
func TestListingsRefreshWithoutFeed(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"a.txt", "b.txt"} {
		w.writeServer("src/"+n, n, 0o644)
	}
	w.mount("--debug", "--watch", "off", "--dir-ttl", "1s")
	w.skipWithoutDirlessOpen(t)
	names := func() []string { t.Helper(); return w.listNames(t, "src") }
	if got := names(); !slices.Equal(got, []string{"a.txt", "b.txt"}) {
		t.Fatalf("listing %v", got)
	}
	// Every refresh the listings so far started is over (and the one
	// the next may start): the cache and the kernel hold the same
	// listing, from before the server's change.
	settled := func() {
		t.Helper()
		eventually(t, 10*time.Second, "the listings running to end", func() bool { return w.status().Settling == 0 })
	}
	settled()
	names()
	settled()
	// The folder keeps its mtime (as after rsync -t or tar -x), so
	// nothing but a listing shows the new name.
	dirInfo, err := os.Stat(w.s("src"))
	if err != nil {
		t.Fatal(err)
	}
	w.writeServer("src/c.txt", "new on the server", 0o644)
	w.writeServer("src/b.txt", "b, longer now", 0o644)
	if err := os.Chtimes(w.s("src"), dirInfo.ModTime(), dirInfo.ModTime()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Listings alone (no lookup of a name in the folder, which would
	// refresh it too).
	eventually(t, 8*time.Second, "the server's new file without a feed", func() bool {
		return slices.Equal(names(), []string{"a.txt", "b.txt", "c.txt"})
	})
	eventually(t, 3*time.Second, "the server's rewrite without a feed", func() bool {
		fi, err := os.Lstat(w.m("src/b.txt"))
		return err == nil && fi.Size() == int64(len("b, longer now"))
	})
	t.Logf("server changes showed after %v", time.Since(start).Round(time.Millisecond))
}
