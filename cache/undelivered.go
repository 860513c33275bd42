package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"remotefs/conn"
)

// Undeliverable changes. The checks made before a change is accepted
// (names, owners and modes) can be overtaken: the server's copy made
// read-only after the file was opened, a name its disk will not take. When
// the server refuses a journal operation for good, it is set aside instead
// of being retried forever and blocking the changes queued after it:
//
//   - the operation leaves the journal;
//   - the content of a file it would have uploaded is kept in the cache
//     directory, under undelivered/SEQ-NAME, with SEQ-NAME.json saying
//     which file it was, what the operation was, why the server refused it
//     and when (Undelivered);
//   - the mount shows the server's state of the paths again (their
//     folders are listed anew);
//   - Status lists what was set aside, and Flush fails naming each file,
//     the reason and where its content is, until the user takes it back
//     (`remotefs cache rescue`, which reads and empties the same folder,
//     mounted or not).
//
// Permanent refusals (permanentRefusal): permission denied (EACCES,
// EPERM), a name or path the server cannot take (ENAMETOOLONG, EINVAL,
// which OpenSSH answers for an over-long name), a read-only filesystem
// (EROFS), a folder that no longer exists or is not a folder (ENOENT,
// ENOTDIR) for an upload. A full disk or quota (ENOSPC, EDQUOT), a lost
// link and anything else unknown are retried as before: waiting may fix
// them.

// UndeliveredDir is the folder of a cache directory that holds the
// changes the server refused for good.
const UndeliveredDir = "undelivered"

// ErrUndelivered is wrapped by Flush's error when changes were set aside.
var ErrUndelivered = errors.New("changes the server refused were set aside")

// Undelivered is one change the server refused for good.
type Undelivered struct {
	Seq    uint64    `json:"seq"`            // the journal operation's number: later is higher
	Path   string    `json:"path"`           // the file or folder, relative to the remote root
	Op     string    `json:"op"`             // what the change was, e.g. "put a/b.txt"
	Reason string    `json:"reason"`         // the server's refusal
	At     time.Time `json:"at"`             // when it was set aside
	Kept   string    `json:"kept,omitempty"` // the file holding the content (absolute), if any
	// Record is the .json file describing it (absolute).
	Record string `json:"record"`
}

// permanentRefusal reports whether err, from applying o, is a refusal the
// server will repeat whatever the mount does.
func permanentRefusal(o *op, err error) bool {
	if errors.Is(err, conn.ErrOffline) || errors.Is(err, ErrOffline) {
		return false
	}
	var en syscall.Errno
	if !errors.As(err, &en) {
		switch {
		case errors.Is(err, fs.ErrPermission):
			return true
		case errors.Is(err, fs.ErrInvalid):
			return true
		case errors.Is(err, fs.ErrNotExist):
			return o.Kind == opPut
		}
		return false
	}
	switch en {
	case syscall.EACCES, syscall.EPERM, syscall.ENAMETOOLONG, syscall.EINVAL, syscall.EROFS:
		return true
	case syscall.ENOENT, syscall.ENOTDIR:
		return o.Kind == opPut
	}
	return false
}

// setAsideLocked takes o out of the journal for good after the server
// refused it with err: its content is kept, the refusal recorded, and the
// paths it touched shown as the server has them. Caller holds mu.
func (s *Store) setAsideLocked(o *op, err error) {
	dir := filepath.Join(s.opts.Dir, UndeliveredDir)
	name := strconv.FormatUint(o.Seq, 10) + "-" + sanitizeKeptName(path.Base(o.Path))
	u := Undelivered{Seq: o.Seq, Path: o.Path, Op: o.String(), Reason: refusalText(o, err), At: s.now().UTC().Truncate(time.Second),
		Record: filepath.Join(dir, name+".json")}
	if o.Kind == opPut && o.Path2 == "" {
		if e := s.entries[o.Ino]; e != nil && e.content == contentDirty {
			kept := filepath.Join(dir, name)
			if cerr := os.MkdirAll(dir, 0o700); cerr != nil {
				s.log.Error("cannot keep an undeliverable file; it stays in the journal", "path", o.Path, "err", cerr)
				return
			}
			// A hard link is instant (same filesystem), where a copy under
			// mu would stall every request for a large file. A file still
			// open for writing is copied: its later writes go to the same
			// content file and are not part of the refused save.
			cerr := errors.ErrUnsupported
			if e.writers == 0 {
				cerr = os.Link(s.contentPath(e.ino), kept)
			}
			if cerr != nil {
				cerr = copyFile(s.contentPath(e.ino), kept)
			}
			if cerr != nil {
				s.log.Error("cannot keep an undeliverable file; it stays in the journal", "path", o.Path, "err", cerr)
				os.Remove(kept)
				return
			}
			u.Kept = kept
		}
	}
	b, _ := json.MarshalIndent(u, "", "  ")
	werr := os.MkdirAll(dir, 0o700)
	if werr == nil {
		werr = writeFileDurably(u.Record, append(b, '\n'))
	}
	if werr != nil {
		s.log.Error("cannot record an undeliverable change; it stays in the journal", "op", o.String(), "err", werr)
		if u.Kept != "" {
			os.Remove(u.Kept)
		}
		return
	}
	s.log.Warn("the server refused a change for good; set aside", "op", o.String(), "reason", u.Reason, "kept", u.Kept)
	s.jr.remove(o)
	s.showServerStateLocked(o)
	if err := s.commitDoneLocked(o.Seq); err != nil {
		s.log.Error("remove a refused op from the journal", "op", o.String(), "err", err)
	}
}

