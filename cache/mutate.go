package cache

import (
	"context"
	"io"
	"io/fs"
	"os"
	"time"
)

// newOp assigns the next sequence number. Caller holds mu.
func (s *Store) newOp(o *op) *op {
	o.Seq = s.nextSeq
	s.nextSeq++
	return o
}

// enqueueLocked appends operations to the journal and commits them, with
// every metadata change made so far, in one durable transaction. Caller
// holds mu.
func (s *Store) enqueueLocked(ops ...*op) error {
	for i := 0; i < len(ops); i++ {
		if o := ops[i]; o.Kind == opPut {
			if e := s.entries[o.Ino]; e != nil && len(e.links) > 0 {
				rl := s.relinkOpsLocked(e, o.Path)
				ops = append(ops[:i+1:i+1], append(rl, ops[i+1:]...)...)
				i += len(rl)
			}
			if e := s.entries[o.Ino]; e != nil && !e.onServer && e.hasOwner {
				// A new file with an owner other than the login's.
				ow := s.newOwnerOpsLocked(e, o.Path)
				ops = append(ops[:i+1:i+1], append(ow, ops[i+1:]...)...)
				i += len(ow)
			}
		}
	}
	for _, o := range ops {
		if o.Seq == 0 {
			s.newOp(o)
		}
		if o.At == 0 {
			o.At = time.Now().UnixNano()
		}
	}
	if err := s.commitLocked(ops...); err != nil {
		return err
	}
	for _, o := range ops {
		s.jr.add(o)
	}
	return nil
}

