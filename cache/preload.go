package cache

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"remotefs/conn"
)

// Preload fills the metadata mirror with the whole remote tree, so that
// lookups, listings and `git status` are answered locally from the start.
// With a remote that can list in bulk (conn.TreeWalker: one streamed find
// over ssh) directories become usable as the stream passes them, before the
// last ones arrive; otherwise the tree is walked with parallel SFTP
// listings. Directories named in prune (base names) are listed themselves
// but not descended into; the first use of one lists its whole subtree in
// one streamed walk where the remote can (listSubtree).
// Local changes not yet on the server are kept, as with every listing.
func (s *Store) Preload(ctx context.Context, prune []string) (PreloadStats, error) {
	start := time.Now()
	var st PreloadStats
	var err error
	s.mu.Lock()
	s.pruned = pruneSet(prune)
	s.mu.Unlock()
	if tw, ok := s.remote.(conn.TreeWalker); ok {
		walk := func(yield func(string, conn.FileInfo) error) error { return tw.WalkTree(ctx, prune, yield) }
		st, err = s.preloadBulk(ctx, walk, "", RootIno, prune)
		st.Bulk = true
		if errors.Is(err, conn.ErrNoTreeWalk) {
			s.log.Info("bulk listing unavailable; walking the tree over SFTP", "reason", err)
			st, err = s.preloadWalk(ctx, prune)
		}
	} else {
		st, err = s.preloadWalk(ctx, prune)
	}
	st.Took = time.Since(start)
	return st, err
}

// PreloadPruned lists the folders Preload pruned (node_modules,
// __pycache__), each with its whole subtree, in one request (a remote
// that implements conn.SubtreesWalker: the agent's walkeach; otherwise it
// does nothing), so that a walk or a build right after mounting finds
// them listed instead of paying a round trip per pruned folder (a Python
// project has a __pycache__ in almost every package). The mount runs it
// right after Preload, beside Prefetch. Each folder is claimed only when
// its part of the stream begins: a readdir of one whose turn has not come
// lists it itself at once (listSubtree), never waiting behind a large
// node_modules listed before it. The stats count the folders and entries
// below the pruned ones (Pruned, PrunedEntries).
func (s *Store) PreloadPruned(ctx context.Context) (st PreloadStats, err error) {
	start := time.Now()
	defer func() { st.Took = time.Since(start) }()
	sw, ok := s.remote.(conn.SubtreesWalker)
	if !ok {
		return st, nil
	}
	s.mu.Lock()
	var dirs []string
	var visit func(d *entry, p string)
	visit = func(d *entry, p string) {
		names := make([]string, 0, len(d.children))
		for name := range d.children {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			c := s.entries[d.children[name]]
			if c == nil || !c.isDir() {
				continue
			}
			cp := path.Join(p, name)
			if s.pruned.has(name) {
				dirs = append(dirs, cp)
			} else {
				visit(c, cp)
			}
		}
	}
	if root := s.entries[RootIno]; root != nil {
		visit(root, "")
	}
	s.mu.Unlock()
	if len(dirs) == 0 {
		return st, nil
	}
	// The stream brings dirs[i]'s subtree, then dirs[i+1]'s, ...
	i := 0
	var cur *bulkLister // dirs[i]'s, once its records began; nil when it is gone here
	started := false
	next := func() {
		if !started {
			cur = s.subtreeLister(dirs[i])
		}
		if cur != nil {
			cur.finish()
			st.Pruned += cur.st.Dirs
			st.PrunedEntries += cur.st.Entries
		}
		cur, started = nil, false
		i++
	}
	err = sw.WalkSubtrees(ctx, dirs, func(p string, fi conn.FileInfo) error {
		for i < len(dirs) && !strings.HasPrefix(p, dirs[i]+"/") {
			next()
		}
		if i == len(dirs) {
			return fmt.Errorf("%w: %q arrived outside the folders asked for", conn.ErrNoTreeWalk, p)
		}
		if !started {
			cur, started = s.subtreeLister(dirs[i]), true
		}
		if cur == nil {
			return nil
		}
		return cur.add(p, fi)
	})
	if err != nil {
		if cur != nil {
			cur.release()
		}
		return st, err
	}
	for i < len(dirs) {
		next()
	}
	return st, nil
}

