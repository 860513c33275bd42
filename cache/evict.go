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
// never evicted. Recency is kept in memory (recency, below): after a
// restart, order starts from the load order.

// PinnedFile lists, one per line, paths (relative to the remote root) whose
// content is kept for offline work (`remotefs cache pin`).
const PinnedFile = "pinned"

// recency orders the entries whose content is present by last use, with
// the bytes each has present: golang-lru's simplelru keyed by the entry
// itself (about 100 bytes a file with content; unbounded here, eviction
// is by bytes in evictLocked).
type recency struct{ l *simplelru.LRU[*entry, int64] }

func newRecency() *recency {
	l, _ := simplelru.NewLRU[*entry, int64](math.MaxInt32, nil)
	return &recency{l: l}
}

func (r *recency) Len() int { return r.l.Len() }

// add records e as just used with n bytes present; it returns the bytes
// recorded before (0 when e was not in the list).
func (r *recency) add(e *entry, n int64) (old int64) {
	old, _ = r.l.Peek(e)
	r.l.Add(e, n)
	return old
}

// remove takes e out of the list and returns the bytes it had recorded.
func (r *recency) remove(e *entry) int64 {
	n, ok := r.l.Peek(e)
	if ok {
		r.l.Remove(e)
	}
	return n
}

// oldest is the least recently used entry, or nil.
func (r *recency) oldest() *entry {
	e, _, _ := r.l.GetOldest()
	return e
}

// use makes e the most recently used (when it is in the list).
func (r *recency) use(e *entry) { r.l.Get(e) }

// touchContentLocked records that e's content is present and was just
// used. Caller holds mu.
func (s *Store) touchContentLocked(e *entry) {
	n := e.presentBytes() // scans a range-cached file's blocks
	s.recentBytes += n - s.recent.add(e, n)
}

// forgetContentLocked records that e's content is gone. Caller holds mu.
func (s *Store) forgetContentLocked(e *entry) {
	s.recentBytes -= s.recent.remove(e)
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
		e := s.recent.oldest()
		if e == nil {
			return
		}
		if s.entries[e.ino] != e || e.content == contentNone {
			s.forgetContentLocked(e)
			continue
		}
		if e.ino == keep || e.localOwned() || e.opens > 0 || isPinned(s.pathOf(e), pinned) {
			s.recent.use(e) // keep: move to the recent end
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
