package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"remotefs/conn"
)

// PrefetchOptions choose which files Prefetch downloads.
type PrefetchOptions struct {
	// MaxFileSize: larger files are left for on-demand reads. Default 256 KiB.
	MaxFileSize int64
	// MaxTotal bounds the bytes one Prefetch downloads. Default: a quarter
	// of the cache size limit.
	MaxTotal int64
	// Skip names folders whose files are not prefetched, e.g.
	// node_modules: base names (any depth) or root-relative paths. Of
	// server folders (Options.ServerFolders) only small files are, up to
	// a total, after everything else.
	Skip []string
	// IgnoreGlobs: files whose base name or path matches one of these
	// (path.Match syntax) are not prefetched.
	IgnoreGlobs []string
}

// PrefetchStats says what a Prefetch did.
type PrefetchStats struct {
	Files int
	Bytes int64
	Took  time.Duration
}

func (st PrefetchStats) String() string {
	return fmt.Sprintf("%d files (%d bytes) in %v", st.Files, st.Bytes, st.Took.Round(time.Millisecond))
}

// Prefetch downloads the content of small files that are listed but not
// cached, in a few streamed batches (tar over ssh) instead of one SFTP
// round trip per file, most useful first: git's metadata, .gitignore
// files, source code, then the rest. It needs a remote that implements
// conn.BulkFetcher; otherwise it does nothing. Files opened meanwhile are
// fetched on demand as usual; a file that changed since it was listed is
// skipped.
func (s *Store) Prefetch(ctx context.Context, o PrefetchOptions) (PrefetchStats, error) {
	start := time.Now()
	var st PrefetchStats
	bf, ok := s.remote.(conn.BulkFetcher)
	if !ok || s.opts.ReadOnly {
		return st, nil
	}
	if o.MaxFileSize == 0 {
		o.MaxFileSize = 256 << 10
	}
	if o.MaxTotal == 0 {
		o.MaxTotal = s.opts.CacheSize / 4
		if s.opts.CacheSize < 0 {
			o.MaxTotal = 1 << 30
		}
	}
	s.mu.Lock()
	since := s.jr.mark()
	s.mu.Unlock()
	cands := s.prefetchCandidates(o)
	const batchFiles, batchBytes = 2000, 32 << 20
	// What git and editors read first (rank 0 and 1: git's metadata, its
	// index and pack indexes, .gitignore files) is a small batch of its
	// own, so it is there a round trip after the listing, not after
	// megabytes of source files. git's small packs (rank 2) are the next
	// batch, alone too: git status opens the pack that holds HEAD's
	// commit after its stat pass over the work tree, and would download
	// it whole then.
	first := 0
	for first < len(cands) && cands[first].rank <= 1 {
		first++
	}
	packsEnd := first
	for packsEnd < len(cands) && cands[packsEnd].rank == rankGitPack {
		packsEnd++
	}
	budget := prefetchMaxWait // of holding back (waitMetadataQuiet), in all
	for i := 0; i < len(cands); {
		if st.Bytes >= o.MaxTotal {
			break
		}
		j, bytes := i, int64(0)
		for j < len(cands) && j-i < batchFiles && bytes < batchBytes && (i >= first || j < first) && (i >= packsEnd || j < packsEnd) {
			bytes += cands[j].size
			j++
		}
		background := i >= packsEnd
		batch := make([]string, 0, j-i)
		for _, c := range cands[i:j] {
			batch = append(batch, c.path)
		}
		i = j
		var claimed map[Ino]*fetchCall
		if !background {
			claimed = s.claimPrefetch(batch)
		}
		files, n, err := s.prefetchBatch(ctx, bf, batch, since, background, claimed, &budget)
		st.Files += files
		st.Bytes += n
		if err != nil {
			st.Took = time.Since(start)
			if errors.Is(err, conn.ErrNoBulkFetch) {
				s.log.Info("bulk fetch unavailable; files are fetched when opened", "reason", err)
				return st, nil
			}
			return st, err
		}
	}
	st.Took = time.Since(start)
	return st, nil
}

