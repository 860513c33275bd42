package main

// The upload helper: `remotefs __put` runs ON THE SERVER (the mount uploads
// its own binary there and keeps one or a few of these running, see
// conn.Client.Put) and writes files sent on its stdin (internal/putproto):
// temporary file, fsync, mode and mtime, the check of what the destination
// holds, and the rename, all without a round trip to the client in between.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"remotefs/conn"
	"remotefs/internal/putproto"
)

const putCommand = conn.PutHelperCommand

const putUsage = `usage: remotefs __put

Internal: the upload helper a mount runs on the server. It reads upload
requests on stdin and answers each on stdout (see internal/putproto); it
exits at stdin EOF.`

// cmdPut runs the upload helper on the server.
func cmdPut(ctx context.Context, args []string) error {
	if len(args) > 0 && !(len(args) == 1 && args[0] == "--") {
		return usagef("%s", putUsage)
	}
	return runPutter(ctx, os.Stdin, os.Stdout)
}

// runPutter serves requests from in until EOF (nil), a malformed stream or
// a failed write to out (an error: the helper exits and the mount stops
// using this session). Each request's outcome, failures included, is a
// reply; the temporary file of a request that fails is removed.
func runPutter(ctx context.Context, in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 256*1024)
	bw := bufio.NewWriterSize(out, 4096)
	bw.WriteString(putproto.Hello)
	if err := bw.Flush(); err != nil {
		return err
	}
	for ctx.Err() == nil {
		req, err := putproto.ReadRequest(br)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		data := putproto.NewDataReader(br)
		rep := putOne(req, data)
		// Whatever happened, the rest of the data is read so the stream
		// stays in step.
		if err := data.Drain(); err != nil {
			return err
		}
		if err := putproto.WriteReply(bw, rep); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// putOne handles one request. Its data may be left partly unread (the
// caller drains it).
func putOne(req putproto.Request, data *putproto.DataReader) putproto.Reply {
	dir := filepath.Dir(req.Dest)
	tmp := filepath.Join(dir, req.Temp)
	if !conn.IsTempName(req.Temp) {
		return failed(fmt.Errorf("temporary name %q lacks the %s prefix", req.Temp, conn.TempPrefix))
	}
	// O_TRUNC: a retry overwrites what a failed attempt of the same upload
	// left under the same name. O_NOFOLLOW: never write through a symlink.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return failed(err)
	}
	landed := false
	defer func() {
		if f != nil {
			f.Close()
		}
		if !landed {
			os.Remove(tmp)
		}
	}()
	src := &readErr{r: data}
	n, err := io.Copy(f, src)
	if err != nil {
		if src.err != nil && errors.Is(src.err, putproto.ErrAborted) {
			return failed(src.err)
		}
		return failed(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := f.Chmod(fs.FileMode(req.Mode) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return failed(err)
	}
	tv := []unix.Timeval{{Sec: req.Mtime}, {Sec: req.Mtime}}
	if err := unix.Futimes(int(f.Fd()), tv); err != nil {
		return failed(fmt.Errorf("set mtime of %s: %w", tmp, err))
	}
	if err := f.Sync(); err != nil {
		return failed(err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return failed(err)
	}

	rep := putproto.Reply{Status: putproto.StatusLanded, Size: n}
	target := req.Dest
	cur, err := os.Lstat(req.Dest)
	switch {
	case err == nil:
		rep.Found = true
		rep.FoundMode = uint32(cur.Mode())
		rep.FoundSize = cur.Size()
		rep.FoundMtime = cur.ModTime().Unix()
		if cur.Mode()&fs.ModeSymlink != 0 {
			rep.FoundTarget, _ = os.Readlink(req.Dest)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return failed(err)
	}
	var found *putproto.Current
	if rep.Found {
		found = &putproto.Current{Mode: cur.Mode(), Size: cur.Size(), Mtime: rep.FoundMtime}
	}
	if req.Check && !putproto.Accepts(req, found, n) {
		rep.Status = putproto.StatusLandedConflict
		target = filepath.Join(dir, req.Conflict)
	}
	if err := os.Rename(tmp, target); err != nil {
		return failed(err)
	}
	landed = true
	return rep
}

// readErr remembers the error of the reader, to tell it from the writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// failed is the reply for err: its errno, when there is one, and its text.
func failed(err error) putproto.Reply {
	rep := putproto.Reply{Status: putproto.StatusFailed, Message: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		rep.Errno = uint32(errno)
	}
	return rep
}
