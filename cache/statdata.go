package cache

import (
	"context"
	"time"

	"remotefs/conn"
)

// Stat data of files the change feed reported changed. The feed's
// re-check is an SFTP stat: whole seconds, no inode number or ctime. So
// that the mount shows what the server has (git's index written on the
// server then matches), the files it found changed are stat'ed again in
// bulk (conn.BatchStater: one request to the server's agent for many), in
// the background, a moment later. Without a running agent (another OS or
// architecture on the server, agent off, or between two agents) a batch
// is dropped: those files show SFTP's whole seconds until a listing.

const (
	// statBatchDelay: how long reports gather before a bulk stat.
	statBatchDelay = 300 * time.Millisecond
	// statBatchMax: paths per bulk stat (one command line).
	statBatchMax = 200
)

// wantStatDataLocked queues p, a regular file just re-checked over SFTP,
// for a bulk stat. Caller holds mu.
func (s *Store) wantStatDataLocked(p string) {
	if _, ok := s.remote.(conn.BatchStater); !ok {
		return
	}
	if s.statWanted == nil {
		s.statWanted = map[string]bool{}
	}
	s.statWanted[p] = true
	if !s.statRunning {
		s.statRunning = true
		go s.statDataLoop()
	}
}

// statDataLoop stats the queued paths in batches until none are left.
func (s *Store) statDataLoop() {
	bs := s.remote.(conn.BatchStater)
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(statBatchDelay):
		}
		s.mu.Lock()
		var paths []string
		for p := range s.statWanted {
			if len(paths) == statBatchMax {
				break
			}
			paths = append(paths, p)
			delete(s.statWanted, p)
		}
		if len(paths) == 0 {
			s.statWanted = nil
			s.statRunning = false
			s.mu.Unlock()
			return
		}
		since := s.jr.mark()
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := bs.StatMany(ctx, paths, func(p string, fi conn.FileInfo) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.applyStatDataLocked(p, fi, since)
			return nil
		})
		cancel()
		if err != nil {
			s.log.Debug("bulk stat of changed files", "files", len(paths), "err", err)
		}
	}
}

// applyStatDataLocked takes the stat data of fi for the file at p when it
// is still the version the mount shows (a newer change is reported
// again) and has no local changes. Caller holds mu.
func (s *Store) applyStatDataLocked(p string, fi conn.FileInfo, since uint64) {
	_, e, err := s.lookupPathLocked(p)
	if err != nil || e == nil || !e.mode.IsRegular() || e.mode != fi.Mode || !e.onServer || e.localOwned() ||
		versionOf(fi) != e.remote || s.keepLocal(p, since) {
		return
	}
	s.applyServerAttrs(e, fi)
}
