package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// The bulk listing over a real sshd with GNU find must describe the tree
// exactly as SFTP does, names with spaces, quotes and newlines included.
func TestWalkTreeMatchesSFTP(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "tree")
	for _, p := range []string{"a/b/deep.py", "a/x y.txt", "quote'd/f", "new\nline", "node_modules/pkg/i.js", "node_modules/pkg/node_modules/dep.js", "setuid"} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte("data "+p), 0o644)
	}
	os.Chmod(filepath.Join(root, "setuid"), 0o4755)
	os.Symlink("a/b/deep.py", filepath.Join(root, "link"))
	os.Mkdir(filepath.Join(root, "emptydir"), 0o700)
	os.Lchown(filepath.Join(root, "a/x y.txt"), 1234, 567) // owners are compared too (as root)

	c := mustDial(t, "testbox:"+root, srvOpts(srv))
	ctx := context.Background()
	got := map[string]FileInfo{}
	var order []string
	err := c.WalkTree(ctx, []string{"node_modules"}, func(p string, fi FileInfo) error {
		got[p] = fi
		order = append(order, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reference: SFTP listings, without descending into node_modules.
	want := map[string]FileInfo{}
	var walk func(rel string)
	walk = func(rel string) {
		infos, err := c.ReadDir(ctx, rel)
		if err != nil {
			t.Fatal(err)
		}
		for _, fi := range infos {
			p := fi.Name
			if rel != "" {
				p = rel + "/" + fi.Name
			}
			if fi.Mode&fs.ModeSymlink != 0 {
				fi.Target, _ = c.ReadLink(ctx, p)
			}
			want[p] = fi
			if fi.Mode.IsDir() && fi.Name != "node_modules" {
				walk(p)
			}
		}
	}
	walk("")
	if len(got) != len(want) {
		t.Errorf("bulk listing has %d entries, SFTP %d", len(got), len(want))
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("missing %q", p)
			continue
		}
		// SFTP has whole seconds; the bulk listing keeps the fraction,
		// and adds link count and inode, which SFTP does not carry.
		if g.Mode != w.Mode || g.Size != w.Size || g.Mtime.Unix() != w.Mtime.Unix() || g.Target != w.Target || g.Name != w.Name ||
			g.Uid != w.Uid || g.Gid != w.Gid || !g.HasOwner || !w.HasOwner || g.Nlink == 0 || g.Ino == 0 {
			t.Errorf("%q: bulk %+v, sftp %+v", p, g, w)
		}
	}
	// Pre-order: every entry comes after its folder.
	seen := map[string]bool{}
	for _, p := range order {
		if d := filepath.Dir(p); d != "." && !seen[d] {
			t.Errorf("%q came before its folder", p)
		}
		seen[p] = true
	}

	// One folder's subtree, nothing pruned (a node_modules inside it
	// too), paths from the root, inode numbers as the server has them
	// (the mount root's record comes first: same filesystem).
	var sub []string
	if err := c.WalkSubtree(ctx, "node_modules", func(p string, fi FileInfo) error {
		sub = append(sub, p)
		if fi.Name != filepath.Base(p) {
			t.Errorf("%q named %q", p, fi.Name)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, p), &st); err != nil || fi.Ino != st.Ino {
			t.Errorf("%q: inode %d, server %d (%v)", p, fi.Ino, st.Ino, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(sub)
	wantSub := []string{"node_modules/pkg", "node_modules/pkg/i.js", "node_modules/pkg/node_modules", "node_modules/pkg/node_modules/dep.js"}
	if !slices.Equal(sub, wantSub) {
		t.Errorf("subtree walk of node_modules: %q, want %q", sub, wantSub)
	}
}

func TestParseFindStream(t *testing.T) {
	rec := func(f ...string) string { return strings.Join(f, "\x00") + "\x00" }
	// type, mode, size, mtime, path, target, uid, gid, nlink, inode, atime, ctime, device
	in := rec("d", "755", "4096", "1700000000", "", "", "1000", "1000", "3", "2", "1700000000", "1700000000", "2049") +
		rec("d", "755", "4096", "1700000000.5", "src", "", "1000", "1000", "3", "11", "1700000000.5", "1700000000.5", "2049") +
		rec("f", "644", "12", "1700000001.0000000000", "src/a b.py", "", "0", "0", "2", "12", "1700000001.25", "1700000009.123456789", "2049") +
		rec("l", "777", "4", "1700000002", "src/ln", "a b.py", "1001", "50", "1", "13", "1700000002", "1700000002", "2049") +
		rec("f", "4755", "0", "1700000003.1", "setuid", "", "1000", "1000", "2", "12", "1700000003", "1700000003", "2049") +
		rec("f", "644", "0", "1700000003.1", "mnt/other", "", "1000", "1000", "1", "12", "1700000003", "1700000003", "77")
	var got []string
	dev, err := parseFindStream(strings.NewReader(in), func(p string, fi FileInfo) error {
		got = append(got, fmt.Sprintf("%s %s %s %d:%d", p, fi.Mode, fi.Target, fi.Uid, fi.Gid))
		if p == "src/a b.py" && (fi.Nlink != 2 || fi.Ino != 12 || fi.Atime != time.Unix(1700000001, 250000000) || fi.Ctime != time.Unix(1700000009, 123456789)) {
			t.Errorf("%s: nlink %d ino %d atime %v ctime %v", p, fi.Nlink, fi.Ino, fi.Atime, fi.Ctime)
		}
		if p == "setuid" && fi.Mtime != time.Unix(1700000003, 100000000) {
			t.Errorf("%s: mtime %v, want the fraction kept", p, fi.Mtime)
		}
		if p == "mnt/other" && fi.Ino != 0 {
			t.Errorf("%s: on another device than the root, but inode %d reported", p, fi.Ino)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dev != 2049|1<<63 {
		t.Errorf("root device %x", dev)
	}
	want := []string{"src drwxr-xr-x  1000:1000", "src/a b.py -rw-r--r--  0:0", "src/ln Lrwxrwxrwx a b.py 1001:50", "setuid urwxr-xr-x  1000:1000", "mnt/other -rw-r--r--  1000:1000"}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// Without the root's record no inode is trusted.
	parseFindStream(strings.NewReader(rec("f", "644", "1", "1", "x", "", "0", "0", "1", "5", "1", "1", "2049")), func(p string, fi FileInfo) error {
		if fi.Ino != 0 {
			t.Errorf("inode %d reported without the root's device", fi.Ino)
		}
		return nil
	})
	for _, bad := range []string{
		rec("f", "644", "1", "1", "../escape", "", "0", "0", "1", "1", "1", "1", "1"),
		rec("f", "999", "1", "1", "x", "", "0", "0", "1", "1", "1", "1", "1"),
		rec("q", "644", "1", "1", "x", "", "0", "0", "1", "1", "1", "1", "1"),
		rec("f", "644", "-1", "1", "x", "", "0", "0", "1", "1", "1", "1", "1"),
		rec("f", "644", "1", "1", "x", "", "me", "0", "1", "1", "1", "1", "1"),
		rec("f", "644", "1", "1", "x", "", "0", "0", "-1", "1", "1", "1", "1"),
		rec("f", "644", "1", "1", "x", "", "0", "0", "1", "1", "1", "x", "1"),
		rec("f", "644", "1", "1", "x", "", "0", "0", "1", "1", "1", "1", "dev"),
		rec("d", "755", "1", "1", "", "", "0", "0", "1", "1", "1", "1", "1") + rec("d", "755", "1", "1", "", "", "0", "0", "1", "1", "1", "1", "1"),
		rec("f", "644", "1", "1", "x", "", "0", "0"),
		"f\x00644\x001\x00",
	} {
		if _, err := parseFindStream(strings.NewReader(bad), func(string, FileInfo) error { return nil }); err == nil {
			t.Errorf("accepted bad stream %q", bad)
		}
	}
}

func FuzzParseFindStream(f *testing.F) {
	f.Add([]byte("d\x00755\x004096\x001700000000.5\x00src\x00\x001000\x001000\x002\x0011\x001.5\x002\x002049\x00"))
	f.Add([]byte("l\x00777\x004\x001\x00a/b\x00../x\x000\x000\x001\x0012\x001\x001\x002049\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseFindStream(bytes.NewReader(data), func(p string, fi FileInfo) error {
			if p == "" || strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
				t.Fatalf("unsafe path %q accepted", p)
			}
			if fi.Size < 0 {
				t.Fatalf("negative size")
			}
			return nil
		})
	})
}

// tar over a real sshd sends the named files with the attributes SFTP reports.
func TestFetchFilesMatchesSFTP(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "tree")
	names := []string{"a/b/deep.py", "a/x y.txt", "quote'd", "-dash", "new\nline", "empty"}
	for i, p := range names {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, bytes.Repeat([]byte{byte('a' + i)}, i*1000), 0o640)
	}
	c := mustDial(t, "testbox:"+root, srvOpts(srv))
	ctx := context.Background()
	got := map[string]string{}
	err := c.FetchFiles(ctx, append(names, "missing.txt", "a"), func(p string, fi FileInfo, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		want, err := c.Lstat(ctx, p)
		if err != nil {
			t.Errorf("lstat %q: %v", p, err)
		} else if want.Size != fi.Size || !want.Mtime.Equal(fi.Mtime) || want.Mode.Perm() != fi.Mode.Perm() || int64(len(b)) != fi.Size {
			t.Errorf("%q: tar %+v (%d bytes), sftp %+v", p, fi, len(b), want)
		}
		got[p] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range names {
		if p == "-dash" {
			continue // names starting with '-' are left to SFTP
		}
		if got[p] != strings.Repeat(string(rune('a'+i)), i*1000) {
			t.Errorf("%q: got %d bytes", p, len(got[p]))
		}
	}
	if _, ok := got["missing.txt"]; ok {
		t.Error("missing file reported")
	}
}

// tar's warnings name the files whose bytes in the stream are no version
// of them (messages as GNU tar prints them).
func TestTarChangedWarnings(t *testing.T) {
	got := tarChanged("tar: big: File shrank by 29928832 bytes; padding with zeros\n" +
		"tar: dir/a b.txt: file changed as we read it\n" +
		"tar: gone: Warning: Cannot stat: No such file or directory\n")
	if len(got) != 2 || got[0] != "big" || got[1] != "dir/a b.txt" {
		t.Fatalf("tarChanged = %q", got)
	}
}

// StatMany through the agent over a real sshd reports each existing path
// with the inode number, ctime and nanosecond mtime the server has;
// missing ones and paths outside the root are left out.
func TestStatManyReportsServerStat(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "stat")
	for _, p := range []string{"a/one.txt", "a/two 'q'.txt", "-dash"} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte("data "+p), 0o644)
	}
	os.WriteFile(filepath.Join(srv.Dir, "escape"), nil, 0o644)
	ts := time.Unix(1700000000, 123456789)
	os.Chtimes(filepath.Join(root, "a/one.txt"), ts, ts)
	c := helperClient(t, srv, root, helperOnAgent)
	got := map[string]FileInfo{}
	err := c.StatMany(context.Background(), []string{"a/one.txt", "a/two 'q'.txt", "-dash", "a/missing", "../escape"}, func(p string, fi FileInfo) error {
		got[p] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d paths: %v", len(got), got)
	}
	for p, fi := range got {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if fi.Ino != st.Ino || !fi.Ctime.Equal(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) || !fi.Mtime.Equal(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)) ||
			fi.Size != st.Size || fi.Name != filepath.Base(p) {
			t.Errorf("%s: %+v; server ino %d size %d", p, fi, st.Ino, st.Size)
		}
	}
	if !got["a/one.txt"].Mtime.Equal(ts) {
		t.Errorf("mtime %v, want %v", got["a/one.txt"].Mtime, ts)
	}
}

// A filesystem mounted under the root numbers its inodes on its own: the
// listings (whole tree, a folder's subtree, even the mounted folder's
// own, and the batch stat; through the agent and with GNU find) report
// inode numbers only for files on the root's filesystem. Needs root (it
// mounts a tmpfs).
func TestListingInodesOnlyOnRootFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "devs")
	for _, d := range []string{"a", "mnt"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(root, "mnt")
	if err := syscall.Mount("none", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	for _, p := range []string{"a/f", "mnt/f", "mnt/sub/g"} {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what, p string, fi FileInfo) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		want := st.Ino
		if p == "mnt" || strings.HasPrefix(p, "mnt/") {
			want = 0 // the mount point itself is the tmpfs's root
		}
		if fi.Ino != want {
			t.Errorf("%s %q: inode %d, want %d", what, p, fi.Ino, want)
		}
	}
	ctx := context.Background()
	for _, mode := range []string{helperOnAgent, helperByExec} {
		c := helperClient(t, srv, root, mode)
		n := 0
		collect := func(what string) func(string, FileInfo) error {
			return func(p string, fi FileInfo) error {
				n++
				check(mode+" "+what, p, fi)
				return nil
			}
		}
		if err := c.WalkTree(ctx, nil, collect("walk")); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"a", "mnt", "mnt/sub"} {
			if err := c.WalkSubtree(ctx, d, collect("subtree "+d)); err != nil {
				t.Fatal(err)
			}
		}
		if mode == helperOnAgent {
			if err := c.StatMany(ctx, []string{"a", "a/f", "mnt", "mnt/f", "mnt/sub/g"}, collect("stat")); err != nil {
				t.Fatal(err)
			}
		}
		if n < 10 {
			t.Errorf("%s: only %d entries listed", mode, n)
		}
	}
}

