package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"sync"
	"time"
)

// Large files are cached by ranges: their content file is sparse, and a
// bitmap of 1 MiB blocks (persisted with the entry) says which parts hold
// the server's data. Reads fetch the missing blocks they need, several at
// once, plus a readahead window when reading sequentially; the file
// becomes clean when every block is there. Anything that needs the whole
// file (opening it for writing, truncate, link) downloads the rest first.

const (
	blockSize = 1 << 20
	// readaheadBlocks: how far ahead of a sequential reader blocks are
	// fetched in the background (their runs queue for readaheadRuns).
	readaheadBlocks = 64
	// maxRunBlocks: the most blocks one server read asks for. Runs are
	// kept short so that a readahead window is several reads in parallel,
	// spread over conn's content sessions (each carries one ssh channel
	// window per round trip), and so that the reader gets its next block
	// as soon as it arrives rather than with the whole run.
	maxRunBlocks = 2
	// streamRead: a first read at offset 0 of at least this much starts
	// readahead.
	streamRead = 64 << 10
	// readaheadRuns: the most readahead runs in flight at once (all
	// files). Waiting runs start lowest block first as others end, so
	// they finish in about that order and the reader moves on while the
	// rest stream; with every run of the window in flight at once they
	// would share the link and all finish together, the reader waiting
	// for the slowest. 24 runs of 2 MiB keep 48 MiB asked for, about
	// five queued on each of conn's content sessions, so that a session's
	// window is never idle while one of its runs pays its other round
	// trips (open, stat: three a run). Measured at 50 ms straight over
	// SFTP (no FUSE), 8 sessions: 88-107 MB/s with 12 runs in flight,
	// 115 with 24, 166-184 with 32; the window, not the runs, is what
	// the sessions' count bounds.
	readaheadRuns = 24
)

func blocksFor(size int64) int { return int((size + blockSize - 1) / blockSize) }

func (e *entry) hasBlock(i int) bool {
	return i/8 < len(e.blocks) && e.blocks[i/8]&(1<<(i%8)) != 0
}

func (e *entry) setBlock(i int) {
	for len(e.blocks) <= i/8 {
		e.blocks = append(e.blocks, 0)
	}
	e.blocks[i/8] |= 1 << (i % 8)
}

func (e *entry) allBlocks() bool {
	for i := 0; i < blocksFor(e.size); i++ {
		if !e.hasBlock(i) {
			return false
		}
	}
	return true
}

// presentBytes is how much of e's content is on local disk.
func (e *entry) presentBytes() int64 {
	if e.content != contentPartial {
		return e.size
	}
	var n int64
	for i := 0; i < blocksFor(e.size); i++ {
		if e.hasBlock(i) {
			n += blockSize
		}
	}
	return min(n, e.size)
}

