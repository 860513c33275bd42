package conn

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"time"

	"remotefs/agent/proto"
)

// Remote is everything the cache needs from the server. All paths are
// slash-separated and relative to the remote root the connection was made
// for ("" or "." is the root itself); an implementation must refuse a path
// that would escape the root ("..", absolute).
//
// Every method honours ctx and also applies the connection's own operation
// deadline, so a call on a dead link returns within a bounded time with an
// error that wraps ErrOffline. Errors wrap the io/fs sentinels where they
// apply (fs.ErrNotExist, fs.ErrExist, fs.ErrPermission) or ErrNotEmpty, so
// callers can use errors.Is.
type Remote interface {
	// Lstat returns the attributes of path without following a final symlink.
	Lstat(ctx context.Context, path string) (FileInfo, error)
	// ReadDir lists a directory (entries are lstat'ed; "." and ".." omitted).
	ReadDir(ctx context.Context, path string) ([]FileInfo, error)
	// ReadLink returns a symlink's target.
	ReadLink(ctx context.Context, path string) (string, error)
	// ReadAt reads len(p) bytes at off like io.ReaderAt (io.EOF at the end),
	// keeping many requests in flight for large reads. It also returns the
	// attributes of the file as it was just after the last byte was read,
	// so the caller can tell which version the bytes belong to. After an
	// error p may still be written for a while (requests of an abandoned
	// read still in flight): the caller does not reuse it then.
	ReadAt(ctx context.Context, path string, p []byte, off int64) (int, FileInfo, error)
	// Fetch streams the whole file into w and returns its attributes. It
	// fails with ErrChanged when the file changed while it was read (the
	// bytes would not be one version of it).
	Fetch(ctx context.Context, path string, w io.Writer) (FileInfo, error)
	// PutAtomic replaces path with size bytes read from r: it writes a
	// temporary file in the same directory (name from TempName), fsyncs it
	// when the server offers fsync@openssh.com, sets mode and mtime, then
	// renames it over path (posix-rename@openssh.com when offered). On any
	// failure the temporary file is removed. It returns the attributes of
	// the new file.
	PutAtomic(ctx context.Context, path string, r io.Reader, mode fs.FileMode, mtime time.Time) (FileInfo, error)
	// Put is PutAtomic with a check made on the server just before the
	// rename, after the data is durable there (PutOptions.Accept): when
	// path holds something not accepted, the file goes to
	// PutOptions.ConflictPath instead and path is left alone. It reports
	// where the file went and what it found at path.
	Put(ctx context.Context, path string, r io.Reader, o PutOptions) (PutResult, error)
	// Mkdir creates one directory.
	Mkdir(ctx context.Context, path string, mode fs.FileMode) error
	// Remove removes a file or symlink; Rmdir an empty directory.
	Remove(ctx context.Context, path string) error
	Rmdir(ctx context.Context, path string) error
	// Rename renames oldpath to newpath, atomically replacing newpath when
	// the server offers posix-rename@openssh.com.
	Rename(ctx context.Context, oldpath, newpath string) error
	// Symlink creates path as a symlink pointing to target.
	Symlink(ctx context.Context, target, path string) error
	// Link creates a hard link; ErrUnsupported when hardlink@openssh.com is
	// not offered.
	Link(ctx context.Context, oldpath, newpath string) error
	Chmod(ctx context.Context, path string, mode fs.FileMode) error
	// Chown sets the numeric owner and group of path (following a final
	// symlink, as SFTP's setstat does).
	Chown(ctx context.Context, path string, uid, gid uint32) error
	Chtimes(ctx context.Context, path string, atime, mtime time.Time) error
	Truncate(ctx context.Context, path string, size int64) error
	// StatFS reports the filesystem holding path (statvfs@openssh.com);
	// ErrUnsupported when not offered.
	StatFS(ctx context.Context, path string) (StatFS, error)
}

// OwnerReporter is implemented by remotes that know the numeric user and
// group the connection logged in as on the server.
type OwnerReporter interface {
	// Owner reports the login user's uid and gid; ok is false while not
	// known (not connected).
	Owner() (uid, gid uint32, ok bool)
}

