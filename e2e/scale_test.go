package e2e

// Scale tests: one folder with very many entries, and files far larger
// than anything the daemon may hold in memory. Each has a fast form (the
// default, part of `make test`) and a long form with REMOTEFS_STRESS=1
// (`make stress`), which also asserts the product's memory targets.
//
// Memory is read from /proc/PID/status of the daemon (pid from `remotefs
// status --json`): VmRSS sampled while the work runs, and VmHWM (the peak
// resident set since the daemon started). The e2e binary is built with
// -race, whose shadow memory makes the daemon several times larger than
// the real one, so the fast form only logs the numbers; the long form
// mounts with a binary built without -race and asserts them.

import (
	"bufio"
	"bytes"
	"context"
	encbin "encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/testenv"
)

func scaleStress() bool { return os.Getenv("REMOTEFS_STRESS") == "1" }

var (
	scalePlainOnce sync.Once
	scalePlainBin  string
	scalePlainErr  error
)

// scaleBinary is the remotefs binary the scale tests mount with: the
// race-enabled e2e binary in the fast form, one built without -race in
// the long form (so its memory use is the product's).
func scaleBinary(t *testing.T) string {
	t.Helper()
	if !scaleStress() {
		return binary
	}
	scalePlainOnce.Do(func() {
		p := filepath.Join(filepath.Dir(binary), "remotefs-norace") // removed with binary's folder
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if scalePlainErr = testenv.BuildRemotefs(ctx, "", p, false); scalePlainErr != nil {
			return
		}
		scalePlainBin = p
	})
	if scalePlainErr != nil {
		t.Fatal(scalePlainErr)
	}
	return scalePlainBin
}

// scaleMount mounts the world with bin and returns the daemon's pid.
// REMOTEFS_SCALE_DAEMON_ENV adds environment variables (space-separated
// NAME=VALUE) to the daemon's, e.g. GODEBUG=gctrace=1 (the trace lands in
// the daemon log) or GOGC=50, to look into its memory use.
func (w *world) scaleMount(bin string, extra ...string) int {
	w.t.Helper()
	if v := os.Getenv("REMOTEFS_SCALE_DAEMON_ENV"); v != "" {
		w.env = append(w.env, strings.Fields(v)...)
		w.t.Logf("daemon environment adds %s", v)
	}
	args := append([]string{"mount"}, extra...)
	args = append(args, w.spec(), w.mnt)
	w.must(bin, args...)
	if !mounted(w.mnt) {
		w.t.Fatalf("remotefs mount returned 0 but %s is not mounted", w.mnt)
	}
	pid := w.status().PID
	if !processAlive(pid) {
		w.t.Fatalf("status reports daemon pid %d, which is not running", pid)
	}
	return pid
}

// scaleRun runs remotefs with the world's environment, failing the test
// when it exits non-zero or runs longer than max (for flushes of
// gigabytes, which take longer than w.must allows).
func (w *world) scaleRun(max time.Duration, args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), max)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = w.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		w.t.Fatalf("remotefs %s: still running after %v (hung?)\nstdout: %s\nstderr: %s", strings.Join(args, " "), max, out.String(), errb.String())
	}
	if err != nil {
		w.t.Fatalf("remotefs %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// memInfo is what /proc/PID/status says about a process's memory, in
// bytes: VmRSS (resident now), VmHWM (peak resident since it started), and
// the resident set split into anonymous memory (the Go heap, stacks) and
// file-backed pages (the binary, and bbolt's mmap of meta.db).
type memInfo struct {
	RSS, HWM, Anon, File int64
}

func (m memInfo) String() string {
	return fmt.Sprintf("VmRSS %s (anon %s, file %s), VmHWM %s", mib(m.RSS), mib(m.Anon), mib(m.File), mib(m.HWM))
}

func procMem(pid int) (memInfo, error) {
	var m memInfo
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		parts := strings.Fields(v) // "123456 kB"
		if len(parts) != 2 || parts[1] != "kB" {
			return m, fmt.Errorf("/proc/%d/status: odd line %q", pid, sc.Text())
		}
		n, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			return m, err
		}
		*dst = n << 10
	}
	if m.RSS == 0 || m.HWM == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS/VmHWM", pid)
	}
	return m, sc.Err()
}

