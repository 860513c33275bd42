package cache

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"remotefs/conn"
)

// RemoteChange is one change the server reported (the change feed).
type RemoteChange struct {
	Path     string // relative to the root; "" is the root folder itself
	Gone     bool   // deleted or moved away
	Dir      bool   // a folder (its entries changed)
	Overflow bool   // changes were lost: rescan everything
	From     string // set for a rename: where Path came from
}

// Invalidation tells the FUSE layer what the kernel may have cached that
// changed on the server: the name Name in folder Dir (added, removed or
// replaced), and/or the content and attributes of Ino.
//
// Event, when set, also says what the change was, so the FUSE layer can
// replay it through the kernel for programs watching the mount with
// inotify (fs echo.go). Events are raised only for changes the server
// made to entries the mount already showed (or to a folder the feed
// reported new): never for a first listing, nor for the mount's own
// uploads coming back through the feed.
type Invalidation struct {
	Dir  Ino
	Name string // "" when only Ino changed
	Ino  Ino    // 0 when only a name changed
	// Made: Name was just made, for this new entry and no other. A kernel
	// that already holds this node learnt it by looking the name up after
	// the change, so its entry for the name is current and must be left
	// alone: dropping a folder's entry would cut the working directory of
	// every process inside it loose (getcwd fails with ENOENT).
	Made Ino
	// AttrOnly: only Ino's attributes changed (stat data the server
	// reported for the mount's own upload), not its content.
	AttrOnly bool

	Event Event
	// Attr: the entry after the change (EventRemoved: before it).
	Attr Attr
	// EventRenamed: where Dir/Name went, and what it replaced there
	// (Replaced.Ino is 0 when nothing).
	ToDir    Ino
	ToName   string
	Replaced Attr
}

// Event is what a server-side change did to the mirror.
type Event uint8

const (
	EventNone     Event = iota
	EventCreated        // Dir/Name appeared (Attr)
	EventRemoved        // Dir/Name went (Attr: what it was)
	EventModified       // the content of the file Ino changed (Attr: now)
	EventAttrib         // the mode of Ino changed (Attr: now)
	EventRenamed        // Dir/Name moved to ToDir/ToName, Ino unchanged
)

func (e Event) String() string {
	switch e {
	case EventCreated:
		return "created"
	case EventRemoved:
		return "removed"
	case EventModified:
		return "modified"
	case EventAttrib:
		return "attrib"
	case EventRenamed:
		return "renamed"
	}
	return "none"
}

