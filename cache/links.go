package cache

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"time"

	"remotefs/conn"
)

// Hard links, special files and the times a local disk keeps.
//
// A file with more than one name is one entry: its primary name is
// (parent, name), used by journal operations, and the others are in
// entry.links. Every name's directory maps to the same Ino, so the FUSE
// layer serves one node for all of them: shared content, shared
// attributes, one inode number. Names are recognised as one file from the
// server's inode number, which only the bulk listing reports (SFTP v3
// attributes carry neither inode nor link count): after a remount with a
// bulk listing, the names a server file has in the mount are one entry
// again; without it (no GNU find on the server) they show as separate
// files.

// dirLinksLocked is a folder's link count: 2 + its subfolders when its
// listing is complete, else what the server reported (at least 2).
// The subfolders are counted once and kept until the folder's names
// change (setChild, dropChild): a getattr or lookup of a folder is not a
// scan of its entries. Caller holds mu.
func (s *Store) dirLinksLocked(d *entry) uint32 {
	if !d.listed {
		if d.nlink > 2 {
			return d.nlink
		}
		return 2
	}
	if !d.subdirsOK {
		d.subdirs = 0
		for _, ino := range d.children {
			if c := s.entries[ino]; c != nil && c.isDir() {
				d.subdirs++
			}
		}
		d.subdirsOK = true
	}
	return 2 + d.subdirs
}

// setChild makes name in folder d the entry ino.
func (d *entry) setChild(name string, ino Ino) {
	if d.children == nil {
		d.children = map[string]Ino{}
	}
	d.children[name] = ino
	d.subdirsOK = false
}

// dropChild removes name from folder d.
func (d *entry) dropChild(name string) {
	delete(d.children, name)
	d.subdirsOK = false
}

// attrLocked is e's attributes as the mount shows them. Caller holds mu.
func (s *Store) attrLocked(e *entry) Attr {
	a := e.attr()
	if e.isDir() {
		a.Nlink = s.dirLinksLocked(e)
	}
	a.Unsettled = s.unsettled(e) // versions.go
	return a
}

// touchLocked records a change of e's metadata now (ctime), and with
// content of its content too (mtime). Caller holds mu and commits.
func (s *Store) touchLocked(e *entry, content bool) {
	now := s.now()
	if content {
		e.mtime = now.Truncate(time.Second)
	}
	e.ctime, e.ctimeOwn = now, true
	e.sctime = time.Time{} // the server's moves too, once this lands
	if e.mode.IsRegular() {
		if s.ctimeUnknown == nil {
			s.ctimeUnknown = map[Ino]bool{}
		}
		s.ctimeUnknown[e.ino] = true
	}
	s.dirtyIno[e.ino] = true
}

// unlinkNameLocked removes name in d when it is one of several names of
// c: c lives on under its other names. It reports false, changing
// nothing, when name is c's only one (the caller removes c).
// Caller holds mu.
func (s *Store) unlinkNameLocked(d *entry, name string, c *entry) bool {
	if len(c.links) == 0 || !c.hasName(d.ino, name) {
		return false
	}
	d.dropChild(name)
	s.dirtyIno[d.ino] = true
	if c.parent == d.ino && c.name == name {
		c.parent, c.name = c.links[0].Parent, c.links[0].Name
		c.links = c.links[1:]
	} else {
		for i, l := range c.links {
			if l.Parent == d.ino && l.Name == name {
				c.links = append(c.links[:i:i], c.links[i+1:]...)
				break
			}
		}
	}
	if len(c.links) == 0 {
		c.links = nil
	}
	s.touchLocked(c, false)
	return true
}

// namePathsLocked returns the paths of c's names. Caller holds mu.
func (s *Store) namePathsLocked(c *entry) []string {
	var ps []string
	for _, l := range append([]linkName{{Parent: c.parent, Name: c.name}}, c.links...) {
		if d := s.entries[l.Parent]; d != nil {
			ps = append(ps, childPath(s.pathOf(d), l.Name))
		}
	}
	return ps
}

