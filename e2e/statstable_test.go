package e2e

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// On a local disk a file's inode number never changes while it exists,
// and its ctime moves only when it is changed (pjdfstest checks both
// after every operation). Through the mount each change reaches the
// server a moment later, where it gets the server's own ctime, and a save
// lands as a new file (a new inode number). The mount keeps showing what
// it showed through the delivery and the change feed's echo of it; a
// `remotefs flush` then shows the server's stat data for the files it
// changed (so an index git writes afterwards matches on the server).
func TestStatStableThroughDelivery(t *testing.T) {
	w := newWorld(t)
	w.writeServer("old.txt", "old\n", 0o644)
	w.writeServer("d/keep.txt", "keep\n", 0o644)
	w.mount()
	// The upload helper reports a landed file's inode and ctime, and the
	// feed reports the server's changes: the echoes under test.
	eventually(t, 20*time.Second, "uploads through the helper and the change feed", func() bool {
		st := w.status()
		return st.Uploads == "helper" && st.Watch == "helper"
	})
	if err := os.WriteFile(w.m("new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.m("old.txt"), []byte("old, edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(w.m("old.txt"), w.m("d/moved.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(w.m("d/keep.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(w.m("d/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(w.m("d/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	paths := []string{"new.txt", "d/moved.txt", "d/keep.txt", "d", "d/sub", "d/fifo"}
	shown := map[string]syscall.Stat_t{}
	for _, p := range paths {
		shown[p] = lstat(t, w.m(p))
	}
	eventually(t, 20*time.Second, "the changes delivered", func() bool { return w.status().Pending == 0 })
	// The server made its own: a new inode for the saved files, a newer
	// ctime for everything (else nothing is tested).
	if s := lstat(t, w.s("new.txt")); s.Ino == shown["new.txt"].Ino {
		t.Fatalf("new.txt: the server's inode is the one the mount showed: nothing tested")
	}
	if s := lstat(t, w.s("d/moved.txt")); s.Ino == shown["d/moved.txt"].Ino || s.Ctim == shown["d/moved.txt"].Ctim {
		t.Fatalf("d/moved.txt: the server's stat data is the one the mount showed: nothing tested")
	}
	// The feed's echoes of those deliveries, and what they start (the
	// bulk stat of the files reported, the kernel invalidations of what
	// moved), are over once the feed has brought a change made after
	// them (it reports in order) and nothing is settling.
	w.writeServer("later.txt", "made after the deliveries\n", 0o644)
	eventually(t, 20*time.Second, "the feed's echoes and what they started", func() bool {
		_, err := os.Lstat(w.m("later.txt"))
		return err == nil && w.status().Settling == 0
	})
	for _, p := range paths {
		m := lstat(t, w.m(p))
		s := shown[p]
		if m.Ino != s.Ino || m.Ctim != s.Ctim || m.Mtim != s.Mtim {
			t.Errorf("%s moved after its delivery: ino %d ctime %d.%09d mtime %d.%09d; showed ino %d ctime %d.%09d mtime %d.%09d",
				p, m.Ino, m.Ctim.Sec, m.Ctim.Nsec, m.Mtim.Sec, m.Mtim.Nsec, s.Ino, s.Ctim.Sec, s.Ctim.Nsec, s.Mtim.Sec, s.Mtim.Nsec)
		}
	}

	// A flush shows the server's for the files (saved, renamed, chmod'ed).
	w.must(binary, "flush", w.mnt)
	for _, p := range []string{"new.txt", "d/moved.txt", "d/keep.txt"} {
		w.sameStat(p)
	}
}
