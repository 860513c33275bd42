package conn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"remotefs/agent/proto"
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

// WalkTree implements TreeWalker with the agent's walk (agent.go), or GNU
// find over an exec channel: one command, NUL-separated records in the
// same format, streamed as they are produced.
func (c *Client) WalkTree(ctx context.Context, prune []string, yield func(string, FileInfo) error) error {
	return c.streamFindRecords(ctx, walkArgv(c.root, c.root, prune), findCommand(c.root, c.root, prune), nil, yield, walkResult)
}

// walkResult turns a walk's exit into its error: ErrNoTreeWalk when the
// caller should list with SFTP instead.
func walkResult(code int, err error, stderr string) error {
	var stopped *agentStopped
	if errors.As(err, &stopped) {
		err = fmt.Errorf("%w: %v", ErrNoTreeWalk, err) // list with SFTP instead
	}
	if err == nil && code != 0 && code != 1 {
		// 1: some entries could not be read (permissions), the rest is fine.
		err = fmt.Errorf("%w: find exited %d: %s", ErrNoTreeWalk, code, strings.TrimSpace(stderr))
	}
	return err
}

// SubtreeWalker is implemented by remotes that can list one folder's
// whole subtree in one streamed round trip, as TreeWalker lists the root's:
// every entry under rel (not rel itself), pre-order, nothing pruned, paths
// relative to the root (so beginning with rel + "/").
type SubtreeWalker interface {
	WalkSubtree(ctx context.Context, rel string, yield func(path string, fi FileInfo) error) error
}

var (
	_ SubtreeWalker = (*Client)(nil)
	_ SubtreeWalker = (*Manager)(nil)
)

// WalkSubtree implements SubtreeWalker like WalkTree, except while the
// agent is being started and sends its binary (the first connection of a
// build): a find over an exec channel of its own would pay the login
// shell the agent's start has been paying since the connection began, a
// second on some servers, for one folder. It fails then with
// ErrNoTreeWalk, and the caller lists the folder over SFTP.
func (c *Client) WalkSubtree(ctx context.Context, rel string, yield func(string, FileInfo) error) error {
	abs, err := c.abs("walk", rel)
	if err != nil {
		return err
	}
	if c.agent.get(ctx, false) == nil && c.agent.starting() {
		return fmt.Errorf("%w: the agent is on its way", ErrNoTreeWalk)
	}
	clean := path.Clean(rel)
	// The first record is still the mount root's: the device rule
	// (parseFindStream) compares with the root's filesystem.
	return c.streamFindRecords(ctx, walkArgv(c.root, abs, nil), findCommand(c.root, abs, nil), nil,
		func(p string, fi FileInfo) error { return yield(path.Join(clean, p), fi) }, walkResult)
}

// WalkSubtree implements SubtreeWalker.
func (m *Manager) WalkSubtree(ctx context.Context, rel string, yield func(string, FileInfo) error) error {
	c, err := m.current("walk", rel)
	if err != nil {
		return err
	}
	return c.WalkSubtree(ctx, rel, yield)
}

// SubtreesWalker is implemented by remotes that can list several folders'
// subtrees in one round trip: every entry below each of rels in turn, as
// SubtreeWalker lists one (pre-order, nothing pruned, paths relative to
// the root), one folder's subtree complete before the next one's, in the
// order given. A folder that is gone or no longer a folder yields
// nothing.
type SubtreesWalker interface {
	WalkSubtrees(ctx context.Context, rels []string, yield func(path string, fi FileInfo) error) error
}

var (
	_ SubtreesWalker = (*Client)(nil)
	_ SubtreesWalker = (*Manager)(nil)
)

