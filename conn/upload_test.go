package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/agent/proto"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// Upload helper test modes: on the connection's agent, or over an exec
// channel of its own.
const (
	helperOnAgent = UploadsHelper
	helperByExec  = "helper-exec"
)

// helperClient dials root with the upload helper started at connect (mode
// helperOnAgent or helperByExec) and waits until uploads go through it.
func helperClient(t *testing.T, srv *sshdtest.Server, root, mode string) *Client {
	t.Helper()
	helperBinary(t)
	o := srvOpts(srv)
	o.UploadHelper = UploadEager
	if mode == helperByExec {
		o.Agent = AgentOff
	}
	c := mustDial(t, "testbox:"+root, o)
	testenv.EventuallyEvery(t, 20*time.Second, 10*time.Millisecond, "uploads through the helper", func() bool { return c.Uploads() == UploadsHelper })
	return c
}

// uploadsClient dials a Client for root (made here) whose uploads go
// through the helper (helperOnAgent, helperByExec) or plain SFTP
// (UploadsSFTP).
func uploadsClient(t *testing.T, srv *sshdtest.Server, root, mode string) *Client {
	t.Helper()
	os.Mkdir(root, 0o755)
	if mode != UploadsSFTP {
		return helperClient(t, srv, root, mode)
	}
	o := srvOpts(srv)
	o.UploadHelper = UploadSFTP
	return mustDial(t, "testbox:"+root, o)
}

// putProcMark is in the command line of this test process's upload
// helpers (mode helperByExec) or agents (helperOnAgent), and of no other
// process (e2e tests may run alongside).
func putProcMark(t *testing.T, mode string) string {
	t.Helper()
	helperBinary(t)
	lh, err := findLocalHelper()
	if err != nil {
		t.Fatal(err)
	}
	cmd := PutHelperCommand
	if mode == helperOnAgent {
		cmd = proto.AgentCommand
	}
	return filepath.Join(watchHelperDir, "remotefs-helper-"+lh.hash) + " " + cmd
}

// The whole Remote suite with uploads through the helper.
func TestHelperRemoteSuite(t *testing.T) {
	srv := sshdtest.Start(t)
	var clients []*Client
	runRemoteSuiteIn(t, srv.Dir, func(t *testing.T, dir string) Remote {
		c := helperClient(t, srv, dir, helperOnAgent)
		clients = append(clients, c)
		return c
	})
	var puts int64
	for _, c := range clients {
		puts += c.uploads.helperPuts.Load()
	}
	if puts == 0 {
		t.Fatal("no upload of the suite went through the helper")
	}
	t.Logf("%d uploads through the helper", puts)
}

