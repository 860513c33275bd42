package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// What a read returns (the rule of the package doc, enforced here).
//
// Every cached content file belongs to one epoch of its entry (entry.epoch,
// a number never reused): the content is dropped or replaced only by
// newEpochLocked, which also queues the invalidation of the kernel's pages
// for the file. A handle remembers the epoch of the content file it reads
// (Handle.epoch). servable is the one gate every read passes:
//
//   - same epoch, whole content (clean or dirty): the handle's file is
//     served as it is;
//   - same epoch, range-cached: only once the blocks the read covers are
//     present in that epoch's file (a block is written there only when the
//     server's file was still that epoch's version after it was read,
//     fetchRun); a fetch abandoned because the version went away never
//     leaves the read with the sparse file's holes;
//   - another epoch (the server's version changed, or the cached content
//     was replaced): once the kernel has been told (its pages of the old
//     epoch are gone; waited for briefly, else the read fails with
//     ErrChanged), a read-only handle moves to the entry's current content
//     (fetching what it needs) and the read is served from it; after
//     maxReadMoves moves in one read, it fails with ErrChanged.
//
// So one read returns bytes of one version. The kernel's page cache is
// kept to the same rule by ordering: the epoch changes (under mu) before
// the invalidation is queued, and the invalidation is delivered after
// (invalidateLoop): a read the kernel issued before the invalidation
// holds its pages locked, so the invalidation waits for it and drops what
// it brought; a read issued after it passes servable and sees the new
// epoch. fs also keeps the page cache across opens only while the epoch
// is unchanged (Handle.Epoch).

// maxReadMoves bounds how often one read follows the file to a new version
// before giving up with ErrChanged (the server keeps rewriting it).
const maxReadMoves = 8

// unsettledFor: a file the change feed reported this recently may still be
// being written on the server; see unsettled.
const unsettledFor = 2 * time.Second

// errMoved: the handle's content moved to another epoch; look again.
var errMoved = errors.New("content moved to a new version")

// newEpochLocked records that e's cached content was dropped or replaced:
// handles reading an older epoch move on at their next read, and the
// kernel is told to drop its pages of the file. Caller holds mu.
func (s *Store) newEpochLocked(e *entry) {
	s.epochs++
	e.epoch = s.epochs
	s.notifyLocked(Invalidation{Ino: e.ino})
	e.epochTold = s.invalQueued
}

// toldLocked reports whether the kernel has been told of e's current
// epoch (its pages of earlier epochs are gone). Caller holds mu.
func (s *Store) toldLocked(e *entry) bool {
	return s.opts.OnInvalidate == nil || s.invalDone >= e.epochTold
}

// waitTold waits a moment for the kernel to be told of ino's current
// epoch. It never waits long: the invalidation may itself be waiting for
// the pages the caller's read is filling.
//
// It cannot serve the read from the old version's file instead, although
// the kernel may be waiting for this very read's locked pages: a page
// filled with old bytes after the invalidation passed it would stay in
// the page cache, where later opens of the new version would read it.
func (s *Store) waitTold(ctx context.Context, ino Ino) bool {
	timer := time.NewTimer(waitToldFor)
	defer timer.Stop()
	for {
		s.mu.Lock()
		e := s.entries[ino]
		told := e == nil || s.toldLocked(e)
		delivered := s.invalDoneCh
		s.mu.Unlock()
		if told {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-delivered:
		}
	}
}

// waitToldFor bounds waitTold.
const waitToldFor = 100 * time.Millisecond

// unsettled reports whether e is a file the change feed reported changed
// moments ago: the server may still be writing it, so its attributes are
// not cached by the kernel and an open checks them with the server.
// Caller holds mu.
func (s *Store) unsettled(e *entry) bool {
	return !e.reported.IsZero() && s.now().Sub(e.reported.Time()) < unsettledFor
}

// Epoch is the epoch of the content this handle reads. The FUSE layer
// keeps the kernel's page cache across opens only while it is unchanged.
func (h *Handle) Epoch() uint64 {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.epoch
}

