package cache

import (
	"context"
	"errors"
	"time"

	"remotefs/conn"
)

// A symlink's own owner and times. SFTP's setstat follows symlinks; where
// the Remote can set a symlink itself (conn.LinkAttrSetter, OpenSSH's
// lsetstat@openssh.com), lchown and utimensat(AT_SYMLINK_NOFOLLOW) of a
// symlink reach the server as journal operations marked NoFollow, and a
// symlink a local user makes through a shared mount is given to them as a
// file is. Elsewhere lchown fails with EOPNOTSUPP and a symlink's times
// stay on the mount only (they are never set on its target).

// linkAttrs reports whether the server can set a symlink's own owner and
// times now. Not under mu: it asks the connection layer.
func (s *Store) linkAttrs() bool {
	ls, ok := s.remote.(conn.LinkAttrSetter)
	return ok && ls.HasLinkAttrs()
}

// applyLinkAttrs delivers a NoFollow chown or utimes. A server that
// cannot (a later connection to another server) keeps the times on the
// mount only; an owner it cannot give is an error like any refusal.
func (s *Store) applyLinkAttrs(ctx context.Context, o *op) error {
	ls, ok := s.remote.(conn.LinkAttrSetter)
	if !ok {
		return conn.ErrUnsupported
	}
	switch o.Kind {
	case opChown:
		return ls.Lchown(ctx, o.Path, o.Owner[0], o.Owner[1])
	case opUtimes:
		m, a := time.Unix(0, o.MtimeNs), time.Unix(0, o.AtimeNs)
		if o.AtimeNs == 0 {
			a = m
		}
		err := ls.Lchtimes(ctx, o.Path, a, m)
		if errors.Is(err, conn.ErrUnsupported) {
			return nil
		}
		return err
	}
	return nil
}

// mayHaveLinkAttrs reports whether the Remote can set a symlink's own
// attributes on some connection (the journal may deliver later, to a
// connection that can). Safe under mu: it asks nothing.
func (s *Store) mayHaveLinkAttrs() bool {
	_, ok := s.remote.(conn.LinkAttrSetter)
	return ok
}
