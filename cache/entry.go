package cache

import (
	"encoding/binary"
	"encoding/json"
	"io/fs"
	"time"

	"remotefs/conn"
)

// Ino identifies an entry for as long as it exists; the FUSE layer uses it
// as the inode number. RootIno is the mount's root directory.
type Ino uint64

const RootIno Ino = 1

// Version is what the server says a file is: size and mtime (whole seconds).
type Version struct {
	Size  int64
	Mtime int64
}

// expect is what an upload may find on the server without calling it a
// conflict: nothing (Absent) or one of Versions. More than one version is
// possible when the file replaced a local file whose own upload was still
// on its way: the server then has either that file's base or its content.
type expect struct {
	Absent   bool      `json:"a,omitempty"`
	Versions []Version `json:"v,omitempty"`
	// Link: a symlink may be there (the file replaced a local symlink,
	// which the journal may already have created on the server).
	Link bool `json:"l,omitempty"`
}

// allowsInfo reports whether finding fi on the server is expected.
func (x expect) allowsInfo(fi conn.FileInfo) bool {
	if fi.Mode&fs.ModeSymlink != 0 && x.Link {
		return true
	}
	return x.allows(versionOf(fi))
}

func (x expect) allows(v Version) bool {
	for _, w := range x.Versions {
		if w == v {
			return true
		}
	}
	return false
}

func (x expect) union(y expect) expect {
	out := expect{Absent: x.Absent || y.Absent, Link: x.Link || y.Link}
	out.Versions = append(out.Versions, x.Versions...)
	for _, v := range y.Versions {
		if !out.allows(v) {
			out.Versions = append(out.Versions, v)
		}
	}
	return out
}

func expectVersion(v Version) expect { return expect{Versions: []Version{v}} }

// Attr is what the mount shows for an entry.
type Attr struct {
	Ino Ino
	// ServerIno: the server's inode number of a file, when a bulk
	// listing or the upload helper reported it (0 unknown); see StatIno.
	ServerIno uint64
	Mode      fs.FileMode
	Size      int64
	Mtime     time.Time
	Target    string // symlink target
	// Uid, Gid: the server's numeric owner and group, when HasOwner
	// (LocalOwner maps them to what the mount shows).
	Uid, Gid uint32
	HasOwner bool
	// Atime and Ctime: as set through the mount or reported by the
	// server; Ctime moves on every local change of the entry.
	Atime, Ctime time.Time
	// Nlink: the names the entry has (0 once removed while open); for a
	// folder 2 + its subfolders.
	Nlink uint32
	Rdev  uint32 // device nodes
	// Unsettled: the server changed this file moments ago and may still be
	// writing it; these attributes must not be cached (versions.go).
	Unsettled bool
}

// StatIno is the inode number the mount shows for the entry (st_ino).
func (a Attr) StatIno() uint64 { return statIno(a.Ino, a.ServerIno, a.Mode) }

// StatIno is the inode number the mount shows for the entry (d_ino).
func (d DirEntry) StatIno() uint64 { return statIno(d.Ino, d.ServerIno, d.Mode) }

// statIno is the inode number shown for an entry: the server's for a file
// whose number is known, so that tools which remember stat data (git's
// index, backup tools, make) find what they recorded on the server or
// through an earlier mount; otherwise the entry's Ino with the top bit set,
// which no server inode number has. Folders always show the latter: a
// filesystem mounted under the root on the server numbers its inodes on
// its own, and a folder showing an ancestor's number would look like a
// loop to find and du (files on such a filesystem report no number: conn
// WalkTree).
func statIno(ino Ino, sino uint64, mode fs.FileMode) uint64 {
	if sino != 0 && sino < 1<<63 && !mode.IsDir() {
		return sino
	}
	return 1<<63 | uint64(ino)
}

// linkName is one name of an entry that has more than one (a hard link).
type linkName struct {
	Parent Ino    `json:"p"`
	Name   string `json:"n"`
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name      string
	Ino       Ino
	ServerIno uint64 // as in Attr
	Mode      fs.FileMode
}

type contentState uint8

const (
	contentNone    contentState = iota // nothing cached
	contentClean                       // content/<ino> equals server version `remote`
	contentDirty                       // content/<ino> is newer than the server
	contentPartial                     // content/<ino> holds the blocks in entry.blocks of version `remote`
)

