package e2e

// What the server will refuse is refused at once, with the errno a local
// disk gives, and never reaches the journal (issue: never accept what the
// server will refuse).

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
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
