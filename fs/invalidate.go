package fs

import (
	"errors"
	"sync/atomic"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

// server is the bazil server, needed to send invalidations to the kernel.
type serverRef struct{ p atomic.Pointer[fs.Server] }

// SetServer gives the filesystem the server that serves it, so changes on
// the remote side can be pushed out of the kernel's caches.
func (f *FS) SetServer(s *fs.Server) { f.srv.p.Store(s) }

// Invalidate drops what the kernel cached about a server-side change. The
// cache calls it from its own goroutine, never from inside a request.
func (f *FS) Invalidate(inv cache.Invalidation) {
	srv := f.srv.p.Load()
	if srv == nil {
		return
	}
	f.mu.Lock()
	dir, n := f.nodes[inv.Dir], f.nodes[inv.Ino]
	f.mu.Unlock()
	if inv.Name != "" && dir != nil {
		if err := srv.InvalidateEntry(dir, inv.Name); err != nil && !errors.Is(err, fuse.ErrNotCached) {
			f.log.Debug("invalidate entry", "name", inv.Name, "err", err)
		}
	}
	if inv.Ino != 0 && n != nil {
		if err := srv.InvalidateNodeData(n); err != nil && !errors.Is(err, fuse.ErrNotCached) {
			f.log.Debug("invalidate data", "ino", inv.Ino, "err", err)
		}
	}
}
