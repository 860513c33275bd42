package e2e

import (
	"bytes"
	binenc "encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dirReader reads a folder of the mount with getdents(2) in small
// chunks, as a program walking a large folder does.
type dirReader struct {
	fd    int
	names []string
	buf   []byte
}

func openDirReader(t *testing.T, path string) *dirReader {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return &dirReader{fd: fd, buf: make([]byte, 1024)}
}

// next reads one chunk; it reports false at the end of the folder.
func (d *dirReader) next(t *testing.T) bool {
	t.Helper()
	n, err := syscall.Getdents(d.fd, d.buf)
	if err != nil {
		t.Fatalf("getdents: %v", err)
	}
	for b := d.buf[:n]; len(b) >= 19; {
		reclen := int(binenc.NativeEndian.Uint16(b[16:18]))
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		d.names = append(d.names, string(name))
		b = b[reclen:]
	}
	return n > 0
}

// Folders opened without a request (FUSE_NO_OPENDIR_SUPPORT) are all read
// with file handle 0: two programs reading one large folder at once, a
// server change between their reads, and each still sees one listing:
// no name twice, none of the unchanged names missing.
func TestDirlessReadersOfAChangingFolder(t *testing.T) {
	w := newWorld(t)
	const files = 3000
	for i := 0; i < files; i++ {
		w.writeServer(fmt.Sprintf("big/f%05d", i), "x", 0o644)
	}
	w.mount()
	eventually(t, 20*time.Second, "the change feed", func() bool { return w.status().Watch == "helper" })
	w.skipWithoutDirlessOpen(t)

	first := openDirReader(t, w.m("big"))
	first.next(t) // the first program is partway through

	// Names sorted before every other are added on the server, as long
	// as the others (so their entries take as many bytes).
	for i := 0; i < 100; i++ {
		w.writeServer(fmt.Sprintf("big/a%05d", i), "x", 0o644)
	}
	eventually(t, 20*time.Second, "the mount to show the new names", func() bool {
		_, err := os.Lstat(w.m("big/a00099"))
		return err == nil
	})

	second := openDirReader(t, w.m("big"))
	for second.next(t) {
	}
	if !slices.Contains(second.names, "a00099") {
		t.Fatalf("the second program's listing lacks the new names (%d names): the test needs it read from the daemon after the change", len(second.names))
	}
	for first.next(t) {
	}
	for _, r := range []struct {
		who   string
		names []string
	}{{"the first program", first.names}, {"the second program", second.names}} {
		seen := map[string]int{}
		for _, n := range r.names {
			seen[n]++
		}
		var twice, missing []string
		for n, k := range seen {
			if k > 1 {
				twice = append(twice, n)
			}
		}
		for i := 0; i < files; i++ {
			if n := fmt.Sprintf("f%05d", i); seen[n] == 0 {
				missing = append(missing, n)
			}
		}
		if len(twice) > 0 || len(missing) > 0 {
			t.Errorf("%s read %d names: %d twice (%s), %d unchanged ones missing (%s)", r.who, len(r.names),
				len(twice), strings.Join(twice[:min(len(twice), 5)], " "), len(missing), strings.Join(missing[:min(len(missing), 5)], " "))
		}
	}
}