// WalkSubtrees lists several folders' subtrees in one request to the
// agent: each folder's entries exactly as WalkSubtree lists it alone, one
// folder complete before the next, in the order asked; a folder that is
// gone or a symlink yields nothing. Without the agent it is unsupported
// (the caller lists each folder on first use).
func TestWalkSubtreesMatchesWalkSubtree(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "tree")
	for _, p := range []string{"a/__pycache__/x.pyc", "a/__pycache__/y.pyc", "b/node_modules/pkg/i.js",
		"b/node_modules/pkg/node_modules/dep/d.js", "b/node_modules/.bin/t", "c/__pycache__/z.pyc", "plain/f"} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte("data "+p), 0o644)
	}
	os.MkdirAll(filepath.Join(root, "empty/__pycache__"), 0o755)
	os.Symlink("../b/node_modules", filepath.Join(root, "plain/node_modules"))
	dirs := []string{"b/node_modules", "a/__pycache__", "gone/__pycache__", "empty/__pycache__", "plain/node_modules", "c/__pycache__"}
	ctx := context.Background()

	// The first connection of a build sends the binary: the walk waits
	// for the agent instead of giving up (the pruned folders would then
	// each be listed on first use).
	helperBinary(t)
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash))
	first := mustDial(t, "testbox:"+root, srvOpts(srv))
	var firstGot []string
	if err := first.WalkSubtrees(ctx, dirs, func(p string, fi FileInfo) error {
		firstGot = append(firstGot, p)
		return nil
	}); err != nil {
		t.Fatalf("on the connection that sends the binary: %v", err)
	}

	c := helperClient(t, srv, root, helperOnAgent)
	var want []string
	for _, d := range dirs {
		var one []string
		if err := c.WalkSubtree(ctx, d, func(p string, fi FileInfo) error {
			one = append(one, p)
			return nil
		}); err != nil && d != "gone/__pycache__" && d != "plain/node_modules" {
			t.Fatalf("subtree %s: %v", d, err)
		}
		if d == "plain/node_modules" {
			one = nil // a symlink: WalkSubtree follows it, WalkSubtrees does not
		}
		want = append(want, one...)
	}
	var got []string
	infos := map[string]FileInfo{}
	if err := c.WalkSubtrees(ctx, dirs, func(p string, fi FileInfo) error {
		got = append(got, p)
		infos[p] = fi
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("WalkSubtrees yielded\n%q\nwant (WalkSubtree one by one)\n%q", got, want)
	}
	if !slices.Equal(firstGot, want) {
		t.Errorf("WalkSubtrees on the first connection yielded\n%q\nwant\n%q", firstGot, want)
	}
	if len(got) != 10 {
		t.Errorf("%d entries, want 10", len(got))
	}
	for p, fi := range infos {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, p), &st); err != nil || fi.Ino != st.Ino || fi.Size != st.Size || fi.Name != filepath.Base(p) {
			t.Errorf("%q: %+v; server inode %d size %d (%v)", p, fi, st.Ino, st.Size, err)
		}
	}

	off := helperClient(t, srv, root, helperByExec)
	if err := off.WalkSubtrees(ctx, dirs, func(string, FileInfo) error { return nil }); !errors.Is(err, ErrUnsupported) {
		t.Errorf("without the agent: %v, want ErrUnsupported", err)
	}
}