// ApplyRemoteChanges brings the mirror up to date with changes the server
// reported: each path is re-checked with the server (so stale or
// out-of-order reports do no harm), new entries appear, removed ones go,
// changed files drop their cached content, changed folders are listed
// again. Paths with local changes still on their way to the server keep
// their local state, so the mount's own uploads are not taken for remote
// changes (and their echoes cost no invalidation). Changes under a folder
// the mount never listed are ignored: it will be listed when first used.
func (s *Store) ApplyRemoteChanges(ctx context.Context, changes []RemoteChange) {
	s.applying.Add(1)
	defer s.applying.Add(-1)
	reported := s.now() // every change in the batch happened before this
	paths := map[string]RemoteChange{}
	for _, c := range changes {
		if c.Overflow {
			s.log.Info("change feed lost events; listing the tree again")
			if _, err := s.Preload(ctx, nil); err != nil {
				s.log.Warn("rescan after lost events", "err", err)
			}
			return
		}
		if strings.HasPrefix(path.Base(c.Path), conn.TempPrefix) {
			continue
		}
		old, seen := paths[c.Path]
		c.Dir = c.Dir || (seen && old.Dir)
		paths[c.Path] = c
	}
	// Renames first, in the order they happened: the moved entry (and a
	// folder's cached subtree) keeps its Ino, so open files, the kernel's
	// nodes and cached content follow it. What they cannot move is left
	// to the path checks below (a removal and a creation). A moved entry
	// needs no second check: the rename's stat of its new path is as
	// recent as that check's would be. (The old path is still checked: the
	// batch may hold a new file made there since.)
	for _, c := range changes {
		if c.From != "" && !strings.HasPrefix(path.Base(c.From), conn.TempPrefix) {
			if s.applyRemoteRename(ctx, c.From, c.Path) && !paths[c.Path].Dir {
				delete(paths, c.Path)
			}
		}
	}
	// Parents before children, so a new folder's entry exists before its
	// files are looked at.
	ordered := make([]string, 0, len(paths))
	for p := range paths {
		ordered = append(ordered, p)
	}
	sort.Slice(ordered, func(i, j int) bool {
		di, dj := strings.Count(ordered[i], "/"), strings.Count(ordered[j], "/")
		if ordered[i] == "" || ordered[j] == "" {
			return ordered[i] == ""
		}
		if di != dj {
			return di < dj
		}
		return ordered[i] < ordered[j]
	})
	// One depth level at a time, each level's paths in parallel.
	for i := 0; i < len(ordered); {
		j := i
		depth := strings.Count(ordered[i], "/")
		for j < len(ordered) && (ordered[j] == "" && ordered[i] == "" || ordered[j] != "" && ordered[i] != "" && strings.Count(ordered[j], "/") == depth) {
			j++
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, p := range ordered[i:j] {
			wg.Add(1)
			sem <- struct{}{}
			go func(c RemoteChange) {
				defer wg.Done()
				defer func() { <-sem }()
				s.applyRemoteChange(ctx, c, reported)
			}(paths[p])
		}
		wg.Wait()
		i = j
	}
}

func (s *Store) applyRemoteChange(ctx context.Context, c RemoteChange, reported time.Time) {
	if c.Path == "" {
		if err := s.listDir(ctx, RootIno); err != nil {
			s.log.Debug("relist root after change", "err", err)
		}
		return
	}
	parentPath := path.Dir(c.Path)
	if parentPath == "." {
		parentPath = ""
	}
	s.mu.Lock()
	_, parent, err := s.lookupPathLocked(parentPath)
	if err != nil || parent == nil || !parent.isDir() || !parent.listed || s.protected(c.Path) {
		s.mu.Unlock()
		return
	}
	parentIno := parent.ino
	since := s.jr.mark()
	s.mu.Unlock()

	asked := s.now()
	fi, err := s.remote.Lstat(ctx, c.Path)
	gone := errors.Is(err, fs.ErrNotExist)
	if err != nil && !gone {
		s.log.Debug("check remote change", "path", c.Path, "err", err)
		return
	}
	s.mu.Lock()
	d := s.entries[parentIno]
	if d == nil || s.pathOf(d) != parentPath || s.keepLocal(c.Path, since) {
		s.mu.Unlock()
		return
	}
	name := path.Base(c.Path)
	cur := s.entries[d.children[name]]
	if cur != nil && cur.mode.IsRegular() && cur.checked.After(asked) {
		// Confirmed with the server after this stat was asked for (an
		// open's re-check): never go back to what the stat saw.
		s.mu.Unlock()
		return
	}
	relist := Ino(0)
	switch {
	case gone:
		if cur != nil && !s.hasLocalWorkLocked(cur) {
			s.notifyRemovedLocked(d, cur)
			s.removeSubtree(cur)
		}
	default:
		fi.Name = name
		if cur != nil && cur.checked.Before(reported) && s.rewrittenInPlace(c.Path, cur, fi) {
			// A version is (size, whole seconds): a rewrite of the same
			// size within the second of the last one looks unchanged.
			// The feed says it changed, and it was not the mount's own
			// upload: drop the content all the same.
			s.dropContent(cur)
			cur.reported = stampOf(s.now())
			s.notifyLocked(Invalidation{Ino: cur.ino, Event: EventModified, Attr: cur.attr()})
		}
		changed := cur == nil || cur.remote != versionOf(fi) || cur.mode != fi.Mode
		e := s.upsertChildLocked(d, fi, s.now())
		if e.mode.IsRegular() && fi.Ctime.IsZero() && e.sino == 0 && !e.localOwned() {
			// Changed on the server (its inode number went with the
			// old version) or never known: ask for its stat data.
			s.wantStatDataLocked(c.Path)
		}
		if changed && e.mode.IsRegular() && !e.localOwned() {
			// The server may still be writing it: until it settles its
			// attributes are checked on open and not cached by the kernel.
			e.reported = stampOf(s.now())
		}
		// A new folder is listed at once (its files may already be there);
		// a known one again if it was listed and its entries changed.
		if e.isDir() && (cur != e || (c.Dir && (e.listed || e.announce))) {
			relist = e.ino
		}
	}
	s.mu.Unlock()
	if relist != 0 {
		if err := s.listDir(ctx, relist); err != nil {
			s.log.Debug("relist after change", "path", c.Path, "err", err)
		}
	}
}

// applyRemoteRename moves the entry at from to to, as the server did,
// when the server's to is what the mount knew at from (same type) and
// neither path has local changes in flight. It reports whether it did.
func (s *Store) applyRemoteRename(ctx context.Context, from, to string) bool {
	s.mu.Lock()
	since := s.jr.mark()
	s.mu.Unlock()
	fi, err := s.remote.Lstat(ctx, to)
	if err != nil {
		return false // the path checks sort it out
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	srcDir, src, err := s.lookupPathLocked(from)
	if err != nil || src == nil || srcDir == nil || src.localOwned() || s.keepLocal(from, since) || s.keepLocal(to, since) {
		return false
	}
	// The mount's own rename coming back, or a name the mount has reused
	// since: the entry now at from is not the file the server moved, and
	// moving it (and replaying the move in the kernel) would show one
	// file's content under the other's name. The path checks reconcile.
	if s.deliveredWithin(from, ownEchoWindow) || s.deliveredWithin(to, ownEchoWindow) {
		return false
	}
	if src.mode.Type() != fi.Mode.Type() || (src.isDir() && (to == from || strings.HasPrefix(to, from+"/"))) {
		return false
	}
	// A server rename keeps size and mtime: a file whose version differs
	// from what the mount knew at from is another file.
	if src.mode.IsRegular() && (!src.onServer || versionOf(fi) != src.remote) {
		return false
	}
	toDirPath := path.Dir(to)
	if toDirPath == "." {
		toDirPath = ""
	}
	_, dstDir, err := s.lookupPathLocked(toDirPath)
	if err != nil || dstDir == nil || !dstDir.isDir() || !dstDir.listed {
		return false
	}
	toName := path.Base(to)
	var replaced Attr
	if cur := s.entries[dstDir.children[toName]]; cur != nil {
		if cur.localOwned() || cur.isDir() {
			return false
		}
		replaced = cur.attr()
		s.removeSubtree(cur)
	}
	srcDir.dropChild(src.name)
	s.dirtyIno[srcDir.ino] = true
	if dstDir.children == nil {
		dstDir.children = map[string]Ino{}
	}
	oldName := src.name
	src.parent, src.name = dstDir.ino, toName
	dstDir.setChild(toName, src.ino)
	s.dirtyIno[dstDir.ino] = true
	s.dirtyIno[src.ino] = true
	fi.Name = toName
	s.notifyLocked(Invalidation{Dir: srcDir.ino, Name: oldName, Ino: src.ino,
		Event: EventRenamed, Attr: src.attr(), ToDir: dstDir.ino, ToName: toName, Replaced: replaced})
	s.applyServerAttrs(src, fi)
	src.checked = stampOf(s.now())
	return true
}

// ownEchoWindow: a feed report about a path the mount itself changed this
// recently is taken for the echo of that change.
const ownEchoWindow = 10 * time.Second

// rewrittenInPlace reports whether a feed report about the file e, which
// the server still describes with e's version and mode, means its content
// changed anyway: it was not the mount's own recent change coming back
// (the caller also checks that e was not confirmed with the server after
// the report was made). Caller holds mu.
func (s *Store) rewrittenInPlace(p string, e *entry, fi conn.FileInfo) bool {
	return e.mode.IsRegular() && fi.Mode == e.mode && e.onServer && !e.localOwned() &&
		versionOf(fi) == e.remote && !s.deliveredWithin(p, ownEchoWindow)
}

// notifyRemovedLocked reports that c, a child of d, is about to be
// removed because the server no longer has it. Caller holds mu.
func (s *Store) notifyRemovedLocked(d, c *entry) {
	s.notifyLocked(Invalidation{Dir: d.ino, Name: c.name, Ino: c.ino, Event: EventRemoved, Attr: c.attr()})
}

// SetChangeFeed tells the store whether the server's change feed is live.
// While it is, a file confirmed with the server after the feed started is
// not re-checked on open (the feed reports its changes), so opening a
// project's files costs no round trip.
// Folders matched by ignore (base-name globs, as the watcher applies
// them) are not watched by the feed, so what is under them is still
// re-checked.
func (s *Store) SetChangeFeed(live bool, ignore []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live {
		s.feedSince = s.now()
	} else {
		s.feedSince = time.Time{}
	}
	s.feedIgnore = pruneSet(ignore)
}

// feedCovers reports whether the change feed reports changes to e made
// after since (when e was last confirmed). Caller holds mu.
func (s *Store) feedCovers(e *entry, since time.Time) bool {
	if s.feedSince.IsZero() || since.Before(s.feedSince) {
		return false
	}
	for a := s.entries[e.parent]; a != nil && a.ino != RootIno; a = s.entries[a.parent] {
		if s.feedIgnore.has(a.name) {
			return false
		}
	}
	// An ignored folder itself is reported, not what is inside it.
	return !(e.isDir() && s.feedIgnore.has(e.name))
}

// ListingPushed reports whether the kernel may keep dir's listing across
// opens: the listing is complete and confirmed in this connection, and
// the live change feed reports changes to it, which reach the FUSE layer
// as invalidations naming the folder.
func (s *Store) ListingPushed(dir Ino) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.entries[dir]
	return d != nil && d.isDir() && d.listed && d.confirmed == s.connEpoch && s.feedCovers(d, d.listedAt.Time())
}

// ListingFresh reports when dir's listing was last confirmed with the
// server and how much longer the cache serves it as it is, without
// refreshing it (a listing older than DirTTL is refreshed at its next
// use: ensureListed); listing: it is being listed from the server now
// (meanwhile the cache serves the listing it has). Any change to its
// names the cache takes is an invalidation naming dir. Zero when the
// listing is not known, not confirmed in this connection (its next use
// confirms it first), or the server cannot be reached.
func (s *Store) ListingFresh(dir Ino) (listedAt time.Time, freshFor time.Duration, listing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.entries[dir]
	if d == nil || !d.isDir() || !d.listed || d.confirmed != s.connEpoch || !s.online() {
		return time.Time{}, 0, false
	}
	listedAt = d.listedAt.Time()
	return listedAt, max(0, s.opts.DirTTL-s.now().Sub(listedAt)), s.listing[dir] != nil
}

// ChangeFeedLive reports whether server changes are being pushed.
func (s *Store) ChangeFeedLive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.feedSince.IsZero()
}