// WalkSubtrees implements SubtreesWalker with one request to the agent
// (walkeach). Without a running agent it fails with an error wrapping
// ErrUnsupported (an exec per folder would pay the login shell each
// time): the caller lists each folder on first use instead. It waits for
// an agent being started, even while the start sends the binary (the
// first mount of a build): the folders are listed ahead of use, and
// the agent, started with the connection, is up sooner than anything
// started now could be.
func (c *Client) WalkSubtrees(ctx context.Context, rels []string, yield func(string, FileInfo) error) error {
	var list bytes.Buffer
	for _, p := range rels {
		if _, err := c.abs("walk", p); err != nil || p == "" {
			continue
		}
		list.WriteString(path.Clean(p))
		list.WriteByte(0)
	}
	if list.Len() == 0 {
		return nil
	}
	if c.agent.get(ctx, true) == nil {
		return fmt.Errorf("walk of %d folders on %s: %w: %w", len(rels), c.label, ErrUnsupported, errNoAgent)
	}
	return c.streamFindRecords(ctx, []string{proto.WalkEachCommand, "--", c.root}, "", &list, yield, walkResult)
}

// WalkSubtrees implements SubtreesWalker on the current connection.
func (m *Manager) WalkSubtrees(ctx context.Context, rels []string, yield func(string, FileInfo) error) error {
	c, err := m.current("walk", "")
	if err != nil {
		return err
	}
	return c.WalkSubtrees(ctx, rels, yield)
}

// streamFindRecords runs a helper whose output is find records (argv on
// the agent, else cmd; see runHelper) and yields them as they arrive;
// check turns its exit code, error and stderr into the call's error.
func (c *Client) streamFindRecords(ctx context.Context, argv []string, cmd string, stdin io.Reader,
	yield func(string, FileInfo) error, check func(code int, err error, stderr string) error) error {
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		code, err := c.runHelper(ctx, argv, cmd, stdin, pw, &limitedBuffer{buf: &stderr, max: 4096})
		err = check(code, err, stderr.String())
		pw.CloseWithError(err)
		done <- err
	}()
	rootDev, perr := parseFindStream(pr, yield)
	if rootDev != 0 {
		c.rootDev.Store(rootDev) // for uploads' replies (helperResult)
	}
	pr.CloseWithError(errors.New("listing stopped"))
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

// findFormat: type, mode, size, mtime, path, symlink target, owner and
// group (numeric), link count, inode, atime, ctime (times with their
// fraction), device.
const findFormat = `'%y\0%m\0%s\0%T@\0%P\0%l\0%U\0%G\0%n\0%i\0%A@\0%C@\0%D\0'`

// findCommand lists dir (the mount root top, or a folder under it) with
// GNU find: findFormat per entry, each field ended by NUL, paths relative
// to dir. The first record is top's own (empty path): its device tells
// which entries are on another filesystem (a mount point under the root),
// whose inode numbers are not reported (parseFindStream).
func findCommand(top, dir string, prune []string) string {
	var b strings.Builder
	b.WriteString("LC_ALL=C find ")
	b.WriteString(shellQuote(top + "/"))
	b.WriteString(" -maxdepth 0 -printf " + findFormat + " && LC_ALL=C find ")
	b.WriteString(shellQuote(dir + "/"))
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

// walkArgv is the agent's walk of dir, as findCommand's.
func walkArgv(top, dir string, prune []string) []string {
	argv := []string{proto.WalkCommand}
	for _, p := range prune {
		argv = append(argv, "--prune", p)
	}
	if dir != top {
		argv = append(argv, "--top", top)
	}
	return append(argv, "--", dir)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// findFields is the number of fields in a find record.
const findFields = 13

// parseFindStream reads find records and yields them. The first record,
// with an empty path, is the mount root's own (findCommand, the agent's
// walk and stat all write it first) and is not yielded: it returns the
// root's device (rootDev: tagged with the top bit, so never 0 once known;
// 0 when the stream had no root record). An entry whose device is not the
// root's, or listed without the root's record, gets Ino 0: a filesystem
// mounted under the root numbers its inodes on its own, and two files
// showing one inode number would be taken for one file.
func parseFindStream(r io.Reader, yield func(string, FileInfo) error) (rootDev uint64, err error) {
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
			rootDev, first = dev|1<<63, false
			continue
		}
		first = false
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
