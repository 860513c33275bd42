package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"remotefs/conn"
)

var (
	// ErrReadOnly: a change was refused because the mount is offline or was
	// mounted read-only. The FUSE layer reports it as EROFS.
	ErrReadOnly = errors.New("read-only: the server is not reachable")
	// ErrOffline: content or a listing that is not cached was needed while
	// the server cannot be reached.
	ErrOffline = conn.ErrOffline
	// ErrNotEmpty: rmdir or rename over a non-empty directory.
	ErrNotEmpty = conn.ErrNotEmpty
	// ErrIsDir / ErrNotDir: the operation needs the other kind of entry.
	ErrIsDir  = errors.New("is a directory")
	ErrNotDir = errors.New("not a directory")
	// ErrStale: the entry no longer exists (removed meanwhile).
	ErrStale = errors.New("stale entry")
	// ErrChanged: the file kept changing on the server while it was read,
	// so no one version of it could be returned (the FUSE layer reports
	// ESTALE). Reading it again later works.
	ErrChanged = conn.ErrChanged
	// ErrInUse: another remotefs mount uses the same cache directory.
	ErrInUse = errors.New("cache directory is in use by another remotefs mount")
)

// Options configure a Store. Zero values get the documented defaults.
type Options struct {
	// Dir holds meta.db and content/. Created with mode 0700.
	Dir string
	// Remote is the server. It may be nil only when the cache was filled
	// by an earlier mount (remotefs mount --offline).
	Remote conn.Remote
	// Online reports whether the Remote is usable now. Nil means always.
	Online func() bool
	// Redial is called (it must not block) when something needs the
	// server while it is offline: a good moment to try to reconnect.
	Redial func()
	// ReadOnly refuses every change (remotefs mount --read-only, and
	// --offline without OfflineEdits).
	ReadOnly bool
	// OfflineEdits accepts changes into the journal while the server is
	// unreachable even before the first connection (a mount started
	// offline). Without it such a mount is read-only until Connected is
	// called; once connected, changes are accepted offline either way.
	OfflineEdits bool
	// AttrTTL: how long a file's attributes are trusted before open
	// re-checks them with the server (close-to-open). Default 1s.
	AttrTTL time.Duration
	// DirTTL: how long a listing is trusted before it is refreshed in the
	// background. Default 10s.
	DirTTL time.Duration
	// ServerFolders are folders programs on the server write to (see
	// folders.go): re-checked on every open, never prefetched.
	ServerFolders []string
	// ResumeWait: how long a read already in progress waits for a lost
	// server to come back before failing. Default 10s.
	ResumeWait time.Duration
	// LargeFile: files at least this big are cached by ranges, as they are
	// read, rather than downloaded whole on open. Default 16 MiB.
	LargeFile int64
	// CacheSize bounds the content kept on disk; least recently used clean
	// content is evicted beyond it. Default 10 GiB; negative: no limit.
	CacheSize int64
	// RemoteRoot is the remote root's path on the server, counted in the
	// server's path length limit (limits.go).
	RemoteRoot string
	// Owners maps the server's numeric owners to local ones (owners.go).
	Owners Owners
	// Uploads is how many journal operations on unrelated paths are applied
	// to the server at once. Default 8.
	Uploads int
	// ConflictLabel names this machine in conflict copies. Default: hostname.
	ConflictLabel string
	// Now is the clock (tests inject one). Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// OnInvalidate is told about server-side changes the kernel may have
	// cached (called on its own goroutine, never with a lock held).
	OnInvalidate func(Invalidation)
}

