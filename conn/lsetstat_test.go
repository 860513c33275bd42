package conn

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// Lchown and Lchtimes change a symlink itself, over the real sshd's
// lsetstat@openssh.com, and leave its target alone; a missing path is
// ErrNotExist, and a later request still works after one failed.
func TestLinkAttrs(t *testing.T) {
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "linkattrs")
	os.Mkdir(root, 0o755)
	c := mustDial(t, "testbox:"+root, srvOpts(srv))
	if !c.HasLinkAttrs() {
		t.Fatal("the test sshd offers no lsetstat@openssh.com")
	}
	ctx := context.Background()
	writeLocal(t, root, "target", "t", 0o644)
	if err := os.Symlink("target", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	tt := time.Unix(1600000000, 0)
	os.Chtimes(filepath.Join(root, "target"), tt, tt)
	at, mt := time.Unix(1900000000, 0), time.Unix(1950000000, 0)
	if err := c.Lchtimes(ctx, "link", at, mt); err != nil {
		t.Fatal(err)
	}
	var link, target syscall.Stat_t
	syscall.Lstat(filepath.Join(root, "link"), &link)
	syscall.Lstat(filepath.Join(root, "target"), &target)
	if link.Mtim.Sec != mt.Unix() || link.Atim.Sec != at.Unix() {
		t.Errorf("the link's times are %d/%d, want %d/%d", link.Atim.Sec, link.Mtim.Sec, at.Unix(), mt.Unix())
	}
	if target.Mtim.Sec != tt.Unix() {
		t.Errorf("the target's mtime moved to %d", target.Mtim.Sec)
	}
	if err := c.Lchtimes(ctx, "missing", at, mt); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lchtimes of a missing path: %v, want ErrNotExist", err)
	}
	if os.Geteuid() == 0 {
		if err := c.Lchown(ctx, "link", 65534, 65533); err != nil {
			t.Fatal(err)
		}
		syscall.Lstat(filepath.Join(root, "link"), &link)
		syscall.Lstat(filepath.Join(root, "target"), &target)
		if link.Uid != 65534 || link.Gid != 65533 {
			t.Errorf("the link is owned by %d:%d, want 65534:65533", link.Uid, link.Gid)
		}
		if target.Uid != 0 || target.Gid != 0 {
			t.Errorf("the target's owner changed to %d:%d", target.Uid, target.Gid)
		}
	}
	// A cancelled request fails at once, and the next one works.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Lchtimes(cctx, "link", at, mt); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Lchtimes: %v", err)
	}
	if err := c.Lchtimes(ctx, "link", mt, at); err != nil {
		t.Fatalf("after a cancelled request: %v", err)
	}
	if err := c.Err(); err != nil {
		t.Errorf("the connection died: %v", err)
	}
}
