package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"time"

	"remotefs/conn"
)

// writer runs the journal (journal.run) until Close.
func (s *Store) writer() {
	defer close(s.writerDone)
	s.jr.run(s.stop)
}

// settleDelay delays an upload queued by a step an editor's save usually
// follows at once: a truncate (open(O_TRUNC)) before the writes and the
// close, an fsync before the close, the close of a new file before its
// rename over the file it replaces. What follows within it joins the same
// upload, so a save is one upload of its final content to its final name.
// A variable for tests.
var settleDelay = 20 * time.Millisecond

// The Store is the journal's deliverer.
var _ deliverer = (*Store)(nil)

// deliver applies one operation to the server (journal.deliver).
func (s *Store) deliver(ctx context.Context, o *op) error {
	err := s.apply(ctx, o)
	s.log.Debug("journal op applied", "seq", o.Seq, "op", o.String(), "ino", o.Ino, "err", err)
	return err
}

// canDeliver: the writer starts operations only while online and
// writable. Caller holds mu.
func (s *Store) canDeliver() bool {
	s.noteOfflineLocked()
	return !s.opts.ReadOnly && s.online()
}

// delivered removes a delivered op from meta.db. Caller holds mu.
func (s *Store) delivered(o *op) {
	// The entries the delivery changed (a put's new server version, a
	// conflict copy) go to disk with the removal of the operation: a crash
	// in between would leave an edit with no upload and a stale base.
	if err := s.commitDoneLocked(o.Seq); err != nil {
		s.log.Error("remove delivered op from journal", "op", o.String(), "err", err)
	}
	s.ownChangesLandedLocked(o)
	s.noteOfflineLocked()
}

// ownChangesLandedLocked marks the entries o changed on the server, and
// their folders, as changed by the mount until now: the times the server
// gave them in carrying o out are the echo of changes the mount already
// shows (serverTimes). Caller holds mu.
func (s *Store) ownChangesLandedLocked(o *op) {
	now := s.now().UnixNano()
	if e := s.entries[o.Ino]; e != nil {
		e.ownUntil = now
		if e.mode.IsRegular() {
			s.noteOwnStatLocked(e)
		}
	}
	for _, p := range append([]string{o.Path, o.Path2}, o.Also...) {
		if p == "" {
			continue
		}
		d, e, err := s.lookupPathLocked(p)
		if err != nil {
			// Gone or moved since: its folder still changed.
			dir := path.Dir(p)
			if dir == "." {
				dir = ""
			}
			_, d, _ = s.lookupPathLocked(dir)
		}
		for _, x := range []*entry{d, e} {
			if x != nil {
				x.ownUntil = now
				if x.mode.IsRegular() {
					s.noteOwnStatLocked(x)
				}
			}
		}
	}
}

// refused sets aside an op the server refused for good. Caller holds mu.
func (s *Store) refused(o *op, err error) bool {
	s.setAsideLocked(o, err)
	// Still queued: it could not be set aside (local disk), and is
	// retried like any failure.
	return s.jr.index(o) < 0
}

// failed logs a failure the journal retries. Caller holds mu.
func (s *Store) failed(o *op, err error, retryIn time.Duration) {
	s.log.Warn("upload failed; will retry", "op", o.String(), "err", err, "attempt", o.attempts, "retry_in", retryIn)
}

