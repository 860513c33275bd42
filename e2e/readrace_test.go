package e2e

import (
	binenc "encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReadsRaceServerWrites: programs on the server create, append to,
// rewrite in place, truncate and replace (by rename) files, large (range
// cached) and small, while readers on the mount read them whole, by
// ranges and through mmap. Every byte of every read is checked against
// every state the server's file went through: a read must be one state,
// or, when it overlaps a write the server was making, states of that one
// write (the server's own read would see the same); a byte no state had
// at that offset (zeros, holes, another version's data) fails the test.
//
// Run on links of 0 and 50 ms round trip, with the change feed live and
// with it off. Seeded: REMOTEFS_SEED=N replays a run (the seed is logged);
// REMOTEFS_STRESS=1 runs each configuration for a minute instead of 4 s.
//
// The server's versions are (size, mtime in whole seconds), so two
// rewrites of the same size within one second cannot be told apart by
// any stat; the writers start each operation on a file in a later second
// than the previous one ended (the limit is written in the cache doc).
func TestReadsRaceServerWrites(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("REMOTEFS_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("REMOTEFS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	requireCommand(t, "python3") // the mmap reader
	run := 4 * time.Second
	if os.Getenv("REMOTEFS_STRESS") == "1" {
		run = 60 * time.Second
	}
	t.Logf("seed %d (rerun with REMOTEFS_SEED=%d)", seed, seed)
	for i, c := range []struct {
		name  string
		rtt   time.Duration
		watch string
	}{
		{"rtt0-feed", 0, "helper"},
		{"rtt50-feed", 50 * time.Millisecond, "helper"},
		{"rtt0-nofeed", 0, "off"},
		{"rtt50-nofeed", 50 * time.Millisecond, "off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			raceReadsAndWrites(t, seed+int64(i), c.rtt, c.watch, run)
		})
	}
}

// word: the 8 bytes at offset 8*idx of layer l of file f. Layer 0 is
// zeros (a file extended by truncate).
func word(f, l int, idx int64) uint64 {
	if l == 0 {
		return 0
	}
	x := uint64(f)<<48 ^ uint64(l)<<32 ^ uint64(idx)
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// fill puts layer l's bytes for offsets [off, off+len(b)) of file f in b.
func fill(b []byte, f, l int, off int64) {
	for i := 0; i < len(b); {
		o := off + int64(i)
		w := word(f, l, o/8)
		for k := o % 8; k < 8 && i < len(b); k++ {
			b[i] = byte(w >> (8 * k))
			i++
		}
	}
}

// segment: bytes [from, to) of the file are layer l's.
type segment struct {
	from, to int64
	l        int
}

// fileState is the content the server's file had at one moment.
type fileState []segment

func (s fileState) size() int64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1].to
}

// write returns s with [off, off+n) replaced by layer l.
func (s fileState) write(off, n int64, l int) fileState {
	var out fileState
	end := off + n
	if sz := s.size(); off > sz {
		s = append(s[:len(s):len(s)], segment{sz, off, 0})
	}
	for _, g := range s {
		if g.from < off {
			out = append(out, segment{g.from, min(g.to, off), g.l})
		}
	}
	out = append(out, segment{off, end, l})
	for _, g := range s {
		if g.to > end {
			out = append(out, segment{max(g.from, end), g.to, g.l})
		}
	}
	return out
}

// truncate returns s cut or extended (with zeros) to size.
func (s fileState) truncate(size int64) fileState {
	if size >= s.size() {
		if size == s.size() {
			return s
		}
		return append(s[:len(s):len(s)], segment{s.size(), size, 0})
	}
	var out fileState
	for _, g := range s {
		if g.from < size {
			out = append(out, segment{g.from, min(g.to, size), g.l})
		}
	}
	return out
}

// matchLen is how many bytes of data, read at off, state s explains.
func (s fileState) matchLen(f int, data []byte, off int64) int {
	var want [8]byte
	n := 0
	for _, g := range s {
		for n < len(data) && off+int64(n) >= g.from && off+int64(n) < g.to {
			o := off + int64(n)
			k := int(min(8-o%8, g.to-o, int64(len(data)-n)))
			fill(want[:k], f, g.l, o)
			for j := range k {
				if data[n] != want[j] {
					return n
				}
				n++
			}
		}
	}
	return n
}

