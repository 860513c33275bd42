package e2e

// What the server will refuse is refused at once, with the errno a local
// disk gives, and never reaches the journal (issue: never accept what the
// server will refuse).

import (
	bin "encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Names longer than the server's limit (255 bytes on the loopback server's
// disk) fail at once with ENAMETOOLONG for every call that makes a name,
// lookups say ENAMETOOLONG rather than ENOENT, and nothing is journaled.
func TestNameTooLongRefusedAtOnce(t *testing.T) {
	w := newWorld(t)
	w.writeServer("dir/a.txt", "hello\n", 0o644)
	w.mount()

	long := strings.Repeat("n", 300)
	ok255 := strings.Repeat("k", 255)
	calls := []struct {
		what string
		do   func() error
	}{
		{"mkdir", func() error { return os.Mkdir(w.m("dir/"+long), 0o755) }},
		{"open(O_CREAT)", func() error {
			f, err := os.OpenFile(w.m("dir/"+long), os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"rename", func() error { return os.Rename(w.m("dir/a.txt"), w.m("dir/"+long)) }},
		{"link", func() error { return os.Link(w.m("dir/a.txt"), w.m("dir/"+long)) }},
		{"symlink", func() error { return os.Symlink("a.txt", w.m("dir/"+long)) }},
		{"lookup (stat)", func() error { _, err := os.Lstat(w.m("dir/" + long)); return err }},
		{"lookup (open)", func() error { _, err := os.ReadFile(w.m("dir/" + long)); return err }},
	}
	for _, c := range calls {
		err := c.do()
		if !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("%s of a 300-byte name: %v, want ENAMETOOLONG", c.what, err)
		}
	}
	if st := w.status(); st.Pending != 0 || st.UploadError != "" {
		t.Errorf("after the refused calls: %d changes pending, upload error %q; want nothing journaled", st.Pending, st.UploadError)
	}
	// The limit is the server's, not lower: 255 bytes work.
	if err := os.WriteFile(w.m("dir/"+ok255), []byte("x"), 0o644); err != nil {
		t.Fatalf("a 255-byte name: %v", err)
	}
	w.must(binary, "flush", w.mnt)
	if b, err := os.ReadFile(w.s("dir/" + ok255)); err != nil || string(b) != "x" {
		t.Errorf("255-byte name on the server: %q, %v", b, err)
	}
	ents, _ := os.ReadDir(w.s("dir"))
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("server folder holds %d names, want a.txt and the 255-byte one: %v", len(ents), names)
	}
	if b, err := os.ReadFile(w.s("dir/a.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("a.txt on the server: %q, %v", b, err)
	}
	w.unmount()
}

// A path longer than the server's limit (4096 bytes with the remote root)
// is refused at once too, at the folder where it would pass it; every
// folder accepted before reaches the server.
func TestPathTooLongRefusedAtOnce(t *testing.T) {
	w := newWorld(t)
	w.mount()
	fd, err := syscall.Open(w.mnt, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	total := len(w.root) // the server path so far
	refusedAt := -1
	for level := 0; level < 30; level++ {
		name := fmt.Sprintf("%03d-%s", level, strings.Repeat("d", 196))
		err := syscall.Mkdirat(fd, name, 0o755)
		if total+1+len(name) >= 4096 {
			if !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Fatalf("mkdir making a %d-byte server path: %v, want ENAMETOOLONG", total+1+len(name), err)
			}
			refusedAt = level
			break
		}
		if err != nil {
			t.Fatalf("mkdir at level %d (%d-byte server path): %v", level, total+1+len(name), err)
		}
		nfd, err := syscall.Openat(fd, name, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
		fd = nfd
		total += 1 + len(name)
	}
	syscall.Close(fd)
	if refusedAt < 0 {
		t.Fatal("never reached the path limit")
	}
	w.must(binary, "flush", w.mnt)
	if st := w.status(); st.Pending != 0 || len(st.Undelivered) != 0 {
		t.Errorf("status: %d pending, undelivered %+v", st.Pending, st.Undelivered)
	}
	// The server has every accepted level (walked with relative names).
	sfd, err := syscall.Open(w.root, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for level := 0; level < refusedAt; level++ {
		name := fmt.Sprintf("%03d-%s", level, strings.Repeat("d", 196))
		nfd, err := syscall.Openat(sfd, name, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatalf("server lacks level %d: %v", level, err)
		}
		syscall.Close(sfd)
		sfd = nfd
	}
	syscall.Close(sfd)
	w.unmount()
}

// waitHelperUploads waits until uploads go through the helper on the
// server (the first ones of a mount may use SFTP while it starts).
func (w *world) waitHelperUploads() {
	w.t.Helper()
	eventually(w.t, 20*time.Second, "uploads through the helper", func() bool { return w.status().Uploads == "helper" })
}

// A save through the mount keeps what a write in place keeps on the
// server: a file with another hard link is written through its inode (the
// other name sees the save), and a replaced file keeps its group and
// extended attributes.
func TestSaveKeepsLinksGroupAndAttributes(t *testing.T) {
	w := newWorld(t)
	w.writeServer("linked.txt", "old\n", 0o644)
	if err := os.Link(w.s("linked.txt"), w.s("other-name.txt")); err != nil {
		t.Fatal(err)
	}
	w.writeServer("attrs.txt", "old\n", 0o640)
	xattr := syscall.Setxattr(w.s("attrs.txt"), "user.remotefs-test", []byte("kept"), 0) == nil
	// A POSIX ACL naming uid 4242 (mask r--, so the mode stays 640) (an extended attribute in the
	// kernel's binary form: version 2, then tag, perm, id per entry).
	acl := posixACL([][3]uint32{{0x01, 6, 0xffffffff}, {0x02, 6, 4242}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}})
	hasACL := syscall.Setxattr(w.s("attrs.txt"), "system.posix_acl_access", acl, 0) == nil
	if !hasACL {
		t.Logf("no POSIX ACLs on this filesystem: not checked")
	}
	os.Chown(w.s("attrs.txt"), -1, 4321) // as root: a group of its own
	w.mount()
	w.waitHelperUploads()

	if err := os.WriteFile(w.m("linked.txt"), []byte("new through the mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.m("attrs.txt"), []byte("new\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	w.must(binary, "flush", w.mnt)
	if b, _ := os.ReadFile(w.s("other-name.txt")); string(b) != "new through the mount\n" {
		t.Errorf("the other hard link on the server holds %q", b)
	}
	var a, b syscall.Stat_t
	syscall.Lstat(w.s("linked.txt"), &a)
	syscall.Lstat(w.s("other-name.txt"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("the save broke the hard link: inodes %d, %d; nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	var st syscall.Stat_t
	syscall.Lstat(w.s("attrs.txt"), &st)
	if os.Geteuid() == 0 && st.Gid != 4321 {
		t.Errorf("replaced file's group %d, want 4321", st.Gid)
	}
	if st.Mode&0o777 != 0o640 {
		t.Errorf("replaced file's mode %o", st.Mode&0o777)
	}
	if xattr {
		buf := make([]byte, 16)
		n, err := syscall.Getxattr(w.s("attrs.txt"), "user.remotefs-test", buf)
		if err != nil || string(buf[:n]) != "kept" {
			t.Errorf("extended attribute after the save: %v", err)
		}
	}
	if hasACL {
		buf := make([]byte, 256)
		n, err := syscall.Getxattr(w.s("attrs.txt"), "system.posix_acl_access", buf)
		if err != nil || string(buf[:n]) != string(acl) {
			t.Errorf("POSIX ACL after the save: %x, %v; want %x", buf[:max(n, 0)], err, acl)
		}
	}
	if c, _ := os.ReadFile(w.s("attrs.txt")); string(c) != "new\n" {
		t.Errorf("attrs.txt on the server: %q", c)
	}
	w.unmount()
}

// posixACL encodes ACL entries (tag, perm, id) as system.posix_acl_access.
func posixACL(entries [][3]uint32) []byte {
	b := bin.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = bin.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = bin.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = bin.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}