// Put's check of what the path holds, through the helper and over SFTP.
func TestPutAccept(t *testing.T) {
	srv := sshdtest.Start(t)
	for _, mode := range []string{helperOnAgent, helperByExec, UploadsSFTP} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			root := filepath.Join(srv.Dir, "accept-"+mode)
			c := uploadsClient(t, srv, root, mode)
			mtime := time.Unix(1700000000, 0)
			old := time.Unix(1600000000, 0)
			put := func(content string, a *PutAccept, tmp string) PutResult {
				t.Helper()
				res, err := c.Put(ctx, "f.txt", strings.NewReader(content), PutOptions{Mode: 0o640, Mtime: mtime, Accept: a, ConflictPath: "f.txt.conflict", TempName: tmp})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			// Nothing there, nothing there accepted.
			res := put("one", &PutAccept{Absent: true}, "")
			if res.Conflict || res.Path != "f.txt" || res.Found != nil || res.Info.Size != 3 || res.Info.Mode != 0o640 || !res.Info.Mtime.Equal(mtime) {
				t.Fatalf("new file: %+v", res)
			}
			// The server's file changed: expected v(old), finds something else.
			writeLocal(t, root, "f.txt", "server's", 0o644)
			os.Chtimes(filepath.Join(root, "f.txt"), old, old)
			want := []FileVersion{{Size: 3, Mtime: mtime.Unix()}}
			res = put("mine", &PutAccept{Versions: want}, "")
			if !res.Conflict || res.Path != "f.txt.conflict" || res.Info.Name != "f.txt.conflict" || res.Found == nil ||
				res.Found.Size != 8 || !res.Found.Mtime.Equal(old) || !res.Found.Mode.IsRegular() {
				t.Fatalf("conflict: %+v found %+v", res, res.Found)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "f.txt")); string(b) != "server's" {
				t.Errorf("the server's file was replaced: %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "f.txt.conflict")); string(b) != "mine" {
				t.Errorf("conflict copy holds %q", b)
			}
			if st, _ := os.Stat(filepath.Join(root, "f.txt.conflict")); st.Mode() != 0o640 || !st.ModTime().Equal(mtime) {
				t.Errorf("conflict copy mode %v mtime %v", st.Mode(), st.ModTime())
			}
			// The expected version: replaced, and a retry of the same upload
			// finds its own result acceptable.
			res = put("fresh", &PutAccept{Versions: []FileVersion{{Size: 8, Mtime: old.Unix()}}}, TempNameAt("f.txt", mtime, 7))
			if res.Conflict || res.Found == nil || res.Found.Size != 8 {
				t.Fatalf("expected version: %+v", res)
			}
			res = put("fresh", &PutAccept{Versions: []FileVersion{{Size: 8, Mtime: old.Unix()}}}, TempNameAt("f.txt", mtime, 7))
			if res.Conflict {
				t.Fatalf("retry of a landed upload: %+v", res)
			}
			// A symlink only when accepted.
			os.Remove(filepath.Join(root, "f.txt"))
			os.Symlink("target", filepath.Join(root, "f.txt"))
			res = put("x", &PutAccept{Versions: want}, "")
			if !res.Conflict || res.Found == nil || res.Found.Mode&fs.ModeSymlink == 0 || res.Found.Target != "target" {
				t.Fatalf("symlink not accepted: %+v found %+v", res, res.Found)
			}
			res = put("y", &PutAccept{Link: true}, "")
			if res.Conflict {
				t.Fatalf("symlink accepted: %+v", res)
			}
			// A directory: always a conflict.
			os.Remove(filepath.Join(root, "f.txt"))
			os.Mkdir(filepath.Join(root, "f.txt"), 0o755)
			res = put("z", &PutAccept{Absent: true, Link: true, Versions: want}, "")
			if !res.Conflict || res.Found == nil || !res.Found.Mode.IsDir() {
				t.Fatalf("directory: %+v", res)
			}
			// Without Accept: a directory in the way is an error.
			_, err := c.Put(ctx, "f.txt", strings.NewReader("d"), PutOptions{Mode: 0o644, Mtime: mtime})
			if err == nil {
				t.Fatal("plain put over a directory succeeded")
			}
			t.Logf("plain put over a directory: %v", err)
			noTempFiles(t, root)
			// Bad options.
			if _, err := c.Put(ctx, "f.txt", strings.NewReader("d"), PutOptions{Accept: &PutAccept{}}); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Accept without ConflictPath: %v", err)
			}
			if _, err := c.Put(ctx, "f.txt", strings.NewReader("d"), PutOptions{Accept: &PutAccept{}, ConflictPath: "sub/f"}); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("ConflictPath in another folder: %v", err)
			}
			helperPuts := c.uploads.helperPuts.Load()
			if mode != UploadsSFTP {
				if helperPuts < 8 {
					t.Errorf("%d uploads through the helper, want every one", helperPuts)
				}
				if len(procsMentioning(putProcMark(t, mode))) == 0 {
					t.Errorf("no %s process on the server", PutHelperCommand)
				}
			} else if helperPuts != 0 {
				t.Errorf("%d uploads through the helper in SFTP mode", helperPuts)
			}
		})
	}
	noProcsLeft(t, putProcMark(t, helperByExec))
}

// A full disk fails the upload with ENOSPC in both ways, saying so, and
// leaves no temporary file.
func TestPutDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	srv := sshdtest.Start(t)
	for _, mode := range []string{UploadsHelper, UploadsSFTP} {
		t.Run(mode, func(t *testing.T) {
			root := filepath.Join(srv.Dir, "full-"+mode)
			os.Mkdir(root, 0o755)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", root).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", "-l", root).Run() })
			os.Chmod(root, 0o777)
			var c *Client
			if mode != UploadsSFTP {
				c = helperClient(t, srv, root, mode)
			} else {
				o := srvOpts(srv)
				o.UploadHelper = UploadSFTP
				c = mustDial(t, "testbox:"+root, o)
			}
			_, err := c.Put(context.Background(), "big", bytes.NewReader(make([]byte, 1<<20)), PutOptions{Mode: 0o644, Mtime: time.Now(), TempName: TempNameAt("big", time.Now(), 1)})
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on the server's disk") {
				t.Fatalf("put on a full disk: %v", err)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != "big" {
				t.Errorf("error %v does not name the path", err)
			}
			t.Logf("%v", err)
			if c.Err() != nil {
				t.Errorf("the connection died: %v", c.Err())
			}
			noTempFiles(t, root)
		})
	}
}