// serverFile is one file the writers change, with every state it held.
type serverFile struct {
	id   int
	name string
	big  bool

	op sync.Mutex // held for a whole operation

	mu     sync.Mutex
	states []fileState
	ops    [][2]int // the states of each operation: [first, last]
	layers int
	lastOp time.Time // when the last operation ended
}

func (sf *serverFile) add(s fileState) {
	sf.mu.Lock()
	sf.states = append(sf.states, s)
	sf.mu.Unlock()
}

func (sf *serverFile) current() fileState {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	return sf.states[len(sf.states)-1]
}

func (sf *serverFile) newLayer() int {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	sf.layers++
	return sf.layers
}

// explains reports whether every byte of data (read at off) is explained
// by the states [lo, hi]: any of them at each position.
func (sf *serverFile) explains(data []byte, off int64, lo, hi int) bool {
	for pos := 0; pos < len(data); {
		best := 0
		for i := hi; i >= lo && best < len(data)-pos; i-- {
			best = max(best, sf.states[i].matchLen(sf.id, data[pos:], off+int64(pos)))
		}
		if best == 0 {
			return false
		}
		pos += best
	}
	return true
}

// verdict of one read.
const (
	readOne  = iota // one state
	readTorn        // states of one server write in progress
	readMix         // states of several operations: a read that mixed versions
	readNever
)

func (sf *serverFile) check(data []byte, off int64) int {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	for i := len(sf.states) - 1; i >= 0; i-- {
		if sf.states[i].matchLen(sf.id, data, off) == len(data) {
			return readOne
		}
	}
	for k := len(sf.ops) - 1; k >= 0; k-- {
		if o := sf.ops[k]; sf.explains(data, off, max(o[0]-1, 0), o[1]) {
			return readTorn
		}
	}
	if !sf.explains(data, off, 0, len(sf.states)-1) {
		return readNever
	}
	return readMix
}

// checkRead checks a read, waiting for the operation in progress on the
// file (whose states may not all be logged yet) before calling it bad.
func (sf *serverFile) checkRead(data []byte, off int64) int {
	if v := sf.check(data, off); v <= readTorn {
		return v
	}
	sf.op.Lock()
	sf.op.Unlock()
	return sf.check(data, off)
}

// raceStats counts what the readers saw.
type raceStats struct {
	reads, torn, bytes, errs, mmaps, writes atomic.Int64
}

// enough: the readers checked enough to make the run mean something,
// including at least one read through mmap.
func (s *raceStats) enough() bool {
	return s.reads.Load() >= 20 && s.bytes.Load() >= 1<<20 && s.mmaps.Load() > 0
}

