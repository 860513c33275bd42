package e2e

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// git trusts its index when each file's stat data (inode, ctime, mtime
// with nanoseconds, size, owner) is what it recorded. An index written on
// the server, or through an earlier mount, must match what the mount
// shows, so that a first `git status` reads no file's content. Checked
// with strace: git opens a tracked file only to hash it.
func TestGitStatusTrustsIndex(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace is needed (scripts/install-deps.sh installs it)")
	}
	w := newWorld(t)
	repo := w.s("repo")
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewSource(seed))
	var files []string
	for i := 0; i < 60; i++ {
		rel := fmt.Sprintf("d%d/sub%d/f%02d.txt", i%4, i%3, i)
		files = append(files, rel)
		w.writeServer(filepath.Join("repo", rel), strings.Repeat(fmt.Sprintf("line %d\n", i), 1+rng.Intn(200)), 0o644)
	}
	// Times in the past with a fraction of a second, so no entry is
	// "racily clean" (as new as the index, which git would re-read).
	for _, rel := range files {
		ts := time.Now().Add(-time.Duration(1+rng.Intn(1000)) * time.Minute).Add(time.Duration(rng.Intn(1e9)))
		if err := os.Chtimes(filepath.Join(repo, rel), ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	w.mustIn(repo, "git", "init", "-q")
	w.mustIn(repo, "git", "add", "-A")
	w.mustIn(repo, "git", "commit", "-q", "-m", "init")
	w.mustIn(repo, "git", "status", "--porcelain")

	w.mount()
	// The stat data git compares, as the server has it.
	for _, rel := range files[:5] {
		w.sameStat(filepath.Join("repo", rel))
	}
	w.gitStatusReadsNothing("fresh mount, index written on the server")
	w.unmount()
	w.mount()
	w.gitStatusReadsNothing("remount")

	// An index written through the mount: new and changed files, saved
	// and delivered, then added and committed through the mount.
	mrepo := w.m("repo")
	// Uploads over plain SFTP learn no inode or ctime (the next listing
	// brings them): the helper's reply is what is tested here.
	eventually(t, 20*time.Second, "uploads through the helper", func() bool { return w.status().Uploads == "helper" })
	for i := 0; i < 10; i++ {
		rel := fmt.Sprintf("new/n%02d.txt", i)
		files = append(files, rel)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mrepo, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mrepo, rel), []byte(strings.Repeat("new\n", 1+rng.Intn(100))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(mrepo, files[0]), []byte("changed through the mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Committed a moment later, as people do: files as new as the index
	// would be "racily clean" and re-read by any git.
	time.Sleep(1100 * time.Millisecond)
	w.must(binary, "flush", w.mnt)
	for _, rel := range []string{files[0], files[len(files)-1]} {
		w.sameStat(filepath.Join("repo", rel))
	}
	w.mustIn(mrepo, "git", "add", "-A")
	w.mustIn(mrepo, "git", "commit", "-q", "-m", "through the mount")
	w.must(binary, "flush", w.mnt)
	w.gitStatusReadsNothing("after a commit through the mount")
	w.unmount()
	w.mount()
	for _, rel := range []string{files[0], files[len(files)-1]} {
		w.sameStat(filepath.Join("repo", rel))
	}
	w.gitStatusReadsNothing("remount after a commit through the mount")
	// And git on the server agrees with what the mount wrote.
	if out := w.mustIn(repo, "git", "status", "--porcelain"); out != "" {
		t.Errorf("git status on the server after the mount's commit:\n%s", out)
	}

	// A change committed on the server while mounted: once the feed has
	// reported it, the mount shows the server's stat data for the file
	// (not only SFTP's whole seconds), and git on the mount trusts the
	// index the server's git wrote.
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	changed := files[1]
	w.writeServer(filepath.Join("repo", changed), "changed on the server, a longer line\n", 0o644)
	time.Sleep(1100 * time.Millisecond) // not racily clean in the server's index
	w.mustIn(repo, "git", "commit", "-q", "-a", "-m", "on the server")
	eventually(t, 20*time.Second, "the server's index and the file's stat data on the mount", func() bool {
		si, err1 := os.ReadFile(filepath.Join(repo, ".git/index"))
		mi, err2 := os.ReadFile(filepath.Join(mrepo, ".git/index"))
		if err1 != nil || err2 != nil || string(si) != string(mi) {
			return false
		}
		var s, m syscall.Stat_t
		return syscall.Lstat(w.s(filepath.Join("repo", changed)), &s) == nil && syscall.Lstat(w.m(filepath.Join("repo", changed)), &m) == nil &&
			s.Ino == m.Ino && s.Ctim == m.Ctim && s.Mtim == m.Mtim && s.Size == m.Size
	})
	w.gitStatusReadsNothing("after a commit on the server while mounted")
}

// sameStat fails the test unless the mount shows rel with the server's
// inode number, ctime and mtime (with nanoseconds), size and owner.
func (w *world) sameStat(rel string) {
	w.t.Helper()
	var s, m syscall.Stat_t
	if err := syscall.Lstat(w.s(rel), &s); err != nil {
		w.t.Fatal(err)
	}
	if err := syscall.Lstat(w.m(rel), &m); err != nil {
		w.t.Fatal(err)
	}
	if s.Ino != m.Ino || s.Ctim != m.Ctim || s.Mtim != m.Mtim || s.Size != m.Size || s.Uid != m.Uid || s.Gid != m.Gid {
		w.t.Errorf("%s: server ino %d ctime %d.%09d mtime %d.%09d size %d owner %d:%d; mount ino %d ctime %d.%09d mtime %d.%09d size %d owner %d:%d",
			rel, s.Ino, s.Ctim.Sec, s.Ctim.Nsec, s.Mtim.Sec, s.Mtim.Nsec, s.Size, s.Uid, s.Gid,
			m.Ino, m.Ctim.Sec, m.Ctim.Nsec, m.Mtim.Sec, m.Mtim.Nsec, m.Size, m.Uid, m.Gid)
	}
}

// gitStatusReadsNothing runs git status in the mount's repo under strace
// and fails the test unless the tree is clean and git opened no file of
// the work tree (it opens one only to hash its content).
func (w *world) gitStatusReadsNothing(when string) {
	w.t.Helper()
	trace := filepath.Join(w.t.TempDir(), "strace")
	out := w.mustIn(w.m("repo"), "strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", trace,
		"git", "status", "--porcelain")
	if out != "" {
		w.t.Errorf("%s: git status shows changes:\n%s", when, out)
	}
	f, err := os.Open(trace)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	var read []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// pid openat(AT_FDCWD, "path", FLAGS) = FD
		q := strings.IndexByte(line, '"')
		if q < 0 || strings.Contains(line, "O_DIRECTORY") || strings.Contains(line, "= -1 ") {
			continue
		}
		end := strings.IndexByte(line[q+1:], '"')
		if end < 0 {
			continue
		}
		p := line[q+1 : q+1+end]
		if strings.HasPrefix(p, "/") {
			rel, err := filepath.Rel(w.m("repo"), p)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // outside the work tree: git's own files, libraries
			}
			p = rel
		}
		if p == ".git" || strings.HasPrefix(p, ".git/") || p == "." {
			continue
		}
		read = append(read, p)
	}
	if err := sc.Err(); err != nil {
		w.t.Fatal(err)
	}
	if len(read) > 0 {
		w.t.Errorf("%s: git status opened %d work-tree files (stat data did not match its index): %v", when, len(read), read)
	} else {
		w.t.Logf("%s: git status opened no work-tree file", when)
	}
}

// touch, then an edit: the mount's own touch is no server change, so the
// edit lands on the file (no conflict copy), and touch -d keeps the time.
func TestTouchThenEdit(t *testing.T) {
	w := newWorld(t)
	w.writeServer("notes.txt", "one\n", 0o644)
	w.mount()
	if got, err := os.ReadFile(w.m("notes.txt")); err != nil || string(got) != "one\n" {
		t.Fatalf("read: %q, %v", got, err)
	}
	w.must("touch", "-d", "2020-01-02 03:04:05.5", w.m("notes.txt"))
	w.must("sh", "-c", "echo two >> "+w.m("notes.txt"))
	w.must(binary, "flush", w.mnt)
	if b, err := os.ReadFile(w.s("notes.txt")); err != nil || string(b) != "one\ntwo\n" {
		t.Errorf("server notes.txt = %q, %v", b, err)
	}
	if c := w.status().Conflicts; len(c) != 0 {
		t.Errorf("conflict copies after touch and edit: %v", c)
	}
	matches, _ := filepath.Glob(w.s("notes.txt.conflict*"))
	if len(matches) != 0 {
		t.Errorf("conflict copies on the server: %v", matches)
	}
}