// Store is the cache of one remote root. All methods are safe for
// concurrent use.
type Store struct {
	// set at construction
	opts   Options
	db     *bolt.DB
	remote conn.Remote
	log    *slog.Logger
	now    func() time.Time

	writerDone chan struct{}
	stop       chan struct{}

	mu sync.Mutex // guards everything below
	// cond is signalled when the journal changes or the writer's state does.
	cond       *sync.Cond
	entries    map[Ino]*entry
	sinos      map[uint64]Ino // server inode -> entry, for files with several links
	ownStatIno map[Ino]bool   // files whose stat data is the mount's own (held.go)
	nextIno    Ino
	nextSeq    uint64
	jr         *journal     // the write-back queue (journal.go)
	dirtyIno   map[Ino]bool // entries to persist

	// persistOrder: the background checkpoints' queue, dirty entries
	// lowest number first, sorted once for all of a big listing's chunks
	// (persistChunkLocked); entries dirtied since come in the next round.
	persistOrder []Ino
	persistSorts int // times persistOrder was built (tests count them)

	deletedIno map[Ino]bool // entries to delete from meta.db
	fetching   map[Ino]*fetchCall
	blockFetch map[Ino]map[int]*fetchCall // range-cached files: blocks being fetched
	readahead  *runQueue                  // readahead runs in flight (ranges.go)
	epochs     uint64                     // the last content epoch handed out (versions.go)
	listing    map[Ino]*fetchCall
	// pruned: base names of the folders the tree listing skips (Preload);
	// a folder inside one is listed with its whole subtree on first use.
	pruned    pruneSet
	conflicts []Conflict
	// usedConflictNames: conflict copy names handed out, so two conflicts
	// in the same second get different names.
	usedConflictNames map[string]bool
	// landed: for a file with uploads still pending, what to tell when one
	// of them lands (see watchUploads).
	landed map[Ino][]func(Version)
	closed bool
	recent *recency // content present, by last use
	// feedSince: when the server's change feed last became live (zero: not
	// live). Entries confirmed since then need no re-check on open.
	feedSince  time.Time
	feedIgnore pruneSet // folders the feed does not watch inside
	// statWanted: files the feed reported whose stat data is to be asked
	// in bulk (statdata.go); statRunning while statDataLoop runs.
	statWanted  map[string]bool
	statRunning bool
	// ctimeUnknown: files whose server ctime the mount's own change moved
	// to a value not known yet (touchLocked); Flush learns them
	// (showServerStat, held.go).
	ctimeUnknown map[Ino]bool
	// invalidations waiting for invalidateLoop
	invalidations    []queuedInvalidation
	invalidateSignal chan struct{}
	// invalQueued / invalDone: how many invalidations were queued, and
	// how many of them invalidateLoop has delivered (versions.go waits on
	// them).
	invalQueued, invalDone uint64
	invalDoneCh            chan struct{} // closed (and replaced) when invalDone moves
	recentBytes            int64         // sum of recent's sizes
	// connEpoch counts the connections to the server (Connected); a
	// folder whose entry.confirmed is not the current one has not been
	// listed in this connection, so its names are the cache's guess.
	connEpoch uint64
	// everConnected: this Store was online once, so it accepts changes
	// while offline (a live mount that lost its server).
	everConnected bool
	// waiting: since when the journal has been waiting for an unreachable
	// server (zero: it is not), and the delivered-ops counter then; for
	// the log lines about changes made offline (noteOfflineLocked).
	waitingSince     time.Time
	waitingApplied   uint64
	waitingConflicts int

	// the commit log (wal.go): the file, the epoch its records are
	// written in, and what it holds that meta.db does not yet
	wal      *walFile
	walEpoch uint64
	walBatch *walBatch
	// spares: empty content files ready for Create (spares.go)
	spares     chan string
	sparesDone chan struct{} // closed when spareLoop returns

	nameMax     atomic.Uint64 // the server's name limit; 0: not known yet (limits.go)
	remoteOwner atomic.Uint64 // the login user's uid<<32|gid|1<<63; 0: not known (owners.go)
	connGen     atomic.Uint64 // Connected calls so far (learnOwner)
	ownerAsked  atomic.Int64  // UnixNano of learnOwner's last question; ownerGen: for which connGen
	ownerGen    atomic.Uint64
	// lastMeta: UnixNano of the last lookup, getattr or readdir; Prefetch
	// holds back while they come in quick succession (prefetch.go).
	lastMeta atomic.Int64
	// applying: change feed batches being applied (Status.Settling).
	applying atomic.Int32
}

