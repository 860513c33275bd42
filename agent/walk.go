package agent

// Listing for the agent: the whole tree's metadata (walk) and a batch of
// lstats (stat), written in the record format of the GNU find command
// conn runs when there is no agent (conn/tree.go, findFormat), so one
// parser reads both:
//
//	TYPE MODE SIZE MTIME PATH TARGET UID GID NLINK INO ATIME CTIME DEV
//
// each field ended by NUL: TYPE is find's %y letter (f d l p s c b),
// MODE the permission bits in octal (%m), times seconds.nanoseconds,
// PATH relative to the root, TARGET a symlink's target (else empty), DEV
// the device number (%D) in decimal. The first record of each output is
// the mount root's own, with an empty path: conn compares each entry's
// device with it and trusts the inode numbers of entries on the root's
// filesystem only.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"remotefs/agent/proto"
)

// errSomeUnreadable: some entries could not be read (find's exit status
// 1); the rest of the output is right.
var errSomeUnreadable = errors.New("some entries could not be read")

// Walk writes a record for every entry under the root named in args, in
// pre-order (a directory before its contents, its subtree complete before
// the next sibling), like `find ROOT/ -mindepth 1`: directories whose base
// name matches a --prune glob are written but not entered, and symlinks
// are not followed (the root itself is). Before them it writes the
// record of --top (the mount root, when ROOT is a folder under it; else
// ROOT) with an empty path. Folders it cannot read are named on stderr
// and the result is errSomeUnreadable.
func Walk(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet(proto.WalkCommand, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var prune stringList
	fl.Var(&prune, "prune", "base-name glob of directories listed but not entered (repeatable)")
	top := fl.String("top", "", "the mount root, whose record comes first (default ROOT)")
	if err := fl.Parse(args); err != nil || fl.NArg() != 1 {
		return usageErr("usage: walk [--prune GLOB]... [--top DIR] -- ROOT")
	}
	for _, g := range prune {
		if _, err := path.Match(g, ""); err != nil {
			return usageErr(fmt.Sprintf("bad --prune pattern %q", g))
		}
	}
	w := &walker{ctx: ctx, root: strings.TrimSuffix(fl.Arg(0), "/"), prune: prune,
		out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr}
	if *top == "" {
		*top = w.root
	}
	if err := w.writeTop(*top); err != nil {
		return err
	}
	if err := w.dir(""); err != nil {
		return err
	}
	return w.end()
}

type walker struct {
	ctx        context.Context
	root       string
	prune      []string
	out        *bufio.Writer
	stderr     io.Writer
	unreadable bool
	rec        []byte
}

// end flushes the output; errSomeUnreadable when some folders could not
// be read.
func (w *walker) end() error {
	if err := w.out.Flush(); err != nil {
		return err
	}
	if w.unreadable {
		return errSomeUnreadable
	}
	return nil
}

func (w *walker) abs(rel string) string {
	if rel == "" {
		return w.root + "/"
	}
	return w.root + "/" + rel
}

// dir writes rel's entries and their subtrees.
func (w *walker) dir(rel string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	d, err := os.Open(w.abs(rel))
	if err != nil {
		w.unreadable = true
		fmt.Fprintf(w.stderr, "walk: %s: %v\n", w.abs(rel), errnoText(err))
		return nil
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		w.unreadable = true
		fmt.Fprintf(w.stderr, "walk: %s: %v\n", w.abs(rel), errnoText(err))
	}
	for _, name := range names {
		p := joinRel(rel, name)
		var st unix.Stat_t
		if err := unix.Lstat(w.abs(p), &st); err != nil {
			if !errors.Is(err, unix.ENOENT) { // removed meanwhile: not there
				w.unreadable = true
				fmt.Fprintf(w.stderr, "walk: %s: %v\n", w.abs(p), err)
			}
			continue
		}
		if err := w.write(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && !w.pruned(name) {
			if err := w.dir(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *walker) pruned(name string) bool {
	for _, g := range w.prune {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// writeTop writes the record of top (followed when a symlink, as find
// follows ROOT/), with an empty path; nothing when it cannot be stat'ed
// (conn then reports no inode numbers).
func (w *walker) writeTop(top string) error {
	var st unix.Stat_t
	if err := unix.Stat(strings.TrimSuffix(top, "/")+"/", &st); err != nil {
		return nil
	}
	w.rec = appendRecord(w.rec[:0], "", "", &st)
	_, err := w.out.Write(w.rec)
	return err
}

// write writes one record.
func (w *walker) write(rel string, st *unix.Stat_t) error {
	target := ""
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		target, _ = os.Readlink(w.abs(rel))
	}
	w.rec = appendRecord(w.rec[:0], rel, target, st)
	_, err := w.out.Write(w.rec)
	return err
}

// appendRecord appends rel's record to b.
func appendRecord(b []byte, rel, target string, st *unix.Stat_t) []byte {
	field := func(s string) { b = append(append(b, s...), 0) }
	num := func(v uint64, base int) { b = append(strconv.AppendUint(b, v, base), 0) }
	tm := func(ts unix.Timespec) {
		b = strconv.AppendInt(b, ts.Sec, 10)
		b = append(b, '.')
		ns := strconv.FormatInt(ts.Nsec, 10)
		b = append(append(b, "000000000"[len(ns):]...), ns...)
		b = append(b, 0)
	}
	field(findType(st.Mode))
	num(uint64(st.Mode&0o7777), 8)
	num(uint64(st.Size), 10)
	tm(st.Mtim)
	field(rel)
	field(target)
	num(uint64(st.Uid), 10)
	num(uint64(st.Gid), 10)
	num(uint64(st.Nlink), 10)
	num(st.Ino, 10)
	tm(st.Atim)
	tm(st.Ctim)
	num(st.Dev, 10)
	return b
}

// findType is find's %y letter for a mode.
func findType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "d"
	case unix.S_IFLNK:
		return "l"
	case unix.S_IFIFO:
		return "p"
	case unix.S_IFSOCK:
		return "s"
	case unix.S_IFCHR:
		return "c"
	case unix.S_IFBLK:
		return "b"
	}
	return "f"
}

func errnoText(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readPaths reads root-relative paths, each ended by NUL, from r; those
// that are not clean relative paths are dropped.
func readPaths(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for {
		p, err := br.ReadString(0)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		p = p[:len(p)-1]
		if p != "" && proto.ValidRel(p) {
			out = append(out, p)
		}
	}
}

// WalkEach reads root-relative folder paths from stdin (each ended by NUL)
// and writes the root's record (empty path), then, for each folder in
// the order given, a record for every entry below it in pre-order, as
// Walk writes a tree (nothing pruned, symlinks not followed, paths
// relative to ROOT), one folder's subtree complete before the next. A
// path that is not a folder (gone, or a symlink now) gets nothing. The
// mount lists the folders its tree listing pruned (node_modules,
// __pycache__) this way, all in one round trip.
func WalkEach(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "--" {
		return usageErr("usage: " + proto.WalkEachCommand + " -- ROOT")
	}
	dirs, err := readPaths(stdin)
	if err != nil {
		return err
	}
	w := &walker{ctx: ctx, root: strings.TrimSuffix(args[1], "/"), out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr}
	if err := w.writeTop(w.root); err != nil {
		return err
	}
	for _, d := range dirs {
		var st unix.Stat_t
		if err := unix.Lstat(w.abs(d), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err := w.dir(d); err != nil {
			return err
		}
	}
	return w.end()
}

// Stat reads root-relative paths from stdin (each ended by NUL) and writes
// the root's record (empty path), then a record for each path that exists
// (lstat), with the path as given.
func Stat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "--" {
		return usageErr("usage: stat -- ROOT")
	}
	paths, err := readPaths(stdin)
	if err != nil {
		return err
	}
	w := &walker{ctx: ctx, root: strings.TrimSuffix(args[1], "/"), out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr}
	if err := w.writeTop(w.root); err != nil {
		return err
	}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(w.abs(p), &st); err != nil {
			continue
		}
		if err := w.write(p, &st); err != nil {
			return err
		}
	}
	return w.out.Flush()
}
