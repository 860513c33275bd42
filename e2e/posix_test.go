package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lstat returns the raw stat of p or fails the test.
func lstat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

// link() through the mount is a hard link on the server and one file on
// the mount: one inode, shared content, link count 2 on both names, also
// after a remount; writing one name changes what the other reads, on the
// mount and on the server.
//
// Both ways a save reaches the server are run: the upload helper (which
// writes a file with several names in place) and plain SFTP (a new file
// renamed over the name, the other names linked to it again), which the
// first saves of a mount use while the helper starts ("starting": saves
// at once after the mount, whichever way they go).
func TestHardLinkIsOneFile(t *testing.T) {
	for _, uploads := range []string{"starting", "helper", "sftp"} {
		t.Run(uploads, func(t *testing.T) { testHardLinkIsOneFile(t, uploads) })
	}
}

func testHardLinkIsOneFile(t *testing.T, uploads string) {
	w := newWorld(t)
	w.writeServer("a.txt", "first\n", 0o644)
	w.writeServer("sub/keep", "x", 0o644)
	if uploads == "sftp" {
		w.env = append(w.env, "REMOTEFS_TEST_UPLOADS=sftp")
	}
	mount := func() {
		t.Helper()
		w.mount()
		switch uploads {
		case "helper":
			w.waitHelperUploads()
		case "sftp":
			if got := w.status().Uploads; got != "sftp" {
				t.Fatalf("uploads go by %q, want sftp", got)
			}
		}
	}
	mount()

	if err := os.Link(w.m("a.txt"), w.m("sub/b.txt")); err != nil {
		t.Fatalf("link: %v", err)
	}
	sa, sb := lstat(t, w.m("a.txt")), lstat(t, w.m("sub/b.txt"))
	if sa.Nlink != 2 || sb.Nlink != 2 || sa.Ino != sb.Ino {
		t.Fatalf("after link: a nlink %d ino %d, b nlink %d ino %d; want 2, 2, one inode", sa.Nlink, sa.Ino, sb.Nlink, sb.Ino)
	}
	if err := os.WriteFile(w.m("sub/b.txt"), []byte("second, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, w.m("a.txt")); got != "second, longer\n" {
		t.Fatalf("a.txt after writing b.txt reads %q", got)
	}
	if err := os.Chmod(w.m("a.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, w.m("sub/b.txt")); st.Mode&0o777 != 0o600 {
		t.Fatalf("chmod of a.txt: b.txt mode %o", st.Mode&0o777)
	}
	w.must(binary, "flush", w.mnt)

	// The server has one file with two names and the new content.
	ss, sbs := lstat(t, w.s("a.txt")), lstat(t, w.s("sub/b.txt"))
	if ss.Ino != sbs.Ino || ss.Nlink != 2 {
		t.Fatalf("server: a ino %d nlink %d, b ino %d nlink %d; want one file with 2 links", ss.Ino, ss.Nlink, sbs.Ino, sbs.Nlink)
	}
	if got := readString(t, w.s("sub/b.txt")); got != "second, longer\n" {
		t.Fatalf("server b.txt: %q", got)
	}

	// After a remount (the bulk listing reports inode and link count).
	w.unmount()
	mount()
	sa, sb = lstat(t, w.m("a.txt")), lstat(t, w.m("sub/b.txt"))
	if sa.Nlink != 2 || sb.Nlink != 2 || sa.Ino != sb.Ino {
		t.Fatalf("after remount: a nlink %d ino %d, b nlink %d ino %d", sa.Nlink, sa.Ino, sb.Nlink, sb.Ino)
	}
	if err := os.WriteFile(w.m("a.txt"), []byte("third\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, w.m("sub/b.txt")); got != "third\n" {
		t.Fatalf("b.txt after writing a.txt (remounted) reads %q", got)
	}
	// Removing one name leaves the other with one link.
	if err := os.Remove(w.m("a.txt")); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, w.m("sub/b.txt")); st.Nlink != 1 {
		t.Fatalf("after unlinking a.txt: b.txt nlink %d", st.Nlink)
	}
	w.must(binary, "flush", w.mnt)
	if got := readString(t, w.s("sub/b.txt")); got != "third\n" {
		t.Fatalf("server b.txt after unlink of a.txt: %q", got)
	}
	if _, err := os.Lstat(w.s("a.txt")); !os.IsNotExist(err) {
		t.Fatalf("server a.txt still there: %v", err)
	}
}

// Directories count their subdirectories; an open file removed reports
// no links through fstat.
func TestLinkCounts(t *testing.T) {
	w := newWorld(t)
	w.writeServer("d/f", "x", 0o644)
	os.MkdirAll(w.s("d/s1"), 0o755)
	os.MkdirAll(w.s("d/s2/deeper"), 0o755)
	w.mount()

	if st := lstat(t, w.m("d")); st.Nlink != 4 {
		t.Fatalf("d (2 subdirs) nlink %d, want 4", st.Nlink)
	}
	if err := os.Mkdir(w.m("d/s3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, w.m("d")); st.Nlink != 5 {
		t.Fatalf("d after mkdir nlink %d, want 5", st.Nlink)
	}
	if st := lstat(t, w.m("d/s2")); st.Nlink != 3 {
		t.Fatalf("d/s2 nlink %d, want 3", st.Nlink)
	}
	if err := os.Remove(w.m("d/s1")); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, w.m("d")); st.Nlink != 4 {
		t.Fatalf("d after rmdir nlink %d, want 4", st.Nlink)
	}

	f, err := os.Open(w.m("d/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 1 {
		t.Fatalf("fstat before unlink: nlink %d, %v", st.Nlink, err)
	}
	if err := os.Remove(w.m("d/f")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
		t.Fatalf("fstat of the open, unlinked file: nlink %d, %v; want 0", st.Nlink, err)
	}
}

// mkfifo, mknod of a FIFO and bind() of a Unix socket make nodes local
// programs use, listed with their type, and the server gets them too.
func TestFifoAndSocket(t *testing.T) {
	w := newWorld(t)
	os.MkdirAll(w.s("run"), 0o755)
	w.mount()

	w.must("mkfifo", w.m("run/pipe"))
	if st := lstat(t, w.m("run/pipe")); st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("mkfifo made mode %o", st.Mode)
	}
	if err := syscall.Mknod(w.m("run/pipe2"), syscall.S_IFIFO|0o600, 0); err != nil {
		t.Fatalf("mknod fifo: %v", err)
	}
	// Data between two processes through the FIFO on the mount.
	out := w.must("sh", "-c", `printf 'through the pipe' > "$1" & cat "$1"; wait`, "sh", w.m("run/pipe"))
	if out != "through the pipe" {
		t.Fatalf("fifo carried %q", out)
	}

	// A Python server binds a Unix socket on the mount; a client connects.
	py := `
import os, socket, sys, threading
p = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(p)
srv.listen(1)
def serve():
    c, _ = srv.accept()
    c.sendall(b"hello " + c.recv(100))
    c.close()
threading.Thread(target=serve).start()
cl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cl.connect(p)
cl.sendall(b"socket")
print(cl.recv(100).decode(), end="")
`
	if got := w.must("python3", "-c", py, w.m("run/sock")); got != "hello socket" {
		t.Fatalf("socket round trip: %q", got)
	}
	if st := lstat(t, w.m("run/sock")); st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		t.Fatalf("bound socket has mode %o", st.Mode)
	}
	// Listed with their type (ls -l's first letter comes from lstat,
	// find -type from readdir's d_type).
	ls := w.must("ls", "-l", w.m("run"))
	for _, want := range []string{"p", "s"} {
		found := false
		for _, l := range strings.Split(ls, "\n") {
			if strings.HasPrefix(l, want) {
				found = true
			}
		}
		if !found {
			t.Fatalf("ls -l shows no %q entry:\n%s", want, ls)
		}
	}
	if got := strings.TrimSpace(w.must("find", w.m("run"), "-maxdepth", "1", "-type", "p", "-printf", "%f\n")); got != "pipe\npipe2" && got != "pipe2\npipe" {
		t.Fatalf("find -type p: %q", got)
	}
	if got := strings.TrimSpace(w.must("find", w.m("run"), "-maxdepth", "1", "-type", "s", "-printf", "%f\n")); got != "sock" {
		t.Fatalf("find -type s: %q", got)
	}
	w.must(binary, "flush", w.mnt)
	for name, typ := range map[string]uint32{"pipe": syscall.S_IFIFO, "pipe2": syscall.S_IFIFO, "sock": syscall.S_IFSOCK} {
		if st := lstat(t, w.s(filepath.Join("run", name))); st.Mode&syscall.S_IFMT != typ {
			t.Errorf("server %s: mode %o", name, st.Mode)
		}
	}
	// And they are still there, with their type, after a remount.
	w.unmount()
	w.mount("--allow-other")
	if st := lstat(t, w.m("run/pipe")); st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("after remount: pipe mode %o", st.Mode)
	}

	// Device nodes follow the local rules: root may make one (and the
	// server gets it, the remote account being root here), anyone else
	// gets EPERM, never EIO.
	if os.Getuid() != 0 {
		return
	}
	dev := int((1 << 8) | 3) // 1:3, /dev/null's numbers
	if err := syscall.Mknod(w.m("run/null"), syscall.S_IFCHR|0o666, dev); err != nil {
		t.Fatalf("mknod of a character device as root: %v", err)
	}
	if st := lstat(t, w.m("run/null")); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != uint64(dev) {
		t.Fatalf("char device: mode %o rdev %#x", st.Mode, st.Rdev)
	}
	// uid 65534 must reach the mount: open the test's folders to it.
	for d := filepath.Dir(w.mnt); d != "/" && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.Chmod(w.m("run"), 0o777)
	r := w.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "mknod", w.m("run/null2"), "c", "1", "3")
	if r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Fatalf("mknod of a device as uid 65534: exit %d, %q; want EPERM", r.code, r.stderr)
	}
	r = w.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "mkfifo", w.m("run/theirs"))
	if r.code != 0 {
		t.Fatalf("mkfifo as uid 65534 in a folder open to all: exit %d, %s", r.code, r.stderr)
	}
	w.must(binary, "flush", w.mnt)
	if st := lstat(t, w.s("run/null")); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != uint64(dev) {
		t.Fatalf("server char device: mode %o rdev %#x", st.Mode, st.Rdev)
	}
}

