package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// A remount with the cache kept shows the server as it is now, not the
// cache: files changed on the server while it was unmounted (another
// size; the same size in another second; the same size within the same
// second), removed or added show at once, to the first git status and to
// reads, although the tree listing of the new mount is still under way
// (a slow login shell and a slow link, as in the benchmark that found
// it). git status is run before anything else on the new mount, and must
// say what git on the server says.
func TestRemountShowsServerChanges(t *testing.T) {
	w := newWorldWith(t, sshdtest.Options{LoginShellDelay: 400 * time.Millisecond})
	p := w.viaProxy()
	p.SetLatency(15 * time.Millisecond)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))

	repo := w.s("repo")
	var files []string
	for i := 0; i < 160; i++ {
		rel := fmt.Sprintf("pkg%d/sub%d/m%03d.py", i%5, i%4, i)
		files = append(files, rel)
		w.writeServer(filepath.Join("repo", rel), strings.Repeat(fmt.Sprintf("value_%d = %d\n", i, rng.Intn(1000)), 1+rng.Intn(40)), 0o644)
		// In the past, with a fraction of a second: not racily clean.
		ts := time.Now().Add(-time.Duration(10+rng.Intn(1000)) * time.Minute).Add(time.Duration(rng.Intn(1e9)))
		if err := os.Chtimes(filepath.Join(repo, rel), ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	w.mustIn(repo, "git", "init", "-q")
	w.mustIn(repo, "git", "add", "-A")
	w.mustIn(repo, "git", "commit", "-q", "-m", "init")

	// First mount: every file read (its content cached), then, once the
	// tree is listed, git status (a git started in a folder of a fresh
	// mount while its listing streams can lose its working directory,
	// which is not what this test is about).
	w.mount()
	for _, rel := range files {
		if _, err := os.ReadFile(w.m(filepath.Join("repo", rel))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the tree listing of the first mount", func() bool { return w.daemonLogHas("tree listed") })
	if out := w.mustIn(w.m("repo"), "git", "status", "--porcelain"); out != "" {
		t.Fatalf("git status on the first mount:\n%s", out)
	}
	w.unmount()

	// The server changes while the mount is away.
	changed := map[string]string{} // rel -> how
	perm := rng.Perm(len(files))
	for k, i := range perm[:80] {
		rel := files[i]
		sp := filepath.Join(repo, rel)
		old, err := os.ReadFile(sp)
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(sp, &st); err != nil {
			t.Fatal(err)
		}
		mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
		var data []byte
		how := []string{"size", "second", "same second", "removed"}[k%4]
		switch how {
		case "size":
			data = append(old, "# appended on the server\n"...)
			mtime = time.Now().Add(-2 * time.Minute)
		case "second":
			data = bytes.ToUpper(old)
			mtime = mtime.Add(7 * time.Second)
		case "same second":
			data = bytes.ToUpper(old)
			mtime = time.Unix(st.Mtim.Sec, (st.Mtim.Nsec+400_000_000)%1_000_000_000)
		case "removed":
			if err := os.Remove(sp); err != nil {
				t.Fatal(err)
			}
			changed[rel] = how
			continue
		}
		if bytes.Equal(data, old) {
			continue // no letters to change case of
		}
		if err := os.WriteFile(sp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(sp, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		changed[rel] = how
	}
	for i := 0; i < 10; i++ {
		rel := fmt.Sprintf("pkg%d/sub%d/added%02d.py", i%5, i%4, i)
		w.writeServer(filepath.Join("repo", rel), "added on the server\n", 0o644)
		changed[rel] = "added"
	}
	// What git on the server says (it also refreshes the server's index,
	// which the mount has cached too).
	want := w.mustIn(repo, "git", "status", "--porcelain", "--untracked-files=all")
	wantLines := strings.Split(strings.Trim(want, "\n"), "\n")
	if len(wantLines) != len(changed) {
		t.Fatalf("git status on the server: %d lines for %d changes:\n%s", len(wantLines), len(changed), want)
	}

	// Remount with the cache kept; git status first.
	w.mount()
	got := w.mustIn(w.m("repo"), "git", "status", "--porcelain", "--untracked-files=all")
	if got != want {
		t.Errorf("first git status after the remount differs from the server's:\n%s", lineDiff(want, got))
	}
	// Every file reads and stats as the server has it.
	var bad []string
	for _, rel := range append(files, slices.Sorted(maps.Keys(changed))...) {
		sp, mp := filepath.Join(repo, rel), w.m(filepath.Join("repo", rel))
		sb, serr := os.ReadFile(sp)
		mb, merr := os.ReadFile(mp)
		if (serr != nil) != (merr != nil) || !bytes.Equal(sb, mb) {
			bad = append(bad, fmt.Sprintf("%s (%s): server %d bytes %v, mount %d bytes %v", rel, changed[rel], len(sb), serr, len(mb), merr))
			continue
		}
		if serr != nil {
			continue
		}
		var s, m syscall.Stat_t
		if syscall.Lstat(sp, &s) != nil || syscall.Lstat(mp, &m) != nil || s.Size != m.Size || s.Mtim != m.Mtim || s.Ino != m.Ino {
			bad = append(bad, fmt.Sprintf("%s (%s): server size %d mtime %d.%09d ino %d, mount size %d mtime %d.%09d ino %d",
				rel, changed[rel], s.Size, s.Mtim.Sec, s.Mtim.Nsec, s.Ino, m.Size, m.Mtim.Sec, m.Mtim.Nsec, m.Ino))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d files differ from the server after the remount:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	t.Logf("%d changes on the server while unmounted; the remount's first git status reported %d lines", len(changed), len(strings.Split(strings.Trim(got, "\n"), "\n")))
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(strings.Trim(s, "\n"), "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "missing: "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "extra:   "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
