package cache

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Eviction keeps the content files within Options.CacheSize by dropping
// the least recently used clean content. Dirty content (not yet on the
// server), files open for writing, pinned folders and all metadata are
// never evicted. Recency is kept in memory (an LRU of Ino -> size): after a
// restart, order starts from the load order.

// PinnedFile lists, one per line, paths (relative to the remote root) whose
// content is kept for offline work (`remotefs cache pin`).
const PinnedFile = "pinned"

func newRecency() *simplelru.LRU[Ino, int64] {
	l, _ := simplelru.NewLRU[Ino, int64](math.MaxInt32, nil)
	return l
}

// touchContentLocked records that e's content is present and was just
// used. Caller holds mu.
func (s *Store) touchContentLocked(e *entry) {
	if old, ok := s.recent.Peek(e.ino); ok {
		s.recentBytes -= old
	}
	n := e.presentBytes()
	s.recent.Add(e.ino, n)
	s.recentBytes += n
}

// forgetContentLocked records that ino's content is gone. Caller holds mu.
func (s *Store) forgetContentLocked(ino Ino) {
	if old, ok := s.recent.Peek(ino); ok {
		s.recentBytes -= old
		s.recent.Remove(ino)
	}
}

// evictLocked drops clean content, oldest use first, until the cache is
// within its size limit; keep (the file being opened) is never dropped.
// Caller holds mu.
func (s *Store) evictLocked(keep Ino) {
	if s.opts.CacheSize <= 0 || s.recentBytes <= s.opts.CacheSize {
		return
	}
	target := s.opts.CacheSize / 10 * 9 // leave room, so eviction is not per fetch
	pinned := s.pinnedPathsLocked()
	for tries := s.recent.Len(); tries > 0 && s.recentBytes > target; tries-- {
		ino, _, ok := s.recent.GetOldest()
		if !ok {
			return
		}
		e := s.entries[ino]
		if e == nil || e.content == contentNone {
			s.forgetContentLocked(ino)
			continue
		}
		if ino == keep || e.localOwned() || e.opens > 0 || isPinned(s.pathOf(e), pinned) {
			s.recent.Get(ino) // keep: move to the recent end
			continue
		}
		s.dropContent(e)
	}
}

func (s *Store) pinnedPathsLocked() []string {
	f, err := os.Open(filepath.Join(s.opts.Dir, PinnedFile))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Trim(strings.TrimSpace(sc.Text()), "/")
		if p != "" || strings.TrimSpace(sc.Text()) == "/" {
			out = append(out, p)
		}
	}
	return out
}

func isPinned(p string, pinned []string) bool {
	for _, q := range pinned {
		if q == "" || p == q || strings.HasPrefix(p, q+"/") {
			return true
		}
	}
	return false
}
