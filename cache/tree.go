package cache

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"remotefs/conn"
)

// GetAttr returns the cached attributes of ino. It never talks to the server.
func (s *Store) GetAttr(ino Ino) (Attr, error) {
	s.metadataUsed()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil {
		return Attr{}, ErrStale
	}
	return s.attrLocked(e), nil
}

// CurrentAttr is GetAttr for a getattr from the kernel: an entry whose
// folder has not been confirmed in this connection is confirmed first
// (its folder listed, or the one name stat'ed), as a lookup would, so
// attributes cached by an earlier mount or connection are not served as
// current while the server is reachable.
func (s *Store) CurrentAttr(ctx context.Context, ino Ino) (Attr, error) {
	s.mu.Lock()
	e := s.entries[ino]
	var d *entry
	if e != nil && !e.orphan() && ino != RootIno {
		d = s.entries[e.parent]
	}
	// Local changes not on the server yet are current by definition.
	unsure := d != nil && s.unconfirmedLocked(d) && e.statEpoch != s.connEpoch && !e.localOwned()
	var dir Ino
	var name string
	if unsure {
		dir, name = d.ino, e.name
	}
	s.mu.Unlock()
	if unsure {
		if _, err := s.Lookup(ctx, dir, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Attr{}, err
		}
	}
	return s.GetAttr(ino)
}

// Lookup finds name in directory dir, listing the directory from the server
// first if it was never listed, or not yet in this connection (see
// "Starting truthfully" in the package doc).
func (s *Store) Lookup(ctx context.Context, dir Ino, name string) (Attr, error) {
	s.metadataUsed()
	s.learnLimits(ctx)
	if err := s.nameErr(name); err != nil {
		return Attr{}, err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return Attr{}, err
	}
	for confirmed := false; ; confirmed = true {
		s.mu.Lock()
		d := s.entries[dir]
		if d == nil {
			s.mu.Unlock()
			return Attr{}, ErrStale
		}
		c := s.entries[d.children[name]]
		// A folder still unconfirmed here was not listed (a huge one, or
		// one with local changes pending under it): the one name is
		// asked of the server, unless it was in this connection.
		unsure := !confirmed && s.unconfirmedLocked(d) && (c == nil || c.statEpoch != s.connEpoch)
		if c != nil && !unsure {
			a := s.attrLocked(c)
			s.mu.Unlock()
			return a, nil
		}
		offlineGuess := !unsure && d.listed && d.confirmed != s.connEpoch && !s.online()
		s.mu.Unlock()
		if offlineGuess {
			s.errOffline() // the server could say more: try to reach it
		}
		if !unsure {
			return Attr{}, fs.ErrNotExist
		}
		// The cache's entry (or its lack of one) comes from an earlier
		// mount or connection: the server may have another by now.
		if err := s.confirmName(ctx, dir, name); err != nil {
			return Attr{}, err
		}
	}
}

// confirmListMax: a folder with more cached names than this is not listed
// to confirm it; each name looked up is stat'ed instead (the bulk
// listing brings the rest soon).
const confirmListMax = 2000

// unconfirmedLocked reports whether d's cached listing has not been
// confirmed in this connection while the server is reachable: a name it
// lacks may exist on the server, and the entries it has may have changed.
// Caller holds mu.
func (s *Store) unconfirmedLocked(d *entry) bool {
	return d.listed && d.confirmed != s.connEpoch && s.online()
}

