package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	minfo "remotefs/internal/mountinfo"
)

// A file read sequentially through the mount with 1 MiB reads (cat, cp,
// the bench's bigread) reaches the daemon in 1 MiB READ requests, not the
// kernel's default 128 KiB: the mount asks for 256 pages a request
// (FUSE_MAX_PAGES, a remotefs patch of bazil) and, where the daemon may
// (root), raises the mount's readahead to 1 MiB (daemon/readahead.go).
// 48 MiB then costs about 50 READs (53 measured) where it cost 385; the
// bytes are the server's.
func TestLargeReadInLargeRequests(t *testing.T) {
	w := newWorld(t)
	w.mount("--debug")
	const size = 48<<20 + 4321
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(w.s("big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "big.bin to appear on the mount", func() bool {
		fi, err := os.Stat(w.m("big.bin"))
		return err == nil && fi.Size() == size
	})

	before := len(w.readRequests())
	f, err := os.Open(w.m("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int
	for {
		n, err := io.ReadFull(f, buf)
		if !bytes.Equal(buf[:n], data[off:off+n]) {
			t.Fatalf("%d bytes at %d are not the server's", n, off)
		}
		off += n
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}
	sizes := w.readRequests()[before:]
	largest := 0
	for _, n := range sizes {
		largest = max(largest, n)
	}
	ra := bdiReadahead(t, w.mnt)
	t.Logf("%s read in %d READ requests, the largest %d bytes; the mount's read_ahead_kb is %d", mib(size), len(sizes), largest, ra)
	if os.Geteuid() != 0 {
		t.Skip("not root: the daemon cannot raise the mount's readahead, so the kernel's READs stay at 128 KiB")
	}
	if ra != 1024 {
		t.Errorf("the mount's read_ahead_kb is %d, want 1024 (the daemon runs as root and should have raised it)", ra)
	}
	if largest != 1<<20 {
		t.Errorf("the largest READ carried %d bytes, want 1 MiB (FUSE_MAX_PAGES 256)", largest)
	}
	// Readahead windows need not start on a MiB boundary, so some are
	// split in two; 128 KiB READs would be 385.
	if want := 2*(size>>20) + 8; len(sizes) > want {
		t.Errorf("%d READ requests for %s, want at most %d", len(sizes), mib(size), want)
	}
}

// readRequests is the size of every file READ in the daemon's --debug
// log, in order.
func (w *world) readRequests() []int {
	var out []int
	for _, l := range w.daemonLogLines(`msg="<- Read [`) {
		if m := readSizeRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

var readSizeRE = regexp.MustCompile(`<- Read \[[^\]]*\] \S+ (\d+) @0x[0-9a-f]+ dir=false`)

// bdiReadahead is the read_ahead_kb of the filesystem mounted at dir.
func bdiReadahead(t *testing.T, dir string) int {
	t.Helper()
	m, ok := minfo.Lookup(dir)
	if !ok || m.Device == "" {
		t.Fatalf("%s is not in the mount table", dir)
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/bdi", m.Device, "read_ahead_kb"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
