package fs

import (
	"context"
	iofs "io/fs"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

// node is a file, directory or symlink; all behaviour is in the cache.
type node struct {
	fs  *FS
	ino cache.Ino

	mu         sync.Mutex // guards seenEpoch, seenOpened, dirKept, dirDrops, parent, name
	seenEpoch  uint64     // content epoch at the last open: the kernel's
	seenOpened bool       // page cache holds this version of the content
	// dirKept: a folder whose listing the kernel caches (OpenCacheDir,
	// or any listing read with DirlessOpen: listing.go) and that changed
	// in no way the kernel was not told of since.
	dirKept  bool
	dirDrops uint64 // listings of the folder dropped (dropListing)
	// parent, name: the entry the kernel last looked the node up by
	// (dropAll drops it from the kernel when the feed goes down).
	parent cache.Ino
	name   string

	// ghost: an entry already gone from the mirror that an echo's lookup
	// still sees (echo.go); its attributes are fixed.
	ghost *cache.Attr
}

var (
	_ fs.Node                = (*node)(nil)
	_ fs.NodeRequestLookuper = (*node)(nil)
	_ fs.NodeOpener          = (*node)(nil)
	_ fs.NodeCreater         = (*node)(nil)
	_ fs.NodeMkdirer         = (*node)(nil)
	_ fs.NodeRemover         = (*node)(nil)
	_ fs.NodeRenamer         = (*node)(nil)
	_ fs.NodeSymlinker       = (*node)(nil)
	_ fs.NodeReadlinker      = (*node)(nil)
	_ fs.NodeSetattrer       = (*node)(nil)
	_ fs.NodeFsyncer         = (*node)(nil)
	_ fs.NodeForgetter       = (*node)(nil)
	_ fs.NodeLinker          = (*node)(nil)
	_ fs.NodeMknoder         = (*node)(nil)
)

// Mknod makes a FIFO, a Unix socket (bind(2) comes here) or a device
// node. The kernel has already refused a device node to a caller without
// CAP_MKNOD.
func (n *node) Mknod(ctx context.Context, req *fuse.MknodRequest) (fs.Node, error) {
	if n.fs.isEcho(req.Header) {
		return n.echoCreated(req.Name)
	}
	attr, err := n.fs.store.Mknod(ctx, n.ino, req.Name, req.Mode&^req.Umask, req.Rdev, creator(req.Header))
	if err != nil {
		return nil, n.fs.errno(err)
	}
	return n.fs.node(attr.Ino), nil
}

func (n *node) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (fs.Node, error) {
	on, ok := old.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	attr, err := n.fs.store.Link(ctx, on.ino, n.ino, req.NewName)
	if err != nil {
		return nil, n.fs.errno(err)
	}
	return n.fs.node(attr.Ino), nil
}

func (n *node) Attr(ctx context.Context, a *fuse.Attr) error {
	n.fs.noteServing()
	if n.ghost != nil {
		n.fs.fillAttr(*n.ghost, a)
		a.Valid = 0
		return nil
	}
	attr, err := n.fs.store.CurrentAttr(ctx, n.ino)
	if err != nil {
		return n.fs.errno(err)
	}
	n.fs.fillAttr(attr, a)
	return nil
}

// Lookup answers from the cache with our entry validity (bazil's default
// is a minute; changes the cache makes on its own, like a conflict copy,
// must show sooner).
func (n *node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fs.Node, error) {
	n.fs.noteServing()
	if n.fs.isEcho(req.Header) {
		if p, ok := n.fs.pretended(n.ino, req.Name); ok {
			if !p.present {
				return nil, syscall.ENOENT
			}
			resp.EntryValid = 0
			if _, err := n.fs.store.GetAttr(p.attr.Ino); err == nil {
				return n.fs.node(p.attr.Ino), nil
			}
			// Gone from the mirror: a node of its own, outside the
			// node table, that only this echo uses.
			a := p.attr
			return &node{fs: n.fs, ino: p.attr.Ino, ghost: &a}, nil
		}
	}
	attr, err := n.fs.store.Lookup(ctx, n.ino, req.Name)
	if err != nil {
		return nil, n.fs.errno(err)
	}
	_, resp.EntryValid = n.fs.validity()
	if attr.Unsettled {
		resp.EntryValid = 0
	}
	n.fs.fillAttr(attr, &resp.Attr)
	c := n.fs.node(attr.Ino)
	c.mu.Lock()
	c.parent, c.name = n.ino, req.Name
	c.mu.Unlock()
	return c, nil
}

func (n *node) Forget() {
	if n.ghost == nil {
		n.fs.forget(n.ino)
	}
}

func (n *node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fs.Handle, error) {
	n.fs.noteServing()
	if !req.Dir && n.fs.isEcho(req.Header) {
		return echoHandle{}, nil
	}
	if req.Dir && n.fs.opts.DirlessOpen {
		// Once per connection: the kernel opens folders without a
		// request from now on (listing.go).
		return nil, syscall.ENOSYS
	}
	h, err := n.fs.store.Open(ctx, n.ino, int(req.Flags))
	if err != nil {
		return nil, n.fs.errno(err)
	}
	if req.Dir {
		// While the change feed pushes the folder's changes, the kernel
		// keeps its listing across opens: a warm walk reads folders
		// without a request. Every change the kernel did not make itself
		// drops it (Invalidate).
		pushed := n.fs.store.ListingPushed(n.ino)
		n.mu.Lock()
		if pushed {
			resp.Flags |= fuse.OpenCacheDir
			if n.dirKept {
				resp.Flags |= fuse.OpenKeepCache
			}
		}
		n.dirKept = pushed
		n.mu.Unlock()
	} else {
		// Keep the kernel's page cache only when the content is the one
		// it cached at the last open (the same epoch: nothing dropped or
		// replaced since; server changes are also invalidated
		// explicitly); warm reads then never leave the kernel.
		epoch := h.Epoch()
		n.mu.Lock()
		if n.seenOpened && epoch == n.seenEpoch {
			resp.Flags |= fuse.OpenKeepCache
		}
		n.seenOpened, n.seenEpoch = true, epoch
		n.mu.Unlock()
		if req.Flags.IsReadOnly() {
			// Nothing to do at close for a handle that cannot write
			// (Handle.Flush): spare the kernel's FLUSH round trip.
			resp.Flags |= fuse.OpenNoFlush
		}
	}
	return &handle{fs: n.fs, h: h, dir: req.Dir}, nil
}

func (n *node) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fs.Node, fs.Handle, error) {
	if n.fs.isEcho(req.Header) {
		node, err := n.echoCreated(req.Name)
		if err != nil {
			return nil, nil, err
		}
		return node, echoHandle{}, nil
	}
	excl := req.Flags&fuse.OpenExclusive != 0
	attr, h, err := n.fs.store.Create(ctx, n.ino, req.Name, req.Mode&^req.Umask, int(req.Flags), excl, creator(req.Header))
	if err != nil {
		return nil, nil, n.fs.errno(err)
	}
	n.fs.fillAttr(attr, &resp.Attr)
	_, resp.EntryValid = n.fs.validity()
	return n.fs.node(attr.Ino), &handle{fs: n.fs, h: h}, nil
}