func raceReadsAndWrites(t *testing.T, seed int64, rtt time.Duration, watch string, run time.Duration) {
	w := newWorld(t)
	p := w.viaProxy()
	files := []*serverFile{}
	for i := range 6 {
		sf := &serverFile{id: i + 1, name: fmt.Sprintf("f%d.bin", i), big: i < 2}
		files = append(files, sf)
	}
	rng := rand.New(rand.NewSource(seed))
	sizeFor := func(r *rand.Rand, sf *serverFile) int64 {
		if sf.big {
			return 16<<20 + r.Int63n(5<<20) - 1<<20 // around and above the range-cache threshold
		}
		return 1 + r.Int63n(300<<10)
	}
	for _, sf := range files {
		l := sf.newLayer()
		size := sizeFor(rng, sf)
		writeLayer(t, w.s(sf.name), 0, size, sf.id, l, nil)
		sf.states = []fileState{fileState{}.write(0, size, l)}
		sf.ops = [][2]int{{0, 0}}
		sf.lastOp = time.Now()
	}
	args := []string{"--watch", watch}
	if watch == "off" {
		args = append(args, "--attr-ttl", "200ms")
	}
	w.mount(args...)
	if watch != "off" {
		eventually(t, 20*time.Second, "the change feed to start", func() bool { return w.status().Watch == watch })
	}
	p.SetLatency(rtt / 2)

	var st raceStats
	var failed atomic.Bool
	fail := func(format string, a ...any) {
		if failed.CompareAndSwap(false, true) {
			t.Errorf(format, a...)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range 2 {
		wg.Add(1)
		r := rand.New(rand.NewSource(seed*31 + int64(k)))
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sf := files[r.Intn(len(files))]
				serverOp(t, w, r, sf, sizeFor(r, sf), &st)
				time.Sleep(time.Duration(r.Intn(200)) * time.Millisecond)
			}
		}()
	}
	for k := range 3 {
		wg.Add(1)
		r := rand.New(rand.NewSource(seed*17 + int64(k)))
		go func() {
			defer wg.Done()
			for !failed.Load() {
				select {
				case <-stop:
					return
				default:
				}
				sf := files[r.Intn(len(files))]
				switch k {
				case 0:
					readWhole(w.m(sf.name), r, sf, &st, fail)
				case 1:
					readRanges(w.m(sf.name), r, sf, &st, fail)
				case 2:
					readMmap(w.m(sf.name), r, sf, &st, fail)
				}
				time.Sleep(time.Duration(r.Intn(50)) * time.Millisecond)
			}
		}()
	}
	// Run for at least run, and on until the readers have checked enough:
	// on a slow link a reader can spend seconds on one large file that
	// keeps changing under it, and a run that checked little proves little.
	// A mount that lets no read succeed still fails, at the cap.
	start := time.Now()
	for !failed.Load() && (time.Since(start) < run || (time.Since(start) < 4*run+20*time.Second && !st.enough())) {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// Serving old versions forever would pass every check above: once the
	// writers stop, the mount must come to show each file's last state.
	for _, sf := range files {
		last := sf.current()
		eventually(t, 10*time.Second, sf.name+" on the mount to show the server's last version", func() bool {
			b, err := os.ReadFile(w.m(sf.name))
			return err == nil && int64(len(b)) == last.size() && last.matchLen(sf.id, b, 0) == len(b)
		})
	}
	states := 0
	for _, sf := range files {
		states += len(sf.states)
	}
	t.Logf("%s, %v rtt: %d server operations (%d states), %d reads (%d through mmap) checked, %d MiB, %d reads overlapping a server write, %d failed with an error",
		watch, rtt, st.writes.Load(), states, st.reads.Load(), st.mmaps.Load(), st.bytes.Load()>>20, st.torn.Load(), st.errs.Load())
	if st.mmaps.Load() == 0 {
		t.Errorf("no read through mmap succeeded: the mmap path checked nothing")
	}
	if !st.enough() {
		t.Errorf("only %d reads (%d bytes) succeeded: the test checked too little", st.reads.Load(), st.bytes.Load())
	}
}

// writeLayer writes layer l at [off, off+n) of path, in chunks, calling
// step with the end of each chunk once it is written.
func writeLayer(t *testing.T, path string, off, n int64, id, l int, step func(end int64)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for pos := off; pos < off+n; {
		k := min(int64(len(buf)), off+n-pos)
		fill(buf[:k], id, l, pos)
		if _, err := f.WriteAt(buf[:k], pos); err != nil {
			t.Error(err)
			return
		}
		pos += k
		if step != nil {
			step(pos)
		}
	}
}

// serverOp makes one change to sf on the server, logging every state.
func serverOp(t *testing.T, w *world, r *rand.Rand, sf *serverFile, size int64, st *raceStats) {
	sf.op.Lock()
	defer sf.op.Unlock()
	// A new second for every operation on a file (see the test's doc).
	sf.mu.Lock()
	next := sf.lastOp.Truncate(time.Second).Add(time.Second)
	first := len(sf.states)
	sf.mu.Unlock()
	time.Sleep(time.Until(next))
	path := w.s(sf.name)
	cur := sf.current()
	l := sf.newLayer()
	switch op := r.Intn(5); op {
	case 0: // create and write: `> file`, then the data
		if err := os.Truncate(path, 0); err != nil {
			t.Error(err)
			return
		}
		sf.add(fileState{})
		writeLayer(t, path, 0, size, sf.id, l, func(end int64) { sf.add(fileState{}.write(0, end, l)) })
	case 1: // append
		n := 1 + r.Int63n(max(size/4, 1))
		base := cur.size()
		writeLayer(t, path, base, n, sf.id, l, func(end int64) { sf.add(cur.write(base, end-base, l)) })
	case 2: // rewrite in place, part or all
		n := 1 + r.Int63n(max(cur.size(), 1))
		if r.Intn(2) == 0 {
			n = max(cur.size(), 1)
		}
		writeLayer(t, path, 0, n, sf.id, l, func(end int64) { sf.add(cur.write(0, end, l)) })
	case 3: // truncate, mostly shorter
		n := r.Int63n(max(cur.size(), 1))
		if r.Intn(4) == 0 {
			n = cur.size() + r.Int63n(64<<10)
		}
		if err := os.Truncate(path, n); err != nil {
			t.Error(err)
			return
		}
		sf.add(cur.truncate(n))
	case 4: // replace by rename
		tmp := filepath.Join(filepath.Dir(path), ".new-"+sf.name)
		os.Remove(tmp)
		writeLayer(t, tmp, 0, size, sf.id, l, nil)
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
			return
		}
		sf.add(fileState{}.write(0, size, l))
	}
	st.writes.Add(1)
	sf.mu.Lock()
	if len(sf.states) > first {
		sf.ops = append(sf.ops, [2]int{first, len(sf.states) - 1})
	}
	sf.lastOp = time.Now()
	sf.mu.Unlock()
}