// servable returns the file a read of n bytes at off may be served from,
// fetching what is missing; errMoved means the content moved meanwhile
// and the caller asks again. rd is the read's own state across calls
// (it counts once for readahead).
func (h *Handle) servable(ctx context.Context, off int64, n int, rd *readState) (*os.File, error) {
	s := h.s
	s.mu.Lock()
	e := s.entries[h.ino]
	if e == nil {
		s.mu.Unlock()
		return nil, ErrStale
	}
	f := h.f
	if e.epoch != h.epoch && !h.writable {
		// The kernel may still hold pages of the handle's epoch: new bytes
		// next to them would mix two versions in one read(2). Move on once
		// they are gone, or fail this read; at once when the content was
		// dropped without a new version (a feed report of the same one).
		same := e.content != contentDirty && e.remote == h.version
		was, now := h.version, e.remote
		s.mu.Unlock()
		if !same && !s.waitTold(ctx, h.ino) {
			s.log.Info("read of a changed file fails: the kernel still holds the old version's pages", "ino", h.ino, "was", was, "now", now)
			return nil, fmt.Errorf("%w: the file changed on the server while it was read", ErrChanged)
		}
		return nil, h.moveToCurrent(ctx)
	}
	if e.content != contentPartial || e.epoch != h.epoch {
		h.reading++ // until doneReading
		s.mu.Unlock()
		return f, nil
	}
	from, to := 0, -1
	if !rd.noted {
		rd.noted = true
		from, to, rd.reading = h.readAheadLocked(e, off, n)
	}
	if from <= to {
		go s.readAhead(h.ino, from, to)
	}
	if off >= e.size || e.hasBlocks(off, n) {
		h.reading++ // until doneReading
		s.mu.Unlock()
		return f, nil
	}
	s.mu.Unlock()
	if err := h.ensureRange(ctx, off, n, rd.reading); err != nil {
		return nil, err
	}
	return nil, errMoved // fetched: check again
}

// hasBlocks reports whether the blocks holding [off, off+n) (within the
// file) are present. Caller holds mu.
func (e *entry) hasBlocks(off int64, n int) bool {
	end := min(off+int64(n), e.size)
	for i := int(off / blockSize); int64(i)*blockSize < end; i++ {
		if !e.hasBlock(i) {
			return false
		}
	}
	return true
}

// moveToCurrent points a read-only handle at its entry's current content,
// fetching it first as an open would. It returns errMoved when it did.
func (h *Handle) moveToCurrent(ctx context.Context) error {
	s := h.s
	s.mu.Lock()
	e := s.entries[h.ino]
	if e == nil || e.orphan() {
		// Removed on the server: its current content is what this handle
		// already had, or nothing.
		s.mu.Unlock()
		return fmt.Errorf("%w: the file was replaced on the server while it was read", ErrChanged)
	}
	s.mu.Unlock()
	if err := s.prepareContent(ctx, h.ino, false); err != nil {
		return err
	}
	s.mu.Lock()
	e = s.entries[h.ino]
	if e == nil {
		s.mu.Unlock()
		return ErrStale
	}
	epoch, version := e.epoch, e.remote // before the open: the file opened is this one or newer
	s.mu.Unlock()
	f, err := os.Open(s.contentPath(h.ino))
	if errors.Is(err, fs.ErrNotExist) {
		return errMoved // replaced again meanwhile
	}
	if err != nil {
		return fmt.Errorf("open cached content: %w", err)
	}
	s.mu.Lock()
	h.old = append(h.old, h.f) // a read in progress may still use it
	h.f, h.epoch, h.version = f, epoch, version
	h.nextOff = 0
	s.mu.Unlock()
	return errMoved
}

// prepareContent makes ino's content readable for an open: range-cached
// for a large file opened read-only, otherwise downloaded whole.
func (s *Store) prepareContent(ctx context.Context, ino Ino, writable bool) error {
	if !writable && s.openByRanges(ino) {
		return nil // large file: blocks are fetched as they are read
	}
	return s.ensureContent(ctx, ino)
}

// readState is what one read has noted so far.
type readState struct {
	noted   bool // counted for readahead (readAheadLocked)
	reading bool // the handle had read before this read
}

// ReadAtContext reads content, fetching what is not on local disk yet;
// every byte returned belongs to one version of the file (see servable).
func (h *Handle) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if h.dir {
		return 0, ErrIsDir
	}
	var rd readState
	for moves := 0; ; {
		f, err := h.servable(ctx, off, len(p), &rd)
		if err == nil {
			n, err := f.ReadAt(p, off)
			h.doneReading()
			return n, err
		}
		if !errors.Is(err, errMoved) {
			return 0, err
		}
		if moves++; moves > maxReadMoves {
			return 0, fmt.Errorf("%w: it kept changing", ErrChanged)
		}
	}
}

// doneReading ends a read that servable let through; the files of earlier
// epochs are closed once no read uses them, so a handle kept open on a
// file the server keeps changing does not pile up open files.
func (h *Handle) doneReading() {
	h.s.mu.Lock()
	h.reading--
	var old []*os.File
	if h.reading == 0 {
		old, h.old = h.old, nil
	}
	h.s.mu.Unlock()
	for _, f := range old {
		f.Close()
	}
}
