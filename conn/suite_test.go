package conn

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/testenv"
)

// remoteSetup gives the suite a Remote rooted at an empty directory that
// is also reachable on the local disk as local (the servers run on this
// machine), so results can be checked from both sides.
type remoteSetup func(t *testing.T) (r Remote, local string)

// runRemoteSuite runs every Remote method and error mapping against one
// configuration. The same suite runs over the in-process SFTP server and
// over real OpenSSH.
func runRemoteSuite(t *testing.T, setup remoteSetup) {
	ctx := context.Background()
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

	t.Run("LstatAndNotExist", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "a.txt", "hello", 0o640)
		fi, err := r.Lstat(ctx, "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Name != "a.txt" || fi.Size != 5 || fi.Mode != 0o640 {
			t.Fatalf("Lstat = %+v", fi)
		}
		root, err := r.Lstat(ctx, "")
		if err != nil || !root.Mode.IsDir() {
			t.Fatalf("Lstat root = %+v, %v", root, err)
		}
		_, err = r.Lstat(ctx, "missing/x")
		wantPathErr(t, err, "missing/x", fs.ErrNotExist)
	})

	t.Run("RefusesEscapes", func(t *testing.T) {
		r, _ := setup(t)
		for _, p := range []string{"..", "../x", "a/../../x", "/etc/passwd", "a\x00b"} {
			_, err := r.Lstat(ctx, p)
			wantPathErr(t, err, p, fs.ErrInvalid)
			if err := r.Mkdir(ctx, p, 0o755); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Mkdir(%q) = %v", p, err)
			}
		}
		if err := r.Rename(ctx, "x", "../y"); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Rename to ../y = %v", err)
		}
		// a/../b stays inside.
		if err := r.Mkdir(ctx, "a/../b", 0o755); err != nil {
			t.Errorf("Mkdir(a/../b) = %v", err)
		}
	})

	t.Run("ReadDir", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "d/b", "bb", 0o644)
		writeLocal(t, local, "d/a", "a", 0o600)
		os.Mkdir(filepath.Join(local, "d/sub"), 0o700)
		os.Symlink("a", filepath.Join(local, "d/link"))
		list, err := r.ReadDir(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range list {
			names = append(names, e.Name)
		}
		if got := strings.Join(names, ","); got != "a,b,link,sub" {
			t.Fatalf("names %s", got)
		}
		if list[0].Mode != 0o600 || list[1].Size != 2 || !list[3].Mode.IsDir() {
			t.Errorf("entries %+v", list)
		}
		if list[2].Mode&fs.ModeSymlink == 0 || list[2].Target != "a" {
			t.Errorf("symlink entry %+v", list[2])
		}
		_, err = r.ReadDir(ctx, "nope")
		wantPathErr(t, err, "nope", fs.ErrNotExist)
	})

	t.Run("SymlinkReadLink", func(t *testing.T) {
		r, local := setup(t)
		if err := r.Symlink(ctx, "../target/x", "ln"); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(filepath.Join(local, "ln")); err != nil || got != "../target/x" {
			t.Fatalf("local readlink = %q, %v", got, err)
		}
		if got, err := r.ReadLink(ctx, "ln"); err != nil || got != "../target/x" {
			t.Fatalf("ReadLink = %q, %v", got, err)
		}
		fi, err := r.Lstat(ctx, "ln")
		if err != nil || fi.Mode&fs.ModeSymlink == 0 || fi.Target != "../target/x" {
			t.Fatalf("Lstat = %+v, %v", fi, err)
		}
		wantPathErr(t, r.Symlink(ctx, "y", "ln"), "ln", fs.ErrExist)
		_, err = r.ReadLink(ctx, "none")
		wantPathErr(t, err, "none", fs.ErrNotExist)
	})

	t.Run("ReadAt", func(t *testing.T) {
		r, local := setup(t)
		data := randomBytes(3<<20 + 123)
		writeLocalBytes(t, local, "big", data)
		p := make([]byte, 1<<20)
		n, fi, err := r.ReadAt(ctx, "big", p, 5)
		if err != nil || n != len(p) || !bytes.Equal(p, data[5:5+len(p)]) || fi.Size != int64(len(data)) {
			t.Fatalf("ReadAt middle: n=%d err=%v equal=%v", n, err, bytes.Equal(p[:n], data[5:5+n]))
		}
		n, _, err = r.ReadAt(ctx, "big", p, int64(len(data)-100))
		if n != 100 || err != io.EOF || !bytes.Equal(p[:n], data[len(data)-100:]) {
			t.Fatalf("ReadAt end: n=%d err=%v", n, err)
		}
		n, _, err = r.ReadAt(ctx, "big", p, int64(len(data)+10))
		if n != 0 || err != io.EOF {
			t.Fatalf("ReadAt past end: n=%d err=%v", n, err)
		}
		_, _, err = r.ReadAt(ctx, "nope", p, 0)
		wantPathErr(t, err, "nope", fs.ErrNotExist)
	})

	t.Run("Fetch", func(t *testing.T) {
		r, local := setup(t)
		data := randomBytes(5<<20 + 7)
		writeLocalBytes(t, local, "f", data)
		os.Chtimes(filepath.Join(local, "f"), mtime, mtime)
		var buf bytes.Buffer
		fi, err := r.Fetch(ctx, "f", &buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), data) || fi.Size != int64(len(data)) || !fi.Mtime.Equal(mtime) || fi.Name != "f" {
			t.Fatalf("Fetch: len %d, info %+v", buf.Len(), fi)
		}
		buf.Reset()
		if _, err := r.Fetch(ctx, "empty-missing", &buf); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Fetch missing = %v", err)
		}
	})

	t.Run("PutAtomic", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "dir/target", "old content", 0o644)
		data := randomBytes(1<<20 + 3)
		fi, err := r.PutAtomic(ctx, "dir/target", bytes.NewReader(data), 0o600, mtime)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size != int64(len(data)) || fi.Mode != 0o600 || !fi.Mtime.Equal(mtime) || fi.Name != "target" {
			t.Fatalf("PutAtomic info %+v", fi)
		}
		got, _ := os.ReadFile(filepath.Join(local, "dir/target"))
		if !bytes.Equal(got, data) {
			t.Fatal("content differs")
		}
		st, _ := os.Stat(filepath.Join(local, "dir/target"))
		if st.Mode().Perm() != 0o600 || !st.ModTime().Equal(mtime) {
			t.Fatalf("local mode %v mtime %v", st.Mode(), st.ModTime())
		}
		noTempFiles(t, filepath.Join(local, "dir"))

		// A reader that fails: the target keeps its content, no temp file stays.
		_, err = r.PutAtomic(ctx, "dir/target", io.MultiReader(bytes.NewReader(data[:100000]), failingReader{}), 0o644, mtime)
		if err == nil || !strings.Contains(err.Error(), "reader broke") {
			t.Fatalf("PutAtomic with failing reader = %v", err)
		}
		got, _ = os.ReadFile(filepath.Join(local, "dir/target"))
		if !bytes.Equal(got, data) {
			t.Fatal("target changed by a failed put")
		}
		noTempFiles(t, filepath.Join(local, "dir"))

		// Unknown-size reader, new file, setuid-less exec mode, empty file.
		fi, err = r.PutAtomic(ctx, "dir/new.sh", io.LimitReader(strings.NewReader("#!/bin/sh\n"), 100), 0o755, mtime)
		if err != nil || fi.Mode != 0o755 || fi.Size != 10 {
			t.Fatalf("PutAtomic new = %+v, %v", fi, err)
		}
		fi, err = r.PutAtomic(ctx, "dir/empty", strings.NewReader(""), 0o644, mtime)
		if err != nil || fi.Size != 0 {
			t.Fatalf("PutAtomic empty = %+v, %v", fi, err)
		}
		_, err = r.PutAtomic(ctx, "nodir/x", strings.NewReader("x"), 0o644, mtime)
		wantPathErr(t, err, "nodir/x", fs.ErrNotExist)
		noTempFiles(t, filepath.Join(local, "dir"))
	})

	t.Run("Mkdir", func(t *testing.T) {
		r, local := setup(t)
		if err := r.Mkdir(ctx, "d", 0o750); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(local, "d"))
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o750 {
			t.Fatalf("local %v %v", st, err)
		}
		wantPathErr(t, r.Mkdir(ctx, "d", 0o755), "d", fs.ErrExist)
		writeLocal(t, local, "f", "x", 0o644)
		wantPathErr(t, r.Mkdir(ctx, "f", 0o755), "f", fs.ErrExist)
		wantPathErr(t, r.Mkdir(ctx, "no/sub", 0o755), "no/sub", fs.ErrNotExist)
	})

	t.Run("RemoveRmdir", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "full/f", "x", 0o644)
		os.Mkdir(filepath.Join(local, "empty"), 0o755)
		os.Symlink("full", filepath.Join(local, "ln"))

		wantPathErr(t, r.Rmdir(ctx, "full"), "full", ErrNotEmpty)
		wantPathErr(t, r.Rmdir(ctx, "full/f"), "full/f", syscall.ENOTDIR)
		wantPathErr(t, r.Rmdir(ctx, "gone"), "gone", fs.ErrNotExist)
		wantPathErr(t, r.Remove(ctx, "empty"), "empty", syscall.EISDIR)
		wantPathErr(t, r.Remove(ctx, "gone"), "gone", fs.ErrNotExist)
		if _, err := os.Stat(filepath.Join(local, "empty")); err != nil {
			t.Fatal("Remove of a directory removed it")
		}
		if err := r.Remove(ctx, "ln"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(local, "full")); err != nil {
			t.Fatal("Remove of a symlink followed it")
		}
		if err := r.Remove(ctx, "full/f"); err != nil {
			t.Fatal(err)
		}
		if err := r.Rmdir(ctx, "full"); err != nil {
			t.Fatal(err)
		}
		if err := r.Rmdir(ctx, "empty"); err != nil {
			t.Fatal(err)
		}
		if err := r.Rmdir(ctx, ""); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("Rmdir root = %v", err)
		}
	})

	t.Run("RenameReplaces", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "a", "new", 0o644)
		writeLocal(t, local, "b", "old", 0o644)
		if err := r.Rename(ctx, "a", "b"); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(local, "b")); string(got) != "new" {
			t.Fatalf("b = %q", got)
		}
		if _, err := os.Stat(filepath.Join(local, "a")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a still there")
		}
		wantPathErr(t, r.Rename(ctx, "a", "c"), "a", fs.ErrNotExist)
		writeLocal(t, local, "dir1/x", "x", 0o644)
		writeLocal(t, local, "dir2/y", "y", 0o644)
		wantPathErr(t, r.Rename(ctx, "dir1", "dir2"), "dir1", ErrNotEmpty)
		wantPathErr(t, r.Rename(ctx, "b", "dir2"), "b", syscall.EISDIR)
	})

	t.Run("Link", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "orig", "data", 0o644)
		if err := r.Link(ctx, "orig", "hard"); err != nil {
			t.Fatal(err)
		}
		a, _ := os.Stat(filepath.Join(local, "orig"))
		b, _ := os.Stat(filepath.Join(local, "hard"))
		if !os.SameFile(a, b) {
			t.Fatal("not the same file")
		}
		wantPathErr(t, r.Link(ctx, "orig", "hard"), "hard", fs.ErrExist)
	})

	t.Run("ChmodChtimesTruncate", func(t *testing.T) {
		r, local := setup(t)
		writeLocal(t, local, "f", "0123456789", 0o644)
		if err := r.Chmod(ctx, "f", 0o604); err != nil {
			t.Fatal(err)
		}
		if err := r.Truncate(ctx, "f", 3); err != nil {
			t.Fatal(err)
		}
		if err := r.Chtimes(ctx, "f", mtime, mtime); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(filepath.Join(local, "f"))
		if st.Mode().Perm() != 0o604 || !st.ModTime().Equal(mtime) || st.Size() != 3 {
			t.Fatalf("after: %v %v %d", st.Mode(), st.ModTime(), st.Size())
		}
		wantPathErr(t, r.Chmod(ctx, "none", 0o644), "none", fs.ErrNotExist)
		wantPathErr(t, r.Chtimes(ctx, "none", mtime, mtime), "none", fs.ErrNotExist)
		wantPathErr(t, r.Truncate(ctx, "none", 0), "none", fs.ErrNotExist)
	})

	t.Run("StatFS", func(t *testing.T) {
		r, _ := setup(t)
		st, err := r.StatFS(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.Blocks == 0 || st.BlockSize == 0 || st.NameMax == 0 {
			t.Fatalf("StatFS %+v", st)
		}
	})

	t.Run("Permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root is never denied; the mapping is covered by TestStatusMapping")
		}
		r, local := setup(t)
		writeLocal(t, local, "locked/f", "x", 0o644)
		os.Chmod(filepath.Join(local, "locked"), 0)
		defer os.Chmod(filepath.Join(local, "locked"), 0o755)
		_, err := r.Lstat(ctx, "locked/f")
		wantPathErr(t, err, "locked/f", fs.ErrPermission)
	})

	t.Run("Concurrent", func(t *testing.T) {
		r, local := setup(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := "c" + string(rune('a'+i))
				data := randomBytes(100000 + i)
				if _, err := r.PutAtomic(ctx, name, bytes.NewReader(data), 0o644, mtime); err != nil {
					errs <- err
					return
				}
				var buf bytes.Buffer
				if _, err := r.Fetch(ctx, name, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
					errs <- errors.New("fetch mismatch for " + name)
				}
				if _, err := r.ReadDir(ctx, ""); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		noTempFiles(t, local)
	})
}

// runRemoteSuiteIn runs the suite with each case in a fresh folder under
// root (on a server of this machine), reached through dial.
func runRemoteSuiteIn(t *testing.T, root string, dial func(t *testing.T, dir string) Remote) {
	n := 0
	runRemoteSuite(t, func(t *testing.T) (Remote, string) {
		n++
		dir := filepath.Join(root, fmt.Sprint("case", n))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dial(t, dir), dir
	})
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("reader broke") }

func wantPathErr(t *testing.T, err error, path string, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error for %q = %v, want one matching %v", path, err, target)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Fatalf("error for %q = %#v, want *fs.PathError naming the path", path, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("multi-line error %q", err)
	}
}

var writeLocal = testenv.WriteFile

func writeLocalBytes(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if IsTempName(e.Name()) {
			t.Errorf("temporary file left: %s", filepath.Join(dir, e.Name()))
		}
	}
}