// subtreeLister starts recording the listing of the folder at p and its
// subtree; nil when p is no longer a folder here.
func (s *Store) subtreeLister(p string) *bulkLister {
	s.mu.Lock()
	_, d, err := s.lookupPathLocked(p)
	ok := err == nil && d != nil && d.isDir()
	var ino Ino
	if ok {
		ino = d.ino
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return s.newBulkLister(p, ino, nil)
}

// pruneSet holds the base-name patterns (path.Match syntax, as the agent's
// walk and find's -name apply them) of the folders the tree listing lists
// but does not enter: the built-in node_modules, __pycache__, ... and the
// config file's ignore patterns, which may be globs ("*.egg-info"). Taken
// as exact names, a folder matched by a glob was entered here while the
// listing skipped it: it showed empty.
type pruneSet []string

func (p pruneSet) has(name string) bool { return globMatch(p, name) }

// PreloadStats says what a Preload did.
type PreloadStats struct {
	Dirs, Entries int
	// Folders and entries below the pruned ones (PreloadPruned).
	Pruned, PrunedEntries int
	Bulk                  bool // one streamed listing (false: SFTP walk)
	Took                  time.Duration
}

func (st PreloadStats) String() string {
	how := "sftp walk"
	if st.Bulk {
		how = "bulk listing"
	}
	if st.Pruned > 0 {
		return fmt.Sprintf("%d entries in %d folders in pruned ones in %v", st.PrunedEntries, st.Pruned, st.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%d entries in %d folders in %v (%s)", st.Entries, st.Dirs, st.Took.Round(time.Millisecond), how)
}

// frame is a directory whose listing is being collected.
type frame struct {
	path  string
	infos []conn.FileInfo
	call  *fetchCall // registered in Store.listing while streaming; nil if another lister has it
}

// errListAgain tells a reader that waited for a listing which did not
// complete to list the folder itself.
var errListAgain = errors.New("listing stopped; list again")

// claimListingLocked registers a streaming listing of dir, unless one is
// already running. Caller holds mu.
func (s *Store) claimListingLocked(dir Ino) *fetchCall {
	if s.listing[dir] != nil {
		return nil
	}
	c := &fetchCall{done: make(chan struct{}), ino: dir, streaming: true}
	s.listing[dir] = c
	return c
}

// releaseListingLocked ends f's registration (once). Caller holds mu.
func (s *Store) releaseListingLocked(f *frame, err error) {
	if f.call == nil {
		return
	}
	if s.listing[f.call.ino] == f.call {
		delete(s.listing, f.call.ino)
	}
	f.call.err = err
	close(f.call.done)
	f.call = nil
}

func (s *Store) preloadBulk(ctx context.Context, walk func(yield func(string, conn.FileInfo) error) error, top string, topIno Ino, prune []string) (PreloadStats, error) {
	l := s.newBulkLister(top, topIno, prune)
	// A stream that stopped early lets the waiters list for themselves.
	defer l.release()
	if err := walk(l.add); err != nil {
		return l.st, err
	}
	l.finish()
	return l.st, nil
}

// bulkLister records one streamed listing of the subtree under top (pre-
// order records, as conn.TreeWalker yields them): each folder's listing
// is merged as soon as the stream has left it.
type bulkLister struct {
	s      *Store
	st     PreloadStats
	pruned pruneSet
	stack  []*frame
	since  uint64
	epoch  uint64
	asked  time.Time
}

func (s *Store) newBulkLister(top string, topIno Ino, prune []string) *bulkLister {
	l := &bulkLister{s: s, pruned: pruneSet(prune), stack: []*frame{{path: top}}}
	s.mu.Lock()
	l.since, l.epoch = s.jr.mark(), s.connEpoch
	l.asked = s.now()
	// A folder whose listing is streaming is "being listed": a readdir of
	// it meanwhile waits for the stream instead of listing it again (a
	// huge folder would be held twice).
	l.stack[0].call = s.claimListingLocked(topIno)
	s.mu.Unlock()
	return l
}

// complete merges f's listing.
func (l *bulkLister) complete(f *frame) {
	s := l.s
	s.mu.Lock()
	if _, d, err := s.lookupPathLocked(f.path); err == nil && d != nil && d.isDir() {
		s.mergeListing(d.ino, f.path, f.infos, l.since, l.epoch, l.asked)
	}
	s.releaseListingLocked(f, nil)
	s.mu.Unlock()
	l.st.Dirs++
}

// add takes the stream's next record.
func (l *bulkLister) add(p string, fi conn.FileInfo) error {
	s := l.s
	parent := path.Dir(p)
	if parent == "." {
		parent = ""
	}
	for len(l.stack) > 0 && l.stack[len(l.stack)-1].path != parent {
		l.complete(l.stack[len(l.stack)-1])
		l.stack = l.stack[:len(l.stack)-1]
	}
	if len(l.stack) == 0 {
		return fmt.Errorf("%w: %q arrived outside its folder", conn.ErrNoTreeWalk, p)
	}
	top := l.stack[len(l.stack)-1]
	top.infos = append(top.infos, fi)
	l.st.Entries++
	if fi.Mode.IsDir() && !l.pruned.has(fi.Name) && !strings.HasPrefix(fi.Name, conn.TempPrefix) {
		// Make the folder's entry exist now, so its own listing can be
		// recorded when it completes (before its parent's does).
		f := &frame{path: p}
		s.mu.Lock()
		if _, d, err := s.lookupPathLocked(parent); err == nil && d != nil && d.isDir() && !s.keepLocal(p, l.since) {
			c := s.upsertChildLocked(d, fi, s.now())
			f.call = s.claimListingLocked(c.ino)
		}
		s.mu.Unlock()
		l.stack = append(l.stack, f)
	}
	return nil
}

// finish merges the folders still open: the stream ended.
func (l *bulkLister) finish() {
	for i := len(l.stack) - 1; i >= 0; i-- {
		l.complete(l.stack[i])
	}
	l.stack = nil
}

// release lets whoever waits for a listing not completed list for itself.
func (l *bulkLister) release() {
	l.s.mu.Lock()
	for _, f := range l.stack {
		l.s.releaseListingLocked(f, errListAgain)
	}
	l.s.mu.Unlock()
}

// preloadWalk lists every directory with SFTP, several at a time.
func (s *Store) preloadWalk(ctx context.Context, prune []string) (PreloadStats, error) {
	var (
		st      PreloadStats
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
	)
	pruned := pruneSet(prune)
	sem := make(chan struct{}, 8)
	var visit func(ino Ino)
	visit = func(ino Ino) {
		defer wg.Done()
		sem <- struct{}{}
		err := s.listDir(ctx, ino)
		<-sem
		if err != nil {
			mu.Lock()
			if firstEr == nil && !errors.Is(err, ErrStale) {
				firstEr = err
			}
			mu.Unlock()
			return
		}
		s.mu.Lock()
		var sub []Ino
		n := 0
		if d := s.entries[ino]; d != nil {
			n = len(d.children)
			for name, c := range d.children {
				if e := s.entries[c]; e != nil && e.isDir() && !pruned.has(name) {
					sub = append(sub, c)
				}
			}
		}
		s.mu.Unlock()
		mu.Lock()
		st.Dirs++
		st.Entries += n
		mu.Unlock()
		for _, c := range sub {
			wg.Add(1)
			go visit(c)
		}
	}
	wg.Add(1)
	visit(RootIno)
	wg.Wait()
	return st, firstEr
}

// listSubtree lists dir's whole subtree in one streamed round trip, when
// dir is (or is inside) a folder the tree listing skipped (prune: a
// dependency or cache folder such as node_modules): a walk into it would
// otherwise pay a listing round trip per folder. It reports false when it
// did not apply (the caller lists dir alone).
func (s *Store) listSubtree(ctx context.Context, dir Ino) bool {
	sw, ok := s.remote.(conn.SubtreeWalker)
	if !ok {
		return false
	}
	s.mu.Lock()
	d := s.entries[dir]
	inPruned := false
	for a := d; a != nil && a.ino != RootIno; a = s.entries[a.parent] {
		inPruned = inPruned || s.pruned.has(a.name)
	}
	if !inPruned || d == nil || d.listed || s.listing[dir] != nil {
		s.mu.Unlock()
		return false
	}
	p := s.pathOf(d)
	s.mu.Unlock()
	walk := func(yield func(string, conn.FileInfo) error) error { return sw.WalkSubtree(ctx, p, yield) }
	if _, err := s.preloadBulk(ctx, walk, p, dir, nil); err != nil {
		s.log.Debug("subtree listing failed; listing folders one by one", "path", p, "err", err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d = s.entries[dir]
	return d != nil && d.listed
}
