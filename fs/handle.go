package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"remotefs/cache"
)

// handle is an open file or directory.
type handle struct {
	fs  *FS
	h   *cache.Handle
	dir bool
}

var (
	_ fs.Handle             = (*handle)(nil)
	_ fs.HandleReader       = (*handle)(nil)
	_ fs.HandleWriter       = (*handle)(nil)
	_ fs.HandleFlusher      = (*handle)(nil)
	_ fs.HandleReleaser     = (*handle)(nil)
	_ fs.HandleReadDirAller = (*handle)(nil)
	_ fs.NodePoller         = (*node)(nil)
)

func (h *handle) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	h.fs.noteServing()
	return h.fs.listing(ctx, h.h.Ino())
}

func (h *handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	h.fs.noteServing()
	// bazil made resp.Data with room for the read: fill that rather
	// than a second buffer of the same size per request.
	buf := resp.Data[:0]
	if cap(buf) < req.Size {
		buf = make([]byte, req.Size)
	}
	buf = buf[:req.Size]
	n, err := h.h.ReadAtContext(ctx, buf, req.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return h.fs.errno(err)
	}
	if n < len(buf) {
		// A short read tells the kernel the file ends there, and it fills
		// the rest of the page with zeros. When it was told the file is
		// longer (by attributes of another version), those zeros could
		// reach the program: fail the read instead (cache.ErrChanged).
		h.fs.mu.Lock()
		told, ok := h.fs.told[h.h.Ino()]
		h.fs.mu.Unlock()
		if ok && req.Offset+int64(n) < told {
			return h.fs.errno(fmt.Errorf("%w: it is shorter than the kernel was told", cache.ErrChanged))
		}
	}
	resp.Data = buf[:n]
	return nil
}

func (h *handle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	h.fs.noteServing()
	n, err := h.h.WriteAt(req.Data, req.Offset)
	resp.Size = n
	return h.fs.errno(err)
}

func (h *handle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	return h.fs.errno(h.h.Flush())
}

// Poll: files here are always ready (as on a local disk). ENOSYS tells
// the kernel so for good: it stops asking (the Go runtime, for one, adds
// every file it opens to its epoll set, which cost a POLL request each).
func (n *node) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return syscall.ENOSYS
}

func (h *handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	return h.fs.errno(h.h.Release())
}

// direntType is the d_type readdir reports for mode.
func direntType(mode iofs.FileMode) fuse.DirentType {
	switch {
	case mode.IsDir():
		return fuse.DT_Dir
	case mode&iofs.ModeSymlink != 0:
		return fuse.DT_Link
	case mode&iofs.ModeNamedPipe != 0:
		return fuse.DT_FIFO
	case mode&iofs.ModeSocket != 0:
		return fuse.DT_Socket
	case mode&iofs.ModeCharDevice != 0:
		return fuse.DT_Char
	case mode&iofs.ModeDevice != 0:
		return fuse.DT_Block
	}
	return fuse.DT_File
}