type failFunc func(format string, a ...any)

// verify checks one read of data at off.
func verify(how string, sf *serverFile, data []byte, off int64, st *raceStats, fail failFunc) {
	switch sf.checkRead(data, off) {
	case readNever:
		fail("%s of %s at %d (%d bytes): returned bytes the server's file never held there (first bytes % x)",
			how, sf.name, off, len(data), data[:min(len(data), 16)])
	case readMix:
		fail("%s of %s at %d (%d bytes): mixed versions of the file in one read", how, sf.name, off, len(data))
	case readTorn:
		st.torn.Add(1)
	}
	st.reads.Add(1)
	st.bytes.Add(int64(len(data)))
}

// readErr counts an error a read may return while the file changes:
// ESTALE (it kept changing), ENOENT (replaced between lookup and open).
func readErr(err error, what string, st *raceStats, fail failFunc) {
	if errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.ENOENT) {
		st.errs.Add(1)
		return
	}
	fail("%s: %v", what, err)
}

// readWhole reads the file from start to end with read(2) calls of
// varying size, checking each call.
func readWhole(path string, r *rand.Rand, sf *serverFile, st *raceStats, fail failFunc) {
	f, err := os.Open(path)
	if err != nil {
		readErr(err, "open", st, fail)
		return
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	var off int64
	for {
		n := 4096 + r.Intn(len(buf)-4096)
		got, err := syscall.Read(int(f.Fd()), buf[:n])
		if err != nil {
			readErr(err, "read "+sf.name, st, fail)
			return
		}
		if got == 0 {
			return
		}
		verify("read", sf, buf[:got], off, st, fail)
		off += int64(got)
	}
}

// readRanges makes a few pread(2) calls at random offsets.
func readRanges(path string, r *rand.Rand, sf *serverFile, st *raceStats, fail failFunc) {
	f, err := os.Open(path)
	if err != nil {
		readErr(err, "open", st, fail)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		readErr(err, "stat", st, fail)
		return
	}
	buf := make([]byte, 2<<20)
	for range 1 + r.Intn(8) {
		off := r.Int63n(max(fi.Size(), 1))
		n := 1 + r.Intn(len(buf))
		got, err := syscall.Pread(int(f.Fd()), buf[:n], off)
		if err != nil {
			readErr(err, "pread "+sf.name, st, fail)
			return
		}
		verify("pread", sf, buf[:got], off, st, fail)
	}
}

// mmapReader is a python program that maps a file and prints a few pages
// read through the mapping (each page is faulted in by one read of the
// file), each as offset, length and bytes. It runs in its own process: a
// page fault on the mount stalls the whole faulting process until it is
// served, and this test's process also runs the link's proxy.
const mmapReader = `
import mmap, os, random, struct, sys
path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
if size == 0:
    sys.exit(0)
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
out = sys.stdout.buffer
for _ in range(n):
    off = r.randrange(size) & ~4095
    data = m[off:off + 4096]  # SIGBUS when the file shrank meanwhile
    out.write(struct.pack('<QI', off, len(data)) + data)
    out.flush()
`

// readMmap checks the pages a python program read through mmap.
func readMmap(path string, r *rand.Rand, sf *serverFile, st *raceStats, fail failFunc) {
	out, err := exec.Command("python3", "-c", mmapReader, path, strconv.FormatInt(r.Int63(), 10), strconv.Itoa(1+r.Intn(8))).Output()
	if err != nil {
		// ENOENT at open, or SIGBUS: a page past the end of a file that
		// shrank meanwhile (how mmap reports it, not a wrong byte).
		st.errs.Add(1)
	}
	for len(out) >= 12 {
		off := int64(binenc.LittleEndian.Uint64(out))
		n := int(binenc.LittleEndian.Uint32(out[8:]))
		if len(out) < 12+n {
			break
		}
		st.mmaps.Add(1)
		verify("mmap", sf, out[12:12+n], off, st, fail)
		out = out[12+n:]
	}
}