// prefetchBatch fetches one batch in one request and makes what arrived
// intact the content of its entries. claimed: the batch's own fetch
// calls (claimPrefetch), released when it ends.
func (s *Store) prefetchBatch(ctx context.Context, bf conn.BulkFetcher, batch []string, since uint64, background bool, claimed map[Ino]*fetchCall, budget *time.Duration) (files int, bytes int64, err error) {
	defer s.releasePrefetch(claimed)
	// Stored files become content only once tar has said which files
	// changed while it read them (conn.ChangedWhileRead).
	var got []prefetched
	err = bf.FetchFiles(ctx, batch, func(p string, fi conn.FileInfo, r io.Reader) error {
		if background {
			s.waitMetadataQuiet(ctx, budget)
		}
		f, err := s.storePrefetched(p, fi, r, since, claimed)
		if f != nil {
			got = append(got, *f)
		}
		return err
	})
	skip := map[string]bool{}
	if changed := (*conn.ChangedWhileRead)(nil); errors.As(err, &changed) {
		s.log.Info("files changed on the server while they were prefetched; they are fetched when opened", "files", len(changed.Paths))
		for _, p := range changed.Paths {
			skip[p] = true
		}
		err = nil
	}
	for _, f := range got {
		if err != nil || skip[f.path] {
			os.Remove(f.tmp)
		} else if n := s.commitPrefetched(f, claimed); n >= 0 {
			files++
			bytes += n
		}
	}
	return files, bytes, err
}

// claimPrefetch registers the first batch's files as being fetched, so
// that an open meanwhile (git's first reads of HEAD, config and index,
// right after the listing) waits for the batch, a round trip, instead of
// fetching the file itself over SFTP (four). A waiter looks again when
// the batch ends, and fetches the file itself if the batch did not bring
// it.
func (s *Store) claimPrefetch(paths []string) map[Ino]*fetchCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	claimed := map[Ino]*fetchCall{}
	for _, p := range paths {
		if _, e, err := s.lookupPathLocked(p); err == nil && e != nil && e.mode.IsRegular() && e.content == contentNone && s.fetching[e.ino] == nil {
			c := &fetchCall{done: make(chan struct{})}
			s.fetching[e.ino] = c
			claimed[e.ino] = c
		}
	}
	return claimed
}

// releasePrefetch ends claimPrefetch's calls.
func (s *Store) releasePrefetch(claimed map[Ino]*fetchCall) {
	if len(claimed) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ino, c := range claimed {
		if s.fetching[ino] == c {
			delete(s.fetching, ino)
		}
		close(c.done)
	}
}

// Holding back the bulk of a prefetch: storing a file costs a file
// creation, which on some disks takes a fifth of a millisecond of CPU, and
// thousands of them slowed a walk run right after mounting by half (the
// 3k realistic repository: 1.5 s -> 3 s). So between the files of the
// batches after the first, Prefetch waits while lookups, getattrs or
// readdirs came in the last prefetchQuiet (someone walks the tree: the
// stream stalls under flow control, nothing is lost), but for no longer
// than prefetchMaxWait in all (a program that stats without pause must
// not stop it for good, nor push it into what comes after the walk), and
// not at all while a file's content is being fetched on demand (someone
// reads: prefetching is what helps).
const (
	prefetchQuiet   = 30 * time.Millisecond
	prefetchMaxWait = 2 * time.Second
)

// metadataUsed notes a lookup, getattr or readdir.
func (s *Store) metadataUsed() { s.lastMeta.Store(time.Now().UnixNano()) }

// waitMetadataQuiet waits until no metadata call came for prefetchQuiet,
// and not while content is fetched on demand; the time waited is taken
// from budget, and it does not wait once that is spent.
func (s *Store) waitMetadataQuiet(ctx context.Context, budget *time.Duration) {
	start := time.Now()
	deadline := start.Add(*budget)
	defer func() { *budget -= time.Since(start) }()
	for {
		quiet := time.Since(time.Unix(0, s.lastMeta.Load()))
		if quiet >= prefetchQuiet || ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		reading := len(s.fetching) > 0
		s.mu.Unlock()
		if reading {
			return
		}
		wait := prefetchQuiet - quiet
		if left := time.Until(deadline); left < wait {
			if left <= 0 {
				return
			}
			wait = left
		}
		time.Sleep(wait)
	}
}

