package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

// readsRepro is the reproduction of issue 14: a file written on the server
// is read through the mount as soon as it appears there (change feed live,
// 50 ms one way), and compared byte for byte, twice (the second read is
// served from the kernel's page cache when it kept one).
//
// REMOTEFS_READS_SIZES overrides the sizes (comma-separated bytes), e.g.
// to run it 50 times in a row around the range-cache threshold:
//
//	REMOTEFS_READS_SIZES=15728640,16777216,40000000 go test -race -count=50 -run TestReadWhileServerWrites ./e2e/
func TestReadWhileServerWrites(t *testing.T) {
	sizes := []int{16<<20 - 4096, 16 << 20, 40000000}
	if s := os.Getenv("REMOTEFS_READS_SIZES"); s != "" {
		sizes = nil
		for _, f := range bytes.Split([]byte(s), []byte(",")) {
			n, err := strconv.Atoi(string(f))
			if err != nil {
				t.Fatalf("REMOTEFS_READS_SIZES: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	w := newWorld(t)
	p := w.viaProxy()
	w.mount("--watch", "helper")
	eventually(t, 20*time.Second, "the change feed to start", func() bool { return w.status().Watch == "helper" })
	p.SetLatency(25 * time.Millisecond) // 50 ms round trips
	data := make([]byte, slices.Max(sizes))
	for i, size := range sizes {
		rand.Read(data[:size])
		name := "r" + strconv.Itoa(i) + ".bin"
		// As a shell would: `head -c N /dev/urandom > SERVER/r.bin`.
		f, err := os.Create(w.s(name))
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < size; off += 64 << 10 {
			if _, err := f.Write(data[off:min(off+64<<10, size)]); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		eventually(t, 20*time.Second, name+" to appear on the mount", func() bool {
			_, err := os.Stat(w.m(name))
			return err == nil
		})
		for round := 1; round <= 2; round++ {
			out, err := exec.Command("cmp", w.s(name), w.m(name)).CombinedOutput()
			if err != nil {
				t.Fatalf("%s (%d bytes), read %d: cmp: %v: %s", name, size, round, err, out)
			}
		}
	}
}