// startPartialLocked makes e a range-cached file with no block yet: a
// sparse content file of the full size. Caller holds mu.
func (s *Store) startPartialLocked(e *entry) error {
	// A new file, never the old one truncated: a handle of an earlier
	// epoch may still be reading that one.
	os.Remove(s.contentPath(e.ino))
	f, err := os.OpenFile(s.contentPath(e.ino), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(e.size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(s.contentPath(e.ino))
		return err
	}
	e.content = contentPartial
	e.blocks = nil
	s.newEpochLocked(e)
	s.dirtyIno[e.ino] = true
	s.touchContentLocked(e)
	return nil
}

// ensureRange makes sure bytes [off, off+n) of a range-cached file are on
// local disk. reading says the handle has read before (readAheadLocked).
func (h *Handle) ensureRange(ctx context.Context, off int64, n int, reading bool) error {
	s := h.s
	s.mu.Lock()
	e := s.entries[h.ino]
	if e == nil || e.content != contentPartial {
		s.mu.Unlock()
		return nil
	}
	size := e.size
	s.mu.Unlock()
	if off >= size {
		return nil
	}
	first, last := int(off/blockSize), int((min(off+int64(n), size)-1)/blockSize)
	err := s.fetchBlocks(ctx, h.ino, first, last)
	if errors.Is(err, ErrOffline) && reading {
		// A read in progress rides out a short outage (an sshd restart, a
		// Wi-Fi hiccup) instead of failing the program mid-file; a new
		// read of content never fetched still fails at once.
		err = s.retryWhenBack(ctx, func() error { return s.fetchBlocks(ctx, h.ino, first, last) })
	}
	return err
}

// readAheadLocked notes a read of [off, off+n) through h of e, a
// range-cached file, and says whether h had read before. When the reads
// are sequential it returns the blocks to fetch ahead of the reader
// (from <= to) if any of them is neither present nor being fetched: the
// window moves with every read, blocks already cached or not, so the
// link always has readahead runs to carry (readaheadRuns at once) and one
// file streams at the link's speed. Reads that land within a block of
// where the last one ended count as sequential (the kernel's readahead
// may send a few out of order). Caller holds mu.
func (h *Handle) readAheadLocked(e *entry, off int64, n int) (from, to int, reading bool) {
	next := h.nextOff
	reading = next > 0
	// A first read of the file's start big enough to be a stream (cat, cp,
	// the kernel's own readahead) starts the window at once; a small one
	// (a program looking at a header) does not.
	start := off == 0 && next == 0 && n >= streamRead
	sequential := start || (off > 0 && off >= next-blockSize && off <= next+blockSize)
	if sequential {
		h.nextOff = max(next, off+int64(n))
	} else {
		h.nextOff = off + int64(n)
	}
	if !sequential || off >= e.size {
		return 0, -1, reading
	}
	from = int((min(off+int64(n), e.size)-1)/blockSize) + 1
	to = min(from+readaheadBlocks-1, blocksFor(e.size)-1)
	// Wait until a whole run's worth is missing (or the file's end is
	// in the window): single-block runs would pay a run's round trips
	// for each megabyte.
	inflight := h.s.blockFetch[h.ino]
	missing := 0
	for i := from; i <= to; i++ {
		if !e.hasBlock(i) && inflight[i] == nil {
			missing++
		}
	}
	if missing >= maxRunBlocks || (missing > 0 && to == blocksFor(e.size)-1) {
		return from, to, reading
	}
	return 0, -1, reading
}

// retryWhenBack waits up to Options.ResumeWait for the server to be back
// online, then calls f again.
func (s *Store) retryWhenBack(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(s.opts.ResumeWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if s.online() {
			if err := f(); !errors.Is(err, ErrOffline) {
				return err
			}
		} else {
			s.errOffline() // ask for a redial (rate-limited below)
		}
	}
	return ErrOffline
}

// fetchBlocks downloads the missing blocks in [first, last], in runs of
// contiguous blocks fetched in parallel; blocks another reader is already
// fetching are waited for, not fetched twice. A run is kept only if the
// server's file was still the version the blocks belong to when the run
// was read (fetchRun); otherwise the new version replaces the cached one
// and the caller, finding a new epoch, starts over.
func (s *Store) fetchBlocks(ctx context.Context, ino Ino, first, last int) error {
	return s.fetchBlocksLimited(ctx, ino, first, last, nil)
}

// readAhead fetches blocks [first, last] for a sequential reader, in the
// background: at most readaheadRuns runs in flight.
func (s *Store) readAhead(ino Ino, first, last int) {
	s.fetchBlocksLimited(context.Background(), ino, first, last, s.readahead)
}

// runQueue lets a limited number of runs fetch at once; the waiting run
// with the lowest block goes next. mu is a leaf lock.
type runQueue struct {
	mu      sync.Mutex
	free    int
	waiting []runWaiter // by block
}

type runWaiter struct {
	block int
	ready chan struct{}
}

func (q *runQueue) acquire(block int) {
	q.mu.Lock()
	if q.free > 0 {
		q.free--
		q.mu.Unlock()
		return
	}
	w := runWaiter{block: block, ready: make(chan struct{})}
	i := sort.Search(len(q.waiting), func(i int) bool { return q.waiting[i].block > block })
	q.waiting = slices.Insert(q.waiting, i, w)
	q.mu.Unlock()
	<-w.ready
}

func (q *runQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		q.free++
		return
	}
	close(q.waiting[0].ready)
	q.waiting = q.waiting[1:]
}