// PutOptions configure Put.
type PutOptions struct {
	Mode  fs.FileMode
	Mtime time.Time // set on the new file (whole seconds)
	// Accept, when set, is what Put's path may hold and still be replaced;
	// anything else (and always a directory) makes Put rename the new file
	// to ConflictPath instead. Without it the path is replaced whatever it
	// holds (a directory there is an error).
	Accept *PutAccept
	// ConflictPath is where the file goes when Accept refuses what is at
	// the path: a path in the same folder. Required with Accept.
	ConflictPath string
	// TempName, when set, is the temporary file's base name (see
	// TempNameAt), replacing any file of that name; otherwise a fresh
	// random name is used.
	TempName string
}

// PutAccept is what an upload may find at its path and replace. Besides
// these, a regular file of exactly the uploaded size and mtime is always
// accepted (an earlier attempt of the same upload that landed).
type PutAccept struct {
	Absent   bool          // nothing there
	Link     bool          // a symlink
	Versions []FileVersion // a regular file of one of these versions
}

// FileVersion is a regular file's size and mtime in whole seconds.
type FileVersion struct {
	Size  int64
	Mtime int64
}

// PutResult is where Put left the file and what it found.
type PutResult struct {
	// Info: the new file's attributes (the ones just set; through the
	// upload helper also its Ino, Ctime and Mtime with nanoseconds as the
	// server has them after the rename; over SFTP, whole seconds and no
	// Ino or Ctime).
	Info FileInfo
	// Path: Put's path, or PutOptions.ConflictPath when Conflict.
	Path     string
	Conflict bool
	// Found is what was at Put's path just before the rename (nil:
	// nothing); only reported when PutOptions.Accept was set.
	Found *FileInfo
}

// FileInfo is what the server says about one file. Mtime has the server's
// resolution (whole seconds over SFTP v3).
type FileInfo struct {
	Name   string // base name (ReadDir) or last element of the path
	Mode   fs.FileMode
	Size   int64
	Mtime  time.Time
	Target string // symlink target when known (ReadDir may leave it empty)
	// Uid and Gid: the numeric owner and group on the server, when
	// HasOwner (a listing or stat; not the result of an upload).
	Uid, Gid uint32
	HasOwner bool
	// Atime: last access, where the server reports it (SFTP attributes
	// carry it in whole seconds; the bulk listing with nanoseconds).
	Atime time.Time
	// Ctime, Nlink and Ino come only from the bulk listing (the agent's
	// walk or GNU find, and StatMany; Ctime and Ino also from an upload
	// through the helper): SFTP v3
	// attributes carry none of them. Zero when unknown. Ino is the
	// server's inode number, which tells hard links apart from copies;
	// it is 0 for a file on another filesystem than the root (a mount
	// point under it), whose numbers may repeat the root filesystem's.
	Ctime time.Time
	Nlink uint32
	Ino   uint64
}

// Mknoder is implemented by remotes that can create FIFOs, Unix sockets
// and device nodes on the server (SFTP has no such request: it takes a
// command on the server).
type Mknoder interface {
	// Mknod creates path as a node of mode's type (fs.ModeNamedPipe,
	// fs.ModeSocket, fs.ModeDevice [|fs.ModeCharDevice]) with mode's
	// permission bits; dev is the device number (Linux encoding) for
	// device nodes. ErrUnsupported when the server has no way to do it.
	Mknod(ctx context.Context, path string, mode fs.FileMode, dev uint32) error
}

// StatFS mirrors statvfs(3).
type StatFS struct {
	BlockSize, FragmentSize         uint64
	Blocks, BlocksFree, BlocksAvail uint64
	Files, FilesFree                uint64
	NameMax                         uint64
}

var (
	// ErrOffline: the server cannot be reached now (dial failed, link dead,
	// deadline passed). The operation may succeed later.
	ErrOffline = errors.New("server unreachable")
	// ErrNotEmpty: rmdir of a non-empty directory.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrChanged: the file changed on the server while it was read.
	ErrChanged = errors.New("changed on the server while it was read")
	// ErrUnsupported: the server lacks the extension the call needs.
	ErrUnsupported = errors.New("not supported by the server")
)

// TempPrefix starts the name of every temporary file an upload creates, so
// leftovers from a crash are recognisable (and hidden/cleaned by the cache).
const TempPrefix = proto.TempPrefix

// LinkAttrSetter is implemented by remotes that can set a symlink's own
// owner and times, not its target's (lsetstat@openssh.com). Each call
// fails with ErrUnsupported where this connection cannot; HasLinkAttrs
// tells beforehand (false while not connected).
type LinkAttrSetter interface {
	HasLinkAttrs() bool
	Lchown(ctx context.Context, path string, uid, gid uint32) error
	Lchtimes(ctx context.Context, path string, atime, mtime time.Time) error
}