// ReadAt of up to a block goes to the running agent (pread: one round
// trip instead of SFTP's open, read, fstat) and returns what SFTP
// returns: the bytes, the file's attributes after the read, io.EOF at the
// end; larger reads, and reads of files the agent cannot open, go over
// SFTP (which names the error).
func TestReadAtThroughTheAgent(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "tree")
	os.MkdirAll(filepath.Join(root, "d"), 0o755)
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	os.WriteFile(filepath.Join(root, "d/big.bin"), data, 0o644)
	c := helperClient(t, srv, root, helperOnAgent)
	ctx := context.Background()
	st, _ := os.Stat(filepath.Join(root, "d/big.bin"))
	for _, tc := range []struct {
		off   int64
		n     int
		agent bool
	}{{0, 16384, true}, {1 << 20, 1 << 20, true}, {3<<20 + 12000, 1 << 20, true}, {0, 2 << 20, false}} {
		before := c.agent.preads.Load()
		p := make([]byte, tc.n)
		n, fi, err := c.ReadAt(ctx, "d/big.bin", p, tc.off)
		want := min(int64(tc.n), int64(len(data))-tc.off)
		if int64(n) != want || !bytes.Equal(p[:n], data[tc.off:tc.off+want]) {
			t.Errorf("read %d at %d: %d bytes, want %d (same content: %v)", tc.n, tc.off, n, want, bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]))
		}
		if (int64(n) < int64(tc.n)) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Errorf("read %d at %d: err %v with %d bytes", tc.n, tc.off, err, n)
		}
		if fi.Size != st.Size() || fi.Mtime.Unix() != st.ModTime().Unix() || !fi.Mode.IsRegular() || fi.Name != "big.bin" {
			t.Errorf("read at %d: attributes %+v, file %v %v", tc.off, fi, st.Size(), st.ModTime())
		}
		if got := c.agent.preads.Load() - before; (got == 1) != tc.agent {
			t.Errorf("read %d at %d: %d agent reads, want through the agent: %v", tc.n, tc.off, got, tc.agent)
		}
	}
	if _, _, err := c.ReadAt(ctx, "d/missing", make([]byte, 10), 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read of a missing file: %v, want ErrNotExist", err)
	}
}
