package conn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// TreeWalker is implemented by remotes that can list a whole tree in one
// streamed round trip. WalkTree calls yield for every entry under the root
// (not the root itself) in pre-order: a directory before its contents, and
// a directory's subtree complete before the next sibling's. Paths are
// relative to the root. prune names directories (base names) whose
// contents are not listed (the directory itself is).
type TreeWalker interface {
	WalkTree(ctx context.Context, prune []string, yield func(path string, fi FileInfo) error) error
}

var (
	_ TreeWalker = (*Client)(nil)
	_ TreeWalker = (*Manager)(nil)
)

// ErrNoTreeWalk: the server has no usable find; walk with SFTP instead.
var ErrNoTreeWalk = errors.New("server cannot list the tree in bulk (no GNU find)")

// WalkTree implements TreeWalker with GNU find over an exec channel: one
// command, NUL-separated records, streamed as find produces them.
func (c *Client) WalkTree(ctx context.Context, prune []string, yield func(string, FileInfo) error) error {
	cmd := findCommand(c.root, prune)
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		code, err := c.Exec(ctx, cmd, nil, pw, &limitedBuffer{buf: &stderr, max: 4096})
		if err == nil && code != 0 && code != 1 {
			// 1: some entries could not be read (permissions), the rest is fine.
			err = fmt.Errorf("%w: find exited %d: %s", ErrNoTreeWalk, code, strings.TrimSpace(stderr.String()))
		}
		pw.CloseWithError(err)
		done <- err
	}()
	rootDev, perr := parseFindStream(pr, yield)
	if perr == nil && rootDev != 0 {
		c.rootDev.Store(rootDev)
	}
	pr.CloseWithError(errors.New("walk stopped"))
	err := <-done
	if perr != nil && !errors.Is(perr, io.ErrClosedPipe) {
		return perr
	}
	return err
}

// WalkTree implements TreeWalker.
func (m *Manager) WalkTree(ctx context.Context, prune []string, yield func(string, FileInfo) error) error {
	c, err := m.current("walk", "")
	if err != nil {
		return err
	}
	return c.WalkTree(ctx, prune, yield)
}

// BulkStater is implemented by remotes that can stat many paths in one
// round trip, with what SFTP's attributes lack (inode number, ctime,
// nanosecond times). StatPaths calls yield for each path that exists
// (root-relative, as given); missing ones are left out.
type BulkStater interface {
	StatPaths(ctx context.Context, paths []string, yield func(path string, fi FileInfo) error) error
}

var (
	_ BulkStater = (*Client)(nil)
	_ BulkStater = (*Manager)(nil)
)

// StatPaths implements BulkStater with GNU find over an exec channel (the
// root's own record first, as for WalkTree: inode numbers only for files
// on its filesystem).
func (c *Client) StatPaths(ctx context.Context, paths []string, yield func(string, FileInfo) error) error {
	if len(paths) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("LC_ALL=C find ")
	b.WriteString(shellQuote(c.root + "/"))
	b.WriteString(" -maxdepth 0 -printf " + findFormat + "; LC_ALL=C find")
	for _, p := range paths {
		if !validRelPath(p) {
			return fmt.Errorf("%w: bad path %q", ErrNoTreeWalk, p)
		}
		b.WriteString(" ")
		b.WriteString(shellQuote(c.root + "/./" + p))
	}
	b.WriteString(" -maxdepth 0 -printf " + strings.Replace(findFormat, "%P", "%p", 1))
	prefix := c.root + "/./"
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		code, err := c.Exec(ctx, b.String(), nil, pw, &limitedBuffer{buf: &stderr, max: 4096})
		if err == nil && code != 0 && code != 1 {
			// 1: some paths are gone.
			err = fmt.Errorf("%w: find exited %d: %s", ErrNoTreeWalk, code, strings.TrimSpace(stderr.String()))
		}
		pw.CloseWithError(err)
		done <- err
	}()
	_, perr := parseFindStreamWith(pr, func(full string) (string, bool) {
		return strings.CutPrefix(full, prefix)
	}, yield)
	pr.CloseWithError(errors.New("stat stopped"))
	err := <-done
	if perr != nil && !errors.Is(perr, io.ErrClosedPipe) {
		return perr
	}
	return err
}

// StatPaths implements BulkStater.
func (m *Manager) StatPaths(ctx context.Context, paths []string, yield func(string, FileInfo) error) error {
	c, err := m.current("stat", "")
	if err != nil {
		return err
	}
	return c.StatPaths(ctx, paths, yield)
}

