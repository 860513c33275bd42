package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"remotefs/conn"
)

// Ownership as the server has it. Entries keep the numeric owner and group
// the server reports. The mount shows them mapped to local ids, so that
// the kernel's permission checks (default_permissions) refuse locally what
// the server would refuse:
//
//   - an id with an entry in Owners.UIDMap / GIDMap: the mapped local id;
//   - the login user's uid and primary gid on the server: the mounting
//     user's (Owners.LocalUID / LocalGID);
//   - any other id (root's 0 included): the same number.
//
// Entries the server has not described yet (made on the mount, not yet
// listed back) show as the mounting user's, which is who owns them once
// they arrive. Until the login user's ids are known (a mount that never
// connected) every entry shows as the mounting user's. The login user's
// ids are kept in meta.db, so an offline mount shows the same owners.
//
// chown and chgrp are made on the server at once (Chown) and fail with its
// errno; the kernel has already applied the local rules.

// Owners maps server ids to local ones.
type Owners struct {
	LocalUID, LocalGID uint32
	// UIDMap and GIDMap: server id -> local id, before the rules above.
	UIDMap, GIDMap map[uint32]uint32
}

var keyRemoteOwner = []byte("remoteOwner")

// learnOwner records the login user's ids from the Remote, when it knows
// them and they changed.
//
// It asks the connection layer (and its lock) once per connection, then
// at most every ownerRecheck while connected (the upload helper's
// greeting may correct the ids a little after connecting): it runs on
// every lookup.
func (s *Store) learnOwner() {
	or, ok := s.remote.(conn.OwnerReporter)
	if !ok || s.remote == nil {
		return
	}
	gen, now := s.connGen.Load(), time.Now().UnixNano()
	if s.ownerGen.Load() == gen && now-s.ownerAsked.Load() < int64(ownerRecheck) {
		return
	}
	uid, gid, ok := or.Owner()
	if !ok {
		return
	}
	s.ownerAsked.Store(now)
	s.ownerGen.Store(gen)
	v := uint64(uid)<<32 | uint64(gid) | 1<<63
	if uid > 1<<31 {
		return // not representable with the flag bit; keep what we have
	}
	if s.remoteOwner.Swap(v) == v {
		return
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyRemoteOwner, u64key(v))
	}); err != nil {
		s.log.Warn("could not record the server login's ids", "err", err)
	}
}

const ownerRecheck = 5 * time.Second

// loadOwner restores the login user's ids from meta.db (inside load's
// transaction).
func (s *Store) loadOwner(st *bolt.Bucket) {
	if v := st.Get(keyRemoteOwner); len(v) == 8 {
		s.remoteOwner.Store(binary.BigEndian.Uint64(v))
	}
}

func (s *Store) loginIDs() (uid, gid uint32, ok bool) {
	v := s.remoteOwner.Load()
	return uint32(v >> 32 &^ (1 << 31)), uint32(v), v != 0
}

// LocalOwner returns the local uid and gid the mount shows for a.
func (s *Store) LocalOwner(a Attr) (uid, gid uint32) {
	o := s.opts.Owners
	ruid, rgid, known := s.loginIDs()
	if !a.HasOwner || !known {
		return o.LocalUID, o.LocalGID
	}
	uid, gid = a.Uid, a.Gid
	switch m, ok := o.UIDMap[a.Uid]; {
	case ok:
		uid = m
	case a.Uid == ruid:
		uid = o.LocalUID
	}
	switch m, ok := o.GIDMap[a.Gid]; {
	case ok:
		gid = m
	case a.Gid == rgid:
		gid = o.LocalGID
	}
	return uid, gid
}

// remoteID turns a local id into the server's (LocalOwner in reverse).
func remoteID(local, localSelf, remoteSelf uint32, m map[uint32]uint32) uint32 {
	for r, l := range m {
		if l == local {
			return r
		}
	}
	if local == localSelf {
		return remoteSelf
	}
	return local
}

