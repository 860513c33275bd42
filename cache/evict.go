package cache

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// Eviction keeps the content files within Options.CacheSize by dropping
// the least recently used clean content. Dirty content (not yet on the
// server), files open for writing, pinned folders and all metadata are
// never evicted. Recency is kept in memory (recency, below): after a
// restart, order starts from the load order.

// PinnedFile lists, one per line, paths (relative to the remote root) whose
// content is kept for offline work (`remotefs cache pin`).
const PinnedFile = "pinned"

// recency orders the entries whose content is present by last use: a
// doubly linked list kept in a slice and reached from the entry
// (entry.lru: its node's index, 0 when not in the list). It costs 24
// bytes a file with content (a map-based LRU cost about 100, most of the
// daemon's memory after the metadata with a large tree prefetched).
type recency struct {
	// nodes[0] is the list's head: its next is the least recently used
	// node, its prev the most recent.
	nodes []lruNode
	free  []int32 // indexes of unused nodes
	n     int
}

type lruNode struct {
	e          *entry
	bytes      int64
	prev, next int32
}

func newRecency() *recency { return &recency{nodes: make([]lruNode, 1)} }

func (r *recency) Len() int { return r.n }

func (r *recency) unlink(i int32) {
	nd := &r.nodes[i]
	r.nodes[nd.prev].next = nd.next
	r.nodes[nd.next].prev = nd.prev
}

// toFront makes node i the most recently used.
func (r *recency) toFront(i int32) {
	head := &r.nodes[0]
	r.nodes[i].prev, r.nodes[i].next = head.prev, 0
	r.nodes[head.prev].next = i
	r.nodes[0].prev = i
}

// add records e as just used with n bytes present; it returns the bytes
// recorded before (0 when e was not in the list).
func (r *recency) add(e *entry, n int64) (old int64) {
	if e.lru != 0 {
		old = r.nodes[e.lru].bytes
		r.nodes[e.lru].bytes = n
		r.unlink(e.lru)
		r.toFront(e.lru)
		return old
	}
	var i int32
	if k := len(r.free); k > 0 {
		i, r.free = r.free[k-1], r.free[:k-1]
	} else {
		r.nodes = append(r.nodes, lruNode{})
		i = int32(len(r.nodes) - 1)
	}
	r.nodes[i] = lruNode{e: e, bytes: n}
	r.toFront(i)
	e.lru = i
	r.n++
	return 0
}

// remove takes e out of the list and returns the bytes it had recorded.
func (r *recency) remove(e *entry) int64 {
	if e.lru == 0 {
		return 0
	}
	i := e.lru
	n := r.nodes[i].bytes
	r.unlink(i)
	r.nodes[i] = lruNode{}
	r.free = append(r.free, i)
	e.lru = 0
	r.n--
	return n
}

// oldest is the least recently used entry, or nil.
func (r *recency) oldest() *entry {
	return r.nodes[r.nodes[0].next].e
}

// use makes e the most recently used (it is in the list).
func (r *recency) use(e *entry) {
	if e.lru != 0 {
		r.unlink(e.lru)
		r.toFront(e.lru)
	}
}

// touchContentLocked records that e's content is present and was just
// used. Caller holds mu.
func (s *Store) touchContentLocked(e *entry) {
	s.recentBytes += e.presentBytes() - s.recent.add(e, e.presentBytes())
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
