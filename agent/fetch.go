package agent

// Content of many small files in one stream, for the agent: the tar
// stream conn reads from `tar -cf - -T -` when there is no agent
// (conn/tar.go), with GNU tar's warnings on stderr for files that changed
// while they were read, so one reader handles both.

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Fetch reads root-relative paths from stdin (each ended by NUL) and
// writes a tar stream holding each one that is a regular file. A file
// that cannot be opened is skipped (named on stderr). A file that shrank
// while it was read is padded with zeros to the size in its header, and
// a file whose size, mtime or ctime moved while it was read is named on
// stderr as GNU tar does ("tar: PATH: file changed as we read it"): what
// the stream holds for it may be no version of the file.
func Fetch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "--" {
		return usageErr("usage: fetch -- ROOT")
	}
	root := strings.TrimSuffix(args[1], "/")
	paths, err := readPaths(stdin)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(stdout, 256<<10)
	tw := tar.NewWriter(bw)
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fetchOne(tw, root, p, stderr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// fetchOne writes p to tw, or skips it. Only a failed write is an error.
func fetchOne(tw *tar.Writer, root, p string, stderr io.Writer) error {
	f, err := os.OpenFile(root+"/"+p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		fmt.Fprintf(stderr, "tar: %s: Cannot open: %v\n", p, errnoText(err))
		return nil
	}
	defer f.Close()
	var before unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &before); err != nil || before.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	h := &tar.Header{
		Typeflag: tar.TypeReg, Name: p, Size: before.Size,
		Mode: int64(before.Mode & 0o7777),
		Uid:  int(before.Uid), Gid: int(before.Gid),
		// Whole seconds, as GNU tar writes them (the reader takes seconds).
		ModTime: time.Unix(before.Mtim.Sec, 0),
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	buf := make([]byte, min(before.Size, 256<<10))
	left := before.Size
	for left > 0 {
		n, rerr := f.Read(buf[:min(int64(len(buf)), left)])
		if n > 0 {
			if _, err := tw.Write(buf[:n]); err != nil {
				return err
			}
			left -= int64(n)
		}
		if rerr != nil {
			break
		}
	}
	if left > 0 {
		// It shrank (or a read failed): pad to the size promised.
		shrank := left
		clear(buf)
		for left > 0 {
			n := min(int64(len(buf)), left)
			if _, err := tw.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
		}
		fmt.Fprintf(stderr, "tar: %s: File shrank by %d bytes; padding with zeros\n", p, shrank)
		return nil
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil || after.Size != before.Size ||
		after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		fmt.Fprintf(stderr, "tar: %s: file changed as we read it\n", p)
	}
	return nil
}