// echoCreated answers an echo's create, mkdir or symlink with the entry
// the server's change put in the mirror (bazil asks the node for its
// attributes).
func (n *node) echoCreated(name string) (fs.Node, error) {
	attr, ok := n.fs.store.Peek(n.ino, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.fs.node(attr.Ino), nil
}

func (n *node) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fs.Node, error) {
	if n.fs.isEcho(req.Header) {
		return n.echoCreated(req.Name)
	}
	attr, err := n.fs.store.Mkdir(ctx, n.ino, req.Name, req.Mode&^req.Umask, creator(req.Header))
	if err != nil {
		return nil, n.fs.errno(err)
	}
	return n.fs.node(attr.Ino), nil
}

func (n *node) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	if n.fs.isEcho(req.Header) {
		return nil // already gone from the mirror
	}
	var err error
	if req.Dir {
		err = n.fs.store.Rmdir(ctx, n.ino, req.Name)
	} else {
		err = n.fs.store.Unlink(ctx, n.ino, req.Name)
	}
	return n.fs.errno(err)
}

func (n *node) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) error {
	nd, ok := newDir.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.fs.isEcho(req.Header) {
		return nil // already moved in the mirror
	}
	return n.fs.errno(n.fs.store.Rename(ctx, n.ino, req.OldName, nd.ino, req.NewName))
}

func (n *node) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fs.Node, error) {
	if n.fs.isEcho(req.Header) {
		return n.echoCreated(req.NewName)
	}
	attr, err := n.fs.store.Symlink(ctx, n.ino, req.NewName, req.Target, creator(req.Header))
	if err != nil {
		return nil, n.fs.errno(err)
	}
	return n.fs.node(attr.Ino), nil
}

func (n *node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	t, err := n.fs.store.Readlink(ctx, n.ino)
	return t, n.fs.errno(err)
}

func (n *node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if n.fs.isEcho(req.Header) {
		// An echo's truncate or chmod: the mirror already has the
		// server's attributes.
		attr, err := n.fs.store.GetAttr(n.ino)
		if err != nil {
			return n.fs.errno(err)
		}
		n.fs.fillAttr(attr, &resp.Attr)
		return nil
	}
	var (
		mode         *iofs.FileMode
		size         *int64
		atime, mtime *time.Time
	)
	if req.Valid.Mode() {
		m := req.Mode
		mode = &m
	}
	if req.Valid.Size() {
		sz := int64(req.Size)
		size = &sz
	}
	if req.Valid.Mtime() {
		t := req.Mtime
		mtime = &t
	} else if req.Valid.MtimeNow() {
		t := time.Now()
		mtime = &t
	}
	if req.Valid.Atime() {
		t := req.Atime
		atime = &t
	} else if req.Valid.AtimeNow() {
		t := time.Now()
		atime = &t
	}
	var (
		attr cache.Attr
		err  error
	)
	if req.Valid.Uid() || req.Valid.Gid() {
		var uid, gid *uint32
		if req.Valid.Uid() {
			uid = &req.Uid
		}
		if req.Valid.Gid() {
			gid = &req.Gid
		}
		if attr, err = n.fs.store.Chown(ctx, n.ino, uid, gid); err != nil {
			return n.fs.errno(err)
		}
	}
	if mode == nil && size == nil && atime == nil && mtime == nil {
		attr, err = n.fs.store.GetAttr(n.ino)
	} else {
		attr, err = n.fs.store.SetAttr(ctx, n.ino, mode, size, atime, mtime)
	}
	if err != nil {
		return n.fs.errno(err)
	}
	n.fs.fillAttr(attr, &resp.Attr)
	return nil
}

// Fsync makes the file's written data durable on local disk and queues its
// upload (bazil routes fsync to the node, not the handle). A folder's
// fsync makes every change made so far durable (the journal's commit log).
func (n *node) Fsync(ctx context.Context, req *fuse.FsyncRequest) error {
	if req.Dir {
		return n.fs.errno(n.fs.store.SyncJournal())
	}
	return n.fs.errno(n.fs.store.Fsync(n.ino))
}

// creator is the local user a create, mkdir, mknod or symlink request
// comes from: the new entry's owner (cache.Creator).
func creator(h fuse.Header) cache.Creator {
	return cache.Creator{Uid: h.Uid, Gid: h.Gid}
}
