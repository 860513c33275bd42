package cache

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// opKind names one kind of journal operation.
type opKind string

const (
	opPut     opKind = "put"     // upload content of Ino to Path
	opMkdir   opKind = "mkdir"   // Path, Mode
	opRemove  opKind = "remove"  // Path
	opRmdir   opKind = "rmdir"   // Path
	opRename  opKind = "rename"  // Path -> Path2 (DestExpect: what Path2 is expected to hold)
	opSymlink opKind = "symlink" // Path -> Target
	opChmod   opKind = "chmod"   // Path, Mode
	opUtimes  opKind = "utimes"  // Path, MtimeNs, AtimeNs (0: same as mtime)
	opLink    opKind = "link"    // hard link Path -> new name Path2
	opChown   opKind = "chown"   // Path, Owner
	opMknod   opKind = "mknod"   // FIFO, socket or device node Path: Mode (with type), Rdev
	opRelink  opKind = "relink"  // after a put to Path: make Path2 a hard link of it again
)

// op is one journal record: a change the user made that the server has not
// acknowledged yet. Paths are relative to the remote root.
type op struct {
	Seq     uint64      `json:"seq"`
	Kind    opKind      `json:"k"`
	Path    string      `json:"p"`
	Path2   string      `json:"p2,omitempty"`
	Ino     Ino         `json:"i,omitempty"`
	Mode    fs.FileMode `json:"m,omitempty"`
	MtimeNs int64       `json:"t,omitempty"`
	AtimeNs int64       `json:"ta,omitempty"`
	Rdev    uint32      `json:"rd,omitempty"`
	Target  string      `json:"l,omitempty"`
	Owner   *[2]uint32  `json:"ow,omitempty"` // chown: server uid, gid
	// DestExpect: for a rename over an existing file, what the server was
	// expected to have there when the local rename replaced it (nil: no check).
	DestExpect *expect `json:"db,omitempty"`
	// At is when the change was made (unix ns), for status.
	At int64 `json:"at,omitempty"`
	// Tried (puts): the versions earlier attempts sent. Such an attempt may
	// have landed without the mount learning it (the server finishes an
	// upload it has received even when the mount dies or the link drops
	// before the answer), so a retry accepts finding one of them.
	Tried []Version `json:"tr,omitempty"`
	// Temps (puts): the temporary names on the server earlier attempts
	// wrote to. An attempt cut off by a lost link leaves its temporary
	// there; once the put is done (or no longer needed) they are removed.
	Temps []string `json:"tp,omitempty"`

	// writer state, guarded by Store.mu, not persisted
	inflight  bool      // being applied now
	attempts  int       // failed attempts so far
	notBefore time.Time // retry time after a failure
}

func (o *op) String() string {
	switch o.Kind {
	case opRename, opLink, opRelink:
		return fmt.Sprintf("%s %s -> %s", o.Kind, o.Path, o.Path2)
	case opSymlink:
		return fmt.Sprintf("%s %s -> %s", o.Kind, o.Path, o.Target)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Path)
}

// paths returns the paths the operation touches.
func (o *op) paths() []string {
	if o.Path2 != "" {
		return []string{o.Path, o.Path2}
	}
	return []string{o.Path}
}

func encodeOp(o *op) []byte {
	b, _ := json.Marshal(o)
	return b
}

// decodeOp parses a journal record, refusing records that could not have
// been written by this package (so a damaged journal is reported, not replayed).
func decodeOp(b []byte) (*op, error) {
	var o op
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("journal record: %w", err)
	}
	switch o.Kind {
	case opPut, opMkdir, opRemove, opRmdir, opChmod, opUtimes, opMknod:
	case opChown:
		if o.Owner == nil {
			return nil, fmt.Errorf("journal record: chown without owner")
		}
	case opRename, opLink, opRelink:
		if o.Path2 == "" {
			return nil, fmt.Errorf("journal record: %s without destination", o.Kind)
		}
	case opSymlink:
	default:
		return nil, fmt.Errorf("journal record: unknown kind %q", o.Kind)
	}
	if !validRelPath(o.Path) || (o.Path2 != "" && !validRelPath(o.Path2)) {
		return nil, fmt.Errorf("journal record: bad path %q", o.Path)
	}
	return &o, nil
}

// validRelPath reports whether p is a clean, non-empty relative path.
func validRelPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// related reports whether a and b are the same path or one contains the other.
func related(a, b string) bool {
	if a == b || a == "" || b == "" {
		return true
	}
	return isUnder(b, a) || isUnder(a, b)
}

// isUnder reports whether p is below dir (dir + "/" + something), without
// building dir + "/": the writer calls related for every pair of pending
// operations, and paths can be 4 KiB long.
func isUnder(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}
