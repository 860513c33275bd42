package cache

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"time"
)

// Offline edits. While the server cannot be reached, a mount that has
// been connected (or was started with Options.OfflineEdits) keeps
// accepting changes: they go into the journal as they do online and are
// delivered, with the usual conflict checks, when the server is back.
// What needs content the cache does not have (modifying a file in place
// whose content was never fetched, a hard link to one) fails with
// ErrOffline; replacing such a file whole (open with O_TRUNC, or a new
// file renamed over it) works.

// noteOfflineLocked logs when the journal starts waiting for an
// unreachable server, and when what waited has been delivered. Called by
// the writer on every pass and after every delivery. Caller holds mu.
func (s *Store) noteOfflineLocked() {
	online := s.online() && !s.opts.ReadOnly
	switch {
	case !online && s.waitingSince.IsZero() && s.jr.len() > 0:
		s.waitingSince, s.waitingApplied, s.waitingConflicts = s.now(), s.jr.mark(), len(s.conflicts)
		s.log.Warn("server unreachable: changes wait in the journal and are delivered when it is back",
			"pending", s.jr.len())
	case online && !s.waitingSince.IsZero() && s.jr.len() == 0:
		s.log.Info("delivered the changes made while the server was unreachable",
			"operations", s.jr.mark()-s.waitingApplied, "waited", s.now().Sub(s.waitingSince).Round(time.Second).String(),
			"conflicts", len(s.conflicts)-s.waitingConflicts)
		s.waitingSince = time.Time{}
	}
}

// AcceptsOfflineEdits reports whether changes are accepted while the
// server is unreachable (see writable).
func (s *Store) AcceptsOfflineEdits() bool {
	if s.opts.ReadOnly {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.OfflineEdits || s.everConnected
}

// applyOfflineRemove delivers a file deletion made offline (o.DestExpect:
// what the server had when it was deleted here). A file the server
// changed since is not deleted, since that would lose someone else's
// edit: it is moved aside as a conflict copy (NAME.conflict-HOST-TIME),
// which frees the name for what the journal does next there, and
// recorded as a conflict.
func (s *Store) applyOfflineRemove(ctx context.Context, o *op) error {
	cur, err := s.remote.Lstat(ctx, o.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	want, _ := s.destExpect(o)
	if want.allowsInfo(cur) {
		return ignoreNotExist(s.remote.Remove(ctx, o.Path))
	}
	dest := s.conflictName(o.Path)
	if err := s.remote.Rename(ctx, o.Path, dest); err != nil {
		return ignoreNotExist(err)
	}
	s.log.Warn("conflict: a file deleted here while offline was changed on the server meanwhile; the server's version is kept as a copy",
		"path", o.Path, "copy", dest, "server", versionOf(cur), "expected", want)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conflicts = append(s.conflicts, Conflict{Path: o.Path, CopyPath: dest, At: s.now()})
	// Show the copy at once (the feed may not report the mount's own
	// rename): it is the server's file the Lstat above saw.
	parent := path.Dir(dest)
	if parent == "." {
		parent = ""
	}
	if _, d, err := s.lookupPathLocked(parent); err == nil && d != nil && d.isDir() && d.listed && !s.protected(dest) {
		cur.Name = path.Base(dest)
		s.upsertChildLocked(d, cur, s.now())
	}
	return nil
}