// fetchBlocksLimited is fetchBlocks; with limit, each run waits for its
// turn there before it starts.
func (s *Store) fetchBlocksLimited(ctx context.Context, ino Ino, first, last int, limit *runQueue) error {
	type run struct{ from, to int }
	var runs []run
	var waits []*fetchCall
	s.mu.Lock()
	e := s.entries[ino]
	if e == nil || e.content != contentPartial {
		s.mu.Unlock()
		return nil
	}
	if s.blockFetch[ino] == nil {
		s.blockFetch[ino] = map[int]*fetchCall{}
	}
	inflight := s.blockFetch[ino]
	for i := first; i <= last; i++ {
		if e.hasBlock(i) {
			continue
		}
		if c := inflight[i]; c != nil {
			waits = append(waits, c)
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].to == i-1 && i-runs[n-1].from < maxRunBlocks {
			runs[n-1].to = i
		} else {
			runs = append(runs, run{i, i})
		}
	}
	if len(runs) > 0 && !s.online() {
		s.mu.Unlock()
		return s.errOffline()
	}
	if len(runs) > 0 && e.orphan() {
		s.mu.Unlock()
		return fmt.Errorf("%w: the file was removed on the server while it was read", ErrChanged)
	}
	want := blockVersion{path: s.pathOf(e), epoch: e.epoch, version: e.remote, since: s.jr.mark()}
	calls := make([]*fetchCall, len(runs))
	for k, r := range runs {
		calls[k] = &fetchCall{done: make(chan struct{})}
		for i := r.from; i <= r.to; i++ {
			inflight[i] = calls[k]
		}
	}
	s.mu.Unlock()

	errs := make(chan error, len(runs))
	for k, r := range runs {
		go func() {
			if limit != nil {
				limit.acquire(r.from)
			}
			var err error
			if limit == nil || s.epochIs(ino, want.epoch) {
				err = s.fetchRun(ctx, ino, want, r.from, r.to)
			} // else: replaced while the run waited its turn; nothing to fetch
			if limit != nil {
				limit.release()
			}
			s.mu.Lock()
			for i := r.from; i <= r.to; i++ {
				if s.blockFetch[ino] != nil && s.blockFetch[ino][i] == calls[k] {
					delete(s.blockFetch[ino], i)
				}
			}
			if len(s.blockFetch[ino]) == 0 {
				delete(s.blockFetch, ino)
			}
			s.mu.Unlock()
			calls[k].err = err
			close(calls[k].done)
			errs <- err
		}()
	}
	var first_ error
	for range runs {
		if err := <-errs; err != nil && first_ == nil {
			first_ = err
		}
	}
	for _, c := range waits {
		select {
		case <-c.done:
			if c.err != nil && first_ == nil {
				first_ = c.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first_
}

// epochIs reports whether ino's content is still of epoch.
func (s *Store) epochIs(ino Ino, epoch uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	return e != nil && e.content == contentPartial && e.epoch == epoch
}

// blockVersion is what fetched blocks must belong to: the entry's content
// epoch and the server version it caches, at path.
type blockVersion struct {
	path    string
	epoch   uint64
	version Version
	since   uint64 // Store.applied when the fetch started (keepLocal)
}

// fetchRun reads blocks [from, to] from the server into the content file
// of epoch want.epoch, if the server's file is still want.version once
// they are read.
func (s *Store) fetchRun(ctx context.Context, ino Ino, want blockVersion, from, to int) error {
	p := want.path
	off := int64(from) * blockSize
	// A buffer of the run's own: after an error (a read abandoned at its
	// deadline) the requests still in flight may write it.
	buf := make([]byte, int64(to-from+1)*blockSize)
	n, fi, err := s.remote.ReadAt(ctx, p, buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s vanished from the server: %w", p, err)
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || e.content != contentPartial || e.epoch != want.epoch {
		return nil // replaced meanwhile; the reader looks again
	}
	if versionOf(fi) != want.version || fi.Mode != e.mode {
		// The bytes may be another version's, or a mix: never kept. The
		// server's current version replaces the cached one (new epoch).
		if !fi.Mode.IsRegular() || s.pathOf(e) != p || e.localOwned() || s.keepLocal(p, want.since) {
			return fmt.Errorf("%s: %w (a block came from another version, which cannot replace the cached one now)", p, ErrChanged)
		}
		fi.Name = e.name
		s.applyServerAttrs(e, fi)
		e.checked = stampOf(s.now())
		return nil // the reader asks again
	}
	need := min(int64(len(buf)), e.size-off)
	if int64(n) < need {
		return fmt.Errorf("%s: %w (shorter than its version)", p, ErrChanged)
	}
	f, err := os.OpenFile(s.contentPath(ino), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(buf[:need], off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for i := from; i <= to; i++ {
		e.setBlock(i)
	}
	if e.allBlocks() {
		e.content, e.blocks = contentClean, nil
	}
	s.dirtyIno[ino] = true
	s.touchContentLocked(e)
	s.evictLocked(ino)
	return nil
}
