package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"remotefs/conn"
)

// Handle is an open file. Reads and writes go to the local content file;
// Flush and Fsync make written data durable locally and queue its upload.
type Handle struct {
	// set at construction
	s        *Store
	ino      Ino
	dir      bool
	writable bool

	mu    sync.Mutex // guards wrote
	wrote bool       // written since the last Flush

	// guarded by Store.mu (f and epoch change only for read-only handles,
	// which follow their file to a new version: versions.go)
	f       *os.File   // the content file of epoch; nil for directories
	epoch   uint64     // the content epoch f belongs to
	version Version    // the server version that epoch cached
	old     []*os.File // files of earlier epochs, closed when no read uses them
	reading int        // reads between servable and the end of their ReadAt
	nextOff int64      // where a sequential read goes next
}

// Ino is the entry the handle was opened on.
func (h *Handle) Ino() Ino { return h.ino }

// Open opens ino. flags are open(2) flags (O_ACCMODE, O_TRUNC, O_APPEND).
// A clean file whose attributes are older than AttrTTL is checked with the
// server first (close-to-open consistency); content not yet cached is
// downloaded unless the open truncates it.
func (s *Store) Open(ctx context.Context, ino Ino, flags int) (*Handle, error) {
	acc := flags & syscall.O_ACCMODE
	writable := acc == syscall.O_WRONLY || acc == syscall.O_RDWR
	if writable {
		if err := s.writable(); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	e := s.entries[ino]
	if e == nil {
		s.mu.Unlock()
		return nil, ErrStale
	}
	if e.isDir() {
		if writable {
			s.mu.Unlock()
			return nil, ErrIsDir
		}
		s.countOpenLocked(e, false)
		s.mu.Unlock()
		return &Handle{s: s, ino: ino, dir: true}, nil
	}
	if !e.mode.IsRegular() {
		s.mu.Unlock()
		return nil, fs.ErrInvalid
	}
	// Close-to-open: re-check a file whose attributes are old, unless the
	// change feed covers it (and it is not being written right now), or
	// the open replaces its content anyway (the upload's conflict check
	// guards the server's version). A large file is re-checked even so:
	// its cached blocks are served next to blocks fetched now, and a
	// change the feed has not reported yet would mix the two versions in
	// one read; one round trip is small next to reading it.
	fed := s.feedCovers(e, e.checked.Time())
	replacing := writable && flags&syscall.O_TRUNC != 0
	large := e.size >= s.opts.LargeFile
	recheck := e.content != contentDirty && e.onServer && !replacing &&
		(s.unsettled(e) || large || !fed && (s.now().Sub(e.checked.Time()) > s.opts.AttrTTL || s.inServerFolder(e))) &&
		s.online()
	if !writable && !recheck && (e.content == contentClean || e.content == contentDirty) {
		// The warm path (a grep over a project): whole content here and
		// nothing to ask the server.
		if h := s.openWholeLocked(e); h != nil {
			return h, nil
		}
		s.mu.Lock()
		if e = s.entries[ino]; e == nil {
			s.mu.Unlock()
			return nil, ErrStale
		}
	}
	p := s.pathOf(e)
	s.mu.Unlock()

	if recheck {
		if err := s.revalidate(ctx, ino, p); err != nil {
			return nil, err
		}
	}
	if writable && flags&syscall.O_TRUNC != 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		e := s.entries[ino]
		if e == nil {
			return nil, ErrStale
		}
		f, err := os.OpenFile(s.contentPath(ino), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, err
		}
		wasClean := e.content != contentDirty
		s.markDirtyLocked(e)
		e.size = 0
		s.touchLocked(e, true)
		e.gen++
		err = s.commitLocked()
		if err == nil && wasClean {
			// Rare (a clean file replaced in place): synced under mu.
			err = s.syncJournal()
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		s.countOpenLocked(e, true)
		return &Handle{s: s, ino: ino, f: f, epoch: e.epoch, version: e.remote, writable: true, wrote: true}, nil
	}
	mode := os.O_RDONLY
	if writable {
		mode = os.O_RDWR
	}
	for attempt := 0; ; attempt++ {
		if err := s.prepareContent(ctx, ino, writable); err != nil {
			if writable && errors.Is(err, ErrOffline) {
				err = fmt.Errorf("%s: %w (its content is not cached: offline it can be replaced whole, not changed in place)", p, err)
			}
			return nil, err
		}
		// Count the open before opening the file, so eviction or a
		// listing does not drop the content between the two.
		s.mu.Lock()
		e := s.entries[ino]
		if e == nil {
			s.mu.Unlock()
			return nil, ErrStale
		}
		s.countOpenLocked(e, writable)
		epoch, version := e.epoch, e.remote // before the open: the file opened is this one or newer
		s.mu.Unlock()
		f, err := openContent(s.contentPath(ino), mode)
		if err == nil {
			return &Handle{s: s, ino: ino, f: f, epoch: epoch, version: version, writable: writable}, nil
		}
		s.release(ino, writable)
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open cached content: %w", err)
		}
		if attempt == 2 {
			return nil, fmt.Errorf("cached content of %s vanished while opening; try again: %w", p, ErrStale)
		}
	}
}