// Mkdir creates directory name in dir.
func (s *Store) Mkdir(ctx context.Context, dir Ino, name string, perm fs.FileMode, by ...Creator) (Attr, error) {
	if err := s.writable(); err != nil {
		return Attr{}, err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return Attr{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, c, err := s.childLocked(dir, name)
	if err != nil {
		return Attr{}, err
	}
	if c != nil {
		return Attr{}, fs.ErrExist
	}
	mode := modeBits(perm)
	if d.mode&fs.ModeSetgid != 0 {
		mode |= fs.ModeSetgid // as a local disk does: the folder's group, and setgid
	}
	e := s.addChildLocked(d, name, fs.ModeDir|mode)
	e.listed = true
	e.listedAt = stampOf(s.now()) // its names are known as of now: no refresh before DirTTL
	e.children = map[string]Ino{}
	if d.confirmed == s.connEpoch {
		// The server had no such folder when the parent's names were
		// confirmed: its names are the ones the mount gives it, and a
		// name it lacks needs no round trip (an untar into it).
		e.confirmed = s.connEpoch
	}
	ops := append([]*op{{Kind: opMkdir, Path: s.pathOf(e), Mode: mode}}, s.ownerForNewLocked(d, e, by)...)
	if err := s.enqueueLocked(ops...); err != nil {
		return Attr{}, err
	}
	return e.attr(), nil
}

// addChildLocked creates a new local entry. Caller holds mu.
func (s *Store) addChildLocked(d *entry, name string, mode fs.FileMode) *entry {
	e := &entry{ino: s.nextIno, parent: d.ino, name: name, mode: mode, mtime: s.nowSec(), ctime: s.now(), ctimeOwn: true}
	s.nextIno++
	s.entries[e.ino] = e
	if d.children == nil {
		d.children = map[string]Ino{}
	}
	d.setChild(name, e.ino)
	s.touchLocked(d, true)
	s.dirtyIno[e.ino] = true
	s.dirtyIno[d.ino] = true
	return e
}

// Create makes a new empty regular file and opens it. With excl, an
// existing name is an error; otherwise the existing file is opened (and
// truncated when flags has O_TRUNC).
func (s *Store) Create(ctx context.Context, dir Ino, name string, perm fs.FileMode, flags int, excl bool, by ...Creator) (Attr, *Handle, error) {
	if err := s.writable(); err != nil {
		return Attr{}, nil, err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return Attr{}, nil, err
	}
	s.mu.Lock()
	d, c, err := s.childLocked(dir, name)
	if err != nil {
		s.mu.Unlock()
		return Attr{}, nil, err
	}
	if c != nil {
		s.mu.Unlock()
		if excl {
			return Attr{}, nil, fs.ErrExist
		}
		h, err := s.Open(ctx, c.ino, flags)
		if err != nil {
			return Attr{}, nil, err
		}
		a, err := s.GetAttr(c.ino)
		return a, h, err
	}
	defer s.mu.Unlock()
	f, err := s.newContentFile(s.nextIno)
	if err != nil {
		return Attr{}, nil, err
	}
	e := s.addChildLocked(d, name, perm.Perm())
	s.ownerForNewLocked(d, e, by) // a file's: queued with its first upload
	e.content = contentDirty
	e.gen++
	s.countOpenLocked(e, true)
	if err := s.commitLocked(); err != nil {
		f.Close()
		return Attr{}, nil, err
	}
	h := &Handle{s: s, ino: e.ino, f: f, epoch: e.epoch, version: e.remote, writable: true, wrote: true}
	return e.attr(), h, nil
}

// Symlink creates name in dir pointing to target.
func (s *Store) Symlink(ctx context.Context, dir Ino, name, target string, by ...Creator) (Attr, error) {
	if err := s.writable(); err != nil {
		return Attr{}, err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return Attr{}, err
	}
	if !s.linkAttrs() {
		by = nil // the login's: a chown would follow it (linkattrs.go)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, c, err := s.childLocked(dir, name)
	if err != nil {
		return Attr{}, err
	}
	if c != nil {
		return Attr{}, fs.ErrExist
	}
	e := s.addChildLocked(d, name, fs.ModeSymlink|0o777)
	e.target = target
	e.size = int64(len(target))
	ops := append([]*op{{Kind: opSymlink, Path: s.pathOf(e), Target: target}}, s.ownerForNewLocked(d, e, by)...)
	if err := s.enqueueLocked(ops...); err != nil {
		return Attr{}, err
	}
	return e.attr(), nil
}

// Unlink removes a file or symlink.
func (s *Store) Unlink(ctx context.Context, dir Ino, name string) error {
	return s.remove(ctx, dir, name, false)
}

// Rmdir removes an empty directory.
func (s *Store) Rmdir(ctx context.Context, dir Ino, name string) error {
	return s.remove(ctx, dir, name, true)
}

func (s *Store) remove(ctx context.Context, dir Ino, name string, isDir bool) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return err
	}
	s.mu.Lock()
	_, c, err := s.childLocked(dir, name)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if c == nil {
		return fs.ErrNotExist
	}
	if isDir {
		if !c.isDir() {
			return ErrNotDir
		}
		// Emptiness is only known from a complete listing.
		if err := s.ensureListed(ctx, c.ino); err != nil {
			return err
		}
	} else if c.isDir() {
		return ErrIsDir
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, c2, err := s.childLocked(dir, name)
	if err != nil {
		return err
	}
	if c2 == nil || c2 != c {
		return fs.ErrNotExist
	}
	if isDir && len(c.children) > 0 {
		return ErrNotEmpty
	}
	p := childPath(s.pathOf(d), name)
	o := &op{Kind: opRemove, Path: p}
	if isDir {
		o.Kind = opRmdir
	} else if c.mode.IsRegular() && !s.online() {
		// Deleted offline: the server's file may be changed by someone
		// else before this reaches it; such a file is kept (applyRemove).
		x := s.expectedOnServerLocked(c)
		o.DestExpect, o.DestIno = &x, c.ino
	}
	if s.unlinkNameLocked(d, name, c) {
		o.Also = s.namePathsLocked(c)
	} else {
		s.removeSubtree(c)
	}
	s.touchLocked(d, true)
	return s.enqueueLocked(o)
}

// Rename moves oldName in oldDir to newName in newDir, replacing a file or
// empty directory there, like rename(2).
func (s *Store) Rename(ctx context.Context, oldDir Ino, oldName string, newDir Ino, newName string) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.ensureListed(ctx, oldDir); err != nil {
		return err
	}
	if err := s.ensureListed(ctx, newDir); err != nil {
		return err
	}
	s.mu.Lock()
	_, dst, err := s.childLocked(newDir, newName)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if dst != nil && dst.isDir() {
		if err := s.ensureListed(ctx, dst.ino); err != nil {
			return err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	od, src, err := s.childLocked(oldDir, oldName)
	if err != nil {
		return err
	}
	nd, dst, err := s.childLocked(newDir, newName)
	if err != nil {
		return err
	}
	if src == nil {
		return fs.ErrNotExist
	}
	if src == dst {
		return nil
	}
	if src.isDir() {
		// A directory cannot move into itself.
		for a := nd; ; a = s.entries[a.parent] {
			if a == nil {
				break
			}
			if a.ino == src.ino {
				return fs.ErrInvalid
			}
			if a.ino == RootIno {
				break
			}
		}
	}
	oldPath := childPath(s.pathOf(od), oldName)
	newPath := childPath(s.pathOf(nd), newName)
	var destExpect *expect
	var dstIno Ino
	var dstNames []string // the names dst lives on under (Also)
	if dst != nil {
		switch {
		case dst.isDir() && !src.isDir():
			return ErrIsDir
		case !dst.isDir() && src.isDir():
			return ErrNotDir
		case dst.isDir() && len(dst.children) > 0:
			return ErrNotEmpty
		}
		switch {
		case dst.mode.IsRegular():
			x := s.expectedOnServerLocked(dst)
			destExpect = &x
			dstIno = dst.ino
		case dst.isLink():
			x := expect{Absent: !dst.onServer, Link: true}
			destExpect = &x
		}
		if s.unlinkNameLocked(nd, newName, dst) {
			dstNames = s.namePathsLocked(dst)
		} else {
			s.removeSubtree(dst)
		}
	}
	od.dropChild(oldName)
	if nd.children == nil {
		nd.children = map[string]Ino{}
	}
	nd.setChild(newName, src.ino)
	s.renameNameLocked(src, od.ino, oldName, nd.ino, newName)
	s.touchLocked(od, true)
	s.touchLocked(nd, true)
	s.touchLocked(src, false)

	// The editor pattern (write a new temp file, rename it over the
	// original) becomes one upload of the final name, checked against the
	// version of the file it replaces.
	// Only when the file never went to the server under any name: an
	// earlier upload (even one in flight) would leave it at the old name;
	// and when its upload expects nothing at the old name: one that
	// replaces a file there (it was renamed over it before) must stay, or
	// that file would be left on the server.
	// And not over one name of a file that lives on under others: the
	// rename is ordered with those (op.Also).
	if src.mode.IsRegular() && !src.onServer && s.jr.puts(src.ino) == 1 && len(src.base.Versions) == 0 && !src.base.Link && dstNames == nil {
		if o := s.jr.lastTouching(oldPath, newPath); o != nil && o.Kind == opPut && o.Ino == src.ino && o.Path == oldPath && !o.inflight {
			s.jr.retarget(o, newPath)
			src.base = expect{Absent: true}
			if destExpect != nil {
				src.base = *destExpect
				s.watchUploads(dstIno, func(v Version) {
					if e := s.entries[src.ino]; e == src {
						e.base = e.base.union(expectVersion(v))
						s.dirtyIno[e.ino] = true
					}
				})
			}
			return s.commitLocked(o)
		}
	}
	o := &op{Kind: opRename, Path: oldPath, Path2: newPath, DestExpect: destExpect, DestIno: dstIno, Also: dstNames}
	if src.mode.IsRegular() {
		// The server may keep what was at newPath if src never arrives
		// there (its upload is skipped when it is replaced in turn), so
		// whatever replaces src later must accept that too.
		was := expect{Absent: true}
		if destExpect != nil {
			was = *destExpect
		}
		src.base = src.base.union(was)
	}
	if destExpect != nil {
		// o.DestExpect follows dst's uploads (destLandedLocked); so does
		// what src's own upload may find there.
		s.watchUploads(dstIno, func(v Version) {
			if s.jr.index(o) < 0 {
				// Delivered already; the replaced file lives on (a hard
				// link) and keeps uploading: nothing to record.
				return
			}
			if e := s.entries[src.ino]; e == src && e.mode.IsRegular() {
				e.base = e.base.union(expectVersion(v))
				s.dirtyIno[e.ino] = true
			}
		})
	}
	return s.enqueueLocked(o)
}

// destLandedLocked makes the pending operations that expect the file ino
// at their name (DestIno: a rename over it, a removal made offline)
// accept v, which an upload of it just left on the server: at that name,
// or at another through an inode the names share there. Kept in the
// records, so it holds across a restart. Caller holds mu.
func (s *Store) destLandedLocked(ino Ino, v Version) {
	s.jr.each(func(o *op) {
		if o.DestIno == ino && o.DestExpect != nil && !o.DestExpect.allows(v) {
			x := o.DestExpect.union(expectVersion(v))
			o.DestExpect = &x
			s.rewriteOpLocked(o)
		}
	})
}

// expectedOnServerLocked is what the server may hold at e's path: what
// e.expectedOnServer says, plus what earlier attempts of its pending
// uploads sent (an attempt cut off by a lost link may have landed without
// the mount learning it). Caller holds mu.
func (s *Store) expectedOnServerLocked(e *entry) expect {
	x := e.expectedOnServer()
	s.jr.each(func(o *op) {
		if o.Kind == opPut && o.Ino == e.ino && len(o.Tried) > 0 {
			x = x.union(expect{Versions: o.Tried})
		}
	})
	return x
}

// watchUploads arranges for f to learn the version each pending upload of
// ino leaves on the server, as it lands. What the server will hold at a
// path is only known for sure then: an upload reads the file as it is when
// it runs, which may differ from every version seen so far. Nothing is
// registered when ino has no upload pending. Caller holds mu; f runs with
// mu held.
func (s *Store) watchUploads(ino Ino, f func(Version)) {
	if s.jr.puts(ino) == 0 {
		return
	}
	if s.landed == nil {
		s.landed = map[Ino][]func(Version){}
	}
	s.landed[ino] = append(s.landed[ino], f)
}

// uploadLandedLocked tells the watchers of ino that an upload left v on
// the server, and forgets them once no upload of ino is pending. Caller
// holds mu; the landed op is still in the journal.
func (s *Store) uploadLandedLocked(ino Ino, v Version) {
	s.destLandedLocked(ino, v)
	for _, f := range s.landed[ino] {
		f(v)
	}
	if s.jr.puts(ino) <= 1 {
		delete(s.landed, ino)
	}
}

// rewriteOpLocked persists a changed pending op. Caller holds mu.
func (s *Store) rewriteOpLocked(o *op) {
	if err := s.logLocked(nil, o); err != nil {
		s.log.Error("update journal record", "op", o.String(), "err", err)
	}
}

// SetAttr changes mode, size, atime and/or mtime (nil fields are left
// alone). Times keep their nanoseconds here; the server keeps what SFTP
// carries (whole seconds).
func (s *Store) SetAttr(ctx context.Context, ino Ino, mode *fs.FileMode, size *int64, atime, mtime *time.Time) (Attr, error) {
	if err := s.writable(); err != nil {
		return Attr{}, err
	}
	if size != nil {
		s.mu.Lock()
		e := s.entries[ino]
		s.mu.Unlock()
		if e == nil {
			return Attr{}, ErrStale
		}
		if e.isDir() {
			return Attr{}, ErrIsDir
		}
		if *size != 0 {
			if err := s.ensureContent(ctx, ino); err != nil {
				return Attr{}, err
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[ino]
	if e == nil {
		return Attr{}, ErrStale
	}
	if e.orphan() {
		// Removed while open (ftruncate/fchmod on the open file): only the
		// open file changes; nothing goes to the server.
		if size != nil {
			if err := os.Truncate(s.contentPath(ino), *size); err != nil {
				return Attr{}, err
			}
			e.size = *size
		}
		if mode != nil {
			e.mode = e.mode.Type() | modeBits(*mode)
		}
		setTimes(e, atime, mtime)
		s.touchLocked(e, false)
		return e.attr(), nil
	}
	var ops []*op
	p := s.pathOf(e)
	if size != nil {
		if e.content != contentDirty {
			// A clean file is about to change in place: its mark goes to
			// disk first (rare; synced under mu).
			s.markDirtyLocked(e)
			if err := s.commitLocked(); err != nil {
				return Attr{}, err
			}
			if err := s.syncJournal(); err != nil {
				return Attr{}, err
			}
		}
		if err := os.Truncate(s.contentPath(ino), *size); err != nil {
			if !os.IsNotExist(err) || *size != 0 {
				return Attr{}, err
			}
			if f, err := os.Create(s.contentPath(ino)); err == nil {
				f.Close()
			}
		}
		e.size = *size
		s.touchLocked(e, true)
		e.gen++
		if !s.jr.unstartedPut(ino, p) {
			// open(O_TRUNC) arrives as this truncate, then the open, the
			// writes and the close: wait a moment, so that the upload
			// carries what the close leaves (one upload, not an empty file
			// and then the content one round trip later).
			ops = append(ops, &op{Kind: opPut, Path: p, Ino: ino, notBefore: time.Now().Add(settleDelay)})
		}
	}
	if mode != nil {
		e.mode = e.mode.Type() | modeBits(*mode)
		ops = append(ops, &op{Kind: opChmod, Path: p, Mode: modeBits(*mode)})
	}
	if atime != nil || mtime != nil {
		setTimes(e, atime, mtime)
		// A symlink's own times: through lsetstat where the server has
		// it, else on the mount only, never on its target (linkattrs.go).
		if !e.isLink() || s.mayHaveLinkAttrs() {
			ops = append(ops, &op{Kind: opUtimes, Path: p, MtimeNs: e.mtime.UnixNano(), AtimeNs: e.attr().Atime.UnixNano(), NoFollow: e.isLink()})
		}
	}
	s.touchLocked(e, false)
	if err := s.enqueueLocked(ops...); err != nil {
		return Attr{}, err
	}
	return s.attrLocked(e), nil
}

// modeBits is what chmod sets: permission bits, setuid, setgid, sticky.
func modeBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// setTimes sets the times given (nil: left alone).
func setTimes(e *entry, atime, mtime *time.Time) {
	if atime != nil {
		e.atime = *atime
	}
	if mtime != nil {
		e.mtime = *mtime
	}
}

// markDirtyLocked records that the local content is about to become newer
// than the server's, remembering the version the edit starts from.
// Caller holds mu and commits.
func (s *Store) markDirtyLocked(e *entry) {
	if e.content == contentDirty {
		return
	}
	e.base = e.expectedOnServer()
	e.content = contentDirty
	s.dirtyIno[e.ino] = true
}

// Link makes newName in newDir another name of ino, as link(2): one
// entry with two names (see links.go), and a hard link on the server
// (hardlink@openssh.com; where the server cannot link, the journal makes
// the new name a copy there).
func (s *Store) Link(ctx context.Context, ino Ino, newDir Ino, newName string) (Attr, error) {
	d, err := s.lockFreeName(ctx, newDir, newName)
	if err != nil {
		return Attr{}, err
	}
	defer s.mu.Unlock()
	src := s.entries[ino]
	if src == nil || src.orphan() {
		return Attr{}, fs.ErrNotExist
	}
	if src.isDir() {
		return Attr{}, fs.ErrPermission
	}
	srcPath := s.pathOf(src)
	d.setChild(newName, src.ino)
	src.links = append(src.links, linkName{Parent: d.ino, Name: newName})
	s.touchLocked(d, true)
	s.touchLocked(src, false)
	ops := []*op{{Kind: opLink, Path: srcPath, Path2: childPath(s.pathOf(d), newName), Ino: src.ino}}
	if err := s.enqueueLocked(ops...); err != nil {
		return Attr{}, err
	}
	return s.attrLocked(src), nil
}

// Mknod creates a FIFO, a Unix socket or a device node (mode's type) in
// dir. The kernel serves such nodes itself (a FIFO's data and a socket's
// connections never reach the filesystem); the server gets the node
// through a command (conn.Mknoder). Where the server cannot make it, the
// journal drops the operation and the node exists in the mirror only.
func (s *Store) Mknod(ctx context.Context, dir Ino, name string, mode fs.FileMode, rdev uint32, by ...Creator) (Attr, error) {
	if mode.Type()&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice) == 0 {
		return Attr{}, fs.ErrInvalid
	}
	d, err := s.lockFreeName(ctx, dir, name)
	if err != nil {
		return Attr{}, err
	}
	defer s.mu.Unlock()
	e := s.addChildLocked(d, name, mode.Type()|modeBits(mode))
	e.rdev = rdev
	ops := append([]*op{{Kind: opMknod, Path: s.pathOf(e), Mode: e.mode, Rdev: rdev}}, s.ownerForNewLocked(d, e, by)...)
	if err := s.enqueueLocked(ops...); err != nil {
		return Attr{}, err
	}
	return e.attr(), nil
}

// lockFreeName checks that name can be created in dir and returns dir
// with mu held; on error mu is not held.
func (s *Store) lockFreeName(ctx context.Context, dir Ino, name string) (*entry, error) {
	if err := s.writable(); err != nil {
		return nil, err
	}
	if err := s.ensureListed(ctx, dir); err != nil {
		return nil, err
	}
	s.mu.Lock()
	d, c, err := s.childLocked(dir, name)
	if err == nil && c != nil {
		err = fs.ErrExist
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return d, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