// Chown changes the owner (uid) and/or group (gid), given as local ids;
// nil leaves one as it is. It is made on the server at once and the
// server's refusal is returned as its errno (EPERM for a permission
// refusal, as chown(2) says). A file whose creation or other changes are
// still in the journal gets it through the journal, after them.
func (s *Store) Chown(ctx context.Context, ino Ino, uid, gid *uint32) (Attr, error) {
	if err := s.writable(); err != nil {
		return Attr{}, err
	}
	s.learnOwner()
	ruid, rgid, known := s.loginIDs()
	if !known {
		return Attr{}, fmt.Errorf("chown: the server login's ids are not known yet: %w", ErrOffline)
	}
	o := s.opts.Owners
	canLink := s.linkAttrs()
	s.mu.Lock()
	e := s.entries[ino]
	if e == nil {
		s.mu.Unlock()
		return Attr{}, ErrStale
	}
	cur := e.attr()
	p := s.pathOf(e)
	// Offline it waits in the journal like every other change (a refusal
	// then is set aside as undeliverable); online the server answers now.
	pending := !e.onServer || s.jr.onPath(p) || !s.online()
	nu, ng := ruid, rgid
	if cur.HasOwner {
		nu, ng = cur.Uid, cur.Gid
	}
	if uid != nil {
		nu = remoteID(*uid, o.LocalUID, ruid, o.UIDMap)
	}
	if gid != nil {
		ng = remoteID(*gid, o.LocalGID, rgid, o.GIDMap)
	}
	link := cur.Mode&fs.ModeSymlink != 0
	if link && !canLink {
		s.mu.Unlock()
		// SFTP's setstat follows symlinks, and this server offers no
		// lsetstat (linkattrs.go).
		return Attr{}, syscall.EOPNOTSUPP
	}
	if pending {
		defer s.mu.Unlock()
		e.uid, e.gid, e.hasOwner = nu, ng, true
		s.touchLocked(e, false)
		if err := s.enqueueLocked(&op{Kind: opChown, Path: p, Owner: &[2]uint32{nu, ng}, NoFollow: link}); err != nil {
			return Attr{}, err
		}
		return e.attr(), nil
	}
	s.mu.Unlock()
	var err error
	if link {
		err = s.remote.(conn.LinkAttrSetter).Lchown(ctx, p, nu, ng)
	} else {
		err = s.remote.Chown(ctx, p, nu, ng)
	}
	if err != nil {
		if errors.Is(err, conn.ErrUnsupported) {
			return Attr{}, syscall.EOPNOTSUPP
		}
		var en syscall.Errno
		if !errors.As(err, &en) && errors.Is(err, fs.ErrPermission) {
			return Attr{}, syscall.EPERM // what chown(2) says
		}
		return Attr{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A listing that started before the server changed the owner reports
	// the old one: stale for this path, as after a delivered operation.
	now := s.now()
	s.jr.done([]string{p}, now)
	if e := s.entries[ino]; e != nil {
		e.uid, e.gid, e.hasOwner = nu, ng, true
		s.touchLocked(e, false)
		e.ownUntil = now.UnixNano()
		return e.attr(), nil
	}
	return Attr{}, ErrStale
}

// Creator is the local user who makes a new entry through the mount (the
// caller of creat, mkdir, mknod or symlink), given to Create, Mkdir, Mknod
// and Symlink (optional: without it, the login's). SFTP makes every new entry as the login user; when the
// login is root, the entry is then given to the creator's server uid (the
// reverse of the owner mapping) and to the creator's gid, or to the
// folder's group when the folder is setgid, as a local disk does. A
// non-root login could not do that (the server refuses chown), so there
// new entries stay the login's, as on the server; so do symlinks where
// the server offers no lsetstat (linkattrs.go). The change goes through
// the journal, right after the creation (for a file, after its first
// upload).
type Creator struct {
	Uid, Gid uint32
}

// ownerForNewLocked sets the owner a new entry e in folder d gets on the
// server, when it is not the login's and the login may give it, and
// returns the operations that make it so (nil otherwise). Caller holds mu.
// (Symlink passes no creator when the server cannot lchown.)
func (s *Store) ownerForNewLocked(d, e *entry, by []Creator) []*op {
	ruid, rgid, known := s.loginIDs()
	if len(by) == 0 || !known || ruid != 0 {
		return nil
	}
	o := s.opts.Owners
	nu := remoteID(by[0].Uid, o.LocalUID, ruid, o.UIDMap)
	ng := remoteID(by[0].Gid, o.LocalGID, rgid, o.GIDMap)
	if d.mode&fs.ModeSetgid != 0 {
		ng = rgid
		if d.hasOwner {
			ng = d.gid
		}
	}
	if nu == ruid && ng == rgid {
		return nil
	}
	e.uid, e.gid, e.hasOwner = nu, ng, true
	if e.mode.IsRegular() {
		return nil // given after the first upload (newOwnerOpsLocked)
	}
	return s.newOwnerOpsLocked(e, s.pathOf(e))
}

// newOwnerOpsLocked returns the operations that give a new entry, at path
// p on the server, the owner it got on the mount: a chown, and for a file
// with setuid or setgid a chmod after it (chown clears them).
func (s *Store) newOwnerOpsLocked(e *entry, p string) []*op {
	ops := []*op{{Kind: opChown, Path: p, Owner: &[2]uint32{e.uid, e.gid}, NoFollow: e.isLink()}}
	if !e.mode.IsDir() && e.mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		ops = append(ops, &op{Kind: opChmod, Path: p, Mode: modeBits(e.mode)})
	}
	return ops
}

// chownPendingLocked reports whether the journal still holds a chown of
// e's path. Caller holds mu.
func (s *Store) chownPendingLocked(e *entry) bool {
	p := s.pathOf(e)
	if !s.jr.onPath(p) {
		return false
	}
	found := false
	s.jr.each(func(o *op) { found = found || o.Kind == opChown && o.Path == p })
	return found
}
