package fs

import (
	"errors"
	"sync/atomic"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

// serverRef is the bazil server, needed to send invalidations to the
// kernel; serving says the server has started serving requests (bazil
// fills its node table in Serve before the first one, unsynchronised, so
// invalidations must wait for that).
type serverRef struct {
	p       atomic.Pointer[fs.Server]
	serving atomic.Bool
	// noExpire: the kernel rejected an expire-only entry notification
	// (FUSE_EXPIRE_ONLY); entries are then invalidated outright.
	noExpire atomic.Bool
}

// noteServing records that requests are being served (and counts them:
// Requests).
func (f *FS) noteServing() {
	f.requests.Add(1)
	if !f.srv.serving.Load() {
		f.srv.serving.Store(true)
	}
}

// Requests counts the lookups, attribute requests, opens, reads, writes
// and folder reads served so far: whether the mount is in use (a long
// read of one big file is use too).
func (f *FS) Requests() uint64 { return f.requests.Load() }

// SetServer gives the filesystem the server that serves it, so changes on
// the remote side can be pushed out of the kernel's caches.
func (f *FS) SetServer(s *fs.Server) { f.srv.p.Store(s) }

// Invalidate drops what the kernel cached about a server-side change. The
// cache calls it from its own goroutine, never from inside a request.
func (f *FS) Invalidate(inv cache.Invalidation) {
	srv := f.srv.p.Load()
	if srv == nil || !f.srv.serving.Load() {
		return
	}
	f.mu.Lock()
	dir, n, toDir := f.nodes[inv.Dir], f.nodes[inv.Ino], f.nodes[inv.ToDir]
	current := inv.Made != 0 && f.nodes[inv.Made] != nil
	f.mu.Unlock()
	if inv.Name != "" && dir != nil && !current {
		f.expireEntry(srv, dir, inv.Name)
	}
	if inv.Name != "" && dir != nil {
		// A name made that the kernel already looked up may still be
		// missing from a listing it keeps.
		f.dropListing(srv, dir)
	}
	if inv.ToName != "" && toDir != nil {
		f.expireEntry(srv, toDir, inv.ToName)
		f.dropListing(srv, toDir)
	}
	if inv.Event != cache.EventNone {
		// After the invalidation: the echo's own lookups then see the
		// names fresh.
		defer f.queueEcho(inv)
	}
	if inv.Ino != 0 && n != nil && inv.AttrOnly {
		if err := srv.InvalidateNodeAttr(n); err != nil && !errors.Is(err, fuse.ErrNotCached) {
			f.log.Debug("invalidate attributes", "ino", inv.Ino, "err", err)
		}
	} else if inv.Ino != 0 && n != nil && inv.Event != cache.EventRenamed {
		if err := srv.InvalidateNodeData(n); err != nil && !errors.Is(err, fuse.ErrNotCached) {
			f.log.Debug("invalidate data", "ino", inv.Ino, "err", err)
		}
	}
}

// expireEntry tells the kernel that name in dir may have changed on the
// server. It marks the kernel's entry expired (FUSE_EXPIRE_ONLY), never
// unhashes it: the kernel asks again at the name's next use and keeps the
// entry when the answer is the same node, and drops it when the name is
// gone or now names another node. An entry invalidated outright
// (d_invalidate) is unhashed even when the name still names the same
// folder, and every process whose working directory is in that folder then
// fails getcwd(2) with ENOENT ("git: Unable to read current working
// directory"). Kernels before 6.2 ignore the flag and invalidate outright;
// one that rejects it (EINVAL) gets the outright invalidation from then on.
func (f *FS) expireEntry(srv *fs.Server, dir *node, name string) {
	var err error
	if !f.srv.noExpire.Load() {
		err = srv.ExpireEntry(dir, name)
		if errors.Is(err, syscall.EINVAL) {
			f.srv.noExpire.Store(true)
			f.log.Info("kernel rejects expire-only entry notifications; invalidating entries outright")
		}
	}
	if f.srv.noExpire.Load() {
		err = srv.InvalidateEntry(dir, name)
	}
	if err != nil && !errors.Is(err, fuse.ErrNotCached) {
		f.log.Debug("invalidate entry", "name", name, "err", err)
	}
}

// dropListing drops the listing of dir the kernel may cache (OpenCacheDir):
// its names changed without the kernel making the change. The entry
// invalidation resets it on the kernels tested (e2e
// TestListingKeptWhileFeedLive); invalidating the folder's data (where the
// kernel keeps the listing) does on any, also for a name it never looked
// up.
func (f *FS) dropListing(srv *fs.Server, dir *node) {
	dir.mu.Lock()
	kept := dir.dirKept
	dir.dirKept = false
	dir.dirDrops++
	dir.mu.Unlock()
	if !kept {
		return
	}
	if err := srv.InvalidateNodeData(dir); err != nil && !errors.Is(err, fuse.ErrNotCached) {
		f.log.Debug("invalidate listing", "ino", dir.ino, "err", err)
	}
}