// entry is one file, directory or symlink. Guarded by Store.mu.
//
// There is one per entry of the tree for the mount's life, so its size is
// most of the daemon's memory with a large tree (100,000 entries: about
// 40 MB at 400 bytes each): fields are ordered largest first so that no
// padding goes between them, the times the mount keeps for itself are
// stamps (8 bytes, not time.Time's 24), and counters are 32-bit.
type entry struct {
	ino    Ino
	parent Ino
	name   string
	target string
	size   int64
	mtime  time.Time
	atime  time.Time
	ctime  time.Time
	// ownUntil: when the last journal operation that changed this entry
	// on the server was delivered (unix ns, 0: none). Server times up to
	// ownUntil are the echo of the mount's own changes (serverTimes). Not
	// persisted, as ctimeOwn.
	ownUntil int64
	// held: what the mount keeps showing after its own uploads landed,
	// until Flush (held.go; not persisted).
	held *heldStat
	// Hard links: the names besides (parent, name), which is the primary
	// one that journal operations use. nlink is the link count the server
	// reported for a folder (0: unknown); sino the server's inode number
	// (bulk listing only), which tells the names of one file apart from
	// copies.
	links []linkName
	sino  uint64
	// sctime: the server's ctime of the file the cached content came
	// from, as a source with stat data reported it (the bulk listing, the
	// agent's stat, the upload helper); zero when unknown, or when the
	// mount changed the file since (its own change moves the server's
	// ctime). A later report of another ctime for the same version means
	// the server rewrote the file (rewrittenInPlace).
	sctime time.Time

	// directories
	children map[string]Ino // nil until listed or a child is added
	listedAt stamp          // when last listed from the server (zero after restart)
	// confirmed: the connection epoch (Store.connEpoch) in which the
	// folder was last listed from the server (not persisted: zero after
	// a restart, so every cached listing starts unconfirmed).
	confirmed uint64
	// statEpoch: the connection epoch in which this entry alone was last
	// confirmed with the server (confirmName: a lookup in a folder not
	// listed in this connection; not persisted).
	statEpoch uint64

	// files
	remote  Version // server version the attributes / clean content came from
	checked stamp   // when remote was last confirmed with the server
	base    expect  // dirty: what the next upload expects on the server at its path
	gen     uint64  // bumped by every local content change
	blocks  []byte  // contentPartial: bitmap of the 1 MiB blocks present
	// epoch names the content file: a new one whenever the cached content
	// is dropped or replaced (versions.go; not persisted).
	epoch uint64
	// epochTold: Store.invalQueued once the kernel was told of the new
	// epoch (not persisted).
	epochTold uint64
	// reported: when the change feed last reported this file changed (not
	// persisted); a file reported recently is still being written.
	reported stamp

	mode fs.FileMode
	// the server's owner and group, when hasOwner (owners.go)
	uid, gid uint32
	rdev     uint32
	nlink    uint32
	// subdirs counts the folder's subfolders while subdirsOK
	// (dirLinksLocked); every change of children clears subdirsOK.
	subdirs uint32
	writers int32 // open writable handles (not persisted)
	opens   int32 // open handles of any kind (not persisted)
	content contentState

	hasOwner  bool
	subdirsOK bool
	// ctimeOwn: ctime was set by a change through the mount, not taken
	// from the server (not persisted: a new mount takes what the server
	// reports).
	ctimeOwn bool
	// localOnly: a FIFO, socket or device node the server could not make;
	// it lives in the mirror only.
	localOnly bool
	listed    bool // directories: children is the complete listing
	// announce: a folder the server created while the mount showed its
	// parent; its first listing raises events (not persisted).
	announce bool
	onServer bool // the server has this path, as far as we know
	// setAside: an upload of it was set aside while it was open for
	// writing; its content is dropped at the last close (not persisted).
	setAside bool
}

// stamp is a moment the mount keeps for itself (when an entry was last
// confirmed, listed, reported changed): the wall clock in nanoseconds
// since 1970, 0 for none. It compares like the time.Time it was made
// from, except that it has no monotonic reading (a step of the wall
// clock moves it, as it moves the mount's other times).
type stamp int64

func stampOf(t time.Time) stamp {
	if t.IsZero() {
		return 0
	}
	return stamp(t.UnixNano())
}

// Time is the stamp as a time.Time (the zero Time for none).
func (s stamp) Time() time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(s))
}

func (s stamp) IsZero() bool            { return s == 0 }
func (s stamp) After(t time.Time) bool  { return s.Time().After(t) }
func (s stamp) Before(t time.Time) bool { return s.Time().Before(t) }

// localOwned reports whether the local state of a file must not be replaced
// by what the server says: it has unsent changes or is open for writing
// (its edit's base must stay the version its content came from).
func (e *entry) localOwned() bool { return e.content == contentDirty || e.writers > 0 }

func (e *entry) isDir() bool  { return e.mode.IsDir() }
func (e *entry) isLink() bool { return e.mode&fs.ModeSymlink != 0 }

// localVersion is the version the server will have once this entry's
// content is uploaded (uploads set the server's mtime to the local one).
func (e *entry) localVersion() Version {
	return Version{Size: e.size, Mtime: e.mtime.Unix()}
}

