package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/agent/proto"
)

// putStream encodes requests with their data, as the mount sends them.
type putItem struct {
	req   proto.Request
	data  []byte
	abort bool // abandon the data after it
}

func encodePuts(t *testing.T, items ...putItem) []byte {
	t.Helper()
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	for _, it := range items {
		if err := proto.WriteRequest(w, it.req); err != nil {
			t.Fatal(err)
		}
		d := proto.DataWriter{W: w}
		d.Write(it.data)
		if it.abort {
			d.Abort()
		} else {
			d.End()
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// servePuts runs the helper on input and returns its replies and error.
func servePuts(t *testing.T, input []byte) ([]proto.Reply, error) {
	t.Helper()
	var out bytes.Buffer
	err := runPutter(context.Background(), bytes.NewReader(input), &out)
	br := bufio.NewReader(&out)
	if uid, gid, rerr := proto.ReadHello(br); rerr != nil || uid != uint32(os.Getuid()) || gid != uint32(os.Getgid()) {
		t.Fatalf("greeting: ids %d:%d, %v", uid, gid, rerr)
	}
	var reps []proto.Reply
	for {
		if _, perr := br.Peek(1); perr == io.EOF {
			break
		}
		rep, rerr := proto.ReadReply(br)
		if rerr != nil {
			t.Fatalf("reply %d: %v", len(reps), rerr)
		}
		reps = append(reps, rep)
	}
	return reps, err
}

func tempFilesIn(t *testing.T, dir string) []string {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, proto.TempPrefix+"*"))
	return left
}

func wantFile(t *testing.T, p, content string, mode fs.FileMode, mtime int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != content {
		t.Errorf("%s holds %q, want %q", p, b, content)
	}
	fi, _ := os.Stat(p)
	if fi.Mode() != mode || fi.ModTime().Unix() != mtime {
		t.Errorf("%s: mode %v mtime %d, want %v %d", p, fi.Mode(), fi.ModTime().Unix(), mode, mtime)
	}
}

func TestPutterAcceptsAndConflicts(t *testing.T) {
	dir := t.TempDir()
	const mtime = 1700000000
	old := time.Unix(1600000000, 0)
	dest := filepath.Join(dir, "main.py")
	os.WriteFile(dest, []byte("v0\n"), 0o644)
	os.Chtimes(dest, old, old)
	v0 := proto.Version{Size: 3, Mtime: old.Unix()}
	req := func(temp string, versions ...proto.Version) proto.Request {
		return proto.Request{Dest: dest, Temp: proto.TempPrefix + temp, Conflict: "main.py.conflict-x",
			Mode: uint32(0o640 | fs.ModeSetgid), Mtime: mtime, Check: true, Versions: versions}
	}
	// 1: the expected version is there: replaced. 2: the same request again
	// (a retry after its reply was lost) finds its own upload: accepted.
	// 3: expects v0, finds v1: conflict copy.
	reps, err := servePuts(t, encodePuts(t,
		putItem{req: req("a", v0), data: []byte("v1 local\n")},
		putItem{req: req("a", v0), data: []byte("v1 local\n")},
		putItem{req: req("b", v0), data: []byte("v2\n")},
	))
	if err != nil || len(reps) != 3 {
		t.Fatalf("replies %+v, err %v", reps, err)
	}
	if r := reps[0]; r.Status != proto.StatusLanded || r.Size != 9 || !r.Found || r.FoundSize != 3 || r.FoundMtime != old.Unix() || !fs.FileMode(r.FoundMode).IsRegular() {
		t.Errorf("first reply %+v", r)
	}
	if r := reps[1]; r.Status != proto.StatusLanded || r.FoundSize != 9 || r.FoundMtime != mtime {
		t.Errorf("retry reply %+v", r)
	}
	if r := reps[2]; r.Status != proto.StatusLandedConflict || r.FoundSize != 9 || r.FoundMtime != mtime {
		t.Errorf("conflict reply %+v", r)
	}
	wantFile(t, dest, "v1 local\n", 0o640|fs.ModeSetgid, mtime)
	wantFile(t, filepath.Join(dir, "main.py.conflict-x"), "v2\n", 0o640|fs.ModeSetgid, mtime)
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Absent accepted or not; a symlink accepted only with Link.
	os.Remove(dest)
	noAbsent := req("c", v0)
	withAbsent := req("d")
	withAbsent.Absent = true
	reps, _ = servePuts(t, encodePuts(t, putItem{req: noAbsent, data: []byte("x")}, putItem{req: withAbsent, data: []byte("y")}))
	if reps[0].Status != proto.StatusLandedConflict || reps[0].Found || reps[1].Status != proto.StatusLanded || reps[1].Found {
		t.Errorf("absent: replies %+v", reps)
	}
	os.Remove(dest)
	os.Symlink("elsewhere", dest)
	link := req("e", v0)
	link.Link = true
	reps, _ = servePuts(t, encodePuts(t, putItem{req: req("f", v0), data: []byte("f")}, putItem{req: link, data: []byte("l")}))
	if reps[0].Status != proto.StatusLandedConflict || reps[0].FoundTarget != "elsewhere" || fs.FileMode(reps[0].FoundMode)&fs.ModeSymlink == 0 {
		t.Errorf("symlink not accepted: reply %+v", reps[0])
	}
	if reps[1].Status != proto.StatusLanded {
		t.Errorf("symlink accepted: reply %+v", reps[1])
	}
	wantFile(t, dest, "l", 0o640|fs.ModeSetgid, mtime)

	// Without Check the destination is replaced whatever it is.
	plain := proto.Request{Dest: dest, Temp: proto.TempPrefix + "g", Mode: 0o600, Mtime: mtime}
	reps, _ = servePuts(t, encodePuts(t, putItem{req: plain, data: []byte("plain")}))
	if reps[0].Status != proto.StatusLanded {
		t.Errorf("plain: %+v", reps[0])
	}
	wantFile(t, dest, "plain", 0o600, mtime)
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestPutterDirectoryInTheWay(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "d")
	os.Mkdir(dest, 0o755)
	checked := proto.Request{Dest: dest, Temp: proto.TempPrefix + "a", Conflict: "d.conflict", Mode: 0o644, Mtime: 1, Check: true, Absent: true, Link: true,
		Versions: []proto.Version{{Size: 4096, Mtime: 1}}}
	plain := proto.Request{Dest: dest, Temp: proto.TempPrefix + "b", Mode: 0o644, Mtime: 1}
	reps, err := servePuts(t, encodePuts(t, putItem{req: checked, data: []byte("x")}, putItem{req: plain, data: []byte("y")}))
	if err != nil || len(reps) != 2 {
		t.Fatalf("replies %+v, %v", reps, err)
	}
	if r := reps[0]; r.Status != proto.StatusLandedConflict || !fs.FileMode(r.FoundMode).IsDir() {
		t.Errorf("a directory was accepted: %+v", r)
	}
	if r := reps[1]; r.Status != proto.StatusFailed || r.Errno == 0 {
		t.Errorf("a plain put over a directory: %+v", r)
	}
	if fi, err := os.Stat(dest); err != nil || !fi.IsDir() {
		t.Errorf("the directory is gone: %v", err)
	}
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A retry reuses the temporary name: a leftover of a failed attempt (even
// a longer one) is overwritten, not appended to.
func TestPutterOverwritesLeftoverTemp(t *testing.T) {
	dir := t.TempDir()
	temp := proto.TempPrefix + "0000000100000002-f"
	os.WriteFile(filepath.Join(dir, temp), bytes.Repeat([]byte("stale "), 1000), 0o600)
	req := proto.Request{Dest: filepath.Join(dir, "f"), Temp: temp, Mode: 0o644, Mtime: 5}
	reps, err := servePuts(t, encodePuts(t, putItem{req: req, data: []byte("fresh")}))
	if err != nil || len(reps) != 1 || reps[0].Status != proto.StatusLanded {
		t.Fatalf("replies %+v, %v", reps, err)
	}
	wantFile(t, filepath.Join(dir, "f"), "fresh", 0o644, 5)
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// Failures answer with the errno and remove the temporary file; the
// session goes on with the next request.
func TestPutterFailures(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	os.Mkdir(small, 0o755)
	if os.Geteuid() == 0 {
		// A real full disk: a 64 KiB tmpfs.
		if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=64k"); err == nil {
			t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
		} else {
			t.Logf("no tmpfs (%v): ENOSPC not tested", err)
			small = ""
		}
	} else {
		small = ""
	}
	var items []putItem
	if small != "" {
		items = append(items, putItem{req: proto.Request{Dest: filepath.Join(small, "big"), Temp: proto.TempPrefix + "big", Mode: 0o644, Mtime: 1},
			data: bytes.Repeat([]byte("z"), 1<<20)})
	}
	items = append(items,
		// The folder does not exist.
		putItem{req: proto.Request{Dest: filepath.Join(dir, "nodir", "f"), Temp: proto.TempPrefix + "n", Mode: 0o644, Mtime: 1}, data: []byte("x")},
		// The client abandoned the data halfway.
		putItem{req: proto.Request{Dest: filepath.Join(dir, "aborted"), Temp: proto.TempPrefix + "ab", Mode: 0o644, Mtime: 1}, data: []byte("half"), abort: true},
		// A temporary name without the prefix is refused.
		putItem{req: proto.Request{Dest: filepath.Join(dir, "g"), Temp: "g.tmp", Mode: 0o644, Mtime: 1}, data: []byte("x")},
		// And the session still works.
		putItem{req: proto.Request{Dest: filepath.Join(dir, "ok"), Temp: proto.TempPrefix + "ok", Mode: 0o644, Mtime: 1}, data: []byte("fine")},
	)
	reps, err := servePuts(t, encodePuts(t, items...))
	if err != nil || len(reps) != len(items) {
		t.Fatalf("%d replies %+v, %v", len(reps), reps, err)
	}
	if small != "" {
		r := reps[0]
		if r.Status != proto.StatusFailed || syscall.Errno(r.Errno) != syscall.ENOSPC {
			t.Errorf("full disk: %+v", r)
		}
		if left := tempFilesIn(t, small); len(left) > 0 {
			t.Errorf("temporary files left on the full disk: %v", left)
		}
		if _, err := os.Stat(filepath.Join(small, "big")); err == nil {
			t.Errorf("a partial file landed")
		}
		reps = reps[1:]
	}
	if r := reps[0]; r.Status != proto.StatusFailed || syscall.Errno(r.Errno) != syscall.ENOENT {
		t.Errorf("missing folder: %+v", r)
	}
	if r := reps[1]; r.Status != proto.StatusFailed || !strings.Contains(r.Message, "abandoned") {
		t.Errorf("aborted: %+v", r)
	}
	if r := reps[2]; r.Status != proto.StatusFailed || !strings.Contains(r.Message, "prefix") {
		t.Errorf("bad temporary name: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "g.tmp")); err == nil {
		t.Errorf("a file under the unprefixed temporary name was made")
	}
	if r := reps[3]; r.Status != proto.StatusLanded {
		t.Errorf("after the failures: %+v", r)
	}
	wantFile(t, filepath.Join(dir, "ok"), "fine", 0o644, 1)
	if _, err := os.Stat(filepath.Join(dir, "aborted")); err == nil {
		t.Errorf("an abandoned upload landed")
	}
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A malformed stream ends the helper with an error (it cannot find the
// next request), after answering what came before it; a truncated request
// leaves no temporary file.
func TestPutterMalformedInput(t *testing.T) {
	dir := t.TempDir()
	good := encodePuts(t, putItem{req: proto.Request{Dest: filepath.Join(dir, "a"), Temp: proto.TempPrefix + "a", Mode: 0o644, Mtime: 1}, data: []byte("a")})
	truncated := encodePuts(t, putItem{req: proto.Request{Dest: filepath.Join(dir, "b"), Temp: proto.TempPrefix + "b", Mode: 0o644, Mtime: 1}, data: []byte("bbbbbbbb")})
	truncated = truncated[:len(truncated)-8]
	for name, input := range map[string][]byte{
		"garbage":        append(append([]byte{}, good...), "hello"...),
		"truncated data": append(append([]byte{}, good...), truncated...),
		"relative dest":  append(append([]byte{}, good...), encodeRaw(t, "P", "rel/x", proto.TempPrefix+"x", "")...),
		"dotdot temp":    append(append([]byte{}, good...), encodeRaw(t, "P", filepath.Join(dir, "x"), "..", "")...),
		"huge chunk":     append(append([]byte{}, good...), append(encodeRaw(t, "P", filepath.Join(dir, "x"), proto.TempPrefix+"x", ""), 0x7f, 0, 0, 0)...),
	} {
		t.Run(name, func(t *testing.T) {
			reps, err := servePuts(t, input)
			if !errors.Is(err, proto.ErrMalformed) {
				t.Errorf("error %v, want ErrMalformed", err)
			}
			if len(reps) != 1 || reps[0].Status != proto.StatusLanded {
				t.Errorf("replies before the bad request: %+v", reps)
			}
			if left := tempFilesIn(t, dir); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	// A clean EOF between requests is a normal end.
	if _, err := servePuts(t, good); err != nil {
		t.Errorf("clean end: %v", err)
	}
}

// encodeRaw writes a request header by hand (dest, temp and conflict
// unchecked), with mode 0644, mtime 1, no flags, no versions.
func encodeRaw(t *testing.T, magic, dest, temp, conflict string) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(magic)
	for _, s := range []string{dest, temp, conflict} {
		b.Write([]byte{byte(len(s) >> 8), byte(len(s))})
		b.WriteString(s)
	}
	b.Write([]byte{0, 0, 0o1, 0o244})       // mode
	b.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1}) // mtime
	b.Write([]byte{0, 0, 0})                // flags, no versions
	return b.Bytes()
}

// A replace keeps what a write in place keeps: the group and extended
// attributes (ACLs are some) of the file it replaces, and a file with
// other hard links is written through its inode, so the other names see
// the new content.
func TestPutterKeepsWhatAWriteKeeps(t *testing.T) {
	dir := t.TempDir()
	const mtime = 1700000000
	plain := filepath.Join(dir, "plain.txt")
	linked := filepath.Join(dir, "linked.txt")
	other := filepath.Join(dir, "other-name.txt")
	os.WriteFile(plain, []byte("old\n"), 0o644)
	os.WriteFile(linked, []byte("old\n"), 0o644)
	if err := os.Link(linked, other); err != nil {
		t.Fatal(err)
	}
	xattr := true
	if err := syscall.Setxattr(plain, "user.remotefs-test", []byte("kept"), 0); err != nil {
		t.Logf("no user extended attributes here (%v): not checked", err)
		xattr = false
	}
	wantGid := os.Getgid()
	if os.Geteuid() == 0 {
		wantGid = 4321 // root can give it any group
		os.Lchown(plain, -1, wantGid)
	}
	put := func(dest, temp string) proto.Request {
		return proto.Request{Dest: dest, Temp: proto.TempPrefix + temp, Mode: 0o644, Mtime: mtime}
	}
	reps, err := servePuts(t, encodePuts(t,
		putItem{req: put(plain, "p"), data: []byte("new plain\n")},
		putItem{req: put(linked, "l"), data: []byte("new linked\n")},
	))
	if err != nil || len(reps) != 2 || reps[0].Status != proto.StatusLanded || reps[1].Status != proto.StatusLanded {
		t.Fatalf("replies %+v, err %v", reps, err)
	}
	wantFile(t, plain, "new plain\n", 0o644, mtime)
	var st syscall.Stat_t
	syscall.Lstat(plain, &st)
	if int(st.Gid) != wantGid {
		t.Errorf("replaced file's group %d, want the old file's %d", st.Gid, wantGid)
	}
	if xattr {
		buf := make([]byte, 64)
		n, err := syscall.Getxattr(plain, "user.remotefs-test", buf)
		if err != nil || string(buf[:n]) != "kept" {
			t.Errorf("extended attribute after the replace: %q, %v", buf[:max(n, 0)], err)
		}
	}
	wantFile(t, linked, "new linked\n", 0o644, mtime)
	wantFile(t, other, "new linked\n", 0o644, mtime)
	var a, b syscall.Stat_t
	syscall.Lstat(linked, &a)
	syscall.Lstat(other, &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link broken by the upload: inodes %d and %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if left := tempFilesIn(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
