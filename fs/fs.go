// Package fs adapts the cache to FUSE (bazil.org/fuse). It holds no
// policy: every method translates the request, makes one call into
// cache.Store, and maps the error with toErrno.
//
// Nodes are identified by the cache's Ino, which survives renames; FS
// keeps one *node per Ino so the kernel sees a stable node for a path.
// bazil serves every request in its own goroutine; request buffers are
// reused, so data kept beyond a call is copied (the cache writes it to a
// file before returning, so nothing here keeps req.Data).
//
// Server changes the cache reports (Invalidate) are pushed out of the
// kernel's caches and, with EnableEchoes, replayed through the mount by a
// helper process so inotify watchers see them (echo.go): requests from
// that helper are answered from the cache alone and never change it.
// A changed name is only expired in the kernel (FUSE_EXPIRE_ONLY, a
// remotefs patch of bazil), never unhashed: the kernel asks again at the
// name's next use and keeps its entry when the answer is the same node, so
// a folder that is still the same folder keeps its entry and the processes
// whose working directory is inside it keep getcwd(2) (an unhashed entry
// makes it fail with ENOENT: "git: Unable to read current working
// directory"). A folder keeps its Ino, hence its node id, for the mount's
// life.
//
// Owners are the server's, mapped to local ids by the cache
// (Store.LocalOwner); the mount uses default_permissions, so the kernel
// refuses what the server would. chown/chgrp go to Store.Chown.
//
// Reads: a read shorter than the size last given to the kernel for the
// file fails with ESTALE (the file changed on the server meanwhile): the
// kernel would otherwise fill the rest of the page with zeros and, with
// its size out of date, hand them to the program (cache doc, "What a read
// returns").
//
// Locking: FS.mu guards only the node table (and the sizes told) and is
// never held while calling into the cache. The kernel caches entries and
// attributes for EntryValid/AttrValid (LiveValid while the change feed is
// live); answers come from the cache's memory, so expiry costs no network
// round trip.
//
// Warm path: while the feed is live a walk of a project seen once sends
// no request (folders are opened without one and their listings kept:
// listing.go; those the feed does not watch inside, node_modules and
// __pycache__, while the cache keeps them confirmed, which the daemon
// does while the mount is in use: Requests), and reading a file whose
// pages the kernel holds sends only OPEN and RELEASE (FOPEN_KEEP_CACHE,
// FOPEN_NOFLUSH). A file the kernel read from the daemon since its last
// attribute request costs one GETATTR at its next stat: the kernel
// marks its atime stale after every READ (fuse_invalidate_atime, on any
// mount that is not read-only), and no reply or flag clears that. Those two
// stay: FUSE_NO_OPEN_SUPPORT would drop them for every file of the
// connection, writable ones too, which the cache's handles (dirty
// content, uploads at close, files unlinked while open) cannot do
// without, and closes would still send a FLUSH each. When the feed goes
// down the kernel's kept attributes and listings are dropped
// (FeedChanged).
package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
	"remotefs/conn"
)

// Options configure the FUSE adapter.
type Options struct {
	// AttrValid and EntryValid: how long the kernel may cache attributes
	// and name lookups. Default 1s each.
	AttrValid, EntryValid time.Duration
	// LiveValid replaces both while the change feed is live or starting
	// (FeedChanged): the server's changes are pushed (and pushed out of
	// the kernel's caches), so the kernel may keep names and attributes
	// longer.
	LiveValid time.Duration
	// DirlessOpen: the kernel can open folders without asking
	// (fuse.InitNoOpenDirSupport, Linux 5.1). Folder opens are then
	// answered ENOSYS once and the kernel sends no OPENDIR or RELEASEDIR
	// again; it keeps every listing it read until told otherwise
	// (listing.go).
	DirlessOpen bool
	Logger      *slog.Logger
}

// FS is the mounted filesystem.
type FS struct {
	// set at construction
	store *cache.Store
	opts  Options
	log   *slog.Logger

	srv serverRef // set once serving starts

	mu    sync.Mutex // guards nodes, told
	nodes map[cache.Ino]*node
	// told: the size last given to the kernel for each file (its i_size,
	// unless it learned better since); see handle.Read.
	told map[cache.Ino]int64

	echo echoState // server changes raised as inotify events (echo.go)

	feedLive atomic.Bool // the feed was live at the last FeedChanged

	requests atomic.Uint64 // noteServing
}