// Without a helper binary, Put uses SFTP.
func TestPutHelperFallback(t *testing.T) {
	helperBinary(t)
	saved := watchHelper.Load()
	SetWatchHelper(nil)
	defer watchHelper.Store(saved)
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "fallback")
	os.Mkdir(root, 0o755)
	o := srvOpts(srv)
	o.UploadHelper = UploadEager
	c := mustDial(t, "testbox:"+root, o)
	testenv.EventuallyEvery(t, 10*time.Second, 10*time.Millisecond, "uploads over SFTP", func() bool { return c.Uploads() == UploadsSFTP })
	res, err := c.Put(context.Background(), "x", strings.NewReader("hello"), PutOptions{Mode: 0o644, Mtime: time.Unix(1e9, 0), Accept: &PutAccept{Absent: true}, ConflictPath: "x.c"})
	if err != nil || res.Conflict {
		t.Fatalf("put: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "x")); string(b) != "hello" {
		t.Errorf("server has %q", b)
	}
	if n := c.uploads.helperPuts.Load(); n != 0 {
		t.Errorf("%d uploads through a helper that cannot run", n)
	}
}

// gatedReader gives first, then blocks until gate is closed, then gives rest.
type gatedReader struct {
	first, rest io.Reader
	reached     chan struct{}
	gate        chan struct{}
	once        bool
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if n, err := g.first.Read(p); n > 0 || err != io.EOF {
		return n, err
	}
	if !g.once {
		g.once = true
		close(g.reached)
		<-g.gate
	}
	return g.rest.Read(p)
}

func newGatedReader(first, rest []byte) *gatedReader {
	return &gatedReader{first: bytes.NewReader(first), rest: bytes.NewReader(rest), reached: make(chan struct{}), gate: make(chan struct{})}
}

// The helper dying during an upload fails it with a retryable error
// (ErrOffline) while the connection stays up; the retry, with the same
// temporary name, lands and leaves nothing behind.
func TestPutHelperDiesMidUpload(t *testing.T) {
	srv := sshdtest.Start(t)
	for _, mode := range []string{helperOnAgent, helperByExec} {
		t.Run(mode, func(t *testing.T) { testPutHelperDiesMidUpload(t, srv, mode) })
	}
}

func testPutHelperDiesMidUpload(t *testing.T, srv *sshdtest.Server, mode string) {
	noProcsLeft(t, putProcMark(t, mode)) // earlier tests' helpers
	root := filepath.Join(srv.Dir, "dies-"+mode)
	os.Mkdir(root, 0o755)
	c := helperClient(t, srv, root, mode)
	data := randomBytes(3 << 20)
	r := newGatedReader(data[:1<<20], data[1<<20:])
	tmp := TempNameAt("f", time.Now(), 42)
	mtime := time.Unix(1700000000, 0)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Put(context.Background(), "f", r, PutOptions{Mode: 0o644, Mtime: mtime, TempName: tmp})
		errc <- err
	}()
	<-r.reached
	// The first MiB is on its way: kill the helper.
	testenv.EventuallyEvery(t, 5*time.Second, 5*time.Millisecond, "the helper's temporary file", func() bool {
		_, err := os.Stat(filepath.Join(root, tmp))
		return err == nil
	})
	killed := 0
	for _, p := range procsMentioning(putProcMark(t, mode)) {
		var pid int
		fmt.Sscanf(p, "%d:", &pid)
		if proc, err := os.FindProcess(pid); err == nil && proc.Kill() == nil {
			killed++
		}
	}
	close(r.gate)
	if killed == 0 {
		t.Fatal("no helper to kill")
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Put still running 10s after its helper was killed")
	}
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "upload helper") {
		t.Fatalf("Put after the helper died: %v, want a retryable error wrapping ErrOffline", err)
	}
	t.Logf("%v", err)
	if c.Err() != nil {
		t.Fatalf("the connection died with the helper: %v", c.Err())
	}
	if _, err := os.Stat(filepath.Join(root, "f")); err == nil {
		t.Fatal("a partial file landed")
	}
	// The retry (SFTP for a while now) overwrites the leftover.
	if c.Uploads() != UploadsSFTP {
		t.Errorf("uploads %q right after the helper died, want sftp", c.Uploads())
	}
	if _, err := c.Put(context.Background(), "f", bytes.NewReader(data), PutOptions{Mode: 0o644, Mtime: mtime, TempName: tmp}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); !bytes.Equal(b, data) {
		t.Fatal("content differs after the retry")
	}
	noTempFiles(t, root)
}

