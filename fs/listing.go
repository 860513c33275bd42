package fs

// Folder listings the kernel keeps, and what it may trust when the
// change feed goes down.
//
// With DirlessOpen the kernel opens folders without a request: a warm
// walk (opendir, getdents, lstat of each entry) then sends nothing at
// all while the feed is live. Without OPENDIR there is no per-open say
// in whether the kernel keeps a listing (FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR
// is the kernel's default for such opens): it keeps every listing it
// read until its folder's data is invalidated, or its own change to the
// folder (create, unlink, rename, mkdir through the mount) resets it.
// So the FS drops each listing it served (node.dirKept) when
//
//   - a change it was not part of names the folder (Invalidate,
//     dropListing), as before;
//   - the listing was not one the feed keeps current (the folder is not
//     listed in this connection, is under an ignored folder, or the feed
//     is not live: cache.Store.ListingPushed) and still is not AttrValid
//     after it was served, so the next listing after that reaches the
//     cache, which refreshes it from the server when older than DirTTL,
//     as each open did before (a listing read while the feed starts is
//     kept once the listing the feed makes when it starts confirmed it:
//     that one drops it with every name it changes);
//   - a change raced the read that served it (the kernel may have stored
//     the listing after the invalidation): at once after the read;
//   - the feed goes down (FeedChanged): every kept listing, and the
//     attributes of every node, which the kernel was told it may keep for
//     LiveValid; every node's entry is expired (FUSE_EXPIRE_ONLY, never
//     unhashed, which would cost every process inside a folder its
//     working directory).
//
// Every reader of a folder opened without OPENDIR reads it with handle
// 0; the patched bazil gives each reader starting at offset 0 a listing
// of its own, which its later reads continue (PATCHES.md, 3), so two
// programs listing a folder that changes between their reads each see
// one listing.
//
// Kernels without FUSE_NO_OPENDIR_SUPPORT open folders as before
// (node.Open): the listing is kept across opens only while pushed.

import (
	"context"
	"errors"
	iofs "io/fs"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

var _ fs.HandleReadDirAller = (*node)(nil)

// ReadDirAll serves a folder read with no open handle (DirlessOpen).
func (n *node) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	n.mu.Lock()
	n.dirKept = true // before reading: a change from now on drops it
	gen := n.dirDrops
	n.mu.Unlock()
	out, err := n.fs.listing(ctx, n.ino)
	if err != nil {
		return nil, err
	}
	pushed := n.fs.store.ListingPushed(n.ino)
	n.mu.Lock()
	raced := n.dirDrops != gen
	n.mu.Unlock()
	switch {
	case raced:
		n.fs.dropListingLater(n, 50*time.Millisecond, false)
	case !pushed:
		// Unless pushed by then (the listing the feed makes when it
		// starts confirms it, or drops it with the names it changes).
		n.fs.dropListingLater(n, n.fs.opts.AttrValid, true)
	}
	return out, nil
}

// DirlessOpen reports whether the kernel opens folders without a request.
func (f *FS) DirlessOpen() bool { return f.opts.DirlessOpen }

// listing is dir's listing as the kernel gets it.
func (f *FS) listing(ctx context.Context, dir cache.Ino) ([]fuse.Dirent, error) {
	ents, err := f.store.ReadDir(ctx, dir)
	if err != nil {
		return nil, f.errno(err)
	}
	out := make([]fuse.Dirent, 0, len(ents)+2)
	// "." and ".." as every local filesystem lists them (ls -a, some
	// tools count on them).
	out = append(out, fuse.Dirent{Inode: cache.Attr{Ino: dir, Mode: iofs.ModeDir}.StatIno(), Name: ".", Type: fuse.DT_Dir},
		fuse.Dirent{Name: "..", Type: fuse.DT_Dir})
	for _, e := range ents {
		out = append(out, fuse.Dirent{Inode: e.StatIno(), Name: e.Name, Type: direntType(e.Mode)})
	}
	return out, nil
}

// dropListingLater drops the listing of dir the kernel keeps after d
// (unless the feed keeps it current by then, with unlessPushed), from a
// goroutine of its own (never inside a request).
func (f *FS) dropListingLater(dir *node, d time.Duration, unlessPushed bool) {
	time.AfterFunc(d, func() {
		if unlessPushed && f.store.ListingPushed(dir.ino) {
			return
		}
		if unlessPushed && f.feedLive.Load() && !f.store.ChangeFeedLive() {
			// The feed is starting: ask again later, less and less
			// often (if it never comes up, FeedChanged drops every
			// kept listing).
			f.dropListingLater(dir, min(2*d, 30*time.Second), true)
			return
		}
		if srv := f.srv.p.Load(); srv != nil {
			f.dropListing(srv, dir)
		}
	})
}

// FeedChanged tells the FS whether the server's change feed is live (or
// starting: what changes before it is live, the listing it makes when it
// starts finds). When it goes down, the kernel stops trusting what it was
// told it may keep for LiveValid: every kept listing, every node's
// attributes and the names it was last looked up by are dropped (in the
// background).
func (f *FS) FeedChanged(live bool) {
	if f.feedLive.Swap(live) && !live {
		go f.dropAll()
	}
}

// dropAll drops every kept listing and cached attribute from the kernel.
func (f *FS) dropAll() {
	srv := f.srv.p.Load()
	if srv == nil || !f.srv.serving.Load() {
		return
	}
	f.mu.Lock()
	nodes := make([]*node, 0, len(f.nodes))
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	dropped := 0
	for _, n := range nodes {
		f.dropListing(srv, n)
		err := srv.InvalidateNodeAttr(n)
		if err == nil {
			dropped++
		} else if !errors.Is(err, fuse.ErrNotCached) {
			f.log.Debug("invalidate attributes", "ino", n.ino, "err", err)
		}
		n.mu.Lock()
		parent, name := n.parent, n.name
		n.mu.Unlock()
		f.mu.Lock()
		dir := f.nodes[parent]
		f.mu.Unlock()
		if dir != nil && name != "" {
			// Expired, not unhashed: a folder still there keeps its
			// entry and the working directories inside it.
			f.expireEntry(srv, dir, name)
		}
	}
	f.log.Info("change feed down: the kernel's cached attributes and listings dropped", "nodes", dropped)
}