// validRelPath reports whether p is a clean root-relative path.
func validRelPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsRune(p, 0) {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// findFormat: type, mode, size, mtime, path, symlink target, owner and
// group (numeric), link count, inode, atime, ctime (times with their
// fraction), device.
const findFormat = `'%y\0%m\0%s\0%T@\0%P\0%l\0%U\0%G\0%n\0%i\0%A@\0%C@\0%D\0'`

// findCommand lists root with GNU find: findFormat per entry, each field
// ended by NUL. The first record is the root's own (empty path): its
// device tells which entries are on another filesystem (a mount point
// under the root), whose inode numbers are not reported (parseFindStream).
func findCommand(root string, prune []string) string {
	var b strings.Builder
	b.WriteString("LC_ALL=C find ")
	b.WriteString(shellQuote(root + "/"))
	b.WriteString(" -maxdepth 0 -printf " + findFormat + " && LC_ALL=C find ")
	b.WriteString(shellQuote(root + "/"))
	b.WriteString(" -mindepth 1")
	if len(prune) > 0 {
		b.WriteString(" \\( -type d \\( ")
		for i, p := range prune {
			if i > 0 {
				b.WriteString(" -o ")
			}
			b.WriteString("-name ")
			b.WriteString(shellQuote(p))
		}
		b.WriteString(" \\) -printf " + findFormat + " -prune \\) -o")
	}
	b.WriteString(" -printf " + findFormat)
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// findFields is the number of fields in a find record.
const findFields = 13

// parseFindStream reads find records and yields them. The root's record
// (empty path, first) is not yielded: it returns the root's device
// (rootDev, 0 when the stream had no root record). An entry whose device
// is not the root's, or listed without the root's record, gets Ino 0: a
// filesystem mounted under the root numbers its inodes on its own, and
// two files showing one inode number would be taken for one file.
func parseFindStream(r io.Reader, yield func(string, FileInfo) error) (rootDev uint64, err error) {
	return parseFindStreamWith(r, nil, yield)
}

// parseFindStreamWith is parseFindStream with the path field of each
// record after the root's turned into a root-relative path by rel (nil:
// as it is); a record rel refuses is an error.
func parseFindStreamWith(r io.Reader, rel func(string) (string, bool), yield func(string, FileInfo) error) (rootDev uint64, err error) {
	br := bufio.NewReaderSize(r, 256*1024)
	var fields [findFields]string
	first := true
	for {
		for i := range fields {
			f, err := br.ReadString(0)
			if err != nil {
				if err == io.EOF && i == 0 && f == "" {
					return rootDev, nil
				}
				if err == io.EOF {
					return rootDev, fmt.Errorf("%w: truncated record", ErrNoTreeWalk)
				}
				return rootDev, err
			}
			fields[i] = f[:len(f)-1]
		}
		dev, derr := strconv.ParseUint(fields[12], 10, 64)
		if derr != nil {
			return rootDev, fmt.Errorf("%w: bad device in record %q", ErrNoTreeWalk, strings.Join(fields[:], "|"))
		}
		if fields[4] == "" && first {
			rootDev, first = dev|1<<63, false // never 0 once known
			continue
		}
		first = false
		if rel != nil {
			p, ok := rel(fields[4])
			if !ok {
				return rootDev, fmt.Errorf("%w: path %q outside the root", ErrNoTreeWalk, fields[4])
			}
			fields[4] = p
		}
		p, fi, err := parseFindRecord(fields)
		if err != nil {
			return rootDev, err
		}
		if rootDev != dev|1<<63 {
			fi.Ino = 0
		}
		if err := yield(p, fi); err != nil {
			return rootDev, err
		}
	}
}

// parseFindRecord turns one record's fields into a FileInfo.
func parseFindRecord(f [findFields]string) (string, FileInfo, error) {
	bad := func(what string) (string, FileInfo, error) {
		return "", FileInfo{}, fmt.Errorf("%w: bad %s in record %q", ErrNoTreeWalk, what, strings.Join(f[:], "|"))
	}
	var typ fs.FileMode
	switch f[0] {
	case "f":
	case "d":
		typ = fs.ModeDir
	case "l":
		typ = fs.ModeSymlink
	case "p":
		typ = fs.ModeNamedPipe
	case "s":
		typ = fs.ModeSocket
	case "c":
		typ = fs.ModeDevice | fs.ModeCharDevice
	case "b":
		typ = fs.ModeDevice
	default:
		return bad("type")
	}
	perm, err := strconv.ParseUint(f[1], 8, 32)
	if err != nil || perm > 0o7777 {
		return bad("mode")
	}
	mode := typ | fs.FileMode(perm&0o777)
	if perm&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if perm&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if perm&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return bad("size")
	}
	mtime, ok := parseFindTime(f[3])
	if !ok {
		return bad("mtime")
	}
	p := f[4]
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return bad("path")
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return bad("path")
		}
	}
	fi := FileInfo{Name: p[strings.LastIndexByte(p, '/')+1:], Mode: mode, Size: size, Mtime: mtime}
	if typ == fs.ModeSymlink {
		fi.Target = f[5]
	}
	uid, uerr := strconv.ParseUint(f[6], 10, 32)
	gid, gerr := strconv.ParseUint(f[7], 10, 32)
	if uerr != nil || gerr != nil {
		return bad("owner")
	}
	fi.Uid, fi.Gid, fi.HasOwner = uint32(uid), uint32(gid), true
	nlink, err := strconv.ParseUint(f[8], 10, 32)
	if err != nil {
		return bad("link count")
	}
	ino, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return bad("inode")
	}
	fi.Nlink, fi.Ino = uint32(nlink), ino
	if fi.Atime, ok = parseFindTime(f[10]); !ok {
		return bad("atime")
	}
	if fi.Ctime, ok = parseFindTime(f[11]); !ok {
		return bad("ctime")
	}
	return p, fi, nil
}

// parseFindTime reads find's %T@ form: seconds, a dot and up to nine
// digits of fraction.
func parseFindTime(s string) (time.Time, bool) {
	secStr, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, err := strconv.ParseInt(frac, 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, false
		}
		for i := len(frac); i < 9; i++ {
			n *= 10
		}
		ns = n
	}
	return time.Unix(sec, ns), true
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}