// renameNameLocked moves c's name (od, oldName) to (nd, newName); the
// caller has updated the directories' children. Caller holds mu.
func (s *Store) renameNameLocked(c *entry, od Ino, oldName string, nd Ino, newName string) {
	if c.parent == od && c.name == oldName {
		c.parent, c.name = nd, newName
		return
	}
	for i, l := range c.links {
		if l.Parent == od && l.Name == oldName {
			c.links[i] = linkName{Parent: nd, Name: newName}
			return
		}
	}
}

// linkByServerInoLocked finds the entry of a file the server reports
// under another name (same inode, more than one link), for a listing
// that found fi in d. Caller holds mu.
func (s *Store) linkByServerInoLocked(d *entry, fi conn.FileInfo) *entry {
	if fi.Ino == 0 || fi.Nlink < 2 || fi.Mode.IsDir() {
		return nil
	}
	e := s.entries[s.sinos[fi.Ino]]
	if e == nil || e.sino != fi.Ino || e.orphan() || e.mode.Type() != fi.Mode.Type() || e.hasName(d.ino, fi.Name) {
		return nil
	}
	return e
}

// noteServerInoLocked remembers which entry holds the server's inode
// fi.Ino when it has more than one link. Caller holds mu.
func (s *Store) noteServerInoLocked(e *entry, fi conn.FileInfo) {
	if fi.Ino == 0 {
		return
	}
	if e.sino != fi.Ino {
		s.forgetServerInoLocked(e)
	}
	e.sino = fi.Ino
	if fi.Nlink > 1 && !e.isDir() {
		if o := s.entries[s.sinos[fi.Ino]]; o != nil && o != e && o.sino == fi.Ino {
			o.sino = 0 // the server reused the inode number
		}
		s.sinos[fi.Ino] = e.ino
	}
}

// forgetServerInoLocked drops what is known of e's server inode: the
// mount replaced the file on the server (an upload makes a new one).
// Caller holds mu.
func (s *Store) forgetServerInoLocked(e *entry) {
	if e.sino != 0 && s.sinos[e.sino] == e.ino {
		delete(s.sinos, e.sino)
	}
	e.sino = 0
}

// serverTimes takes the server's mtime, atime and ctime for e. Times the
// server reports in whole seconds do not replace a local one of the same
// second (SFTP v3 drops the fraction that utimensat set through the
// mount, and carries 32 bits of seconds); a time with a fraction (the bulk
// listing's, the upload helper's) is the server's own and is taken.
//
// A ctime set through the mount stays until the server reports a newer
// one that is not the echo of the mount's own change (a time after
// ownUntil): it never goes backwards, and the server carrying out a
// rename or chmod a moment later does not move it again. The same holds
// for the mtime of a folder, FIFO, socket or symlink (a regular file's
// mtime is its version: uploads give the server the local one). A ctime
// taken from the server is replaced by the server's next one. SFTP
// reports no ctime: its mtime is a lower bound. Caller holds mu.
func serverTimes(e *entry, fi conn.FileInfo) {
	echo := func(t time.Time) bool { return e.ownUntil != 0 && t.UnixNano() <= e.ownUntil }
	if e.mode.IsRegular() || e.mtime.IsZero() || e.mode.Type() != fi.Mode.Type() || !echo(fi.Mtime) {
		e.mtime = sameSecond(e.mtime, fi.Mtime)
	}
	if !fi.Atime.IsZero() {
		e.atime = sameSecond(e.atime, fi.Atime)
	}
	switch {
	case !fi.Ctime.IsZero() && (!e.ctimeOwn || fi.Ctime.After(e.ctime) && !echo(fi.Ctime)):
		e.ctime, e.ctimeOwn = fi.Ctime, false
	case fi.Ctime.IsZero() && e.ctime.Before(fi.Mtime) && (!e.ctimeOwn || !echo(fi.Mtime)):
		e.ctime, e.ctimeOwn = fi.Mtime, false
	}
	if fi.Nlink != 0 {
		e.nlink = fi.Nlink
	}
}

