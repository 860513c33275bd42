package cache

import (
	"time"

	"remotefs/conn"
)

// Stat data across the mount's own uploads. An upload lands by renaming
// a new file over the server's (unless the file has several names), so
// the server's file gets a new inode number and ctime, which the upload
// helper reports. Shown at once, they would move under a program that
// stat'ed the file a moment before: on a local disk a file's inode number
// never changes and its ctime moves only when the program changes it
// (POSIX; pjdfstest checks it after every operation). So the mount holds
// what it showed (heldStat) and learns the new facts beside it (e.sino:
// hard-link detection uses them) until Flush, which waits for the
// uploads and then shows the server's stat data, so that an index git
// writes after `remotefs flush` matches on the server and after a
// remount; a new mount shows the server's too (held is not persisted).
// A change of the file by someone else (another version on the server)
// ends the hold: the file is another one now.

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
	if s.heldIno == nil {
		s.heldIno = map[Ino]bool{}
	}
	s.heldIno[e.ino] = true
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
	delete(s.heldIno, e.ino)
	s.statDataChangedLocked(e, before)
}

// showLanded ends the holds of the files whose uploads have all landed
// (Flush). Caller does not hold mu.
func (s *Store) showLanded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ino := range s.heldIno {
		e := s.entries[ino]
		if e == nil {
			delete(s.heldIno, ino)
			continue
		}
		if e.localOwned() || s.jr.puts(ino) > 0 {
			continue // another upload is on its way
		}
		s.releaseHeldLocked(e)
	}
}