// New returns a FUSE filesystem that serves store.
func New(store *cache.Store, opts Options) *FS {
	if opts.AttrValid == 0 {
		opts.AttrValid = time.Second
	}
	if opts.EntryValid == 0 {
		opts.EntryValid = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &FS{
		store: store, opts: opts, log: opts.Logger, nodes: map[cache.Ino]*node{}, told: map[cache.Ino]int64{},
	}
}

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.FSStatfser = (*FS)(nil)
)

// Root returns the mount's root directory.
func (f *FS) Root() (fs.Node, error) { return f.node(cache.RootIno), nil }

// Statfs reports the server's filesystem (statvfs@openssh.com).
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	st, err := f.store.StatFS(ctx)
	if err != nil {
		return f.errno(err)
	}
	resp.Blocks, resp.Bfree, resp.Bavail = st.Blocks, st.BlocksFree, st.BlocksAvail
	resp.Files, resp.Ffree = st.Files, st.FilesFree
	resp.Bsize, resp.Frsize, resp.Namelen = uint32(st.BlockSize), uint32(st.FragmentSize), uint32(st.NameMax)
	if resp.Frsize == 0 {
		resp.Frsize = resp.Bsize
	}
	return nil
}

// node returns the one node for ino.
func (f *FS) node(ino cache.Ino) *node {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[ino]
	if n == nil {
		n = &node{fs: f, ino: ino}
		f.nodes[ino] = n
	}
	return n
}

// forget: the kernel dropped its inode for ino. The node itself stays in
// the table: a lookup racing the forget can hand the same node back to
// bazil, which registers it again under a new node id; a node made anew
// for the next lookup would get yet another id, the kernel's revalidation
// of its entry would see a different node and drop the entry, and every
// process whose working directory it was would lose it (getcwd: ENOENT).
// One node per ino for the mount's life costs a few dozen bytes an entry.
func (f *FS) forget(ino cache.Ino) {
	f.mu.Lock()
	delete(f.told, ino)
	f.mu.Unlock()
}

// validity returns how long the kernel may cache attributes and entries.
func (f *FS) validity() (attr, entry time.Duration) {
	if f.opts.LiveValid > 0 && f.feedLive.Load() {
		return f.opts.LiveValid, f.opts.LiveValid
	}
	return f.opts.AttrValid, f.opts.EntryValid
}

func (f *FS) fillAttr(a cache.Attr, out *fuse.Attr) {
	out.Valid, _ = f.validity()
	if a.Unsettled {
		out.Valid = 0 // being written on the server: ask again
	}
	out.Inode = a.StatIno() // the FUSE node id stays the cache's Ino
	out.Size = uint64(a.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Mtime, out.Ctime, out.Atime = a.Mtime, a.Ctime, a.Atime
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Rdev = a.Rdev
	out.Uid, out.Gid = f.store.LocalOwner(a)
	if a.Mode.IsRegular() {
		f.mu.Lock()
		f.told[a.Ino] = a.Size
		f.mu.Unlock()
	}
	out.BlockSize = 64 * 1024
}

// errno maps an error from the cache to the errno a program sees. It is
// the only place errors are translated.
func (f *FS) errno(err error) error {
	if err == nil {
		return nil
	}
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		return en
	case errors.Is(err, iofs.ErrNotExist), errors.Is(err, cache.ErrStale):
		return syscall.ENOENT
	case errors.Is(err, iofs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, iofs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, cache.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, cache.ErrNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, cache.ErrIsDir):
		return syscall.EISDIR
	case errors.Is(err, cache.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, iofs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, conn.ErrUnsupported):
		return syscall.ENOTSUP
	case errors.Is(err, cache.ErrChanged):
		f.log.Info("read failed", "err", err)
		// The file kept changing on the server while it was read: no
		// one version of it to return.
		return syscall.ESTALE
	case errors.Is(err, cache.ErrOffline):
		// Not cached and the server cannot be reached.
		return syscall.ENETDOWN
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.log.Warn("I/O error", "err", err)
	return syscall.EIO
}
