package cache

import (
	"context"
	"errors"
	"syscall"
)

// Name limits: a name the server's disk will not take is refused at once,
// as a local disk refuses it, instead of being accepted into the journal
// and refused later. The server's limit on a name component is what
// statvfs@openssh.com reports (f_namemax), asked once per Store; without
// the extension, or before the first answer, the limit is the usual
// 255 bytes. Whole paths are limited to 4096 bytes (PATH_MAX), counted
// on the server, remote root included.

const (
	defaultNameMax = 255
	pathMax        = 4096
)

// learnLimits asks the server for its name limit, once.
func (s *Store) learnLimits(ctx context.Context) {
	s.learnOwner()
	if s.nameMax.Load() != 0 || !s.online() {
		return
	}
	st, err := s.remote.StatFS(ctx, "")
	switch {
	case err == nil && st.NameMax > 0:
		s.nameMax.Store(st.NameMax)
	case errors.Is(err, ErrOffline) || ctx.Err() != nil:
		// asked again later
	default:
		s.nameMax.Store(defaultNameMax) // no statvfs: the usual limit
	}
}

// nameErr reports ENAMETOOLONG when name is longer than the server takes.
func (s *Store) nameErr(name string) error {
	max := s.nameMax.Load()
	if max == 0 {
		max = defaultNameMax
	}
	if uint64(len(name)) > max {
		return syscall.ENAMETOOLONG
	}
	return nil
}

// pathErr is nameErr, and ENAMETOOLONG too when name in folder d would
// make a path longer than the server takes. Caller holds mu.
func (s *Store) pathErr(d *entry, name string) error {
	if err := s.nameErr(name); err != nil {
		return err
	}
	if len(s.opts.RemoteRoot)+1+len(s.pathOf(d))+1+len(name) >= pathMax {
		return syscall.ENAMETOOLONG
	}
	return nil
}