type prefetchCand struct {
	path  string
	size  int64
	rank  int
	mtime int64 // packs: the newest first
}

// prefetchCandidates lists uncached small files, most useful first.
func (s *Store) prefetchCandidates(o PrefetchOptions) []prefetchCand {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out, packs []prefetchCand
	var serverBytes int64
	var walk func(d *entry, p string, server bool)
	walk = func(d *entry, p string, server bool) {
		for name, ino := range d.children {
			e := s.entries[ino]
			if e == nil {
				continue
			}
			cp := childPath(p, name)
			switch {
			case e.isDir():
				if e.listed && !matchesFolder(cp, o.Skip, true) {
					walk(e, cp, server || matchesFolder(cp, s.opts.ServerFolders, true))
				}
			case e.mode.IsRegular() && e.content == contentNone && e.onServer && !s.protected(cp) && !globMatch(o.IgnoreGlobs, cp):
				c := prefetchCand{path: cp, size: e.size, rank: prefetchRank(cp), mtime: e.mtime.UnixNano()}
				if c.rank == rankGitPack {
					if e.size < s.opts.LargeFile && !server {
						packs = append(packs, c)
					}
					continue
				}
				if e.size > o.MaxFileSize && (c.rank != 0 || e.size > gitMetaMaxFile) {
					continue
				}
				if server {
					// Server folders churn: only their small files, a
					// bounded amount, last.
					if e.size > serverFolderMaxFile || serverBytes+e.size > serverFolderMaxTotal {
						continue
					}
					serverBytes += e.size
					c.rank = 6
				}
				out = append(out, c)
			}
		}
	}
	if root := s.entries[RootIno]; root != nil && root.listed {
		walk(root, "", false)
	}
	// The newest packs, up to gitPacksMaxTotal: HEAD's commit is in one of
	// the newest (a big old pack is range-cached: LargeFile).
	sort.Slice(packs, func(i, j int) bool { return packs[i].mtime > packs[j].mtime })
	var packBytes int64
	for _, c := range packs {
		if packBytes+c.size > gitPacksMaxTotal {
			break
		}
		packBytes += c.size
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].rank != out[j].rank {
			return out[i].rank < out[j].rank
		}
		if out[i].rank == rankGitPack {
			return out[i].mtime > out[j].mtime
		}
		return out[i].path < out[j].path
	})
	return out
}

// gitMetaMaxFile: git's metadata (rank 0: its index, pack indexes, refs)
// is prefetched up to this size, above MaxFileSize: git status reads the
// index and the pack indexes first thing (a 3,000-file index is 360 KB).
const gitMetaMaxFile = 16 << 20

// rankGitPack is the rank of git's pack files (.git/objects/pack/*.pack),
// prefetched below Options.LargeFile, newest first, up to
// gitPacksMaxTotal, in a batch of their own after git's metadata.
const (
	rankGitPack      = 2
	gitPacksMaxTotal = 32 << 20
)

// Prefetch limits for server folders (Options.ServerFolders), whose files
// are written by programs on the server and often many and large.
const (
	serverFolderMaxFile  = 64 << 10
	serverFolderMaxTotal = 16 << 20
)