// A canceled upload returns at once; the session stays usable and the
// helper removes what it wrote.
func TestPutHelperCancel(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "cancel")
	os.Mkdir(root, 0o755)
	c := helperClient(t, srv, root, helperOnAgent)
	r := newGatedReader(randomBytes(100000), randomBytes(100000))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx, "f", r, PutOptions{Mode: 0o644, Mtime: time.Now()})
		errc <- err
	}()
	<-r.reached
	cancel()
	// Put waits for a read already inside the caller's reader.
	time.AfterFunc(100*time.Millisecond, func() { close(r.gate) })
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled Put: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("canceled Put did not return")
	}
	before := c.uploads.helperPuts.Load()
	if _, err := c.Put(context.Background(), "g", strings.NewReader("after"), PutOptions{Mode: 0o644, Mtime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if c.uploads.helperPuts.Load() != before+1 {
		t.Errorf("the upload after a cancel did not go through the helper")
	}
	if _, err := os.Stat(filepath.Join(root, "f")); err == nil {
		t.Error("the canceled upload landed")
	}
	// The abandoned request was answered before the next one.
	noTempFiles(t, root)
	c.Close()
	noProcsLeft(t, putProcMark(t, helperByExec))
}

// A root login's save of another user's file keeps its owner and group,
// as a write in place would, both through the helper and over plain SFTP
// (where the upload replaces the file with a temporary one): on a mount
// shared by several local users each one's files stay theirs.
func TestPutKeepsOtherUsersOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs a root login to own files as another user")
	}
	srv := sshdtest.Start(t)
	for _, mode := range []string{UploadsHelper, UploadsSFTP} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			root := filepath.Join(srv.Dir, "owner-"+mode)
			c := uploadsClient(t, srv, root, mode)
			f := filepath.Join(root, "theirs.txt")
			writeLocal(t, root, "theirs.txt", "before", 0o644)
			if err := os.Chown(f, 65534, 65533); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(f)
			mtime := time.Unix(1700000000, 0)
			accept := &PutAccept{Versions: []FileVersion{{Size: st.Size(), Mtime: st.ModTime().Unix()}}}
			res, err := c.Put(ctx, "theirs.txt", strings.NewReader("after the save"), PutOptions{Mode: 0o755 | fs.ModeSetuid | fs.ModeSetgid, Mtime: mtime, Accept: accept, ConflictPath: "theirs.txt.conflict"})
			if err != nil || res.Conflict {
				t.Fatalf("put: %+v %v", res, err)
			}
			var sys syscall.Stat_t
			if err := syscall.Stat(f, &sys); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(f); string(b) != "after the save" {
				t.Errorf("server holds %q", b)
			}
			if sys.Uid != 65534 || sys.Gid != 65533 {
				t.Errorf("after the save the file is owned by %d:%d, want 65534:65533 (as before)", sys.Uid, sys.Gid)
			}
			if mode == UploadsSFTP && sys.Mode&0o7777 != 0o6755 {
				t.Errorf("mode %o after the save, want 6755", sys.Mode&0o7777)
			}
			noTempFiles(t, root)
		})
	}
}

// An upload through the helper reports the landed file's stat data as the
// server has it (inode number once a bulk listing told the root's
// filesystem, ctime, mtime with its nanoseconds, which the server keeps);
// over SFTP none of them.
func TestPutReportsServerStat(t *testing.T) {
	srv := sshdtest.Start(t)
	for _, mode := range []string{helperOnAgent, helperByExec, UploadsSFTP} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			root := filepath.Join(srv.Dir, "stat-"+mode)
			c := uploadsClient(t, srv, root, mode)
			mtime := time.Unix(1700000000, 987654321)
			put := func(name string) PutResult {
				t.Helper()
				res, err := c.Put(ctx, name, strings.NewReader("content"), PutOptions{Mode: 0o644, Mtime: mtime, Accept: &PutAccept{Absent: true}, ConflictPath: name + ".conflict"})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			stat := func(name string) syscall.Stat_t {
				var st syscall.Stat_t
				if err := syscall.Lstat(filepath.Join(root, name), &st); err != nil {
					t.Fatal(err)
				}
				return st
			}
			before := put("before-listing")
			if err := c.WalkTree(ctx, nil, func(string, FileInfo) error { return nil }); err != nil {
				t.Fatal(err)
			}
			res := put("after-listing")
			st := stat("after-listing")
			if mode == UploadsSFTP {
				if res.Info.Ino != 0 || !res.Info.Ctime.IsZero() || res.Info.Mtime.Nanosecond() != 0 {
					t.Errorf("SFTP upload reported %+v: it cannot know the inode, ctime or nanoseconds", res.Info)
				}
				return
			}
			if before.Info.Ino != 0 {
				t.Errorf("inode %d reported before a listing told the root's filesystem", before.Info.Ino)
			}
			if st.Mtim.Nsec != int64(mtime.Nanosecond()) {
				t.Errorf("server mtime %d.%09d, want %v", st.Mtim.Sec, st.Mtim.Nsec, mtime)
			}
			if res.Info.Ino != st.Ino || !res.Info.Ctime.Equal(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) || !res.Info.Mtime.Equal(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)) {
				t.Errorf("reported ino %d ctime %v mtime %v; server ino %d ctime %v mtime %v", res.Info.Ino, res.Info.Ctime, res.Info.Mtime,
					st.Ino, time.Unix(st.Ctim.Sec, st.Ctim.Nsec), time.Unix(st.Mtim.Sec, st.Mtim.Nsec))
			}
		})
	}
}
