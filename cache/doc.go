// Package cache is the truth the mount shows: a persistent mirror of the
// remote tree's metadata, the contents of files that have been read or
// written, and the write-back journal that carries local changes to the
// server.
//
// # What it owns
//
//   - Metadata: one entry per known path (mode, size, mtime, symlink target,
//     and for directories whether the listing is complete). Entries are
//     identified by an Ino that never changes while the entry exists, so the
//     FUSE layer can keep stable inode numbers across renames. Everything is
//     kept in memory and persisted to a bbolt database (meta.db) in the cache
//     directory, so a later mount, or an offline one, starts from it. An
//     entry removed while open lives on, nameless, until its last close.
//     A file with several names (hard links) is one entry with several
//     names (links.go); FIFOs, sockets and device nodes are entries too,
//     whose I/O the kernel serves itself.
//   - Content: files under content/<ino>. A clean file's content matches the
//     server version recorded in its entry; a dirty file's content is newer
//     than the server and is never evicted or dropped; a partial file (16 MiB
//     and more) is sparse, with a bitmap of the 1 MiB blocks fetched so far
//     (ranges.go). Least recently used clean content is evicted beyond
//     Options.CacheSize (evict.go). A file created through the mount gets
//     a spare empty content file renamed into place (spares.go): creating
//     one costs 25 times more than a rename on some disks, under mu.
//   - The journal: an ordered log of the user's changes (put content, mkdir,
//     remove, rmdir, rename, symlink, link, relink, mknod, chmod, chown,
//     utimes), recorded with the metadata change before the FUSE call
//     returns (see Durability). The write-back queue and its writer are
//     one type, journal (journal.go), which knows operations and paths,
//     not the tree: it decides which operation goes next (up to
//     Options.Uploads in flight; an operation waits for every earlier one
//     on a related path: same path, ancestor or descendant), which fold
//     into an earlier one (a put not yet started takes later saves of its
//     file and follows its renames), and what a failure does (retry,
//     backoff up to 32s, set aside when refused for good). The Store is
//     its deliverer (writeback.go): deliver applies one operation to the
//     server; delivered, refused and failed record the outcome. Its rules
//     are unit-tested without a Store (journalqueue_test.go).
//     An upload queued by a truncate, by an fsync of a file still open, or
//     by the close of a new file starts 20ms later (settleDelay), so the
//     rest of an editor's save joins it: one upload of the final content
//     to the final name. A put records the versions it sent (op.Tried),
//     durably, before sending, so its retry accepts finding one of them.
//   - Filling the mirror ahead of use: Preload (the whole tree's metadata in
//     one streamed listing, leaving out the inside of node_modules,
//     __pycache__ and the like), PreloadPruned (those folders with their
//     subtrees, all in one more request, beside the prefetch), Prefetch
//     (small files in bulk: git's metadata first, in a small batch that
//     opens wait for, then git's newest packs below LargeFile (32 MiB at
//     most), a batch opens wait for too; the rest holding back while
//     lookups and listings stream in, since storing thousands of files
//     costs a walk CPU), and
//     ApplyRemoteChanges (the server's change feed).
//
// # Caching rules
//
//   - Lookups, getattr and readdir are answered from memory. A directory is
//     listed from the server the first time it is needed in a connection
//     (also when a cached listing from an earlier mount exists: see
//     Starting truthfully); afterwards a listing older than DirTTL is
//     refreshed in the background while the cached one is served
//     (stale-while-revalidate).
//   - Open is close-to-open consistent: a clean file whose attributes were
//     last confirmed more than AttrTTL ago is re-stat'ed on the server and
//     its content dropped when size or mtime changed. While the change feed
//     is live (SetChangeFeed) entries confirmed since it started are trusted
//     instead, except under Options.ServerFolders, which are re-checked on
//     every open, and files the feed reported changed in the last 2 s
//     (still being written, see "What a read returns").
//   - What the server says never overwrites local changes that have not
//     reached it (a path touched by a pending journal operation keeps its
//     local state), nor ones delivered after the question was asked
//     (keepLocal: a listing started before an operation completed is stale
//     for that path).
//   - A version is the server's (size, mtime in whole seconds). Uploads set
//     the server file's mtime to the local one, so the version after an
//     upload is the one the mount already shows. A rewrite that keeps the
//     size within the same second keeps the version too: when the change
//     feed reports such a file, its content is dropped anyway, unless the
//     mount delivered a change to that path in the last 10 s (its own
//     upload coming back) or confirmed the file after the report.
//   - Server changes to what the mount showed carry an Event in their
//     Invalidation, which the FUSE layer replays for inotify watchers.
//   - The mount's own touch (utimes) moves the version: once it lands, a
//     clean file's content is of the touched version, and a dirty file's
//     upload may find it (utimesLanded), so neither its echo nor the
//     next save looks like a server change.
//
// # Stat data
//
// Programs that remember stat data (git's index, make, backup tools)
// compare inode number, ctime and mtime to the nanosecond. An entry keeps
// the server's (sino, ctime, mtime; persisted in meta.db), and Attr.StatIno
// is what the mount shows as st_ino and d_ino: the server's inode number
// for a file when known, otherwise the entry's Ino with the top bit set
// (never a server's number; folders always: a filesystem mounted below the
// root numbers its own inodes, and a repeated folder number looks like a
// loop). The FUSE node id stays the Ino.
//
//   - Sources: the bulk listing reports inode (only for files on the root's
//     filesystem), ctime and nanosecond times; the upload helper reports
//     the landed file's. When only stat data moves, the kernel's cached
//     attributes are dropped, not its pages (Invalidation.AttrOnly).
//   - The mount's own changes, as on a local disk: every change through
//     the mount (write, truncate, chmod, chown, utimens, rename, link,
//     unlink, and the folders a name came into or left) moves ctime at
//     once, by the local clock. The server carrying the change out a
//     moment later gives it a newer ctime there; reported back (listing,
//     feed, bulk stat) it is the echo of a change the mount already
//     shows, and is not taken: a ctime set through the mount stays until
//     the server reports one newer than the delivery of the mount's last
//     change to that entry (Store.ownChangesLandedLocked), and never goes
//     backwards. Folders, FIFOs, sockets and symlinks keep their mtime
//     through the echo the same way. A server clock ahead of the local
//     one by more than a delivery's round trip makes echoes look newer:
//     ctime then moves a second time, as before.
//   - An upload lands as a new file on the server (a new inode number and
//     ctime; unless it has several names, which the helper writes in
//     place). The file keeps showing its inode number, ctime and mtime
//     through the landing and the listings after it (held.go): a file's
//     st_ino never changes while it exists, and its ctime moves only with
//     its changes. Flush (remotefs flush, unmount), once everything is
//     delivered, shows the server's stat data for every file whose stat
//     data is the mount's own (saved, renamed, chmod'ed, ...; held.go):
//     stat'ed in bulk by the server's agent, or, without one, what the
//     upload helper reported (taken when nothing changed locally since
//     the upload started; a renamed file then keeps the mount's ctime).
//     A flush is the one place a ctime may go backwards: to the server's,
//     when the server's clock is behind. A new mount shows the server's
//     too (neither the hold nor the own-change marks are persisted).
//     git: an index written on the server, or after a flush, matches on
//     the mount and after a remount (TestGitStatusTrustsIndex); one
//     written through the mount before the flush holds the mount's stat
//     data, and the first git status after a remount re-reads those files
//     once (it then refreshes its index). A change by someone else
//     (another version on the server) shows the server's stat data at
//     once.
//   - SFTP stats report whole seconds and neither: an SFTP stat of the
//     same version (size, second) keeps what is known; one of another
//     version drops the inode number (the file may be another one now,
//     its old number reused) and keeps the nanoseconds only while the
//     second matches. A file the change feed reported changed is
//     re-checked that way, then, a moment later and in bulk with others,
//     stat'ed with a source that has them (conn.BatchStater: the
//     server's agent; statdata.go), taken if it is still the version the
//     mount shows. Without a running agent that step is skipped: such
//     files show SFTP's whole seconds until the next listing.
//   - Whole seconds never replace a local time of that second (nor 32
//     wrapped bits of it, sameSecond); a time with a fraction is the
//     server's own and is taken.
//   - The version stays (size, whole seconds): the stats that decide
//     whether content is current (open, read, feed) come over SFTP, which
//     has no fraction; a version with nanoseconds from one source could not
//     be compared with another's.
//   - Caches written before inode numbers were checked against the root's
//     filesystem need no migration: records decode as before (absent
//     fields are unknown), and the next listing drops a number it no
//     longer reports.
//
// # What a read returns
//
// The rule: every byte a read returns was in the server's file at one
// moment (or was written through the mount and not yet overwritten), and
// one read never mixes two versions. When the version a read started on is
// gone (the file grew, shrank, was replaced or rewritten meanwhile), the
// read returns the new version's bytes or fails with ErrChanged (ESTALE);
// never holes or zeros the server never had. It is enforced in one place,
// Handle.servable (versions.go):
//
//   - Cached content belongs to a content epoch of its entry; dropping or
//     replacing it starts a new epoch, and that queues the invalidation of
//     the kernel's pages for the file, delivered after the change
//     (invalidateLoop, outside every FUSE request). A read the kernel
//     issued before the invalidation holds its pages locked, so the
//     invalidation drops what it brings; a read issued after it sees the
//     new epoch. The FUSE layer keeps the page cache across opens only
//     while the epoch is unchanged.
//   - A read-only handle whose epoch is gone moves to the current content
//     (fetching it as an open would), but only once the kernel has been
//     told (its pages of the old epoch are gone: new bytes next to them
//     would mix two versions in one read(2); at once when the content
//     was dropped with no new version, e.g. a late feed report); until
//     then, and when the file keeps changing under it, the read fails
//     with ErrChanged.
//     Known gap: the kernel splits one read(2) into several READs, served
//     in any order, and nothing says where a read(2) began; a handle that
//     moves between two of them (the kernel was told of a server rewrite
//     in that moment, seen without a change feed under heavy load in
//     e2e TestReadsRaceServerWrites/rtt50-nofeed) can give one read(2)
//     bytes of both versions, each of which the server had. Failing every
//     non-initial READ after a version change closes it but breaks tail -f
//     on unaligned appends and mmap readers (git's packs) on an mtime-only
//     change, so it is not done; a content comparison for same-size
//     changes would be needed first.
//   - The FUSE layer fails a read shorter than the size it last gave the
//     kernel (fs handle.Read): the kernel would pad it with zeros.
//   - A range-cached file's blocks are written to its epoch's file only
//     when the server's file was still the cached version after they were
//     read (conn.Remote.ReadAt returns the attributes of the file after
//     the read): a block read from another version, or from a file being
//     rewritten, replaces the cached version with the new one instead.
//     Whole files are fetched with a stat before and after (ErrChanged
//     when they differ, retried a few times).
//   - A file that appeared or changed on the server in the last 2 s (a
//     feed report, or a new listing of a folder already shown) may still
//     be being written: its attributes are not cached by the kernel and
//     an open checks it with the server (a program that opens a file as
//     soon as it appears reads the finished file, not the prefix the
//     first report saw).
//
// The limit: a version is (size, mtime in whole seconds), so a rewrite of
// the same size within the second of the bytes already cached cannot be
// told from them by an SFTP stat; the change feed drops the content when
// it reports such a rewrite, and a listing with stat data (the bulk
// listing, a confirming listing with the agent's stats) when the ctime,
// the inode number or the second's fraction moved, but blocks fetched in
// that second before the report can mix the two (in the randomized test,
// writers start each change in a new second). A server without an agent
// or a bulk listing (SFTP only) cannot tell such a rewrite at a remount;
// nor can a mount whose own last change of the file (an upload over SFTP,
// a rename, chmod or touch) moved the server's ctime before the agent was
// running to report it (Flush asks it, showServerStat): until a
// listing reports the file again, that ctime is unknown.
//
// # Conflicts
//
// Every dirty file remembers what its next upload may find on the server
// (its base: an expect, a set of versions, or nothing). An upload hands it
// to conn.Put (PutOptions.Accept) with the conflict copy's name, and the
// server's current version is compared with it where the file lands, just
// before the rename (by the upload helper on the server, or by conn over
// SFTP); before a rename replaces a file the cache compares it itself.
// When the server's file changed in between,
// the local content is put next to it as NAME.conflict-HOST-YYYYmmdd-HHMMSS
// and the server's version stays under the original name. Nothing is
// overwritten silently. The expectation is a set because the mount's own
// operations may still be on their way: a file that replaced another whose
// upload is in flight may find either version; an upload in flight tells
// the expectations that depend on it what it actually left (destLandedLocked,
// kept in the journal records across a restart; watchUploads).
// The names of a hard-linked file may be one inode on the server, which
// an upload to one name writes in place (the upload helper keeps links):
// a rename over, or a removal of, one of its names is ordered with the
// names it lives on under (op.Also), so the file's later uploads do not
// change what that check finds. A link delivered as a copy (a server
// without links, or a file not uploaded yet) is not the file's own
// upload: a file with local changes keeps them (applyLinkAsCopy).
//
// # What the server will refuse
//
// Nothing is accepted that the server will certainly refuse: names and
// paths longer than its limits fail at once with ENAMETOOLONG (limits.go),
// and entries carry the server's owner and group, which the mount shows
// mapped to local ids (LocalOwner, owners.go) so the kernel's permission
// checks refuse what the server would. A journal operation the server
// still refuses for good (a permission changed after the check) is set
// aside, its content kept in undelivered/ in the cache directory, instead
// of being retried forever (undelivered.go); Status and Flush report it.
//
// # Offline
//
// When the Remote reports ErrOffline the store serves what it has, and a
// store that has been connected (Connected) keeps accepting changes: they
// go into the journal exactly as online and are replayed once the Remote
// is back, with the conflict rules above (each put carries the version
// its edit started from). Changes need what they change to be cached: a
// folder never listed cannot be changed in (ErrOffline), and a file whose
// content is not cached cannot be modified in place or hard-linked
// (ErrOffline, ENETDOWN for the user) but can be replaced whole (O_TRUNC,
// or a new file renamed over it). A file deleted offline carries what the
// server had (op.DestExpect): if someone changed it on the server
// meanwhile, the deletion moves the server's version aside as a conflict
// copy instead of losing it (applyOfflineRemove). An upload cut off by the
// lost link may have landed: its versions (op.Tried) count as expected
// wherever the file is replaced, and its temporary names (op.Temps) are
// removed once the upload is done or no longer needed. A store never connected is read-only
// (ErrReadOnly) unless Options.OfflineEdits; Options.ReadOnly always is.
// Reads of content that is not cached fail with ErrOffline at once.
// Every access that needed the server while it was offline (a fetch, a
// listing, a name to confirm, Flush) calls Options.Redial, so the
// connection layer can redial at once; Flush waits 1s for it. The writer
// logs when changes start waiting for an unreachable server and when all
// of them have been delivered (offline.go).
//
// # Starting truthfully
//
// Listings persist across mounts, so a mount starts from them; but each
// connection (Connected bumps an epoch) starts with every folder
// unconfirmed, and the rule is: until an entry has been confirmed with
// the server in this connection (by a listing of its folder, a stat, or
// the change feed), it is not served as current while the server is
// reachable. Offline, the old cache is served as it is (read-only unless
// the mount has been connected or allows offline edits).
//
//   - A lookup, readdir, getattr (CurrentAttr) or change in a folder not
//     confirmed yet first lists it (confirmListing): from the tree listing when it is
//     streaming that folder (waited for up to streamWait), else at once
//     over SFTP. Such a listing's files are stat'ed in the same breath by
//     the server's agent (withStatData: one request for the folder), so
//     their inode numbers, ctimes and nanoseconds are the server's, as the
//     tree listing's are: git's index matches, and a file rewritten with
//     the same size within the same second is told from the cached one.
//   - A huge folder (more than confirmListMax names), or one with local
//     changes pending under it (its listing would contradict them), is
//     not listed for a lookup: the one name is stat'ed (confirmName, with
//     the agent where there is one), then trusted for the connection
//     (entry.statEpoch); a name it lacks is asked each time.
//   - Names the server dropped meanwhile go, with EventRemoved; a file
//     changed meanwhile shows the server's attributes at its first
//     lookup, and its cached content is dropped when its version moved,
//     or, by a source with stat data, its inode number, the second's
//     fraction, or its ctime did (rewrittenInPlace): the server's ctime
//     recorded with the cached content (entry.sctime, persisted; set by
//     listings and stats with stat data and by the upload helper's
//     reply, forgotten when the mount changes the file itself, since its
//     own change moves the server's ctime). Its first open re-checks it
//     as well (its confirmation time is not persisted).
//   - An unreachable server (the confirming listing fails offline) leaves
//     the cache served as it is; other errors are the user's.
//
// The kernel's own caches are empty on a new mount, so every name passes
// through a lookup first. After a reconnect (not a remount) the kernel may
// still answer from attributes and names it cached before, for up to
// their validity (a second; a minute while the change feed was live),
// without asking: the catch-up listing invalidates what it finds changed.
// What it asks after that is confirmed as above.
//
// Cost: a folder asked for before the tree listing reaches it is listed
// on its own (one round trip, plus one for the agent's stats), and one
// the listing is streaming waits for it, so the first look at a remounted
// tree waits for the server instead of answering at once from a cache
// that may be stale.
//
// Why the tree is not listed over SFTP while the agent starts (a login
// shell of a second, on the first connection: later ones reach the agent
// an earlier one left, conn "The persistent agent"): SFTP listings carry
// no inode numbers, no ctime and whole seconds, so a file they bring
// would show the mount's own st_ino and then the server's once the agent
// tells it; a program that recorded the first (git's index refreshed in
// that second) would see every file change. Waiting for the stat data
// instead gains nothing on a walk, which lstats the first file at once.
// Nor would SFTP be sooner for a whole tree: two round trips a level
// (OPENDIR, then READDIR on its handle), 1.1 s for the 3k realistic
// repository's 11 levels at 50 ms, later than the agent's listing.
//
// # Durability
//
// Every change to meta.db (entries, journal records) is appended to a
// commit log, journal.wal (wal.go), with one write(2) under mu, before
// the call that made it returns: it survives a kill of the process. What
// close(2) and fsync(2) promise, on local disk when they return, is kept
// by an fdatasync of the log (after the content file's own fsync); so is
// the mark that a clean file became dirty, before its first write, and a
// put's Tried, before it is sent. One fdatasync serves every caller
// waiting at that moment (group commit), and none is held under mu. The
// log is folded into meta.db in one bbolt transaction every second
// (persistLoop), when it passes 8 MiB, when a change is a listing's worth
// (2,000 entries and more), and at Close; Open replays what a crash left
// in it, up to the first torn record, so the state restored is the one
// after some prefix of the calls. A file created through the mount costs
// three fdatasyncs (content, log at close, log before its upload), where
// a bbolt transaction per change cost about twenty.
//
// # Memory
//
// The mirror is in memory for the mount's life, so the daemon's size grows
// with the tree (about 1.1 KB an entry in the daemon, 100,000 entries
// under 160 MiB resident at peak: README, "Memory"), and with nothing
// else: content streams through files. What keeps it there:
//
//   - entry is laid out without padding, with 8-byte stamps for the times
//     the mount keeps for itself (400 bytes); names are copied out of the
//     listing's buffers, so an entry does not keep its whole path alive.
//   - Content recency (evict.go) is golang-lru's simplelru keyed by the
//     entry, about 100 bytes a file with content (files without content
//     cost nothing there).
//   - Queued kernel invalidations keep their attributes aside
//     (queuedInvalidation): a first listing queues one per name.
//   - A listing that finds an entry unchanged does not mark it for
//     meta.db (applyServerAttrs), so a remount's listing rewrites only
//     what moved; background checkpoints write at most persistChunk
//     (1,000) entries, lowest numbers first (neighbours in meta.db), from
//     an order sorted once per round: each holds mu, which every lookup
//     needs.
//   - bbolt's mmap of meta.db is dropped from the resident set after the
//     load and after every checkpoint (dbpages.go): the pages stay in the
//     page cache, and VmRSS/VmHWM count only what the last transaction
//     touched.
//
// # Concurrency and deadlock
//
// One mutex (Store.mu) guards the in-memory tree, the journal queue and the
// persistence of both. It is never held across a network call: operations
// snapshot what they need under mu, release it, talk to the server, then
// re-take mu and check that the entry did not change meanwhile (by Ino and a
// generation counter). Local disk I/O (commit log appends, bbolt
// checkpoints, content files) does happen under mu; waiting for the commit
// log's fdatasync does not (walFile.sync has its own lock and takes no
// other). The journal shares mu: its writer is a single goroutine that
// releases mu while operations are delivered; fetches of the same file are
// de-duplicated so two opens do not download twice.
// Nothing in this package calls back into the FUSE layer while holding mu:
// invalidation callbacks run on their own goroutine.
package cache