type fetchCall struct {
	done chan struct{}
	err  error
	ino  Ino // the folder, for listings
	// streaming: a folder of the bulk listing, completed when the stream
	// has passed its whole subtree.
	streaming bool
}

// Conflict records an upload that found the server's file changed since
// the local edit started; the local version was saved as CopyPath.
type Conflict struct {
	Path     string    `json:"path"`
	CopyPath string    `json:"copy"`
	At       time.Time `json:"at"`
}

var (
	bucketEntries = []byte("entries")
	bucketJournal = []byte("journal")
	bucketState   = []byte("state")
	keyNextIno    = []byte("nextIno")
	keyNextSeq    = []byte("nextSeq")
)

// Open opens (or creates) the cache in opts.Dir and starts the journal
// writer, which replays whatever an earlier run left pending.
func Open(opts Options) (*Store, error) {
	if opts.AttrTTL == 0 {
		opts.AttrTTL = time.Second
	}
	if opts.DirTTL == 0 {
		opts.DirTTL = 10 * time.Second
	}
	if opts.ResumeWait == 0 {
		opts.ResumeWait = 10 * time.Second
	}
	if opts.LargeFile == 0 {
		opts.LargeFile = 16 << 20
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10 << 30
	}
	if opts.Uploads <= 0 {
		opts.Uploads = 8
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConflictLabel == "" {
		h, _ := os.Hostname()
		opts.ConflictLabel = sanitizeLabel(h)
	}
	if opts.Online == nil {
		opts.Online = func() bool { return true }
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "content"), 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if err := os.Chmod(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	dbPath := filepath.Join(opts.Dir, "meta.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", opts.Dir, ErrInUse)
	}
	if err != nil {
		// A store that cannot be opened is rebuilt, unless it might hold
		// unsent writes: then it is kept aside for the user.
		opts.Logger.Error("metadata store is damaged; keeping it aside and starting empty", "path", dbPath, "err", err)
		aside := dbPath + ".damaged-" + strconv.FormatInt(time.Now().Unix(), 10)
		if rerr := os.Rename(dbPath, aside); rerr != nil {
			return nil, fmt.Errorf("open %s: %w", dbPath, err)
		}
		// Its commit log goes with it: the log only makes sense on top of it.
		walPath := filepath.Join(opts.Dir, walName)
		if rerr := os.Rename(walPath, walPath+strings.TrimPrefix(aside, dbPath)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", dbPath, err)
		}
		db, err = bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", dbPath, err)
		}
	}
	s := &Store{
		opts: opts, db: db, remote: opts.Remote, log: opts.Logger, now: opts.Now,
		writerDone: make(chan struct{}), stop: make(chan struct{}),
		entries: map[Ino]*entry{}, sinos: map[uint64]Ino{},
		dirtyIno: map[Ino]bool{}, deletedIno: map[Ino]bool{},
		fetching: map[Ino]*fetchCall{}, listing: map[Ino]*fetchCall{},
		blockFetch: map[Ino]map[int]*fetchCall{},
		readahead:  &runQueue{free: readaheadRuns},
		nextIno:    RootIno + 1, nextSeq: 1, recent: newRecency(),
		invalidateSignal: make(chan struct{}, 1), invalDoneCh: make(chan struct{}),
		spares: make(chan string, spareCount), sparesDone: make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	s.jr = newJournal(&s.mu, s.cond, opts.Uploads, s)
	if err := s.replayWAL(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		s.wal.close()
		db.Close()
		return nil, err
	}
	s.cleanContentDir()
	s.releaseDBPages()
	go s.persistLoop()
	if opts.ReadOnly {
		close(s.sparesDone) // nothing is created
	} else {
		go s.spareLoop()
	}
	go s.invalidateLoop()
	go s.writer()
	return s, nil
}

// load reads meta.db into memory and restores the journal.
func (s *Store) load() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketJournal, bucketState} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		st := tx.Bucket(bucketState)
		if v := st.Get(keyNextIno); len(v) == 8 {
			s.nextIno = Ino(be64(v))
		}
		if v := st.Get(keyNextSeq); len(v) == 8 {
			s.nextSeq = be64(v)
		}
		s.loadOwner(st)
		eb := tx.Bucket(bucketEntries)
		var bad [][]byte
		err := eb.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				bad = append(bad, append([]byte(nil), k...))
				return nil
			}
			e, err := entryFromRecord(Ino(be64(k)), v)
			if err != nil {
				s.log.Warn("dropping damaged metadata record", "ino", be64(k), "err", err)
				bad = append(bad, append([]byte(nil), k...))
				return nil
			}
			s.entries[e.ino] = e
			if e.ino >= s.nextIno {
				s.nextIno = e.ino + 1
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range bad {
			eb.Delete(k)
		}
		jb := tx.Bucket(bucketJournal)
		return jb.ForEach(func(k, v []byte) error {
			o, err := decodeOp(v)
			if err != nil {
				// Never replay something we cannot read; say so loudly.
				s.log.Error("journal record is damaged and will not be replayed", "key", k, "err", err)
				return nil
			}
			s.jr.add(o)
			if o.Seq >= s.nextSeq {
				s.nextSeq = o.Seq + 1
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load cache: %w", err)
	}
	// Rebuild the tree from parent links; drop orphans (their parent was
	// removed in a run that crashed before persisting the children's removal).
	if s.entries[RootIno] == nil || !s.entries[RootIno].isDir() {
		s.entries[RootIno] = &entry{ino: RootIno, parent: RootIno, mode: fs.ModeDir | 0o755, onServer: true, mtime: s.now()}
		s.dirtyIno[RootIno] = true
	}
	for _, e := range s.entries {
		if e.isDir() && e.listed {
			e.children = map[string]Ino{}
		}
	}
	for _, e := range s.entries {
		if e.ino == RootIno {
			continue
		}
		p := s.entries[e.parent]
		if p == nil || !p.isDir() {
			continue
		}
		if p.children == nil {
			p.children = map[string]Ino{}
		}
		p.setChild(e.name, e.ino)
		for _, l := range e.links {
			if q := s.entries[l.Parent]; q != nil && q.isDir() {
				if q.children == nil {
					q.children = map[string]Ino{}
				}
				q.setChild(l.Name, e.ino)
			}
		}
		if e.sino != 0 && e.nlink > 1 {
			s.sinos[e.sino] = e.ino
		}
	}
	for ino, e := range s.entries {
		if ino != RootIno && !s.reachable(e) {
			if e.content == contentDirty {
				s.log.Error("unreachable entry holds unsent changes; keeping its content", "ino", ino, "name", e.name)
			}
			delete(s.entries, ino)
			s.deletedIno[ino] = true
		}
	}
	// Every dirty file must have an upload pending (a crash between the
	// first write and close leaves it without one).
	queued := map[Ino]bool{}
	s.jr.each(func(o *op) {
		if o.Kind == opPut {
			queued[o.Ino] = true
		}
	})
	var recovered []*op
	for ino, e := range s.entries {
		if e.content == contentDirty && !queued[ino] {
			recovered = append(recovered, s.newOp(&op{Kind: opPut, Path: s.pathOf(e), Ino: ino}))
		}
	}
	return s.commitLocked(recovered...)
}

func (s *Store) reachable(e *entry) bool {
	for i := 0; i < 4096; i++ {
		if e.ino == RootIno {
			return true
		}
		p := s.entries[e.parent]
		if p == nil || p.children == nil || p.children[e.name] != e.ino {
			return false
		}
		e = p
	}
	return false
}

// cleanContentDir removes partial downloads and content files no entry uses.
func (s *Store) cleanContentDir() {
	dir := filepath.Join(s.opts.Dir, "content")
	names, _ := os.ReadDir(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range names {
		n, err := strconv.ParseUint(d.Name(), 10, 64)
		if err == nil {
			if e := s.entries[Ino(n)]; e != nil && e.content != contentNone {
				continue
			}
		}
		os.Remove(filepath.Join(dir, d.Name()))
	}
	for _, e := range s.entries {
		if e.content == contentClean || e.content == contentPartial {
			if fi, err := os.Stat(s.contentPath(e.ino)); err != nil || fi.Size() != e.size {
				e.content = contentNone
				s.dirtyIno[e.ino] = true
			}
		}
		if e.content != contentNone {
			s.touchContentLocked(e)
		}
	}
	s.evictLocked(0)
}

// Close stops the journal writer (pending operations stay in the journal
// for the next mount) and closes the metadata store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.cond.Broadcast()
	s.mu.Unlock()
	<-s.writerDone
	s.removeSpares()
	s.mu.Lock()
	err := s.checkpointLocked(0, nil)
	s.mu.Unlock()
	if cerr := s.wal.close(); err == nil {
		err = cerr
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// persistLoop commits metadata learned from the server (listings, fetched
// attributes) in batches, and folds the commit log (user changes, already
// durable there) into meta.db.
func (s *Store) persistLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// What was learned from the server goes to disk in bounded
			// transactions, so a 100,000-entry listing does not build one
			// huge transaction in memory.
			for more := true; more; {
				s.mu.Lock()
				more = len(s.dirtyIno) > persistChunk
				if len(s.dirtyIno)+len(s.deletedIno) > 0 || !s.walBatch.empty() {
					if err := s.checkpointLocked(persistChunk, nil); err != nil {
						s.log.Error("persist metadata", "err", err)
						more = false
					}
				}
				s.mu.Unlock()
			}
		}
	}
}

// persistChunk bounds the entries one background transaction writes: it
// holds mu, and every lookup waits for it. After the listing of a
// 37,000-entry tree, chunks of 10,000 held it 0.2-0.7 s each, four times
// in the first seconds of a walk (a busy 2-core machine); chunks of 1,000
// hold it 3-25 ms.
const persistChunk = 1000

// commitLocked records changed entries and the given new journal
// operations in the commit log (wal.go): they survive a crash of the
// process when it returns, and a power loss once syncJournal has run.
// Caller holds mu.
func (s *Store) commitLocked(newOps ...*op) error {
	return s.logLocked(nil, newOps...)
}

// commitDoneLocked is commitLocked that also removes the journal
// operations numbered done (delivered), in the same record as what their
// delivery changed. Caller holds mu.
func (s *Store) commitDoneLocked(done ...uint64) error {
	return s.logLocked(done)
}

func (s *Store) contentPath(ino Ino) string {
	return filepath.Join(s.opts.Dir, "content", strconv.FormatUint(uint64(ino), 10))
}

// pathOf returns the entry's path relative to the remote root. Caller holds mu.
func (s *Store) pathOf(e *entry) string {
	var parts []string
	for e.ino != RootIno {
		parts = append(parts, e.name)
		p := s.entries[e.parent]
		if p == nil {
			break
		}
		e = p
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

func childPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// deliveredWithin reports whether a journal operation delivered in the
// last d touched p (or an ancestor or descendant). Caller holds mu.
func (s *Store) deliveredWithin(p string, d time.Duration) bool {
	return s.jr.deliveredWithin(p, s.now().Add(-d))
}

// keepLocal reports whether the local state of p must win over what the
// server reported, when the report was asked for at since: a change is
// pending, or was delivered after the question. Caller holds mu.
func (s *Store) keepLocal(p string, since uint64) bool {
	return s.protected(p) || s.jr.changedSince(p, since)
}

// keepLocalBut is keepLocal, not counting the pending operation own
// (nil: none) among the local changes. Caller holds mu.
func (s *Store) keepLocalBut(p string, since uint64, own *op) bool {
	if own == nil {
		return s.keepLocal(p, since)
	}
	return s.jr.changedSince(p, since) || s.jr.touchesBut(p, own)
}

// fetchedPathOK reports whether content fetched from p is e's: p is its
// path, or, for a fetch on behalf of own, one of its names. Caller holds mu.
func (s *Store) fetchedPathOK(e *entry, p string, own *op) bool {
	if s.pathOf(e) == p {
		return true
	}
	if own == nil {
		return false
	}
	_, c, err := s.lookupPathLocked(p)
	return err == nil && c == e
}

// protected reports whether a pending journal operation touches p, an
// ancestor of p or a descendant of p. Such paths keep their local state
// when a listing from the server disagrees. Caller holds mu.
func (s *Store) protected(p string) bool { return s.jr.touches(p) }

func (s *Store) online() bool { return s.remote != nil && s.opts.Online() }

// writable says whether changes are accepted now: always while online,
// and offline too once the mount has been connected (or with
// OfflineEdits); they wait in the journal until the server is back.
func (s *Store) writable() error {
	if s.opts.ReadOnly {
		return ErrReadOnly
	}
	if s.online() || s.opts.OfflineEdits {
		return nil
	}
	s.mu.Lock()
	ok := s.everConnected
	s.mu.Unlock()
	if !ok {
		return ErrReadOnly
	}
	return nil
}

// errOffline is what an access that needs the server gets while it is
// offline; it also asks for a redial (Options.Redial).
func (s *Store) errOffline() error {
	if s.opts.Redial != nil && s.remote != nil {
		s.opts.Redial()
	}
	return ErrOffline
}

// Connected tells the Store that a connection to the server was just
// made (at mount or after a reconnect): from now on it accepts changes
// while offline, and every folder's names count as unconfirmed until the
// folder is listed in this connection (see Lookup).
func (s *Store) Connected() {
	s.mu.Lock()
	s.everConnected = true
	s.connEpoch++
	s.mu.Unlock()
	s.connGen.Add(1)
	s.cond.Broadcast()
}

func (s *Store) nowSec() time.Time { return s.now().Truncate(time.Second) }

func versionOf(fi conn.FileInfo) Version {
	return Version{Size: fi.Size, Mtime: fi.Mtime.Unix()}
}

func be64(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func sanitizeLabel(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, s)
	if s == "" {
		return "local"
	}
	return s
}

// conflictName is where a local version goes when the server's changed:
// NAME.conflict-HOST-YYYYmmdd-HHMMSS, with -2, -3... when that name was
// already used. The name is reserved.
func (s *Store) conflictName(p string) string {
	candidate := s.conflictCandidate(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserveConflictNameLocked(candidate)
	return candidate
}

// conflictCandidate is the name conflictName would give now, without
// reserving it (an upload names its conflict copy before it knows whether
// there is a conflict).
func (s *Store) conflictCandidate(p string) string {
	dir, base := path.Split(p)
	name := dir + base + ".conflict-" + s.opts.ConflictLabel + "-" + s.now().Format("20060102-150405")
	s.mu.Lock()
	defer s.mu.Unlock()
	candidate := name
	for i := 2; ; i++ {
		_, e, _ := s.lookupPathLocked(candidate)
		if e == nil && !s.usedConflictNames[candidate] {
			break
		}
		candidate = fmt.Sprintf("%s-%d", name, i)
	}
	return candidate
}

// reserveConflictNameLocked marks a conflict copy's name used. Caller
// holds mu.
func (s *Store) reserveConflictNameLocked(name string) {
	if s.usedConflictNames == nil {
		s.usedConflictNames = map[string]bool{}
	}
	s.usedConflictNames[name] = true
}