// openWholeLocked opens e's whole cached content (clean or dirty) for
// reading, as Open does after ensureContent, with mu held throughout the
// bookkeeping (one lock instead of four, and no stat of the content file
// under mu: the size of a clean file's content is checked on the open
// file instead). It returns with mu released; nil means the content file
// is missing or damaged, and Open goes the long way (which fetches it
// again).
func (s *Store) openWholeLocked(e *entry) *Handle {
	clean := e.content == contentClean
	if clean {
		s.touchContentLocked(e)
	}
	s.countOpenLocked(e, false)
	ino, epoch, version, size := e.ino, e.epoch, e.remote, e.size
	s.mu.Unlock()
	f, err := openContent(s.contentPath(ino), os.O_RDONLY)
	if err == nil && clean {
		if fi, serr := f.Stat(); serr != nil || fi.Size() != size {
			f.Close()
			err = fs.ErrInvalid
		}
	}
	if err != nil {
		s.release(ino, false)
		return nil
	}
	return &Handle{s: s, ino: ino, f: f, epoch: epoch, version: version}
}

// openContent opens a content file. Unlike os.OpenFile it does not try to
// add the file to the runtime's poller (a regular file never is: three
// more system calls an open, wasted).
func openContent(path string, mode int) (*os.File, error) {
	fd, err := syscall.Open(path, mode|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// fetchTries: how often a whole-file download is tried while the file
// keeps changing on the server during it.
const fetchTries = 4

// openByRanges reports whether a read-only open of ino can go ahead with
// the file range-cached (see ranges.go), starting that when needed.
func (s *Store) openByRanges(ino Ino) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || !e.mode.IsRegular() {
		return false
	}
	switch e.content {
	case contentPartial:
		if fi, err := os.Stat(s.contentPath(ino)); err == nil && fi.Size() == e.size {
			return true
		}
		s.dropContent(e)
	case contentNone:
	default:
		return false
	}
	if e.size < s.opts.LargeFile || !e.onServer || !s.online() {
		return false
	}
	return s.startPartialLocked(e) == nil
}

// countOpenLocked records an open handle on e. Caller holds mu.
func (s *Store) countOpenLocked(e *entry, writable bool) {
	e.opens++
	if writable {
		e.writers++
	}
}

// release records that a handle on ino was closed, and forgets the entry
// if it was removed while open and this was its last handle.
func (s *Store) release(ino Ino, writable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil {
		return
	}
	if e.opens > 0 {
		e.opens--
	}
	if writable && e.writers > 0 {
		e.writers--
	}
	if e.setAside && e.writers == 0 && e.content == contentDirty && !s.hasPendingPut(ino) {
		s.dropSetAsideLocked(e) // undelivered.go
	}
	s.purgeOrphanLocked(e)
}

// revalidate re-stats a clean file on the server and drops its content if
// the server's version changed. Offline, the cached state is kept.
func (s *Store) revalidate(ctx context.Context, ino Ino, p string) error {
	for attempt := 0; ; attempt++ {
		again, err := s.revalidateOnce(ctx, ino, p, attempt < 2)
		if !again {
			return err
		}
	}
}

// revalidateOnce is one try of revalidate. again: the entry was updated
// while the stat was out and disagrees with it; which of the two is newer
// cannot be told (a change feed report is applied after the server
// stated the file, maybe long after), so the caller stats again.
func (s *Store) revalidateOnce(ctx context.Context, ino Ino, p string, mayRetry bool) (again bool, err error) {
	s.mu.Lock()
	since := s.jr.mark()
	s.mu.Unlock()
	asked := s.now()
	fi, err := s.remote.Lstat(ctx, p)
	if errors.Is(err, ErrOffline) {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || s.pathOf(e) != p || e.localOwned() || s.keepLocal(p, since) {
		return false, nil // changed meanwhile through the mount
	}
	if e.checked.After(asked) {
		disagree := err != nil || fi.Mode.Type() != e.mode.Type() || versionOf(fi) != e.remote
		return disagree && mayRetry, nil
	}
	return false, s.applyRevalidationLocked(e, fi, err)
}

// applyRevalidationLocked records the result of a stat of the clean file
// e. Caller holds mu.
func (s *Store) applyRevalidationLocked(e *entry, fi conn.FileInfo, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if d := s.entries[e.parent]; d != nil {
			s.notifyRemovedLocked(d, e)
		}
		s.removeSubtree(e)
		return fs.ErrNotExist
	}
	if err != nil {
		return err
	}
	if fi.Mode.Type() != e.mode.Type() {
		// Replaced by another kind of entry: let the directory listing
		// sort it out.
		if d := s.entries[e.parent]; d != nil && !d.listedAt.IsZero() {
			d.listedAt = stampOf(d.listedAt.Time().AddDate(-1, 0, 0))
		}
		s.removeSubtree(e)
		return ErrStale
	}
	s.applyServerAttrs(e, fi)
	e.checked = stampOf(s.now())
	return nil
}

// ensureContent makes sure the file's whole content is in the cache,
// downloading it if needed (one download per file at a time).
func (s *Store) ensureContent(ctx context.Context, ino Ino) error {
	return s.ensureContentFor(ctx, ino, nil)
}

// ensureContentFor is ensureContent on behalf of the journal operation
// own (nil: none), which fetches from own.Path, a name of the file that
// is on the server, and whose own pending paths do not keep the fetched
// data out (a link delivered as a copy, applyLinkAsCopy).
func (s *Store) ensureContentFor(ctx context.Context, ino Ino, own *op) error {
	discarded := 0
	for {
		s.mu.Lock()
		e := s.entries[ino]
		if e == nil {
			s.mu.Unlock()
			return ErrStale
		}
		if e.content == contentDirty {
			s.mu.Unlock()
			return nil
		}
		if e.content == contentClean {
			// A content file that does not match its entry (truncated,
			// deleted by hand) is never served: fetch it again.
			if fi, err := os.Stat(s.contentPath(ino)); err == nil && fi.Size() == e.size {
				s.touchContentLocked(e)
				s.mu.Unlock()
				return nil
			}
			s.log.Warn("cached content is damaged; fetching it again", "path", s.pathOf(e))
			e.content = contentNone
			s.newEpochLocked(e)
			s.dirtyIno[ino] = true
		}
		if e.content == contentPartial {
			// Range-cached; the whole file is needed: download the rest
			// (all of it, simply) below.
		}
		if !e.onServer {
			// A local file whose content was lost: nothing to fetch.
			s.mu.Unlock()
			return fs.ErrNotExist
		}
		if c := s.fetching[ino]; c != nil {
			s.mu.Unlock()
			select {
			case <-c.done:
				if c.err != nil {
					return c.err
				}
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !s.online() {
			s.mu.Unlock()
			return s.errOffline()
		}
		call := &fetchCall{done: make(chan struct{})}
		s.fetching[ino] = call
		p := s.pathOf(e)
		if own != nil {
			p = own.Path
		}
		gen := e.gen
		s.mu.Unlock()

		call.err = s.fetch(ctx, ino, p, gen, own)
		for try := 1; errors.Is(call.err, ErrChanged) && try < fetchTries; try++ {
			// Being written on the server right now: a moment later it
			// is usually one version again.
			select {
			case <-time.After(time.Duration(try) * 100 * time.Millisecond):
			case <-ctx.Done():
			}
			call.err = s.fetch(ctx, ino, p, gen, own)
		}

		s.mu.Lock()
		delete(s.fetching, ino)
		close(call.done)
		kept := true
		if e := s.entries[ino]; e != nil && (e.content == contentNone || e.content == contentPartial) {
			kept = false // thrown away: changed locally meanwhile
		}
		s.mu.Unlock()
		if call.err != nil {
			return call.err
		}
		if !kept {
			// Local changes to the path are on their way to the server:
			// look again a moment later, and not forever.
			if discarded++; discarded >= maxDiscardedFetches {
				return fmt.Errorf("%s: local changes pending: %w", p, ErrChanged)
			}
			select {
			case <-time.After(time.Duration(discarded) * 10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// maxDiscardedFetches bounds the fetches of one file that ensureContent
// throws away because local changes to its path were pending (about 2s
// of pauses in all).
const maxDiscardedFetches = 20

// fetch downloads the whole file ino from p, unless it changed locally
// meanwhile (then it returns nil with nothing kept); own as in
// ensureContentFor.
func (s *Store) fetch(ctx context.Context, ino Ino, p string, gen uint64, own *op) error {
	s.mu.Lock()
	since := s.jr.mark()
	s.mu.Unlock()
	tmp := s.contentPath(ino) + ".part-" + strconv.FormatInt(s.now().UnixNano(), 36)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	fi, err := s.remote.Fetch(ctx, p, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, fs.ErrNotExist) {
			s.mu.Lock()
			if e := s.entries[ino]; e != nil && e.content != contentDirty && s.pathOf(e) == p && !s.keepLocal(p, since) {
				s.removeSubtree(e)
			}
			s.mu.Unlock()
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || e.gen != gen || (e.content != contentNone && e.content != contentPartial) || !s.fetchedPathOK(e, p, own) || s.keepLocalBut(p, since, own) {
		os.Remove(tmp)
		return nil // changed meanwhile; the caller looks again
	}
	if st, err := os.Stat(tmp); err != nil || st.Size() != fi.Size {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", p, ErrChanged)
	}
	if err := os.Rename(tmp, s.contentPath(ino)); err != nil {
		os.Remove(tmp)
		return err
	}
	s.applyServerAttrs(e, fi)
	e.content, e.blocks = contentClean, nil
	s.newEpochLocked(e)
	e.checked = stampOf(s.now())
	s.dirtyIno[ino] = true
	s.touchContentLocked(e)
	s.evictLocked(ino)
	return nil
}

// ReadAt reads cached content (io.ReaderAt); see ReadAtContext.
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	return h.ReadAtContext(context.Background(), p, off)
}

// WriteAt writes to the cached content. The first write after the file was
// clean durably marks it dirty before any data is written, so a crash never
// leaves local changes that look like the server's version.
func (h *Handle) WriteAt(p []byte, off int64) (int, error) {
	if !h.writable || h.f == nil {
		return 0, syscall.EBADF
	}
	s := h.s
	if err := s.writable(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	e := s.entries[h.ino]
	markedDirty := false
	if e != nil && !e.orphan() {
		if e.content != contentDirty {
			s.markDirtyLocked(e)
			if err := s.commitLocked(); err != nil {
				s.mu.Unlock()
				return 0, err
			}
			markedDirty = true
		}
		e.gen++
	}
	s.mu.Unlock()
	if markedDirty {
		// The mark is on disk before the data it covers.
		if err := s.syncJournal(); err != nil {
			return 0, err
		}
	}

	n, err := h.f.WriteAt(p, off)

	h.mu.Lock()
	h.wrote = true
	h.mu.Unlock()
	s.mu.Lock()
	if e := s.entries[h.ino]; e != nil {
		if end := off + int64(n); end > e.size {
			e.size = end
		}
		s.touchLocked(e, true)
		e.gen++
		s.dirtyIno[h.ino] = true
	}
	s.mu.Unlock()
	return n, err
}

// Flush is called on close(2): written data is synced to local disk and its
// upload queued, durably, before Flush returns.
func (h *Handle) Flush() error {
	h.mu.Lock()
	wrote := h.wrote
	h.wrote = false
	h.mu.Unlock()
	if !wrote {
		return nil
	}
	if err := h.f.Sync(); err != nil {
		return err
	}
	if err := h.queueUpload(); err != nil {
		return err
	}
	return h.s.syncJournal()
}

// queueUpload queues the upload of what the handle wrote (Flush).
func (h *Handle) queueUpload() error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[h.ino]
	if e == nil || e.orphan() {
		return nil // unlinked while open: nothing to deliver
	}
	if fi, err := h.f.Stat(); err == nil {
		e.size = fi.Size()
	}
	s.dirtyIno[h.ino] = true
	s.touchContentLocked(e)
	p := s.pathOf(e)
	if e.content == contentDirty && !s.jr.unstartedPut(h.ino, p) {
		o := &op{Kind: opPut, Path: p, Ino: h.ino}
		if !e.onServer {
			// A new file: often an editor's temporary, renamed over the
			// file it replaces right after this close.
			o.notBefore = time.Now().Add(settleDelay)
		}
		return s.enqueueLocked(o)
	}
	return s.commitLocked()
}

// Fsync makes the written content of ino durable locally and queues its
// upload; it does not wait for the server (`remotefs flush` does).
func (s *Store) Fsync(ino Ino) error {
	f, err := os.Open(s.contentPath(ino))
	if errors.Is(err, fs.ErrNotExist) {
		return s.syncJournal() // no content written locally; its metadata
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	if err := s.queueFsyncUpload(ino); err != nil {
		return err
	}
	return s.syncJournal()
}

// queueFsyncUpload queues the upload of what was written to ino (Fsync).
func (s *Store) queueFsyncUpload(ino Ino) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || e.orphan() {
		return nil
	}
	p := s.pathOf(e)
	if e.content == contentDirty && !s.jr.unstartedPut(ino, p) {
		o := &op{Kind: opPut, Path: p, Ino: ino}
		if e.writers > 0 {
			o.notBefore = time.Now().Add(settleDelay) // the close usually follows
		}
		return s.enqueueLocked(o)
	}
	return s.commitLocked()
}

// Release closes the handle, flushing first if needed.
func (h *Handle) Release() error {
	var err error
	if !h.dir {
		err = h.Flush()
		h.s.mu.Lock()
		f, old := h.f, h.old
		h.old = nil
		h.s.mu.Unlock()
		for _, o := range old {
			o.Close()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	h.s.release(h.ino, h.writable)
	return err
}

// markLinkCopyDirty marks the file ino at p dirty for its upload as a
// copy (applyLinkAsCopy), once its content is here, and reports whether
// it was clean before. Content evicted meanwhile is an error: the journal
// tries again.
func (s *Store) markLinkCopyDirty(p string, ino Ino) (wasClean bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, e, err := s.lookupPathLocked(p)
	if err != nil || e == nil || e.ino != ino {
		return false, nil // gone or replaced meanwhile: applyPut finds out
	}
	if e.content != contentClean && e.content != contentDirty {
		return false, fmt.Errorf("%s: content to copy is gone: %w", p, ErrChanged)
	}
	wasClean = e.content == contentClean
	s.markDirtyLocked(e)
	return wasClean, nil
}
