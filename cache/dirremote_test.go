package cache

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/testenv"
)

// dirRemote is a conn.Remote backed by a local directory, with switches
// to take it offline and to make uploads fail, for deterministic tests.
type dirRemote struct {
	root     string
	offline  atomic.Bool
	puts     atomic.Int64
	renames  atomic.Int64
	readDirs atomic.Int64
	lstats   atomic.Int64
	// subtreeWalks: WalkSubtree calls (treeRemote); subtreesWalks:
	// WalkSubtrees calls (subtreesRemote)
	subtreeWalks, subtreesWalks atomic.Int64
	// dropOnRename: the next Rename finds the link gone (the remote goes
	// offline and the rename is not done).
	dropOnRename atomic.Bool
	// noLinks: a server without hard links (Link is ErrUnsupported).
	noLinks atomic.Bool
	// inPlace: an upload over a file with more than one hard link writes
	// through its inode, as the upload helper does (agent/put.go), so
	// every name of the file changes.
	inPlace    atomic.Bool
	ownerCalls atomic.Int64
	fetches    atomic.Int64 // Fetch calls (whole files, one at a time)

	mu      sync.Mutex
	putErr  error         // returned by PutAtomic when set
	putGate chan struct{} // when set, PutAtomic waits for it
	gated   atomic.Int64  // puts that have reached putGate
	// lstatHook, when set, sees every Lstat's answer and returns the one
	// given (to stage a stat that races another).
	lstatHook func(p string, fi conn.FileInfo, err error) (conn.FileInfo, error)
	// landThenFail: the next Put lands, then fails as if the answer was
	// lost with the link, and later puts wait for putGate (set to it).
	landThenFail chan struct{}
	// refuse: paths whose uploads the server refuses with this error.
	refuse map[string]error
}

var _ conn.Remote = (*dirRemote)(nil)

// refused is the error the server gives op on p, if it refuses it.
func (r *dirRemote) refused(op, p string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refuse[p]; err != nil {
		return &fs.PathError{Op: op, Path: p, Err: err}
	}
	return nil
}

// Owner implements conn.OwnerReporter: the test process's ids.
func (r *dirRemote) Owner() (uid, gid uint32, ok bool) {
	r.ownerCalls.Add(1)
	return uint32(os.Getuid()), uint32(os.Getgid()), true
}

func (r *dirRemote) p(rel string) string { return filepath.Join(r.root, filepath.FromSlash(rel)) }

func (r *dirRemote) check() error {
	if r.offline.Load() {
		return fmt.Errorf("dial: %w", conn.ErrOffline)
	}
	return nil
}

func mapErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.ENOTEMPTY {
		return conn.ErrNotEmpty
	}
	return err
}

func infoOf(name string, fi os.FileInfo, target string) conn.FileInfo {
	return conn.FileInfo{Name: name, Mode: fi.Mode(), Size: fi.Size(), Mtime: fi.ModTime().Truncate(time.Second), Target: target}
}

func (r *dirRemote) Lstat(ctx context.Context, p string) (conn.FileInfo, error) {
	r.lstats.Add(1)
	if err := r.check(); err != nil {
		return conn.FileInfo{}, err
	}
	fi, err := r.lstat(p)
	r.mu.Lock()
	hook := r.lstatHook
	r.mu.Unlock()
	if hook != nil {
		return hook(p, fi, err)
	}
	return fi, err
}

func (r *dirRemote) lstat(p string) (conn.FileInfo, error) {
	fi, err := os.Lstat(r.p(p))
	if err != nil {
		return conn.FileInfo{}, err
	}
	t, _ := os.Readlink(r.p(p))
	return infoOf(filepath.Base(p), fi, t), nil
}

func (r *dirRemote) ReadDir(ctx context.Context, p string) ([]conn.FileInfo, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	r.readDirs.Add(1)
	return r.readDir(p)
}