// notifyLocked queues a kernel cache invalidation. Caller holds mu.
func (s *Store) notifyLocked(inv Invalidation) {
	if s.opts.OnInvalidate == nil {
		return
	}
	s.invalidations = append(s.invalidations, queueInvalidation(inv))
	s.invalQueued++
	select {
	case s.invalidateSignal <- struct{}{}:
	default:
	}
}

// queuedInvalidation is an Invalidation waiting in Store.invalidations:
// its attributes, which most have none of (a listing's new names: one
// each), are kept aside, so a 100,000-entry first listing queues 80 bytes
// a name instead of 384.
type queuedInvalidation struct {
	Dir, Ino, Made, ToDir Ino
	Name, ToName          string
	AttrOnly              bool
	Event                 Event
	attrs                 *[2]Attr // Attr, Replaced; nil when both are zero
}

func queueInvalidation(inv Invalidation) queuedInvalidation {
	q := queuedInvalidation{Dir: inv.Dir, Ino: inv.Ino, Made: inv.Made, ToDir: inv.ToDir,
		Name: inv.Name, ToName: inv.ToName, AttrOnly: inv.AttrOnly, Event: inv.Event}
	if inv.Attr != (Attr{}) || inv.Replaced != (Attr{}) {
		q.attrs = &[2]Attr{inv.Attr, inv.Replaced}
	}
	return q
}

func (q *queuedInvalidation) invalidation() Invalidation {
	inv := Invalidation{Dir: q.Dir, Ino: q.Ino, Made: q.Made, ToDir: q.ToDir,
		Name: q.Name, ToName: q.ToName, AttrOnly: q.AttrOnly, Event: q.Event}
	if q.attrs != nil {
		inv.Attr, inv.Replaced = q.attrs[0], q.attrs[1]
	}
	return inv
}

// invalidateLoop delivers queued invalidations outside mu, on its own
// goroutine: the FUSE layer must never call into the kernel from inside a
// request that touches the same node (it would deadlock).
func (s *Store) invalidateLoop() {
	for {
		select {
		case <-s.stop:
			return
		case <-s.invalidateSignal:
		}
		s.mu.Lock()
		batch := s.invalidations
		s.invalidations = nil
		upTo := s.invalQueued
		s.mu.Unlock()
		for i := range batch {
			s.opts.OnInvalidate(batch[i].invalidation())
		}
		s.mu.Lock()
		s.invalDone = upTo
		close(s.invalDoneCh)
		s.invalDoneCh = make(chan struct{})
		s.mu.Unlock()
	}
}