// rssSampler samples a process's VmRSS in the background until stop,
// keeping a coarse timeline for the log.
type rssSampler struct {
	start   time.Time
	max     atomic.Int64
	samples atomic.Int64
	mu      sync.Mutex
	line    []string // "+1.0s 123 MiB", about one a second
	top     memInfo  // the sample with the largest VmRSS
	done    chan struct{}
	stopped chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	r := &rssSampler{start: time.Now(), done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(r.stopped)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var next time.Duration
		for {
			if mi, err := procMem(pid); err == nil {
				rss := mi.RSS
				r.samples.Add(1)
				if rss > r.max.Load() {
					r.max.Store(rss)
					r.mu.Lock()
					r.top = mi
					r.mu.Unlock()
				}
				if el := time.Since(r.start); el >= next {
					r.mu.Lock()
					r.line = append(r.line, fmt.Sprintf("+%.0fs %.0f", el.Seconds(), float64(rss)/(1<<20)))
					r.mu.Unlock()
					next = el.Truncate(time.Second) + time.Second
				}
			}
			select {
			case <-r.done:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

// stop ends sampling and returns the largest VmRSS seen.
func (r *rssSampler) stop() int64 {
	close(r.done)
	<-r.stopped
	return r.max.Load()
}

// peak is the sample with the largest VmRSS (after stop).
func (r *rssSampler) peak() memInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.top
}

// timeline is VmRSS (MiB) about every second since sampling started.
func (r *rssSampler) timeline() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.line, ", ")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func mibps(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// daemonLogHas reports whether the world's daemon log contains s.
func (w *world) daemonLogHas(s string) bool {
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil && bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// daemonLogLines returns the lines of the world's daemon log containing s.
func (w *world) daemonLogLines(s string) []string {
	var out []string
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) {
				out = append(out, strings.TrimSpace(line))
			}
		}
	}
	return out
}

// TestScaleManyEntriesInOneFolder: a folder of N files made on the server
// (20,000; 100,000 with REMOTEFS_STRESS=1) is listed through the mount
// exactly, quickly and without the daemon growing past the target (peak
// resident memory under 200 MiB for 100,000 entries, asserted in the long
// form); then 100 files
// are created and 100 deleted through the mount, and after a flush the
// server's folder is exactly what the mount shows.
func TestScaleManyEntriesInOneFolder(t *testing.T) {
	n := 20000
	if scaleStress() {
		n = 100000
	}
	const rssLimit = 200 << 20
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("%d entries; seed %d", n, seed)

	w := newCheckedWorld(t)
	bin := scaleBinary(t)
	const dir = "many"
	name := func(i int) string { return fmt.Sprintf("file-%06d.txt", i) }
	content := func(i int) string {
		if i%10 == 0 {
			return "" // some empty ones
		}
		return fmt.Sprintf("entry %d\n", i)
	}

	start := time.Now()
	if err := os.Mkdir(w.s(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(w.s(filepath.Join(dir, name(i))), []byte(content(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("created %d files on the server in %v", n, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	pid := w.scaleMount(bin)
	t.Logf("mount returned after %v (daemon pid %d, %s)", time.Since(start).Round(time.Millisecond), pid, filepath.Base(bin))
	sampler := sampleRSS(pid)

	// First listing, right after the mount (the tree listing and the
	// prefetch of small files may still be running).
	list := func(what string) []string {
		t.Helper()
		var names []string
		err, d := timed(t, what, 120*time.Second, func() error {
			f, err := os.Open(w.m(dir))
			if err != nil {
				return err
			}
			defer f.Close()
			names, err = f.Readdirnames(-1) // getdents only, like ls -f
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %d names in %v (done %.1fs after the mount)", what, len(names), d.Round(time.Millisecond), time.Since(sampler.start).Seconds())
		return names
	}
	serverNames := func() map[string]bool {
		t.Helper()
		ents, err := os.ReadDir(w.s(dir))
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[string]bool, len(ents))
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m
	}
	sameNames := func(what string, got []string, want map[string]bool) {
		t.Helper()
		seen := make(map[string]bool, len(got))
		var dups, extra, missing []string
		for _, g := range got {
			if seen[g] {
				dups = append(dups, g)
			}
			seen[g] = true
			if !want[g] {
				extra = append(extra, g)
			}
		}
		for k := range want {
			if !seen[k] {
				missing = append(missing, k)
			}
		}
		if len(got) != len(want) || len(dups)+len(extra)+len(missing) > 0 {
			sort.Strings(extra)
			sort.Strings(missing)
			t.Fatalf("%s: %d names, want %d; duplicates %d %.5q, not on the server %d %.5q, missing %d %.5q",
				what, len(got), len(want), len(dups), dups, len(extra), extra, len(missing), missing)
		}
	}

	srv := serverNames()
	if len(srv) != n {
		t.Fatalf("server folder has %d entries, want %d", len(srv), n)
	}
	sameNames("first listing", list("first listing through the mount"), srv)
	if mi, err := procMem(pid); err == nil {
		t.Logf("daemon memory after the first listing: %v", mi)
	}

	// Wait for the mount-time work (tree listing, prefetch of small files)
	// to end, so the memory measured is the steady state with every entry
	// known and cached.
	start = time.Now()
	eventually(t, 240*time.Second, "the daemon's prefetch to finish", func() bool {
		return w.daemonLogHas("small files prefetched") || w.daemonLogHas("prefetch stopped")
	})
	for _, l := range append(w.daemonLogLines("tree listed"), w.daemonLogLines("prefetch")...) {
		t.Logf("daemon: %s", l)
	}
	t.Logf("waited %v more for the prefetch (done %.1fs after the mount)", time.Since(start).Round(time.Millisecond), time.Since(sampler.start).Seconds())

	sameNames("second listing", list("second listing (cached)"), srv)

	// Every entry stat'ed, the way ls -l does.
	err, d := timed(t, "lstat of every entry", 120*time.Second, func() error {
		for i := 0; i < n; i++ {
			fi, err := os.Lstat(w.m(filepath.Join(dir, name(i))))
			if err != nil {
				return err
			}
			if fi.Size() != int64(len(content(i))) {
				return fmt.Errorf("%s: size %d, want %d", name(i), fi.Size(), len(content(i)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lstat of all %d entries: %v (%.0f/s)", n, d.Round(time.Millisecond), float64(n)/d.Seconds())

	// A few random ones in detail, content included.
	for k := 0; k < 20; k++ {
		i := rng.IntN(n)
		rel := filepath.Join(dir, name(i))
		mfi, err := os.Lstat(w.m(rel))
		if err != nil {
			t.Fatal(err)
		}
		sfi, err := os.Lstat(w.s(rel))
		if err != nil {
			t.Fatal(err)
		}
		if mfi.Size() != sfi.Size() || mfi.Mode() != sfi.Mode() || mfi.ModTime().Unix() != sfi.ModTime().Unix() {
			t.Errorf("%s: mount says size %d mode %v mtime %v; server %d %v %v", rel,
				mfi.Size(), mfi.Mode(), mfi.ModTime(), sfi.Size(), sfi.Mode(), sfi.ModTime())
		}
		b, err := os.ReadFile(w.m(rel))
		if err != nil || string(b) != content(i) {
			t.Errorf("read %s: %q, %v; want %q", rel, b, err, content(i))
		}
	}

	maxRSS := sampler.stop()
	mi, err := procMem(pid)
	if err != nil {
		t.Fatal(err)
	}
	hwm := mi.HWM
	st := w.status()
	top := sampler.peak()
	t.Logf("daemon memory with %d entries: now %v; largest VmRSS sampled %s (anon %s, file %s; %d samples); status: %d cached entries, cache_bytes %d",
		n, mi, mib(maxRSS), mib(top.Anon), mib(top.File), sampler.samples.Load(), st.CachedEntries, st.CacheBytes)
	t.Logf("daemon VmRSS (MiB) since the mount: %s", sampler.timeline())
	if scaleStress() {
		if hwm > rssLimit {
			t.Errorf("daemon peak resident memory (VmHWM) %s with %d entries in one folder; target is under %s (see the VmRSS timeline above for when)", mib(hwm), n, mib(rssLimit))
		}
	} else {
		t.Logf("(race-enabled daemon: memory only logged; REMOTEFS_STRESS=1 asserts < %s for 100,000 entries)", mib(rssLimit))
	}

	// 100 new files and 100 deletions through the mount.
	want := serverNames()
	start = time.Now()
	for k := 0; k < 100; k++ {
		rel := filepath.Join(dir, fmt.Sprintf("new-%03d.txt", k))
		if err := os.WriteFile(w.m(rel), []byte(fmt.Sprintf("new file %d\n", k)), 0o644); err != nil {
			t.Fatal(err)
		}
		want[filepath.Base(rel)] = true
	}
	deleted := 0
	for deleted < 100 {
		nm := name(rng.IntN(n))
		if !want[nm] {
			continue
		}
		if err := os.Remove(w.m(filepath.Join(dir, nm))); err != nil {
			t.Fatal(err)
		}
		delete(want, nm)
		deleted++
	}
	t.Logf("100 creates and 100 deletes through the mount: %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	w.scaleRun(120*time.Second, "flush", w.mnt)
	t.Logf("flush: %v", time.Since(start).Round(time.Millisecond))

	sameNames("server after flush", keys(serverNames()), want)
	sameNames("mount after flush", list("listing after the changes"), want)
	for k := 0; k < 100; k++ {
		rel := filepath.Join(dir, fmt.Sprintf("new-%03d.txt", k))
		b, err := os.ReadFile(w.s(rel))
		if ws := fmt.Sprintf("new file %d\n", k); err != nil || string(b) != ws {
			t.Errorf("server %s: %q, %v; want %q", rel, b, err, ws)
		}
	}
	if st := w.status(); st.Pending != 0 || len(st.Conflicts) != 0 {
		t.Errorf("after flush: %d pending, conflicts %v", st.Pending, st.Conflicts)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The large files' content: every 4 KiB block starts with its index (8
// bytes, big endian) and a tag byte telling the files apart, and the rest
// of the block is one byte that depends on both, so a block served from the
// wrong offset, the wrong file or a hole is caught.
const patBlock = 4096

var (
	patOnce      sync.Once
	patTemplates [256][patBlock]byte
)

// fillPattern writes the pattern of file tag for offset off into buf; off
// is a multiple of patBlock.
func fillPattern(buf []byte, off int64, tag byte) {
	patOnce.Do(func() {
		for v := range patTemplates {
			for i := range patTemplates[v] {
				patTemplates[v][i] = byte(v)
			}
		}
	})
	if off%patBlock != 0 {
		panic("fillPattern: unaligned offset")
	}
	for b := 0; b*patBlock < len(buf); b++ {
		idx := uint64(off/patBlock) + uint64(b)
		blk := buf[b*patBlock : min((b+1)*patBlock, len(buf))]
		copy(blk, patTemplates[byte(idx*131)^tag][:])
		var head [9]byte
		encbin.BigEndian.PutUint64(head[:8], idx)
		head[8] = tag
		copy(blk, head[:])
	}
}

// expectedRange is the pattern of file tag for [off, off+n).
func expectedRange(off int64, n int, tag byte) []byte {
	start := off / patBlock * patBlock
	buf := make([]byte, int(off-start)+n)
	fillPattern(buf, start, tag)
	return buf[off-start:]
}

// patternMismatch describes where got (read at off) first differs from
// the pattern, or returns "".
func patternMismatch(got, want []byte, off int64) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	at := off + int64(i)
	blk := at / patBlock
	s := fmt.Sprintf("first difference at offset %d (block %d, byte %d of it): got %#x, want %#x", at, blk, at%patBlock, got[i], want[i])
	if bs := blk*patBlock - off; bs >= 0 && int(bs)+9 <= len(got) {
		h := got[bs : bs+9]
		s += fmt.Sprintf("; that block's marker reads index %d tag %#x", encbin.BigEndian.Uint64(h[:8]), h[8])
	}
	return s
}

// writePattern writes size bytes of file tag to w in 1 MiB chunks.
func writePattern(w io.Writer, size int64, tag byte) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), size-off)]
		fillPattern(chunk, off, tag)
		if _, err := w.Write(chunk); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	return nil
}

// verifyPattern reads r to its end with a 1 MiB buffer and checks it is
// exactly size bytes of file tag.
func verifyPattern(r io.Reader, size int64, tag byte) error {
	buf := make([]byte, 1<<20)
	want := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if off+int64(n) > size {
				return fmt.Errorf("longer than %d bytes", size)
			}
			fillPattern(want[:n], off, tag)
			if m := patternMismatch(buf[:n], want[:n], off); m != "" {
				return fmt.Errorf("%s", m)
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	if off != size {
		return fmt.Errorf("%d bytes, want %d", off, size)
	}
	return nil
}

// diskUsage is the space the files under dir take on disk (st_blocks:
// holes of sparse files do not count).
func diskUsage(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// TestScaleLargeFile: a file far larger than the daemon's memory budget
// (300 MiB; 5 GiB with REMOTEFS_STRESS=1) is read through the mount, first
// a range in its middle (only about that range may be fetched), then
// sequentially end to end, every byte checked; then a new file of the same
// size is written through the mount and flushed, and the server's copy is
// checked byte for byte. The daemon's resident memory is sampled all along
// and must stay far below the file's size (asserted < 400 MB in the long
// form); no upload temporary may be left on the server.
func TestScaleLargeFile(t *testing.T) {
	size := int64(300 << 20)
	if scaleStress() {
		size = 5 << 30
	}
	const rssLimit = 400 << 20
	const tagServer, tagMount = 'S', 'M'
	w := newCheckedWorld(t)
	bin := scaleBinary(t)

	start := time.Now()
	f, err := os.Create(w.s("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writePattern(f, size, tagServer); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("created %s on the server in %v", mib(size), time.Since(start).Round(time.Millisecond))

	pid := w.scaleMount(bin)
	t.Logf("mounted with %s, daemon pid %d", filepath.Base(bin), pid)
	cacheDir := w.status().CacheDir
	checkRSS := func(what string, maxRSS int64) {
		t.Helper()
		mi, err := procMem(pid)
		if err != nil {
			t.Fatal(err)
		}
		hwm := mi.HWM
		t.Logf("daemon memory during %s: largest VmRSS sampled %s; now %v", what, mib(maxRSS), mi)
		if scaleStress() && max(maxRSS, hwm) > rssLimit {
			t.Errorf("daemon resident memory reached %s during %s of a %s file; it must stay under %s (the file must not be held in memory)",
				mib(max(maxRSS, hwm)), what, mib(size), mib(rssLimit))
		}
	}

	// A range in the middle of the uncached file: only about that range is
	// fetched.
	{
		mf, err := os.Open(w.m("big.bin"))
		if err != nil {
			t.Fatal(err)
		}
		off, n := size/2+3*patBlock+100, 256<<10
		got := make([]byte, n)
		var k int
		err, d := timed(t, "pread in the middle", 60*time.Second, func() error {
			var err error
			k, err = mf.ReadAt(got, off)
			return err
		})
		mf.Close()
		if err != nil || k != n {
			t.Fatalf("pread %d bytes at %d: %d, %v", n, off, k, err)
		}
		if m := patternMismatch(got, expectedRange(off, n, tagServer), off); m != "" {
			t.Fatalf("pread at %d: %s", off, m)
		}
		st := w.status()
		du := diskUsage(filepath.Join(cacheDir, "content"))
		t.Logf("pread of %d KiB at offset %d of the uncached %s file: %v; then cache_bytes %s, content on disk %s",
			n>>10, off, mib(size), d.Round(time.Millisecond), mib(st.CacheBytes), mib(du))
		if lim := int64(32 << 20); st.CacheBytes > lim || du > lim {
			t.Errorf("after reading %d KiB in the middle of a %s file, the cache holds %s (cache_bytes) and %s on disk; want far less than the file (< %s)",
				n>>10, mib(size), mib(st.CacheBytes), mib(du), mib(lim))
		}
	}

	// The whole file, sequentially.
	{
		sampler := sampleRSS(pid)
		mf, err := os.Open(w.m("big.bin"))
		if err != nil {
			t.Fatal(err)
		}
		err, d := timed(t, "sequential read", 30*time.Minute, func() error { return verifyPattern(mf, size, tagServer) })
		mf.Close()
		if err != nil {
			t.Fatalf("reading big.bin through the mount: %v", err)
		}
		t.Logf("sequential read of %s through the mount, every byte checked: %v (%s)", mib(size), d.Round(time.Millisecond), mibps(size, d))
		checkRSS("the sequential read", sampler.stop())
		st := w.status()
		t.Logf("after the read: cache_bytes %s, content on disk %s", mib(st.CacheBytes), mib(diskUsage(filepath.Join(cacheDir, "content"))))
	}

	// A new file of the same size written through the mount, then flushed.
	{
		sampler := sampleRSS(pid)
		err, d := timed(t, "sequential write", 30*time.Minute, func() error {
			mf, err := os.Create(w.m("up.bin"))
			if err != nil {
				return err
			}
			if err := writePattern(mf, size, tagMount); err != nil {
				mf.Close()
				return err
			}
			return mf.Close()
		})
		if err != nil {
			t.Fatalf("writing up.bin through the mount: %v", err)
		}
		t.Logf("sequential write of %s through the mount (to the local cache): %v (%s)", mib(size), d.Round(time.Millisecond), mibps(size, d))
		st := w.status()
		t.Logf("after close: %d pending, pending_bytes %s", st.Pending, mib(st.PendingBytes))
		start := time.Now()
		w.scaleRun(30*time.Minute, "flush", w.mnt)
		d = time.Since(start)
		t.Logf("flush (upload) of %s: %v (%s)", mib(size), d.Round(time.Millisecond), mibps(size, d))
		checkRSS("the write and upload", sampler.stop())
	}

	sf, err := os.Open(w.s("up.bin"))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = verifyPattern(sf, size, tagMount)
	sf.Close()
	if err != nil {
		t.Fatalf("up.bin on the server: %v", err)
	}
	t.Logf("server copy checked in %v", time.Since(start).Round(time.Millisecond))
	ents, err := os.ReadDir(w.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if conn.IsTempName(e.Name()) {
			t.Errorf("upload temporary left on the server: %s", e.Name())
		}
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "big.bin up.bin" {
		t.Errorf("server folder holds %q, want big.bin and up.bin", names)
	}
	if st := w.status(); st.Pending != 0 || len(st.Conflicts) != 0 || st.UploadError != "" {
		t.Errorf("after flush: %d pending, conflicts %v, upload error %q", st.Pending, st.Conflicts, st.UploadError)
	}
	// The server's file is not changed by reading it back through the
	// mount, and the mount shows the uploaded size.
	if fi, err := os.Stat(w.m("up.bin")); err != nil || fi.Size() != size {
		t.Errorf("stat up.bin on the mount: %v, %v; want size %d", fi, err, size)
	}
}

// TestScalePatternCheck checks the checker the large-file test relies on:
// a flipped byte, a block from the wrong offset or file, and a short or
// long file are all caught.
func TestScalePatternCheck(t *testing.T) {
	const size = 3<<20 + 5000 // not a whole number of blocks
	var good bytes.Buffer
	if err := writePattern(&good, size, 'A'); err != nil {
		t.Fatal(err)
	}
	if err := verifyPattern(bytes.NewReader(good.Bytes()), size, 'A'); err != nil {
		t.Fatalf("intact content: %v", err)
	}
	if !bytes.Equal(expectedRange(1<<20+123, 10000, 'A'), good.Bytes()[1<<20+123:1<<20+123+10000]) {
		t.Fatal("expectedRange disagrees with writePattern")
	}
	bad := func(what string, b []byte, n int64, tag byte) {
		t.Helper()
		if err := verifyPattern(bytes.NewReader(b), n, tag); err == nil {
			t.Errorf("%s: not caught", what)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}
	flip := bytes.Clone(good.Bytes())
	flip[2<<20+77] ^= 1
	bad("flipped byte", flip, size, 'A')
	moved := bytes.Clone(good.Bytes())
	copy(moved[5*patBlock:6*patBlock], moved[9*patBlock:10*patBlock])
	bad("block from another offset", moved, size, 'A')
	bad("other file", good.Bytes(), size, 'B')
	bad("short", good.Bytes()[:size-1], size, 'A')
	bad("long", append(bytes.Clone(good.Bytes()), 0), size, 'A')
	zero := bytes.Clone(good.Bytes())
	clear(zero[1<<20 : 2<<20])
	bad("hole", zero, size, 'A')
}
