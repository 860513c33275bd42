package agent

// The upload helper: `remotefs __put` runs ON THE SERVER (the mount uploads
// its own binary there and keeps one or a few of these running, see
// conn.Client.Put) and writes files sent on its stdin (proto/put.go):
// temporary file, fsync, mode and mtime, the check of what the destination
// holds, and the rename, all without a round trip to the client in between.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"remotefs/agent/proto"
)

const putUsage = `usage: remotefs __put

Internal: the upload helper a mount runs on the server. It reads upload
requests on stdin and answers each on stdout (see agent/proto); it
exits at stdin EOF.`

// Put runs the upload helper (`remotefs __put`) on stdin and stdout until
// stdin ends. A malformed command line is an error wrapping ErrUsage.
func Put(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 0 && !(len(args) == 1 && args[0] == "--") {
		return usageErr(putUsage)
	}
	return runPutter(ctx, stdin, stdout)
}

// runPutter serves requests from in until EOF (nil), a malformed stream or
// a failed write to out (an error: the helper exits and the mount stops
// using this session). Each request's outcome, failures included, is a
// reply; the temporary file of a request that fails is removed.
func runPutter(ctx context.Context, in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 256*1024)
	bw := bufio.NewWriterSize(out, 4096)
	proto.WriteHello(bw, uint32(os.Getuid()), uint32(os.Getgid()))
	if err := bw.Flush(); err != nil {
		return err
	}
	for ctx.Err() == nil {
		req, err := proto.ReadRequest(br)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		data := proto.NewDataReader(br)
		rep := putOne(req, data)
		// Whatever happened, the rest of the data is read so the stream
		// stays in step.
		if err := data.Drain(); err != nil {
			return err
		}
		if err := proto.WriteReply(bw, rep); err != nil {
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
func putOne(req proto.Request, data *proto.DataReader) proto.Reply {
	dir := filepath.Dir(req.Dest)
	tmp := filepath.Join(dir, req.Temp)
	if !strings.HasPrefix(req.Temp, proto.TempPrefix) {
		return failed(fmt.Errorf("temporary name %q lacks the %s prefix", req.Temp, proto.TempPrefix))
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
		if src.err != nil && errors.Is(src.err, proto.ErrAborted) {
			return failed(src.err)
		}
		return failed(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := f.Chmod(fs.FileMode(req.Mode) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return failed(err)
	}
	ts := []unix.Timespec{{Sec: req.Mtime, Nsec: int64(req.MtimeNsec)}, {Sec: req.Mtime, Nsec: int64(req.MtimeNsec)}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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

	rep := proto.Reply{Status: proto.StatusLanded, Size: n, Mtime: req.Mtime}
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
	var found *proto.Current
	if rep.Found {
		found = &proto.Current{Mode: cur.Mode(), Size: cur.Size(), Mtime: rep.FoundMtime}
	}
	if req.Check && !proto.Accepts(req, found, n) {
		rep.Status = proto.StatusLandedConflict
		target = filepath.Join(dir, req.Conflict)
	} else if rep.Found && cur.Mode().IsRegular() {
		done, mtime, err := replaceLikeWrite(tmp, req, cur, n)
		if err != nil {
			return failed(err)
		}
		if done {
			landed = true
			os.Remove(tmp)
			rep.Mtime = mtime
			landedStat(&rep, req.Dest, mtime)
			return rep
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		return failed(err)
	}
	landed = true
	landedStat(&rep, target, rep.Mtime)
	return rep
}

// landedStat adds to rep what lstat says of the file that landed at p,
// when it is still the file with mtime (whole seconds): its inode and
// device numbers, ctime, and mtime's nanoseconds. The mount shows them, so
// that programs which remember stat data (git's index) find the server's.
func landedStat(rep *proto.Reply, p string, mtime int64) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mtim.Sec != mtime || st.Size != rep.Size {
		return // changed already: the mount learns the rest from a listing
	}
	rep.MtimeNsec = uint32(st.Mtim.Nsec)
	rep.Ino, rep.Dev = st.Ino, st.Dev
	rep.Ctime, rep.CtimeNsec = st.Ctim.Sec, uint32(st.Ctim.Nsec)
}

// replaceLikeWrite prepares replacing the regular file cur at req.Dest
// with tmp (n bytes) so that it keeps what a write in place keeps:
//
//   - a file the login user may not write is refused with EACCES, as a
//     write would be (unless it already is exactly this upload: an
//     earlier attempt that landed; then done is true);
//   - tmp gets the file's group and its extended attributes (POSIX ACLs
//     are extended attributes too);
//   - a file with more than one hard link, one owned by another user
//     (a rename would give it to the login user), or one whose group or
//     attributes cannot be copied is written in place instead: its
//     content replaced through its own inode (done is true). That write
//     is not atomic: a reader may see it half done, as with any program
//     that writes in place. mtime is the file's mtime after it.
func replaceLikeWrite(tmp string, req proto.Request, cur fs.FileInfo, n int64) (done bool, mtime int64, err error) {
	st, ok := cur.Sys().(*syscall.Stat_t)
	if !ok {
		return false, 0, nil
	}
	sameUpload := cur.Size() == n && cur.ModTime().Unix() == req.Mtime
	if err := unix.Faccessat(unix.AT_FDCWD, req.Dest, unix.W_OK, unix.AT_EACCESS); err != nil {
		if sameUpload {
			return true, req.Mtime, nil
		}
		return false, 0, &fs.PathError{Op: "write", Path: req.Dest, Err: err}
	}
	if st.Nlink > 1 || int(st.Uid) != os.Geteuid() || !copyFileAttrs(tmp, req.Dest, st, fs.FileMode(req.Mode)) {
		mtime, err := writeInPlace(tmp, req)
		return true, mtime, err
	}
	return false, 0, nil
}

// copyFileAttrs gives tmp the group and extended attributes of dest, then
// the mode asked for (a chgrp may clear setuid bits); false when something
// could not be copied.
func copyFileAttrs(tmp, dest string, st *syscall.Stat_t, mode fs.FileMode) bool {
	var tst unix.Stat_t
	if err := unix.Lstat(tmp, &tst); err != nil {
		return false
	}
	if tst.Gid != st.Gid {
		if err := os.Lchown(tmp, -1, int(st.Gid)); err != nil {
			return false
		}
	}
	names, err := listXattrs(dest)
	if err != nil {
		return false
	}
	for _, name := range names {
		val, err := getXattr(dest, name)
		if err != nil {
			return false
		}
		if err := unix.Lsetxattr(tmp, name, val, 0); err != nil {
			return false
		}
	}
	if len(names) == 0 && tst.Gid == st.Gid {
		return true
	}
	return os.Chmod(tmp, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)) == nil
}

func listXattrs(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, b := range bytes.Split(buf[:sz], []byte{0}) {
		if len(b) > 0 {
			names = append(names, string(b))
		}
	}
	return names, nil
}

func getXattr(p, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:sz], nil
}

// writeInPlace copies tmp's content over req.Dest through its own inode,
// sets the mtime (and the mode, where the login user owns the file) and
// fsyncs it. It returns the file's mtime: the one asked for, or the time
// of the write where only the owner may set it.
func writeInPlace(tmp string, req proto.Request) (int64, error) {
	src, err := os.Open(tmp)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := os.OpenFile(req.Dest, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	mtime := req.Mtime
	n, err := io.Copy(dst, src)
	if err == nil {
		err = dst.Truncate(n)
	}
	if err == nil {
		// Only the owner may set times: a file of another user that the
		// login may write keeps the time of the write.
		tv := []unix.Timeval{{Sec: req.Mtime}, {Sec: req.Mtime}}
		if terr := unix.Futimes(int(dst.Fd()), tv); terr == unix.EPERM {
			if fi, serr := dst.Stat(); serr == nil {
				mtime = fi.ModTime().Unix()
			}
		} else if terr != nil {
			err = terr
		}
	}
	if err == nil {
		if fi, serr := dst.Stat(); serr == nil && int(fi.Sys().(*syscall.Stat_t).Uid) == os.Geteuid() {
			dst.Chmod(fs.FileMode(req.Mode) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
		}
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write %s in place: %w", req.Dest, err)
	}
	return mtime, nil
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
func failed(err error) proto.Reply {
	rep := proto.Reply{Status: proto.StatusFailed, Message: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		rep.Errno = uint32(errno)
	}
	return rep
}