// readDir lists without counting (the bulk listing's own reads).
func (r *dirRemote) readDir(p string) ([]conn.FileInfo, error) {
	ents, err := os.ReadDir(r.p(p))
	if err != nil {
		return nil, err
	}
	var out []conn.FileInfo
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		t, _ := os.Readlink(filepath.Join(r.p(p), e.Name()))
		out = append(out, infoOf(e.Name(), fi, t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *dirRemote) ReadLink(ctx context.Context, p string) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	return os.Readlink(r.p(p))
}

func (r *dirRemote) ReadAt(ctx context.Context, p string, b []byte, off int64) (int, conn.FileInfo, error) {
	if err := r.check(); err != nil {
		return 0, conn.FileInfo{}, err
	}
	f, err := os.Open(r.p(p))
	if err != nil {
		return 0, conn.FileInfo{}, err
	}
	defer f.Close()
	n, err := f.ReadAt(b, off)
	fi, serr := f.Stat()
	if serr != nil {
		return 0, conn.FileInfo{}, serr
	}
	return n, infoOf(filepath.Base(p), fi, ""), err
}

func (r *dirRemote) Fetch(ctx context.Context, p string, w io.Writer) (conn.FileInfo, error) {
	r.fetches.Add(1)
	if err := r.check(); err != nil {
		return conn.FileInfo{}, err
	}
	f, err := os.Open(r.p(p))
	if err != nil {
		return conn.FileInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return conn.FileInfo{}, err
	}
	if _, err := io.Copy(w, f); err != nil {
		return conn.FileInfo{}, err
	}
	return infoOf(filepath.Base(p), fi, ""), nil
}

func (r *dirRemote) PutAtomic(ctx context.Context, p string, src io.Reader, mode fs.FileMode, mtime time.Time) (conn.FileInfo, error) {
	if err := r.check(); err != nil {
		return conn.FileInfo{}, err
	}
	r.mu.Lock()
	gate, perr := r.putGate, r.putErr
	r.mu.Unlock()
	if gate != nil {
		r.gated.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return conn.FileInfo{}, ctx.Err()
		}
	}
	if perr != nil {
		return conn.FileInfo{}, perr
	}
	tmp := filepath.Join(filepath.Dir(r.p(p)), conn.TempPrefix+"test-"+filepath.Base(p))
	if st, err := os.Stat(r.p(p)); err == nil && r.inPlace.Load() && st.Sys().(*syscall.Stat_t).Nlink > 1 {
		tmp = r.p(p)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return conn.FileInfo{}, err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		os.Remove(tmp)
		return conn.FileInfo{}, err
	}
	f.Close()
	os.Chmod(tmp, mode)
	os.Chtimes(tmp, mtime, mtime)
	if tmp != r.p(p) { // else written in place
		if err := os.Rename(tmp, r.p(p)); err != nil {
			os.Remove(tmp)
			return conn.FileInfo{}, err
		}
	}
	r.puts.Add(1)
	return r.Lstat(ctx, p)
}

func (r *dirRemote) Put(ctx context.Context, p string, src io.Reader, o conn.PutOptions) (conn.PutResult, error) {
	if o.Accept == nil {
		fi, err := r.PutAtomic(ctx, p, src, o.Mode, o.Mtime)
		return conn.PutResult{Info: fi, Path: p}, err
	}
	r.mu.Lock()
	gate := r.putGate
	r.mu.Unlock()
	if gate != nil {
		r.gated.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return conn.PutResult{}, ctx.Err()
		}
	}
	// Like the real client: the data first, then a look at the path just
	// before the rename, so a check made meanwhile sees the server before
	// the rename.
	var buf strings.Builder
	if _, err := io.Copy(&buf, src); err != nil {
		return conn.PutResult{}, err
	}
	if err := r.check(); err != nil {
		return conn.PutResult{}, err
	}
	if err := r.refused("put", p); err != nil {
		return conn.PutResult{}, err
	}
	res := conn.PutResult{Path: p}
	cur, err := r.Lstat(ctx, p)
	switch {
	case err == nil:
		res.Found = &cur
	case !errors.Is(err, fs.ErrNotExist):
		return conn.PutResult{}, err
	}
	if !putAccepts(o, res.Found, int64(buf.Len())) {
		res.Path, res.Conflict = o.ConflictPath, true
	}
	fi, err := r.PutAtomic(ctx, res.Path, strings.NewReader(buf.String()), o.Mode, o.Mtime)
	if err != nil {
		return conn.PutResult{}, err
	}
	r.mu.Lock()
	if gate := r.landThenFail; gate != nil {
		r.landThenFail, r.putGate = nil, gate
		r.mu.Unlock()
		return conn.PutResult{}, fmt.Errorf("put %s: answer lost: %w", p, conn.ErrOffline)
	}
	r.mu.Unlock()
	res.Info = fi
	return res, nil
}

// putAccepts is conn.PutAccept's rule: what may be replaced.
func putAccepts(o conn.PutOptions, cur *conn.FileInfo, size int64) bool {
	a := o.Accept
	switch {
	case cur == nil:
		return a.Absent
	case cur.Mode.IsDir():
		return false
	case cur.Mode&fs.ModeSymlink != 0:
		return a.Link
	}
	v := conn.FileVersion{Size: cur.Size, Mtime: cur.Mtime.Unix()}
	if v == (conn.FileVersion{Size: size, Mtime: o.Mtime.Unix()}) {
		return true
	}
	for _, w := range a.Versions {
		if w == v {
			return true
		}
	}
	return false
}

func (r *dirRemote) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	if err := r.check(); err != nil {
		return err
	}
	if err := r.refused("mkdir", p); err != nil {
		return err
	}
	return os.Mkdir(r.p(p), mode)
}

func (r *dirRemote) Remove(ctx context.Context, p string) error {
	if err := r.check(); err != nil {
		return err
	}
	return syscall.Unlink(r.p(p))
}

func (r *dirRemote) Rmdir(ctx context.Context, p string) error {
	if err := r.check(); err != nil {
		return err
	}
	err := syscall.Rmdir(r.p(p))
	if errors.Is(err, syscall.ENOENT) {
		return fs.ErrNotExist
	}
	return mapErr(err)
}