// utimensat with chosen times keeps both, to the nanosecond on the mount;
// ctime moves on chmod.
func TestTimesKept(t *testing.T) {
	w := newWorld(t)
	w.writeServer("f", "x", 0o644)
	w.mount()

	at := time.Date(2020, 3, 4, 5, 6, 7, 123456789, time.UTC)
	mt := time.Date(2021, 8, 9, 10, 11, 12, 987654321, time.UTC)
	ts := []syscall.Timespec{syscall.NsecToTimespec(at.UnixNano()), syscall.NsecToTimespec(mt.UnixNano())}
	if err := syscall.UtimesNano(w.m("f"), ts); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, w.m("f"))
	if st.Atim.Nano() != at.UnixNano() || st.Mtim.Nano() != mt.UnixNano() {
		t.Fatalf("after utimensat: atime %v mtime %v, want %v %v", time.Unix(0, st.Atim.Nano()).UTC(), time.Unix(0, st.Mtim.Nano()).UTC(), at, mt)
	}
	// touch -a changes only atime, touch -m only mtime.
	w.must("touch", "-a", "-d", "2019-01-01 00:00:00 UTC", w.m("f"))
	st = lstat(t, w.m("f"))
	if time.Unix(st.Atim.Unix()).Year() != 2019 || st.Mtim.Nano() != mt.UnixNano() {
		t.Fatalf("after touch -a: atime %v mtime %v", time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
	}
	w.must("touch", "-m", "-d", "2018-01-01 00:00:00 UTC", w.m("f"))
	st = lstat(t, w.m("f"))
	if time.Unix(st.Atim.Unix()).Year() != 2019 || time.Unix(st.Mtim.Unix()).Year() != 2018 {
		t.Fatalf("after touch -m: atime %v mtime %v", time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix()))
	}
	w.must(binary, "flush", w.mnt)
	sst := lstat(t, w.s("f"))
	if time.Unix(sst.Atim.Unix()).Year() != 2019 || time.Unix(sst.Mtim.Unix()).Year() != 2018 {
		t.Fatalf("server: atime %v mtime %v", time.Unix(sst.Atim.Unix()), time.Unix(sst.Mtim.Unix()))
	}

	// ctime moves on chmod (and is not older than mtime).
	before := lstat(t, w.m("f")).Ctim
	time.Sleep(1100 * time.Millisecond)
	if err := os.Chmod(w.m("f"), 0o600); err != nil {
		t.Fatal(err)
	}
	after := lstat(t, w.m("f")).Ctim
	if after.Nano() <= before.Nano() {
		t.Fatalf("ctime did not move on chmod: %v -> %v", before, after)
	}
	// and on rename
	time.Sleep(1100 * time.Millisecond)
	if err := os.Rename(w.m("f"), w.m("g")); err != nil {
		t.Fatal(err)
	}
	if c := lstat(t, w.m("g")).Ctim; c.Nano() <= after.Nano() {
		t.Fatalf("ctime did not move on rename: %v -> %v", after, c)
	}
}