// apply performs one journal operation on the server. Replays are
// idempotent: an operation whose effect is already there succeeds.
func (s *Store) apply(ctx context.Context, o *op) error {
	r := s.remote
	if o.NoFollow {
		return ignoreNotExist(s.applyLinkAttrs(ctx, o))
	}
	switch o.Kind {
	case opPut:
		return s.applyPut(ctx, o)
	case opRelink:
		return s.applyRelink(ctx, o)
	case opMkdir:
		err := r.Mkdir(ctx, o.Path, o.Mode)
		if errors.Is(err, fs.ErrExist) {
			fi, serr := r.Lstat(ctx, o.Path)
			if errors.Is(serr, conn.ErrOffline) {
				return serr // cannot tell yet: the link dropped
			}
			if serr == nil && fi.Mode.IsDir() {
				// Made by an earlier attempt, which the lost link may have
				// cut off before it set the mode.
				if fi.Mode.Perm() != o.Mode.Perm() {
					return r.Chmod(ctx, o.Path, o.Mode)
				}
				return nil
			}
		}
		return err
	case opRemove:
		if _, ok := s.destExpect(o); ok {
			return s.applyOfflineRemove(ctx, o)
		}
		return ignoreNotExist(r.Remove(ctx, o.Path))
	case opRmdir:
		return ignoreNotExist(r.Rmdir(ctx, o.Path))
	case opSymlink:
		err := r.Symlink(ctx, o.Target, o.Path)
		if errors.Is(err, fs.ErrExist) {
			t, rerr := r.ReadLink(ctx, o.Path)
			if errors.Is(rerr, conn.ErrOffline) {
				return rerr // cannot tell yet: the link dropped
			}
			if rerr == nil && t == o.Target {
				return nil
			}
		}
		return err
	case opChmod:
		return ignoreNotExist(r.Chmod(ctx, o.Path, o.Mode))
	case opChown:
		return ignoreNotExist(r.Chown(ctx, o.Path, o.Owner[0], o.Owner[1]))
	case opUtimes:
		m, a := time.Unix(0, o.MtimeNs), time.Unix(0, o.AtimeNs)
		if o.AtimeNs == 0 {
			a = m
		}
		err := r.Chtimes(ctx, o.Path, a, m)
		if err == nil {
			s.utimesLanded(o.Path, m)
		}
		return ignoreNotExist(err)
	case opRename:
		return s.applyRename(ctx, o)
	case opMknod:
		return s.applyMknod(ctx, o)
	case opLink:
		err := r.Link(ctx, o.Path, o.Path2)
		if errors.Is(err, fs.ErrExist) {
			return nil // made by an earlier attempt
		}
		if errors.Is(err, conn.ErrUnsupported) || errors.Is(err, fs.ErrNotExist) {
			// The server cannot link (or the source is gone): make the new
			// name a copy, so the user's file is there either way.
			return s.applyLinkAsCopy(ctx, o)
		}
		return err
	}
	return fmt.Errorf("unknown journal op %q", o.Kind)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// applyPut uploads a file's local content, unless the server's file changed
// since the edit started: then the local version becomes a conflict copy.
func (s *Store) applyPut(ctx context.Context, o *op) error {
	s.mu.Lock()
	e := s.entries[o.Ino]
	if e == nil || e.orphan() || e.content != contentDirty {
		// Deleted or replaced (a later journal operation removes or
		// replaces it on the server too), or already delivered.
		temps := slices.Clone(o.Temps)
		s.mu.Unlock()
		s.removeTemps(ctx, temps, "")
		return nil
	}
	gen, mode, mtime, ctime := e.gen, e.mode.Perm(), e.mtime, e.ctime
	base, size := e.base, e.size
	f, err := os.Open(s.contentPath(o.Ino))
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("local content: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	// Remember what this attempt sends before sending it (durably, for a
	// replay after a crash): it may land even if the answer never comes.
	sending := Version{Size: size, Mtime: mtime.Unix()}
	// The temporary name is fixed per journal operation, so a retry after a
	// lost link or a crash overwrites the leftover of the failed attempt.
	tmpName := conn.TempNameAt(path.Base(o.Path), time.Unix(0, o.At), uint32(o.Seq*2654435761)^uint32(o.At))
	tmpPath := path.Join(path.Dir(o.Path), tmpName)
	mustSync := false
	if !slices.Contains(o.Tried, sending) || !slices.Contains(o.Temps, tmpPath) {
		if !slices.Contains(o.Tried, sending) {
			o.Tried = append(o.Tried, sending)
		}
		if !slices.Contains(o.Temps, tmpPath) {
			o.Temps = append(o.Temps, tmpPath)
		}
		if o.Seq != 0 {
			if err := s.logLocked(nil, o); err != nil {
				s.mu.Unlock()
				return fmt.Errorf("journal: %w", err)
			}
			mustSync = true
		}
	}
	tried, temps := slices.Clone(o.Tried), slices.Clone(o.Temps)
	s.mu.Unlock()
	if mustSync {
		if err := s.syncJournal(); err != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}

	// What the server may hold at the path and still be replaced is
	// checked where the file lands, just before the rename; anything else
	// keeps the server's file and puts the local version next to it. A
	// file removed on the server meanwhile is recreated: nothing there to
	// conflict with.
	accept := &conn.PutAccept{Absent: true, Link: base.Link}
	for _, v := range base.union(expect{Versions: tried}).Versions {
		accept.Versions = append(accept.Versions, conn.FileVersion{Size: v.Size, Mtime: v.Mtime})
	}
	copyPath := s.conflictCandidate(o.Path)
	res, err := s.remote.Put(ctx, o.Path, f, conn.PutOptions{Mode: mode, Mtime: mtime, Accept: accept, ConflictPath: copyPath, TempName: tmpName})
	if err != nil {
		return err
	}
	s.removeTemps(ctx, temps, tmpPath) // this attempt's was renamed into place
	fi, conflict := res.Info, res.Conflict
	var cur conn.FileInfo
	if res.Found != nil {
		cur = *res.Found
	}
	if conflict {
		s.log.Info("upload found the server's file changed", "path", o.Path, "server", versionOf(cur), "expected", base, "local_size", size, "local_mtime", mtime.Unix(), "seq", o.Seq)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if o.linkCopy && !conflict {
		s.linkCopyLandedLocked(o, versionOf(fi), gen)
		return nil
	}
	if !conflict {
		s.uploadLandedLocked(o.Ino, versionOf(fi))
	}
	e = s.entries[o.Ino]
	if conflict {
		s.reserveConflictNameLocked(res.Path)
		s.recordConflictLocked(o.Path, res.Path, e, fi, cur, gen)
		return nil
	}
	if e == nil {
		return nil
	}
	v := versionOf(fi)
	before := e.attr()
	// What the mount showed stays on show until Flush (held.go).
	s.holdStatLocked(e, before)
	// The server's inode is a fact about the file that landed, whatever
	// the local content did meanwhile: the upload helper reports it (it
	// writes a file with several names in place, so that one stays). An
	// upload over SFTP reports none, and always made a new file (a
	// temporary file renamed over the name; the other names are linked
	// to it again by the relinks after it): the old number is forgotten,
	// not kept. Kept, it would name a file the server freed: where Flush
	// could not stat the file, a remount showed it until a listing
	// reported the new one (two inode numbers for one file), and a file
	// the server later gave that number with several names would be
	// taken for another name of this one. Until Flush stats the file,
	// the number shown is held (holdStatLocked above).
	if fi.Ino != 0 {
		s.noteServerInoLocked(e, fi)
	} else {
		s.forgetServerInoLocked(e)
	}
	e.onServer = true
	e.remote = v
	e.base = expectVersion(v)
	e.checked = stampOf(s.now())
	e.sctime = fi.Ctime // the upload helper's; SFTP reports none (zero: unknown)
	if e.gen == gen {
		e.content = contentClean
		e.size = fi.Size
		holdLandedTimes(e, fi, mtime, ctime)
	}
	s.statDataChangedLocked(e, before)
	s.dirtyIno[e.ino] = true
	return nil
}

// utimesLanded records that the server's file at p now has mtime m (whole
// seconds over SFTP): the version a clean file's content came from, and
// what a dirty file's next upload may find there, move with it. Otherwise
// the mount's own touch would look like a server change (dropping the
// cached content) and an edit after it like a conflict.
func (s *Store) utimesLanded(p string, m time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, e, err := s.lookupPathLocked(p)
	if err != nil || e == nil || !e.mode.IsRegular() || !e.onServer {
		return
	}
	touched := func(v Version) Version { return Version{Size: v.Size, Mtime: m.Unix()} }
	if e.content == contentDirty {
		for _, v := range e.base.Versions {
			e.base = e.base.union(expectVersion(touched(v)))
		}
	} else {
		e.remote = touched(e.remote)
	}
	s.dirtyIno[e.ino] = true
}

// removeTemps deletes, best effort, the temporary files that earlier
// attempts of a put may have left on the server (a lost link cut them
// off; a later attempt under another name, or no attempt, followed),
// except keep. What stays is removed by a listing once it is an hour old.
func (s *Store) removeTemps(ctx context.Context, temps []string, keep string) {
	for _, t := range temps {
		if t != keep {
			s.remote.Remove(ctx, t)
		}
	}
}

// recordConflictLocked updates the local tree after the local version of
// p was uploaded as copy: the local entry becomes the copy, and p shows the
// server's version again. Caller holds mu.
func (s *Store) recordConflictLocked(p, copyPath string, e *entry, copyInfo, serverInfo conn.FileInfo, uploadedGen uint64) {
	c := Conflict{Path: p, CopyPath: copyPath, At: s.now()}
	s.conflicts = append(s.conflicts, c)
	s.log.Warn("conflict: the server's file changed since the local edit started; kept both",
		"path", p, "local_copy", copyPath)
	if e == nil || s.pathOf(e) != p {
		return
	}
	d := s.entries[e.parent]
	if d == nil {
		return
	}
	copyName := path.Base(copyPath)
	d.dropChild(e.name)
	e.name = copyName
	d.setChild(copyName, e.ino)
	s.notifyLocked(Invalidation{Dir: d.ino, Name: path.Base(p), Ino: e.ino})
	// Uploads of later edits go to the copy, not over the server's file.
	s.jr.each(func(o *op) {
		if o.Kind == opPut && o.Ino == e.ino && o.Path == p && !o.inflight {
			s.jr.retarget(o, copyPath)
		}
	})
	v := versionOf(copyInfo)
	e.onServer, e.remote, e.base = true, v, expectVersion(v)
	if e.gen == uploadedGen {
		e.content = contentClean
		e.size = copyInfo.Size
	}
	s.dirtyIno[e.ino] = true
	// The original name shows the server's version, fetched on demand.
	n := s.addChildLocked(d, path.Base(p), 0)
	serverInfo.Name = n.name
	s.applyServerAttrs(n, serverInfo)
	n.checked = stampOf(s.now())
}

// applyRename renames on the server, unless the file it replaces changed
// on the server since the local rename: then the renamed file is put next
// to it as a conflict copy.
func (s *Store) applyRename(ctx context.Context, o *op) error {
	dest := o.Path2
	var serverInfo conn.FileInfo
	conflict := false
	if want, ok := s.destExpect(o); ok {
		cur, err := s.remote.Lstat(ctx, o.Path2)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil && !want.allowsInfo(cur) {
			if src, serr := s.remote.Lstat(ctx, o.Path); serr == nil && versionOf(src) == versionOf(cur) {
				// Already renamed by an earlier attempt.
				return nil
			}
			conflict = true
			serverInfo = cur
			dest = s.conflictName(o.Path2)
			s.log.Info("rename found the replaced file changed on the server", "from", o.Path, "to", o.Path2, "server", versionOf(cur), "expected", want, "seq", o.Seq)
		}
	}
	err := s.remote.Rename(ctx, o.Path, dest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // source gone: a later op or an earlier attempt handled it
	}
	if err != nil || !conflict {
		return err
	}
	copyInfo, err := s.remote.Lstat(ctx, dest)
	if err != nil {
		copyInfo = serverInfo
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var e *entry
	if d, c, err := s.lookupPathLocked(o.Path2); err == nil && d != nil {
		e = c
	}
	var gen uint64
	if e != nil {
		gen = e.gen
		if e.content == contentDirty {
			gen++ // still has an upload pending: stays dirty
		}
	}
	s.recordConflictLocked(o.Path2, dest, e, copyInfo, serverInfo, gen)
	return nil
}

// destExpect is o.DestExpect, read under mu (the file's uploads update it
// as they land: destLandedLocked); false when o has none.
func (s *Store) destExpect(o *op) (expect, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.DestExpect == nil {
		return expect{}, false
	}
	return *o.DestExpect, true
}

// lookupPathLocked resolves a relative path in the local tree. Caller holds mu.
func (s *Store) lookupPathLocked(p string) (*entry, *entry, error) {
	d := s.entries[RootIno]
	if p == "" {
		return nil, d, nil
	}
	parts := splitPath(p)
	for i, name := range parts {
		c := s.entries[d.children[name]]
		if c == nil {
			return nil, nil, fs.ErrNotExist
		}
		if i == len(parts)-1 {
			return d, c, nil
		}
		d = c
	}
	return nil, nil, fs.ErrNotExist
}

func splitPath(p string) []string {
	var out []string
	for p != "" {
		i := 0
		for i < len(p) && p[i] != '/' {
			i++
		}
		out = append(out, p[:i])
		if i == len(p) {
			break
		}
		p = p[i+1:]
	}
	return out
}

// Flush waits until every operation queued before the call has reached the
// server. It fails at once when the server cannot be reached and reports
// the server's reason when an upload keeps failing.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.flushWait(ctx); err != nil {
		return err
	}
	s.showServerStat(ctx)
	// The records set aside are files: read outside mu.
	if us := s.Undelivered(); len(us) > 0 {
		return undeliveredError(us)
	}
	return nil
}

// flushWait is Flush without the report of what was set aside.
func (s *Store) flushWait(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jr.len() == 0 {
		return nil
	}
	last := s.jr.lastSeq()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.jr.forgetErr()
	var offlineAt time.Time
	for s.jr.upTo(last) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.opts.ReadOnly {
			return fmt.Errorf("%d changes pending and the mount is read-only (offline); they are kept and delivered on a later online mount", s.jr.len())
		}
		if !s.online() {
			// Asking for the server is a reason to try it now: wait a
			// moment for that redial before giving up.
			if offlineAt.IsZero() {
				offlineAt = time.Now()
				s.errOffline()
			}
			if time.Since(offlineAt) > flushRedialWait {
				return fmt.Errorf("%d changes pending: %w; they are kept and delivered when it is back", s.jr.len(), ErrOffline)
			}
			s.waitLocked(100 * time.Millisecond)
			continue
		}
		if s.jr.err() != nil {
			return fmt.Errorf("%d changes pending; %w", s.jr.len(), s.jr.err())
		}
		s.cond.Broadcast() // let the writer look again
		s.waitLocked(time.Second)
	}
	return nil
}

// flushRedialWait: how long Flush waits for the redial it asked for when
// it finds the server offline.
const flushRedialWait = time.Second

// waitLocked waits on cond for at most d. Caller holds mu.
func (s *Store) waitLocked(d time.Duration) { waitCond(&s.mu, s.cond, d) }

// Status is a snapshot of the write-back state.
type Status struct {
	Pending       int        `json:"pending"`
	PendingBytes  int64      `json:"pending_bytes"`
	OldestPending *time.Time `json:"oldest_pending,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	Conflicts     []Conflict `json:"conflicts"`
	CacheBytes    int64      `json:"cache_bytes"`
	Entries       int        `json:"entries"`

	// Undelivered: changes the server refused for good, set aside.
	Undelivered []Undelivered `json:"undelivered,omitempty"`

	// Settling counts the work still to come from what the server
	// reported or a listing found: change feed batches being applied,
	// files waiting for their stat data (statdata.go), folder listings
	// running, and kernel invalidations not delivered yet. At zero the
	// mount shows all it has learnt (tests await it instead of sleeping).
	Settling int `json:"settling"`
}

// Status reports pending uploads, conflicts and cache usage.
func (s *Store) Status() Status {
	st := s.status()
	st.Undelivered = s.Undelivered() // files: read outside mu
	return st
}

func (s *Store) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Pending: s.jr.len(), Conflicts: append([]Conflict(nil), s.conflicts...), Entries: len(s.entries)}
	st.Settling = int(s.applying.Load()) + len(s.statWanted) + len(s.listing) + int(s.invalQueued-s.invalDone)
	if s.statRunning {
		st.Settling++
	}
	if st.Conflicts == nil {
		st.Conflicts = []Conflict{}
	}
	s.jr.each(func(o *op) {
		if o.Kind == opPut {
			if e := s.entries[o.Ino]; e != nil {
				st.PendingBytes += e.size
			}
		}
	})
	for _, e := range s.entries {
		if e.content != contentNone {
			st.CacheBytes += e.presentBytes()
		}
	}
	if s.jr.err() != nil {
		st.LastError = s.jr.err().Error()
	}
	s.jr.each(func(o *op) {
		if o.At != 0 {
			t := time.Unix(0, o.At)
			if st.OldestPending == nil || t.Before(*st.OldestPending) {
				st.OldestPending = &t
			}
		}
	})
	return st
}

// applyLinkAsCopy delivers a hard link the server cannot make as a copy of
// the local content of the new name.
func (s *Store) applyLinkAsCopy(ctx context.Context, o *op) error {
	s.mu.Lock()
	_, e, err := s.lookupPathLocked(o.Path2)
	var ino Ino
	// Only a regular file is copied: a symlink or special node the link
	// named is made by its own operations, and a name taken over since by
	// something else (another file: o.Ino, in records that have it) is
	// not this link's business. The linked file deleted from the mount
	// before its first upload leaves nothing to link: its source name
	// never reached the server, which is why the link failed.
	if err == nil && e != nil && e.mode.IsRegular() && (o.Ino == 0 || e.ino == o.Ino) {
		ino = e.ino
	}
	s.mu.Unlock()
	if ino == 0 {
		return nil
	}
	// The content first (from the server's o.Path), then dirty: an entry
	// marked dirty without content would upload nothing, forever.
	ferr := s.ensureContentFor(ctx, ino, o)
	if ferr != nil && !errors.Is(ferr, fs.ErrNotExist) {
		return ferr
	}
	wasClean, err := s.markLinkCopyDirty(o.Path2, ino)
	if err != nil {
		if ferr != nil {
			return nil // gone from the server, never cached: nothing to copy
		}
		return err
	}
	return s.applyPut(ctx, &op{Kind: opPut, Path: o.Path2, Ino: ino, linkCopy: true, wasClean: wasClean})
}

// linkCopyLandedLocked records that the upload of a hard link delivered
// as a copy (applyLinkAsCopy) left v at o.Path, from the file's local
// content of generation gen. That is not the file's own upload: the name
// its uploads go to may not be on the server yet (a new file linked while
// still open for writing, its upload queued at the close), or hold older
// content (an edit not uploaded yet). So a file that had local changes
// keeps them, with their upload still to come, and only one that had none
// (marked dirty for the copy alone) is clean again, unless it changed
// meanwhile. Its server version stays that of its own name; the copy's
// version is added to what its uploads may replace, since a later upload
// can land on that name (the file renamed there, or its first name
// removed) and must not find its own copy a conflict. Caller holds mu.
func (s *Store) linkCopyLandedLocked(o *op, v Version, gen uint64) {
	s.destLandedLocked(o.Ino, v) // a rename over the name expects what landed there
	for _, f := range s.landed[o.Ino] {
		f(v)
	}
	e := s.entries[o.Ino]
	if e == nil {
		return
	}
	e.base = e.base.union(expectVersion(v))
	if o.wasClean && e.gen == gen && e.content == contentDirty {
		e.content = contentClean
	}
	s.dirtyIno[e.ino] = true
}
