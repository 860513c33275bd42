package cache

import (
	"context"
	"errors"
	"fmt"
	"path"
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
	s.pruned = map[string]bool{}
	for _, p := range prune {
		s.pruned[p] = true
	}
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

// PreloadStats says what a Preload did.
type PreloadStats struct {
	Dirs, Entries int
	Bulk          bool // one streamed listing (false: SFTP walk)
	Took          time.Duration
}

func (st PreloadStats) String() string {
	how := "sftp walk"
	if st.Bulk {
		how = "bulk listing"
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
	var st PreloadStats
	pruned := map[string]bool{}
	for _, p := range prune {
		pruned[p] = true
	}
	stack := []*frame{{path: top}}
	s.mu.Lock()
	since, epoch := s.jr.mark(), s.connEpoch
	asked := s.now()
	// A folder whose listing is streaming is "being listed": a readdir of
	// it meanwhile waits for the stream instead of listing it again (a
	// huge folder would be held twice).
	stack[0].call = s.claimListingLocked(topIno)
	s.mu.Unlock()
	complete := func(f *frame) {
		s.mu.Lock()
		if _, d, err := s.lookupPathLocked(f.path); err == nil && d != nil && d.isDir() {
			s.mergeListing(d.ino, f.path, f.infos, since, epoch, asked)
		}
		s.releaseListingLocked(f, nil)
		s.mu.Unlock()
		st.Dirs++
	}
	defer func() {
		// A stream that stopped early lets the waiters list for themselves.
		s.mu.Lock()
		for _, f := range stack {
			s.releaseListingLocked(f, errListAgain)
		}
		s.mu.Unlock()
	}()
	err := walk(func(p string, fi conn.FileInfo) error {
		parent := path.Dir(p)
		if parent == "." {
			parent = ""
		}
		for len(stack) > 0 && stack[len(stack)-1].path != parent {
			complete(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			return fmt.Errorf("%w: %q arrived outside its folder", conn.ErrNoTreeWalk, p)
		}
		top := stack[len(stack)-1]
		top.infos = append(top.infos, fi)
		st.Entries++
		if fi.Mode.IsDir() && !pruned[fi.Name] && !strings.HasPrefix(fi.Name, conn.TempPrefix) {
			// Make the folder's entry exist now, so its own listing can be
			// recorded when it completes (before its parent's does).
			f := &frame{path: p}
			s.mu.Lock()
			if _, d, err := s.lookupPathLocked(parent); err == nil && d != nil && d.isDir() && !s.keepLocal(p, since) {
				c := s.upsertChildLocked(d, fi, s.now())
				f.call = s.claimListingLocked(c.ino)
			}
			s.mu.Unlock()
			stack = append(stack, f)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	for i := len(stack) - 1; i >= 0; i-- {
		complete(stack[i])
	}
	return st, nil
}

// preloadWalk lists every directory with SFTP, several at a time.
func (s *Store) preloadWalk(ctx context.Context, prune []string) (PreloadStats, error) {
	var (
		st      PreloadStats
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
	)
	pruned := map[string]bool{}
	for _, p := range prune {
		pruned[p] = true
	}
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
				if e := s.entries[c]; e != nil && e.isDir() && !pruned[name] {
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
		inPruned = inPruned || s.pruned[a.name]
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