// expectedOnServer is what the server has, or will have once pending
// uploads land, at this entry's path.
func (e *entry) expectedOnServer() expect {
	switch {
	case e.content == contentDirty:
		return e.base.union(expectVersion(e.localVersion()))
	case e.onServer:
		return expectVersion(e.remote)
	}
	return expect{Absent: true}
}

func (e *entry) attr() Attr {
	a := Attr{Ino: e.ino, ServerIno: e.shownSino(), Mode: e.mode, Size: e.size, Mtime: e.mtime, Target: e.target,
		Uid: e.uid, Gid: e.gid, HasOwner: e.hasOwner,
		Atime: e.atime, Ctime: e.ctime, Rdev: e.rdev, Nlink: e.linkCount()}
	if a.Atime.IsZero() {
		a.Atime = e.mtime
	}
	if a.Ctime.Before(e.mtime) {
		a.Ctime = e.mtime
	}
	return a
}

// linkCount is the link count of a file: its names on the mount (links
// the server file has outside the mounted folder are not counted: the
// server's count is only known at a bulk listing, and goes stale with
// every link, unlink and upload); 0 once removed while open. Folders:
// see Store.dirLinksLocked.
func (e *entry) linkCount() uint32 {
	switch {
	case e.orphan():
		return 0
	case e.isDir():
		return 2
	}
	return uint32(1 + len(e.links))
}

// hasName reports whether name in dir is one of e's names.
func (e *entry) hasName(dir Ino, name string) bool {
	if e.parent == dir && e.name == name {
		return true
	}
	for _, l := range e.links {
		if l.Parent == dir && l.Name == name {
			return true
		}
	}
	return false
}

// record is the persisted form of an entry.
type record struct {
	Parent   uint64     `json:"p"`
	Name     string     `json:"n"`
	Mode     uint32     `json:"m"`
	Size     int64      `json:"s"`
	MtimeNs  int64      `json:"t"`
	Target   string     `json:"l,omitempty"`
	Listed   bool       `json:"d,omitempty"`
	OnServer bool       `json:"o,omitempty"`
	Remote   Version    `json:"r"`
	Content  uint8      `json:"c,omitempty"`
	Base     expect     `json:"b"`
	Blocks   []byte     `json:"bm,omitempty"`
	HasOwner bool       `json:"ho,omitempty"` // Uid, Gid are the server's
	Uid      uint32     `json:"u,omitempty"`
	Gid      uint32     `json:"g,omitempty"`
	AtimeNs  int64      `json:"at,omitempty"`
	CtimeNs  int64      `json:"ct,omitempty"`
	Rdev     uint32     `json:"rd,omitempty"`
	Links    []linkName `json:"ln,omitempty"`
	Nlink    uint32     `json:"nl,omitempty"`
	Sino     uint64     `json:"si,omitempty"`
	SctimeNs int64      `json:"sc,omitempty"`
	Local    bool       `json:"lo,omitempty"`
}

func (e *entry) record() []byte {
	r := record{
		Parent: uint64(e.parent), Name: e.name, Mode: uint32(e.mode), Size: e.size,
		MtimeNs: e.mtime.UnixNano(), Target: e.target, Listed: e.listed,
		OnServer: e.onServer, Remote: e.remote, Content: uint8(e.content),
		Base: e.base, Blocks: e.blocks, Rdev: e.rdev, Links: e.links, Nlink: e.nlink, Sino: e.sino,
		Local: e.localOnly,
	}
	if !e.atime.IsZero() {
		r.AtimeNs = e.atime.UnixNano()
	}
	if !e.ctime.IsZero() {
		r.CtimeNs = e.ctime.UnixNano()
	}
	if !e.sctime.IsZero() {
		r.SctimeNs = e.sctime.UnixNano()
	}
	r.HasOwner, r.Uid, r.Gid = e.hasOwner, e.uid, e.gid
	b, _ := json.Marshal(r)
	return b
}

func entryFromRecord(ino Ino, b []byte) (*entry, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	e := &entry{
		ino: ino, parent: Ino(r.Parent), name: r.Name, mode: fs.FileMode(r.Mode),
		size: r.Size, mtime: time.Unix(0, r.MtimeNs), target: r.Target, listed: r.Listed,
		onServer: r.OnServer, remote: r.Remote, content: contentState(r.Content),
		base: r.Base, blocks: r.Blocks, rdev: r.Rdev, links: r.Links, nlink: r.Nlink, sino: r.Sino,
		localOnly: r.Local,
	}
	if r.AtimeNs != 0 {
		e.atime = time.Unix(0, r.AtimeNs)
	}
	if r.CtimeNs != 0 {
		e.ctime = time.Unix(0, r.CtimeNs)
	}
	if r.SctimeNs != 0 {
		e.sctime = time.Unix(0, r.SctimeNs)
	}
	e.uid, e.gid, e.hasOwner = r.Uid, r.Gid, r.HasOwner
	return e, nil
}

func u64key(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