func (r *dirRemote) Rename(ctx context.Context, a, b string) error {
	if r.dropOnRename.CompareAndSwap(true, false) {
		r.offline.Store(true)
	}
	if err := r.check(); err != nil {
		return err
	}
	r.renames.Add(1)
	return os.Rename(r.p(a), r.p(b))
}

func (r *dirRemote) Symlink(ctx context.Context, target, p string) error {
	if err := r.check(); err != nil {
		return err
	}
	return os.Symlink(target, r.p(p))
}

func (r *dirRemote) Link(ctx context.Context, a, b string) error {
	if err := r.check(); err != nil {
		return err
	}
	if r.noLinks.Load() {
		return &fs.PathError{Op: "link", Path: a, Err: conn.ErrUnsupported}
	}
	return os.Link(r.p(a), r.p(b))
}

func (r *dirRemote) Chmod(ctx context.Context, p string, mode fs.FileMode) error {
	if err := r.check(); err != nil {
		return err
	}
	return os.Chmod(r.p(p), mode)
}

func (r *dirRemote) Chown(ctx context.Context, p string, uid, gid uint32) error {
	if err := r.check(); err != nil {
		return err
	}
	return os.Chown(r.p(p), int(uid), int(gid))
}

func (r *dirRemote) Chtimes(ctx context.Context, p string, a, m time.Time) error {
	if err := r.check(); err != nil {
		return err
	}
	return os.Chtimes(r.p(p), a, m)
}

func (r *dirRemote) Truncate(ctx context.Context, p string, size int64) error {
	if err := r.check(); err != nil {
		return err
	}
	return os.Truncate(r.p(p), size)
}

func (r *dirRemote) StatFS(ctx context.Context, p string) (conn.StatFS, error) {
	if err := r.check(); err != nil {
		return conn.StatFS{}, err
	}
	return conn.StatFS{BlockSize: 4096, NameMax: 255}, nil
}

// treeRemote adds a bulk listing (in find's pre-order) to dirRemote.
type treeRemote struct {
	*dirRemote
	slow time.Duration // pause after each entry, to watch a stream in progress
}

func (r treeRemote) WalkTree(ctx context.Context, prune []string, yield func(string, conn.FileInfo) error) error {
	return r.walkFrom("", prune, yield)
}

// WalkSubtree implements conn.SubtreeWalker, counted in subtreeWalks.
func (r treeRemote) WalkSubtree(ctx context.Context, rel string, yield func(string, conn.FileInfo) error) error {
	r.subtreeWalks.Add(1)
	return r.walkFrom(rel, nil, yield)
}

func (r treeRemote) walkFrom(top string, prune []string, yield func(string, conn.FileInfo) error) error {
	if err := r.check(); err != nil {
		return err
	}
	var walk func(rel string) error
	walk = func(rel string) error {
		infos, err := r.readDir(rel)
		if err != nil {
			return err
		}
		for _, fi := range infos {
			p := fi.Name
			if rel != "" {
				p = rel + "/" + fi.Name
			}
			if err := yield(p, fi); err != nil {
				return err
			}
			time.Sleep(r.slow)
			pruned := false
			for _, q := range prune { // globs, as the agent's walk takes them
				ok, _ := filepath.Match(q, fi.Name)
				pruned = pruned || ok
			}
			if fi.Mode.IsDir() && !pruned {
				if err := walk(p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(top)
}

// subtreesRemote adds conn.SubtreesWalker to treeRemote (the agent's
// walkeach): several folders' subtrees in one call.
type subtreesRemote struct{ treeRemote }

// WalkSubtrees implements conn.SubtreesWalker, counted in subtreesWalks.
func (r subtreesRemote) WalkSubtrees(ctx context.Context, rels []string, yield func(string, conn.FileInfo) error) error {
	r.subtreesWalks.Add(1)
	if err := r.check(); err != nil {
		return err
	}
	for _, rel := range rels {
		if fi, err := os.Lstat(r.p(rel)); err != nil || !fi.IsDir() {
			continue
		}
		if err := r.walkFrom(rel, nil, yield); err != nil {
			return err
		}
	}
	return nil
}

// FetchFiles streams files the way tar over ssh does, via archive/tar.
func (r treeRemote) FetchFiles(ctx context.Context, paths []string, yield func(string, conn.FileInfo, io.Reader) error) error {
	if err := r.check(); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for _, p := range paths {
			fi, err := os.Lstat(r.p(p))
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			h, _ := tar.FileInfoHeader(fi, "")
			h.Name = p
			h.ModTime = fi.ModTime().Truncate(time.Second) // as GNU tar stores it
			tw.WriteHeader(h)
			f, err := os.Open(r.p(p))
			if err == nil {
				io.Copy(tw, f)
				f.Close()
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fi := conn.FileInfo{Name: filepath.Base(h.Name), Mode: h.FileInfo().Mode(), Size: h.Size, Mtime: time.Unix(h.ModTime.Unix(), 0)}
		if err := yield(h.Name, fi, tr); err != nil {
			pr.CloseWithError(err)
			return err
		}
	}
}

// eventuallyT fails t unless cond holds within 5s.
func eventuallyT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.EventuallyEvery(t, 5*time.Second, time.Millisecond, what, cond)
}
