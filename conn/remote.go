package conn

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"time"
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
	// keeping many requests in flight for large reads.
	ReadAt(ctx context.Context, path string, p []byte, off int64) (int, error)
	// Fetch streams the whole file into w and returns the attributes of the
	// file as it was when the read started.
	Fetch(ctx context.Context, path string, w io.Writer) (FileInfo, error)
	// PutAtomic replaces path with size bytes read from r: it writes a
	// temporary file in the same directory (name from TempName), fsyncs it
	// when the server offers fsync@openssh.com, sets mode and mtime, then
	// renames it over path (posix-rename@openssh.com when offered). On any
	// failure the temporary file is removed. It returns the attributes of
	// the new file.
	PutAtomic(ctx context.Context, path string, r io.Reader, mode fs.FileMode, mtime time.Time) (FileInfo, error)
	// Put is PutAtomic with a choice of final name made at the last
	// moment (PutOptions.Dest), after the data is durable on the server.
	// It returns the attributes of the new file and the path it was
	// renamed to.
	Put(ctx context.Context, path string, r io.Reader, o PutOptions) (FileInfo, string, error)
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
	Chtimes(ctx context.Context, path string, atime, mtime time.Time) error
	Truncate(ctx context.Context, path string, size int64) error
	// StatFS reports the filesystem holding path (statvfs@openssh.com);
	// ErrUnsupported when not offered.
	StatFS(ctx context.Context, path string) (StatFS, error)
}

// PutOptions configure Put.
type PutOptions struct {
	Mode  fs.FileMode
	Mtime time.Time // set on the new file (whole seconds)
	// Dest, when set, is called once the data is written and durable, and
	// returns where the temporary file is renamed to: a path in the same
	// folder as Put's path (that path itself, or another name). An error
	// abandons the upload (the temporary file is removed).
	Dest func() (string, error)
	// TempName, when set, is the temporary file's base name (see
	// TempNameAt), replacing any file of that name; otherwise a fresh
	// random name is used.
	TempName string
}

// FileInfo is what the server says about one file. Mtime has the server's
// resolution (whole seconds over SFTP v3).
type FileInfo struct {
	Name   string // base name (ReadDir) or last element of the path
	Mode   fs.FileMode
	Size   int64
	Mtime  time.Time
	Target string // symlink target when known (ReadDir may leave it empty)
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
	// ErrUnsupported: the server lacks the extension the call needs.
	ErrUnsupported = errors.New("not supported by the server")
)

// TempPrefix starts the name of every temporary file an upload creates, so
// leftovers from a crash are recognisable (and hidden/cleaned by the cache).
const TempPrefix = ".remotefs-tmp-"