// sameSecond returns server, or local when server is local truncated to
// whole seconds, or to the 32 unsigned bits of seconds SFTP v3 carries
// (a time past 2106 set through the mount reaches the server wrapped).
func sameSecond(local, server time.Time) time.Time {
	if server.Nanosecond() != 0 || local.IsZero() {
		return server
	}
	if local.Unix() == server.Unix() || (server.Unix() >= 0 && server.Unix() < 1<<32 && uint32(local.Unix()) == uint32(server.Unix()) && local.Unix() >= 1<<32) {
		return local
	}
	return server
}

// applyMknod makes a FIFO, socket or device node on the server. A server
// that cannot (no mknod or python3 there, or a remote that runs no
// commands), or a device node a server login that is not root may not
// make, keeps the node in the mirror only: the operation succeeds
// and the entry is marked local, so listings do not remove it.
func (s *Store) applyMknod(ctx context.Context, o *op) error {
	m, ok := s.remote.(conn.Mknoder)
	var err error
	if ok {
		err = m.Mknod(ctx, o.Path, o.Mode, o.Rdev)
	}
	switch {
	case err == nil && ok:
		return nil
	case errors.Is(err, fs.ErrExist):
		if fi, serr := s.remote.Lstat(ctx, o.Path); serr == nil && fi.Mode.Type() == o.Mode.Type() {
			return nil
		}
		return err
	case errors.Is(err, fs.ErrNotExist):
		return nil // its folder is gone: a later operation removed it
	case o.Mode&fs.ModeDevice != 0 && errors.Is(err, fs.ErrPermission):
		// Only root makes device nodes, and the server login is not root
		// (the local check let a local root make it): local, as below.
	case ok && !errors.Is(err, conn.ErrUnsupported):
		return err
	}
	s.log.Info("the server cannot make this node; it exists on this mount only", "path", o.Path, "mode", o.Mode, "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, e, lerr := s.lookupPathLocked(o.Path); lerr == nil && e != nil && e.mode.Type() == o.Mode.Type() {
		e.localOnly = true
		s.dirtyIno[e.ino] = true
	}
	return nil
}

// relinkOpsLocked returns, for an upload of e about to be queued at p,
// the operations that give e's other names the uploaded content on the
// server. An upload replaces the server's file with a new one, which ends
// the sharing there; each other name is linked to the new file again,
// right after the upload in the journal, so later operations on those
// names (a rename, an unlink) apply to what the mount showed. Caller
// holds mu.
func (s *Store) relinkOpsLocked(e *entry, p string) []*op {
	if len(e.links) == 0 {
		return nil
	}
	var ops []*op
	for _, q := range s.namePathsLocked(e) {
		if q != p {
			ops = append(ops, &op{Kind: opRelink, Path: p, Path2: q})
		}
	}
	return ops
}

// applyRelink makes o.Path2 a hard link of o.Path again (see
// relinkOpsLocked): link to a temporary name, renamed over the name, so
// the name never goes missing.
func (s *Store) applyRelink(ctx context.Context, o *op) error {
	// The temporary name is fixed per journal operation, so a retry after
	// a lost link first removes what the cut-off attempt left.
	tmp := path.Join(path.Dir(o.Path2), conn.TempNameAt(path.Base(o.Path2), time.Unix(0, o.At), uint32(o.Seq*2654435761)^uint32(o.At)^0x5eed))
	if err := s.remote.Remove(ctx, tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.remote.Link(ctx, o.Path, tmp); err != nil {
		if errors.Is(err, conn.ErrUnsupported) || errors.Is(err, fs.ErrNotExist) {
			// No hard links on this server (the names are copies), or
			// the upload did not land there: nothing to share.
			return nil
		}
		return err
	}
	if err := s.remote.Rename(ctx, tmp, o.Path2); err != nil {
		s.remote.Remove(ctx, tmp)
		return err
	}
	// Renaming a name over another name of the same file does nothing
	// (rename(2)), leaving the temporary name.
	if err := s.remote.Remove(ctx, tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
