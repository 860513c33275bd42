package cache

import (
	"context"
	"slices"
	"time"

	"remotefs/conn"
)

// Stat data across the mount's own changes. An upload lands by renaming
// a new file over the server's (unless the file has several names), so
// the server's file gets a new inode number and ctime, which the upload
// helper reports; a rename or chmod gets the server's ctime. Shown at
// once, they would move under a program that stat'ed the file a moment
// before: on a local disk a file's inode number never changes and its
// ctime moves only when the program changes it (POSIX; pjdfstest checks
// it after every operation). So the mount holds what it showed
// (heldStat; serverTimes for the ctime of other changes) and learns the
// new facts beside it (e.sino: hard-link detection uses them) until
// Flush, which, once everything is delivered, shows the server's stat
// data for the files in ownStatIno (showServerStat), so that an index
// git writes after `remotefs flush` matches on the server and after a
// remount; a new mount shows the server's too (nothing of this is
// persisted). A change of the file by someone else (another version on
// the server) ends the hold: the file is another one now.

// heldStat is what an entry keeps showing after its own uploads landed.
type heldStat struct {
	// sino: the server inode number shown (0: the entry's own number).
	sino uint64
	// ctime, mtime: the server's for the file the last upload left
	// (zero: nothing to take), shown at Flush if the entry's own times
	// are still atCtime and atMtime (no local change since).
	ctime, mtime     time.Time
	atCtime, atMtime time.Time
}

// shownSino is the server inode number the mount shows for e (see
// statIno): the held one while an upload's is held back.
func (e *entry) shownSino() uint64 {
	if e.held != nil {
		return e.held.sino
	}
	return e.sino
}

// holdStatLocked starts holding what the mount shows of e (before), as
// one of its uploads lands. Caller holds mu.
func (s *Store) holdStatLocked(e *entry, before Attr) {
	if e.held != nil {
		return
	}
	e.held = &heldStat{sino: before.ServerIno}
	s.noteOwnStatLocked(e)
}

// noteOwnStatLocked records that e, a file, shows stat data of the
// mount's own (a held upload, a ctime its delivered change set), for
// Flush to replace with the server's. Caller holds mu.
func (s *Store) noteOwnStatLocked(e *entry) {
	if s.ownStatIno == nil {
		s.ownStatIno = map[Ino]bool{}
	}
	s.ownStatIno[e.ino] = true
}

// holdLandedTimes records the ctime and mtime the server reported for the
// file an upload of e left (fi; the upload helper's, SFTP reports none),
// to be shown at Flush unless e's times moved locally since the upload
// started (sentMtime, startCtime) or move before then. Caller holds mu.
func holdLandedTimes(e *entry, fi conn.FileInfo, sentMtime, startCtime time.Time) {
	h := e.held
	h.ctime, h.mtime = time.Time{}, time.Time{}
	if fi.Ctime.IsZero() || !e.ctime.Equal(startCtime) {
		return
	}
	h.mtime = e.mtime
	if e.mtime.Equal(sentMtime) && fi.Mtime.Unix() == sentMtime.Unix() {
		h.mtime = fi.Mtime
	}
	h.ctime = fi.Ctime
	h.atCtime, h.atMtime = e.ctime, e.mtime
}

// releaseHeldLocked ends e's hold: the mount shows what is known of the
// server's file. Caller holds mu.
func (s *Store) releaseHeldLocked(e *entry) {
	h := e.held
	if h == nil {
		return
	}
	before := e.attr()
	if !h.ctime.IsZero() && e.ctime.Equal(h.atCtime) && e.mtime.Equal(h.atMtime) && !e.localOwned() {
		e.mtime = h.mtime
		e.ctime, e.ctimeOwn = h.ctime, false
		s.dirtyIno[e.ino] = true
	}
	e.held = nil
	delete(s.ownStatIno, e.ino)
	s.statDataChangedLocked(e, before)
}

// showServerStat shows the server's stat data for the files whose stat
// data is the mount's own (Flush, once every change has been delivered):
// stat'ed in bulk where the server's agent runs (the inode and ctime an
// upload left, the ctime of a rename, chmod or chown the server carried
// out), else what the upload helper reported. Files with changes still on
// their way keep theirs. The same requests learn the server ctime of the
// files whose ctime the mount's own change moved to a value the cache does
// not know (ctimeUnknown), so that a later listing can tell a rewrite on
// the server of the same size within the same second from them
// (rewrittenInPlace); while the change feed is live its echo does this
// too, but an unmount comes sooner. Best effort: without an agent, or when
// the server does not answer, those stay unknown. Caller does not hold mu.
func (s *Store) showServerStat(ctx context.Context) {
	bs, canStat := s.remote.(conn.BatchStater)
	s.mu.Lock()
	var paths []string
	for ino := range s.ownStatIno {
		e := s.entries[ino]
		switch {
		case e == nil || !e.mode.IsRegular() || e.orphan():
			delete(s.ownStatIno, ino)
		case e.localOwned() || s.protected(s.pathOf(e)):
			// its changes are on their way
		default:
			paths = append(paths, s.pathOf(e))
		}
	}
	held := len(paths)
	for ino := range s.ctimeUnknown {
		e := s.entries[ino]
		if canStat && e != nil && !s.ownStatIno[ino] && !e.orphan() && e.mode.IsRegular() && e.onServer && !e.localOwned() && e.sctime.IsZero() {
			paths = append(paths, s.pathOf(e))
		}
	}
	s.ctimeUnknown = nil
	since := s.jr.mark()
	s.mu.Unlock()
	if canStat && len(paths) > 0 && s.online() {
		for chunk := range slices.Chunk(paths, statBatchMax) {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := bs.StatMany(sctx, chunk, func(p string, fi conn.FileInfo) error {
				s.mu.Lock()
				defer s.mu.Unlock()
				if _, e, err := s.lookupPathLocked(p); err == nil && e != nil && s.ownStatIno[e.ino] {
					s.showServerStatLocked(p, fi, since)
				} else {
					s.applyStatDataLocked(p, fi, since)
				}
				return nil
			})
			cancel()
			if err != nil {
				s.log.Debug("bulk stat at flush", "files", len(chunk), "err", err)
				break
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range paths[:held] {
		// Not stat'ed (no agent): what the upload reported, if anything.
		if _, e, err := s.lookupPathLocked(p); err == nil && e != nil && s.ownStatIno[e.ino] {
			s.releaseHeldLocked(e)
			delete(s.ownStatIno, e.ino)
		}
	}
}

// showServerStatLocked shows fi, the server's stat data of the file at p,
// when it is still the version the mount shows and nothing changed it
// locally since the bulk stat started (since). Caller holds mu.
func (s *Store) showServerStatLocked(p string, fi conn.FileInfo, since uint64) {
	_, e, err := s.lookupPathLocked(p)
	if err != nil || e == nil || !s.ownStatIno[e.ino] || e.mode != fi.Mode || e.localOwned() ||
		versionOf(fi) != e.remote || fi.Ctime.IsZero() || s.keepLocal(p, since) {
		return
	}
	before := e.attr()
	e.held = nil
	delete(s.ownStatIno, e.ino)
	if fi.Ino != 0 {
		s.noteServerInoLocked(e, fi)
	}
	e.mtime = sameSecond(e.mtime, fi.Mtime)
	e.ctime, e.ctimeOwn = fi.Ctime, false
	e.sctime = fi.Ctime // of the version the content is
	s.dirtyIno[e.ino] = true
	s.statDataChangedLocked(e, before)
}