func globMatch(globs []string, p string) bool {
	base := path.Base(p)
	for _, g := range globs {
		if !strings.ContainsAny(g, `*?[\`) {
			// No metacharacter: path.Match is string equality. (Asked
			// for every folder above a file at each open: feedCovers.)
			if g == p || g == base {
				return true
			}
			continue
		}
		if ok, _ := path.Match(g, base); ok {
			return true
		}
		if base != p {
			if ok, _ := path.Match(g, p); ok {
				return true
			}
		}
	}
	return false
}

// prefetchRank orders files by how soon an IDE or git needs them.
func prefetchRank(p string) int {
	base := path.Base(p)
	inGit := strings.HasPrefix(p, ".git/") || strings.Contains(p, "/.git/")
	switch {
	case inGit && strings.Contains(p, ".git/objects/pack/") && strings.HasSuffix(p, ".idx"):
		return 0 // git reads the pack indexes to find any object, HEAD's commit first
	case inGit && strings.Contains(p, ".git/objects/pack/") && strings.HasSuffix(p, ".pack"):
		return rankGitPack
	case inGit && strings.Contains(p, ".git/objects/"):
		return 5
	case inGit:
		return 0
	case base == ".gitignore" || base == ".gitattributes" || base == ".editorconfig":
		return 1
	case sourceExt[path.Ext(base)]:
		return 3
	case base == "Makefile" || base == "Dockerfile" || strings.HasPrefix(base, "README"):
		return 3
	}
	return 4
}

var sourceExt = map[string]bool{}

func init() {
	for _, e := range strings.Fields(`.py .pyi .ipynb .go .rs .c .h .cc .cpp .hpp .cu .cuh .java .kt .scala
		.js .jsx .ts .tsx .mjs .cjs .json .yaml .yml .toml .cfg .ini .txt .md .rst .sh .bash .zsh
		.rb .php .swift .m .mm .r .jl .lua .sql .proto .cmake .mk .gradle .xml .html .css .scss .vue .svelte`) {
		sourceExt[e] = true
	}
}

// prefetched is a file received by Prefetch, not yet made content.
type prefetched struct {
	path string
	fi   conn.FileInfo
	ino  Ino
	gen  uint64
	tmp  string
	n    int64
}

// storePrefetched writes one prefetched file to a temporary file if its
// entry still wants it (same version as listed, nothing cached, no local
// changes, not being fetched but by the batch itself: claimed);
// otherwise it discards the data and returns nil.
func (s *Store) storePrefetched(p string, fi conn.FileInfo, r io.Reader, since uint64, claimed map[Ino]*fetchCall) (*prefetched, error) {
	s.mu.Lock()
	_, e, err := s.lookupPathLocked(p)
	want := err == nil && e != nil && e.mode.IsRegular() && e.content == contentNone &&
		!e.localOwned() && versionOf(fi) == e.remote && !s.keepLocal(p, since) && s.fetching[e.ino] == claimed[e.ino]
	var ino Ino
	var gen uint64
	if want {
		ino, gen = e.ino, e.gen
	}
	s.mu.Unlock()
	if !want {
		_, err := io.Copy(io.Discard, r)
		return nil, err
	}
	tmp := s.contentPath(ino) + ".part-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		io.Copy(io.Discard, r)
		return nil, nil
	}
	buf := copyBuffers.Get().(*[]byte)
	// Not io.Copy(f, r): *os.File's ReadFrom would allocate a new 32 KiB
	// buffer for every file (gigabytes over a large tree's prefetch).
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, *buf)
	copyBuffers.Put(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || n != fi.Size {
		os.Remove(tmp)
		return nil, err
	}
	return &prefetched{path: p, fi: fi, ino: ino, gen: gen, tmp: tmp, n: n}, nil
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// commitPrefetched makes a prefetched file the entry's content if the
// entry still wants it. It returns the bytes stored, or -1 when skipped.
func (s *Store) commitPrefetched(pf prefetched, claimed map[Ino]*fetchCall) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino, p, fi := pf.ino, pf.path, pf.fi
	e := s.entries[ino]
	if e == nil || e.gen != pf.gen || e.content != contentNone || s.pathOf(e) != p || versionOf(fi) != e.remote || s.fetching[ino] != claimed[ino] {
		os.Remove(pf.tmp)
		return -1
	}
	if err := os.Rename(pf.tmp, s.contentPath(ino)); err != nil {
		os.Remove(pf.tmp)
		return -1
	}
	e.content = contentClean
	s.newEpochLocked(e)
	e.checked = stampOf(s.now())
	s.dirtyIno[ino] = true
	s.touchContentLocked(e)
	s.evictLocked(ino)
	return pf.n
}