// A symlink's own times and owner (touch -h, chown -h) reach the server's
// symlink through lsetstat@openssh.com, and its target keeps its own.
func TestSymlinkOwnTimesAndOwner(t *testing.T) {
	w := newWorld(t)
	w.writeServer("target", "x", 0o644)
	old := time.Unix(1600000000, 0)
	os.Chtimes(w.s("target"), old, old)
	if err := os.Symlink("target", w.s("link")); err != nil {
		t.Fatal(err)
	}
	w.mount()

	w.must("touch", "-h", "-d", "@1900000000", w.m("link"))
	if st := lstat(t, w.m("link")); st.Mtim.Sec != 1900000000 {
		t.Errorf("the mount shows the link's mtime %d, want 1900000000", st.Mtim.Sec)
	}
	root := os.Geteuid() == 0
	if root {
		w.must("chown", "-h", "65534:65533", w.m("link"))
		if st := lstat(t, w.m("link")); st.Uid != 65534 || st.Gid != 65533 {
			t.Errorf("the mount shows the link owned by %d:%d, want 65534:65533", st.Uid, st.Gid)
		}
	}
	w.must(binary, "flush", w.mnt)
	link, target := lstat(t, w.s("link")), lstat(t, w.s("target"))
	if link.Mtim.Sec != 1900000000 || link.Atim.Sec != 1900000000 {
		t.Errorf("server's link has atime %d mtime %d, want 1900000000", link.Atim.Sec, link.Mtim.Sec)
	}
	if target.Mtim.Sec != old.Unix() {
		t.Errorf("server's target mtime moved to %d", target.Mtim.Sec)
	}
	if root {
		if link.Uid != 65534 || link.Gid != 65533 {
			t.Errorf("server's link is owned by %d:%d, want 65534:65533", link.Uid, link.Gid)
		}
		if target.Uid != 0 || target.Gid != 0 {
			t.Errorf("server's target's owner changed to %d:%d", target.Uid, target.Gid)
		}
	}
	if st := w.status(); st.Pending != 0 {
		t.Errorf("%d changes pending after flush", st.Pending)
	}
	w.unmount()
}