// confirmName asks the server about one name of a folder whose listing is
// not confirmed in this connection, and records what it says: the entry
// as the server has it (with its stat data where the server's agent can
// tell it), or its removal. A name with local changes keeps them; an
// unreachable server leaves the cache as it was.
func (s *Store) confirmName(ctx context.Context, dir Ino, name string) error {
	s.mu.Lock()
	d := s.entries[dir]
	if d == nil {
		s.mu.Unlock()
		return ErrStale
	}
	p := childPath(s.pathOf(d), name)
	since, epoch := s.jr.mark(), s.connEpoch
	s.mu.Unlock()
	fi, err := s.statWithData(ctx, p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, ErrOffline) || !s.online() {
			return nil // served from the cache, as offline
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d = s.entries[dir]
	if d == nil || childPath(s.pathOf(d), name) != p || s.keepLocal(p, since) {
		return nil
	}
	c := s.entries[d.children[name]]
	switch {
	case err == nil:
		fi.Name = name
		c = s.upsertChildLocked(d, fi, s.now())
		c.statEpoch = epoch
	case c != nil && !s.hasLocalWorkLocked(c) && !c.localOnly:
		// Gone from the server since the cache had it.
		if s.unlinkNameLocked(d, name, c) {
			s.notifyLocked(Invalidation{Dir: d.ino, Name: name, Ino: c.ino})
		} else {
			s.notifyRemovedLocked(d, c)
			s.removeSubtree(c)
		}
	}
	return nil
}

// statWithData stats p on the server with the source that reports stat
// data (inode number, ctime, nanoseconds: the agent's batch stat) where
// there is one, else over SFTP (whole seconds).
func (s *Store) statWithData(ctx context.Context, p string) (conn.FileInfo, error) {
	if bs, ok := s.remote.(conn.BatchStater); ok {
		var got *conn.FileInfo
		err := bs.StatMany(ctx, []string{p}, func(_ string, fi conn.FileInfo) error {
			got = &fi
			return nil
		})
		switch {
		case err == nil && got != nil:
			return *got, nil
		case err == nil:
			return conn.FileInfo{}, fs.ErrNotExist
		case !errors.Is(err, conn.ErrUnsupported):
			return conn.FileInfo{}, err
		}
	}
	return s.remote.Lstat(ctx, p)
}

// ReadDir returns the entries of dir sorted by name.
func (s *Store) ReadDir(ctx context.Context, dir Ino) ([]DirEntry, error) {
	s.metadataUsed()
	if err := s.ensureListed(ctx, dir); err != nil {
		return nil, err
	}
	s.mu.Lock()
	d := s.entries[dir]
	huge := d != nil && s.unconfirmedLocked(d) // names are what is asked: list it
	s.mu.Unlock()
	if huge {
		if err := s.confirmListing(ctx, dir); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d = s.entries[dir]
	if d == nil {
		return nil, ErrStale
	}
	out := make([]DirEntry, 0, len(d.children))
	for name, ino := range d.children {
		if c := s.entries[ino]; c != nil {
			out = append(out, DirEntry{Name: name, Ino: ino, ServerIno: c.shownSino(), Mode: c.mode})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ensureListed makes sure dir's listing is known: listed from the server
// the first time, refreshed in the background when older than DirTTL.
func (s *Store) ensureListed(ctx context.Context, dir Ino) error {
	s.learnLimits(ctx)
	s.mu.Lock()
	d := s.entries[dir]
	if d == nil {
		s.mu.Unlock()
		return ErrStale
	}
	if !d.isDir() {
		s.mu.Unlock()
		return ErrNotDir
	}
	if d.listed && s.unconfirmedLocked(d) && len(d.children) <= confirmListMax {
		// Listed in an earlier mount or connection: the server may have
		// changed it since.
		s.mu.Unlock()
		return s.confirmListing(ctx, dir)
	}
	if d.listed {
		// With a live change feed, listings are kept current by it.
		fed := s.feedCovers(d, d.listedAt.Time())
		stale := !fed && s.now().Sub(d.listedAt.Time()) > s.opts.DirTTL && s.online() && s.listing[dir] == nil
		s.mu.Unlock()
		if stale {
			go s.listDir(context.Background(), dir)
		}
		return nil
	}
	s.mu.Unlock()
	if !s.online() {
		return s.errOffline()
	}
	if s.listSubtree(ctx, dir) { // preload.go
		return nil
	}
	return s.listDir(ctx, dir)
}

// confirmListing lists dir, whose cached listing comes from an earlier
// mount or connection, before it is served: from the tree listing when
// it is about to bring it (listDir), else at once. An unreachable server
// leaves the cached listing to be served, as offline.
func (s *Store) confirmListing(ctx context.Context, dir Ino) error {
	err := s.listDir(ctx, dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && (errors.Is(err, ErrOffline) || !s.online()) {
		return nil
	}
	return err
}

// listDir lists dir from the server and merges the result, one call at a
// time per directory.
func (s *Store) listDir(ctx context.Context, dir Ino) error {
	s.mu.Lock()
	for c := s.listing[dir]; c != nil; c = s.listing[dir] {
		s.mu.Unlock()
		// A folder in the bulk stream completes only after its whole
		// subtree: wait a little for it, then list it here after all.
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(streamWait):
			s.mu.Lock()
			if s.listing[dir] == c && c.streaming {
				s.mu.Unlock()
				return s.listDirNow(ctx, dir)
			}
			s.mu.Unlock()
			<-c.done
		}
		if !errors.Is(c.err, errListAgain) {
			return c.err
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return s.listDirNow(ctx, dir)
}

// streamWait: how long a readdir waits for the bulk listing to reach a
// folder before listing it itself.
const streamWait = 2 * time.Second

// listDirNow lists dir from the server unless another listing (not a
// stream) is running, which it waits for.
func (s *Store) listDirNow(ctx context.Context, dir Ino) error {
	s.mu.Lock()
	if c := s.listing[dir]; c != nil && !c.streaming {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d := s.entries[dir]
	if d == nil {
		s.mu.Unlock()
		return ErrStale
	}
	p := s.pathOf(d)
	if d.listed && s.protected(p) {
		// Local changes under this directory are not on the server yet;
		// the server's listing would contradict them.
		d.listedAt = stampOf(s.now())
		s.mu.Unlock()
		return nil
	}
	call := &fetchCall{done: make(chan struct{})}
	prev := s.listing[dir] // a stream we stopped waiting for
	s.listing[dir] = call
	since, epoch := s.jr.mark(), s.connEpoch
	// confirming: the cached listing (and its files' stat data) comes
	// from an earlier mount or connection.
	confirming := d.listed && d.confirmed != epoch
	s.mu.Unlock()

	asked := s.now()
	infos, err := s.remote.ReadDir(ctx, p)
	if err == nil && confirming {
		infos = s.withStatData(ctx, p, infos)
	}

	s.mu.Lock()
	if s.listing[dir] == call {
		delete(s.listing, dir)
		if prev != nil && !isDone(prev) {
			s.listing[dir] = prev // the stream still owns its release
		}
	}
	if err == nil {
		s.mergeListing(dir, p, infos, since, epoch, asked)
	} else if errors.Is(err, fs.ErrNotExist) {
		// The directory is gone on the server.
		if d := s.entries[dir]; d != nil && dir != RootIno && !s.keepLocal(p, since) && s.pathOf(d) == p && !s.hasLocalWorkLocked(d) {
			s.removeSubtree(d)
		}
	}
	call.err = err
	close(call.done)
	s.mu.Unlock()
	return err
}

// withStatData replaces the SFTP attributes of the regular files in infos,
// a listing of the folder at p, with the stat data the server's agent
// reports for them (conn.BatchStater), in one request. SFTP's whole
// seconds cannot tell a file rewritten with the same size within the
// same second from the cached version; its ctime, inode number and
// nanoseconds can (applyServerAttrs). Without an agent the listing is
// used as it is.
func (s *Store) withStatData(ctx context.Context, p string, infos []conn.FileInfo) []conn.FileInfo {
	bs, ok := s.remote.(conn.BatchStater)
	if !ok {
		return infos
	}
	at := map[string]int{}
	var paths []string
	for i, fi := range infos {
		if fi.Mode.IsRegular() && fi.Name != "" && !strings.Contains(fi.Name, "/") {
			at[childPath(p, fi.Name)] = i
			paths = append(paths, childPath(p, fi.Name))
		}
	}
	if len(paths) == 0 {
		return infos
	}
	out := slices.Clone(infos)
	err := bs.StatMany(ctx, paths, func(cp string, fi conn.FileInfo) error {
		if i, ok := at[cp]; ok {
			fi.Name = out[i].Name
			out[i] = fi
		}
		return nil
	})
	if err != nil {
		s.log.Debug("stat data for a listing", "path", p, "err", err)
		return infos
	}
	return out
}

// mergeListing applies a listing of dir (path p) from the server, asked
// for when the delivered-operations counter read since, in connection
// epoch, at time asked. Caller holds mu.
func (s *Store) mergeListing(dir Ino, p string, infos []conn.FileInfo, since, epoch uint64, asked time.Time) {
	d := s.entries[dir]
	if d == nil || s.pathOf(d) != p {
		return // moved or removed while we listed it
	}
	if d.children == nil {
		d.children = map[string]Ino{}
	}
	seen := make(map[string]bool, len(infos))
	now := s.now()
	// Names that appear in a folder shown before (or in one the server
	// just created) are server changes worth an event; a first listing's
	// are not.

	for _, fi := range infos {
		if strings.HasPrefix(fi.Name, conn.TempPrefix) {
			s.removeStaleTemp(childPath(p, fi.Name))
			continue
		}
		if fi.Name == "" || strings.Contains(fi.Name, "/") {
			continue
		}
		seen[fi.Name] = true
		cp := childPath(p, fi.Name)
		if s.keepLocal(cp, since) {
			continue
		}
		if c := s.entries[d.children[fi.Name]]; c != nil && c.mode.IsRegular() && c.checked.After(asked) {
			continue // confirmed since the listing was asked for: newer
		}
		s.upsertChildLocked(d, fi, now)
	}
	for name, ino := range d.children {
		if seen[name] {
			continue
		}
		c := s.entries[ino]
		if c == nil {
			d.dropChild(name)
			continue
		}
		if s.keepLocal(childPath(p, name), since) || s.hasLocalWorkLocked(c) || c.localOnly {
			continue
		}
		if s.unlinkNameLocked(d, name, c) {
			s.notifyLocked(Invalidation{Dir: d.ino, Name: name, Ino: c.ino})
			continue
		}
		s.notifyRemovedLocked(d, c)
		s.removeSubtree(c)
	}
	d.listed = true
	d.announce = false
	d.listedAt = stampOf(now)
	d.confirmed = epoch
	s.dirtyIno[dir] = true
}

// upsertChildLocked records fi as a child of d, replacing an entry of
// another type. The caller has checked the path is not protected.
// Caller holds mu.
func (s *Store) upsertChildLocked(d *entry, fi conn.FileInfo, now time.Time) *entry {
	if d.children == nil {
		d.children = map[string]Ino{}
	}
	c := s.entries[d.children[fi.Name]]
	if c != nil && c.mode.Type() != fi.Mode.Type() {
		s.notifyRemovedLocked(d, c)
		s.removeSubtree(c)
		c = nil
	}
	if c == nil {
		// The name is kept for the mount's life: a copy of its own, not a
		// slice of the listing's buffer (the whole path it came in).
		fi.Name = strings.Clone(fi.Name)
		if l := s.linkByServerInoLocked(d, fi); l != nil {
			// Another name of a file the mirror has: a hard link.
			l.links = append(l.links, linkName{Parent: d.ino, Name: fi.Name})
			d.setChild(fi.Name, l.ino)
			s.dirtyIno[d.ino] = true
			s.applyServerAttrs(l, fi)
			l.checked = stampOf(now)
			s.notifyLocked(Invalidation{Dir: d.ino, Name: fi.Name, Ino: l.ino})
			return l
		}
		c = &entry{ino: s.nextIno, parent: d.ino, name: fi.Name}
		s.nextIno++
		s.entries[c.ino] = c
		d.setChild(fi.Name, c.ino)
		s.dirtyIno[d.ino] = true
		s.applyServerAttrs(c, fi)
		c.checked = stampOf(now)
		inv := Invalidation{Dir: d.ino, Name: fi.Name, Made: c.ino}
		// Names that appear in a folder shown before (or in one the
		// server just created) are server changes worth an event; a
		// first listing's are not.
		if d.listed || d.announce {
			inv.Event, inv.Attr = EventCreated, c.attr()
			c.announce = c.isDir()
			if c.mode.IsRegular() {
				c.reported = stampOf(now) // new on the server: maybe still being written
			}
		}
		s.notifyLocked(inv)
		return c
	}
	if c.mode.IsRegular() && c.onServer && !c.localOwned() && versionOf(fi) != c.remote {
		c.reported = stampOf(now) // changed on the server: maybe still being written
	}
	s.applyServerAttrs(c, fi)
	c.checked = stampOf(now)
	return c
}

// applyServerAttrs records what the server says about a clean entry,
// dropping cached content that no longer matches. Caller holds mu.
func (s *Store) applyServerAttrs(e *entry, fi conn.FileInfo) {
	v := versionOf(fi)
	before := e.attr()
	rewritten := e.onServer && e.mode.IsRegular() && v == e.remote && rewrittenInPlace(e, fi)
	// An entry the server reports unchanged (every listing after a
	// remount, for most of the tree) is not written to meta.db again.
	was := e.serverAttrs()
	s.noteServerInoLocked(e, fi)
	if e.localOwned() {
		return
	}
	if rewritten && (e.content == contentClean || e.content == contentPartial) {
		// The same version by size and second, but not the same file:
		// its cached content may be the old one.
		s.dropContent(e)
	}
	if e.onServer && (v != e.remote || rewritten) {
		// Another version, or another file: not what the mount's upload
		// left.
		s.releaseHeldLocked(e)
	}
	ownerChanged := fi.HasOwner && e.hasOwner && (fi.Uid != e.uid || fi.Gid != e.gid)
	if ownerChanged && s.chownPendingLocked(e) {
		// The server has not got the owner the journal gives it yet.
		fi.HasOwner, ownerChanged = false, false
	}
	if e.onServer && v == e.remote && e.mode == fi.Mode && !ownerChanged {
		// Only stat data may change (inode number, ctime, the mtime's
		// fraction): what the kernel cached of it goes at the end.
		defer s.statDataChangedLocked(e, before)
	}
	if e.onServer && (v != e.remote || e.mode != fi.Mode || ownerChanged) {
		inv := Invalidation{Ino: e.ino}
		switch {
		case e.mode.IsRegular() && fi.Mode.IsRegular() && v != e.remote:
			inv.Event = EventModified
		case e.mode.Perm() != fi.Mode.Perm() && !e.isLink():
			inv.Event = EventAttrib
		}
		if inv.Event != EventNone {
			inv.Attr = Attr{Ino: e.ino, Mode: fi.Mode, Size: fi.Size, Mtime: fi.Mtime, Uid: fi.Uid, Gid: fi.Gid, HasOwner: fi.HasOwner}
		}
		s.notifyLocked(inv)
	}
	if e.mode.IsRegular() && (e.content == contentClean || e.content == contentPartial) && v != e.remote {
		s.dropContent(e)
	}
	if fi.Ino == 0 && (!fi.Ctime.IsZero() || e.onServer && (v != e.remote || e.mode.Type() != fi.Mode.Type())) {
		// Reported by a source that tells inode numbers (it has the
		// ctime too) without one: on another filesystem than the root.
		// Or changed on the server, reported without its inode (SFTP): it
		// may be another file now, and the number it had may be reused.
		s.forgetServerInoLocked(e)
	}
	if fi.Mode&fs.ModeSymlink != 0 && (fi.Target != "" || v != e.remote) {
		e.target = fi.Target
	}
	if e.mode.IsDir() != fi.Mode.IsDir() {
		if d := s.entries[e.parent]; d != nil {
			d.subdirsOK = false
		}
	}
	switch {
	case !fi.Ctime.IsZero():
		e.sctime = fi.Ctime
	case v != e.remote:
		e.sctime = time.Time{} // another version, seen over SFTP
	}
	e.mode = fi.Mode
	e.size = fi.Size
	serverTimes(e, fi)
	if fi.HasOwner {
		e.uid, e.gid, e.hasOwner = fi.Uid, fi.Gid, true
	}
	e.remote = v
	e.onServer = true
	if e.serverAttrs() != was {
		s.dirtyIno[e.ino] = true
	}
}

// serverAttrs are the persisted fields applyServerAttrs may change (it
// marks what else it changes dirty itself, e.g. dropContent).
type serverAttrs struct {
	sino, mtime, atime, ctime int64
	sctime                    int64
	size                      int64
	mode                      fs.FileMode
	uid, gid, nlink           uint32
	hasOwner, onServer        bool
	remote                    Version
	target                    string
}

func (e *entry) serverAttrs() serverAttrs {
	return serverAttrs{sino: int64(e.sino), mtime: e.mtime.UnixNano(), atime: e.atime.UnixNano(), ctime: e.ctime.UnixNano(),
		sctime: e.sctime.UnixNano(),
		size:   e.size, mode: e.mode, uid: e.uid, gid: e.gid, nlink: e.nlink, hasOwner: e.hasOwner, onServer: e.onServer,
		remote: e.remote, target: e.target}
}

// rewrittenInPlace reports whether fi, from a source with stat data (the
// bulk listing, the agent's stat: it has a ctime), shows a file that was
// written, replaced or touched since e's content was cached, although its
// version (size, whole second) is the same: another ctime than the
// server's recorded with the content (e.sctime), another inode number,
// or another fraction of the same second. Conservative: a ctime moved on
// the server by a chmod or a rename counts too (the content is fetched
// again, never served stale). Caller holds mu.
func rewrittenInPlace(e *entry, fi conn.FileInfo) bool {
	if fi.Ctime.IsZero() {
		return false // SFTP: whole seconds, nothing more to tell
	}
	return !e.sctime.IsZero() && !e.sctime.Equal(fi.Ctime) ||
		e.sino != 0 && fi.Ino != 0 && e.sino != fi.Ino ||
		e.mtime.Nanosecond() != 0 && fi.Mtime.Nanosecond() != 0 && !e.mtime.Equal(fi.Mtime)
}

// statDataChangedLocked drops the attributes the kernel cached for e when
// its stat data moved from before (the pages stay: the content did not
// change). Caller holds mu.
func (s *Store) statDataChangedLocked(e *entry, before Attr) {
	if after := e.attr(); after.StatIno() != before.StatIno() || !after.Ctime.Equal(before.Ctime) || !after.Mtime.Equal(before.Mtime) {
		s.notifyLocked(Invalidation{Ino: e.ino, AttrOnly: true})
	}
}

func (s *Store) dropContent(e *entry) {
	if e.content == contentDirty {
		return
	}
	os.Remove(s.contentPath(e.ino))
	e.content = contentNone
	e.blocks = nil
	s.newEpochLocked(e)
	s.dirtyIno[e.ino] = true
	s.forgetContentLocked(e)
}

// removeSubtree forgets e and everything under it. Dirty content under it
// is kept only if a pending journal operation still needs it (the caller
// checks protection first). Caller holds mu.
func (s *Store) removeSubtree(e *entry) {
	for name, ino := range e.children {
		c := s.entries[ino]
		switch {
		case c == nil:
		case s.unlinkNameLocked(e, name, c):
			// a hard link: the file lives on under its other names
		case c.parent == e.ino:
			s.removeSubtree(c)
		}
	}
	if p := s.entries[e.parent]; p != nil && p.children[e.name] == e.ino {
		p.dropChild(e.name)
		s.dirtyIno[p.ino] = true
	}
	for _, l := range e.links {
		if p := s.entries[l.Parent]; p != nil && p.children[l.Name] == e.ino {
			p.dropChild(l.Name)
			s.dirtyIno[p.ino] = true
		}
	}
	e.links = nil
	if s.sinos[e.sino] == e.ino {
		delete(s.sinos, e.sino)
	}
	delete(s.dirtyIno, e.ino)
	s.deletedIno[e.ino] = true
	if e.opens > 0 {
		// Still open: like an unlinked file on a local disk, it lives on,
		// nameless, until the last close (purgeOrphanLocked).
		e.parent, e.name = orphanParent, ""
		e.children = nil
		return
	}
	if !s.hasPendingPut(e.ino) {
		os.Remove(s.contentPath(e.ino))
	}
	s.forgetContentLocked(e)
	delete(s.entries, e.ino)
}

// hasLocalWorkLocked reports whether e or anything under it holds local
// changes not yet queued or delivered (localOwned): such a subtree is not
// dropped because the server does not have it; the changes reach the
// server, or are set aside (undelivered.go), first. Caller holds mu.
func (s *Store) hasLocalWorkLocked(e *entry) bool {
	if e.localOwned() {
		return true
	}
	for _, ino := range e.children {
		if c := s.entries[ino]; c != nil && c.parent == e.ino && s.hasLocalWorkLocked(c) {
			return true
		}
	}
	return false
}

// orphanParent is the parent of entries that were removed while open.
const orphanParent Ino = 0

func (e *entry) orphan() bool { return e.parent == orphanParent }

// purgeOrphanLocked forgets an orphan once nothing has it open. Caller holds mu.
func (s *Store) purgeOrphanLocked(e *entry) {
	if !e.orphan() || e.opens > 0 {
		return
	}
	if !s.hasPendingPut(e.ino) {
		os.Remove(s.contentPath(e.ino))
	}
	s.forgetContentLocked(e)
	delete(s.entries, e.ino)
}

func (s *Store) hasPendingPut(ino Ino) bool {
	return s.jr.puts(ino) > 0
}

// childLocked returns the entry for name in dir. Caller holds mu.
func (s *Store) childLocked(dir Ino, name string) (*entry, *entry, error) {
	d := s.entries[dir]
	if d == nil {
		return nil, nil, ErrStale
	}
	if !d.isDir() {
		return nil, nil, ErrNotDir
	}
	if err := s.pathErr(d, name); err != nil {
		return nil, nil, err
	}
	return d, s.entries[d.children[name]], nil
}

// Readlink returns a symlink's target, asking the server once if the
// listing did not include it.
func (s *Store) Readlink(ctx context.Context, ino Ino) (string, error) {
	s.mu.Lock()
	e := s.entries[ino]
	if e == nil {
		s.mu.Unlock()
		return "", ErrStale
	}
	if !e.isLink() {
		s.mu.Unlock()
		return "", fs.ErrInvalid
	}
	if e.target != "" || !e.onServer {
		t := e.target
		s.mu.Unlock()
		return t, nil
	}
	p := s.pathOf(e)
	s.mu.Unlock()
	if !s.online() {
		return "", s.errOffline()
	}
	t, err := s.remote.ReadLink(ctx, p)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	if e := s.entries[ino]; e != nil && e.target == "" {
		e.target = t
		s.dirtyIno[ino] = true
	}
	s.mu.Unlock()
	return t, nil
}

// StatFS reports the server's filesystem; offline, a large empty one.
func (s *Store) StatFS(ctx context.Context) (conn.StatFS, error) {
	if s.online() {
		st, err := s.remote.StatFS(ctx, "")
		if err == nil {
			if st.NameMax > 0 {
				s.nameMax.Store(st.NameMax)
			}
			return st, nil
		}
	}
	return conn.StatFS{BlockSize: 4096, FragmentSize: 4096, NameMax: 255}, nil
}

// staleTempAge: a temporary upload file older than this was left by an
// upload that died (crash, lost link); uploads take seconds.
const staleTempAge = time.Hour

// removeStaleTemp deletes an abandoned upload's temporary file on the
// server, in the background. Temporary files are never shown on the mount.
func (s *Store) removeStaleTemp(p string) {
	created, ok := conn.TempCreated(path.Base(p))
	if !ok || time.Since(created) < staleTempAge || s.opts.ReadOnly {
		return
	}
	go func() {
		if err := s.remote.Remove(context.Background(), p); err == nil {
			s.log.Info("removed a temporary file left by an interrupted upload", "path", p)
		}
	}()
}

func isDone(c *fetchCall) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Peek returns what the mirror has for name in dir, never asking the
// server (ok is false when it has nothing).
func (s *Store) Peek(dir Ino, name string) (Attr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.entries[dir]
	if d == nil {
		return Attr{}, false
	}
	c := s.entries[d.children[name]]
	if c == nil {
		return Attr{}, false
	}
	return c.attr(), true
}

// PathOf returns ino's path relative to the root ("" for the root); ok is
// false for an entry the mirror no longer has, or one removed while open.
func (s *Store) PathOf(ino Ino) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil || e.orphan() {
		return "", false
	}
	for a := e; a.ino != RootIno; a = s.entries[a.parent] {
		if s.entries[a.parent] == nil {
			return "", false
		}
	}
	return s.pathOf(e), true
}
