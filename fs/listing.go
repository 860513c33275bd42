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
//     listed in this connection, is in or under an ignored folder such
//     as node_modules or __pycache__, or the feed is not live:
//     cache.Store.ListingPushed) and still is not once the cache would
//     refresh it: AttrValid after it was served, or, when longer, DirTTL
//     after the cache last confirmed it with the server (until then the
//     cache serves that same listing to any read, and a change to its
//     names it takes meanwhile drops the kernel's at once); kept while
//     a refresh of it is under way (the cache serves it meanwhile), and
//     again as long when the cache confirmed it since without a change
//     (a walk inside node_modules or __pycache__ folders then reads
//     them once every DirTTL, not every AttrValid). The
//     next listing after the drop reaches the cache, which refreshes it
//     from the server when older than DirTTL, as each open did before (a
//     listing read while the feed starts is kept once the listing the
//     feed makes when it starts confirmed it: that one drops it with
//     every name it changes);
//   - a change raced the read that served it (the kernel may have stored
//     the listing after the invalidation): at once after the read;
//   - the feed goes down (FeedChanged): every kept listing, and the
//     attributes of every node, which the kernel was told it may keep for
//     LiveValid; every node's entry is expired (FUSE_EXPIRE_ONLY, never
//     unhashed, which would cost every process inside a folder its
//     working directory).
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
	n.fs.noteServing()
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
		n.fs.dropListingLater(n, 50*time.Millisecond, nil)
	case !pushed:
		// Unless pushed by then (the listing the feed makes when it
		// starts confirms it, or drops it with the names it changes).
		// Until the cache would refresh it, any read would get the same
		// listing from the cache: the kernel keeps it that long.
		listedAt, fresh, _ := n.fs.store.ListingFresh(n.ino)
		n.fs.dropListingLater(n, max(n.fs.opts.AttrValid, fresh), &keptListing{gen: gen, listedAt: listedAt})
	}
	return out, nil
}

// keptListing is a listing the kernel read that the feed does not keep
// current: gen is the folder's dirDrops when it was read, listedAt when
// the cache's listing it got was confirmed with the server.
type keptListing struct {
	gen      uint64
	listedAt time.Time
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

// dropListingLater drops the listing of dir the kernel keeps after d,
// from a goroutine of its own (never inside a request). With kept (a
// listing the feed does not keep current) it is kept when the feed keeps
// it current by then, and kept longer when the cache confirmed the
// folder's listing with the server since the kernel read it and no name
// changed meanwhile (a change drops it at once: Invalidate): the kernel's
// listing is then the cache's, which the cache serves unchanged until
// DirTTL after that confirmation (cache.Store.ListingFresh).
func (f *FS) dropListingLater(dir *node, d time.Duration, kept *keptListing) {
	time.AfterFunc(d, func() {
		if kept != nil && f.store.ListingPushed(dir.ino) {
			return
		}
		if kept != nil && f.feedLive.Load() && !f.store.ChangeFeedLive() {
			// The feed is starting: ask again later, less and less
			// often (if it never comes up, FeedChanged drops every
			// kept listing).
			f.dropListingLater(dir, min(2*d, 30*time.Second), kept)
			return
		}
		if kept != nil {
			listedAt, fresh, listing := f.store.ListingFresh(dir.ino)
			dir.mu.Lock()
			same := dir.dirKept && dir.dirDrops == kept.gen
			dir.mu.Unlock()
			switch {
			case same && listing:
				// The read that got it started a refresh (stale while
				// revalidated): the cache serves the same listing until
				// that ends.
				f.dropListingLater(dir, 100*time.Millisecond, kept)
				return
			case same && fresh > 0 && listedAt.After(kept.listedAt):
				f.dropListingLater(dir, fresh, &keptListing{gen: kept.gen, listedAt: listedAt})
				return
			}
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