// showServerStateLocked makes the paths o touched show the server's state
// again: the file's local content (kept aside) is dropped, and the folders
// are listed anew on their next use. Caller holds mu.
func (s *Store) showServerStateLocked(o *op) {
	if e := s.entries[o.Ino]; o.Kind == opPut && e != nil && e.content == contentDirty {
		if e.writers == 0 {
			s.dropSetAsideLocked(e)
		} else {
			// Still open for writing: dropped at the last close, unless
			// that close queues another upload (set aside in its turn).
			e.setAside = true
		}
	}
	s.relistParentsLocked(o.paths())
}

// dropSetAsideLocked forgets the local content of a file whose upload was
// set aside (it is kept in undelivered/), so the server's version shows.
// Caller holds mu.
func (s *Store) dropSetAsideLocked(e *entry) {
	os.Remove(s.contentPath(e.ino))
	e.content, e.blocks, e.base, e.setAside = contentNone, nil, expect{}, false
	e.remote, e.checked = Version{}, 0
	s.forgetContentLocked(e)
	s.dirtyIno[e.ino] = true
	s.newEpochLocked(e) // handles reading it move on; the kernel drops its pages
	if p := s.pathOf(e); p != "" {
		s.relistParentsLocked([]string{p})
	}
}

// relistParentsLocked makes the folders holding paths, and their
// ancestors (one of them may be a folder the server refused to create,
// kept while changes inside it were pending), be listed anew on their next
// use. Caller holds mu.
func (s *Store) relistParentsLocked(paths []string) {
	for _, p := range paths {
		for child := p; child != ""; {
			parent := path.Dir(child)
			if parent == "." {
				parent = ""
			}
			if _, d, err := s.lookupPathLocked(parent); err == nil && d != nil && d.isDir() {
				d.listed = false
				s.dirtyIno[d.ino] = true
				s.notifyLocked(Invalidation{Dir: d.ino, Name: path.Base(child)})
			}
			child = parent
		}
	}
}

// refusalText is the server's reason, without repeating the operation.
func refusalText(o *op, err error) string {
	msg := err.Error()
	for _, prefix := range []string{o.String() + ": ", string(o.Kind) + " " + o.Path + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

// sanitizeKeptName keeps a file name usable in the cache folder.
func sanitizeKeptName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// writeFileDurably writes p through a temporary file, fsynced and renamed.
func writeFileDurably(p string, data []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ReadUndelivered lists the changes set aside in the cache directory dir,
// in the order they were made. It needs no open Store (remotefs cache rescue uses it while
// the cache is mounted or not).
func ReadUndelivered(dir string) ([]Undelivered, error) {
	d := filepath.Join(dir, UndeliveredDir)
	ents, err := os.ReadDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Undelivered
	for _, ent := range ents {
		if !strings.HasSuffix(ent.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, ent.Name()))
		if err != nil {
			continue
		}
		var u Undelivered
		if json.Unmarshal(b, &u) != nil {
			continue
		}
		// The folder may have moved with the cache: trust its own place.
		u.Record = filepath.Join(d, ent.Name())
		if u.Kept != "" {
			u.Kept = filepath.Join(d, strings.TrimSuffix(ent.Name(), ".json"))
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// Undelivered lists the changes this store's cache directory holds aside.
func (s *Store) Undelivered() []Undelivered {
	u, err := ReadUndelivered(s.opts.Dir)
	if err != nil {
		s.log.Warn("reading the undelivered changes", "err", err)
	}
	return u
}

// undeliveredError is Flush's error when changes are set aside.
func undeliveredError(us []Undelivered) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d change(s) the server refused were set aside, not delivered:", len(us))
	for _, u := range us {
		fmt.Fprintf(&b, "\n  %s: %s", u.Op, u.Reason)
		if u.Kept != "" {
			fmt.Fprintf(&b, "; content kept in %s", u.Kept)
		}
	}
	b.WriteString("\nget the content back with: remotefs cache rescue MOUNTPOINT|HOST:PATH DEST_FOLDER")
	return fmt.Errorf("%w", &undeliveredErr{msg: b.String()})
}

type undeliveredErr struct{ msg string }

func (e *undeliveredErr) Error() string { return e.msg }
func (e *undeliveredErr) Unwrap() error { return ErrUndelivered }
