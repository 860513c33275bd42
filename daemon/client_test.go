package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"remotefs/internal/clitest"
	"remotefs/internal/control"
)

// What remotefs status prints for a mount that needs attention: one table
// row, then a line per thing to know, each naming the mount.
func TestPrintStatus(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	st := &control.Status{
		Mountpoint: "/m", Remote: "box:p", State: "offline", Since: at, PID: 42,
		Pending: 3, PendingBytes: 2048, OldestPending: &at, CacheBytes: 5 << 20,
		LastError: "dial: refused", Watch: "off", Notify: "on", UploadError: "quota",
		Forwards:    []control.Forward{{Kind: "local", Listen: "127.0.0.1:9", Target: "h:1", State: "failed", Error: "in use"}, {Kind: "dynamic", Listen: ":1080", State: "active"}},
		Undelivered: []control.Undelivered{{Path: "a", Op: "write a", Reason: "permission denied", Kept: "/c/u/1-a"}},
		Conflicts:   []control.Conflict{{Path: "b", CopyPath: "b.conflict", At: at}},
	}
	var b strings.Builder
	PrintStatus(&b, []*control.Status{st})
	out := b.String()
	for _, want := range []string{
		"MOUNTPOINT  REMOTE  STATE    SINCE     PENDING      CONFLICTS  CACHE    PID\n",
		"/m          box:p   offline  05:06:07  3 (2.0 KiB)  1          5.0 MiB  42\n",
		"/m: connection: dial: refused\n",
		"/m: offline since 2026-03-04 05:06:07; 3 change(s) (2.0 KiB) wait to be delivered, the oldest from 2026-03-04 05:06:07; read-only until the server is reached (--offline-edits accepts changes before)\n",
		"/m: server changes: off\n",
		"/m: inotify events for server changes: on\n",
		"/m: forward 127.0.0.1:9 -> h:1: failed: in use\n",
		"/m: forward :1080 (SOCKS5): active\n",
		"/m: upload failing (retrying): quota\n",
		"/m: NOT DELIVERED (the server refused it): write a: permission denied; content kept in /c/u/1-a (remotefs cache rescue /m DEST_FOLDER)\n",
		"/m: conflict at 05:06:07: b changed on the server while you changed it here; both are kept, the other version as b.conflict\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	b.Reset()
	PrintStatus(&b, nil)
	if b.String() != "no remotefs mounts\n" {
		t.Errorf("no mounts: %q", b.String())
	}
}

// Without mounts there are no statuses; a named mountpoint without a
// daemon is an error.
func TestStatusesWithoutDaemons(t *testing.T) {
	clitest.IsolateEnv(t)
	ctx := context.Background()
	if all, err := control.Statuses(ctx, "", time.Second); err != nil || len(all) != 0 {
		t.Errorf("no mounts: %v, %v", all, err)
	}
	if _, err := control.Statuses(ctx, t.TempDir(), time.Second); err == nil {
		t.Error("a folder without a daemon has a status")
	}
	if err := Flush(ctx, t.TempDir()); err == nil || !strings.Contains(err.Error(), "is not a remotefs mount") {
		t.Errorf("flush of a plain folder: %v", err)
	}
}
