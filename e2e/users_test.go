package e2e

// Tests with real, separate accounts: a non-root local user mounts, a
// non-root account logs in on the server, and a third account owns files
// there. They need root to create the accounts and are skipped otherwise
// (unless REMOTEFS_REQUIRE_USERS=1, which make test sets when run as root).

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/sshdtest"
)

// The accounts: the local user who mounts, the server login, and another
// server user. rfs-local is also in rfs-shared (as is rfs-remote) and in
// rfs-localonly (which the server login is not in).
const (
	localUser  = "rfs-local"
	remoteUser = "rfs-remote"
	otherUser  = "rfs-other"
	sharedGrp  = "rfs-shared"
	localGrp   = "rfs-localonly"
)

type account struct{ uid, gid int }

var accountsOnce sync.Once
var accountsErr string

// ensureAccounts creates the test accounts once per machine (they stay).
func ensureAccounts(t *testing.T) map[string]account {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("REMOTEFS_REQUIRE_USERS") == "1" {
			t.Fatal("multi-user tests need root (REMOTEFS_REQUIRE_USERS=1)")
		}
		t.Skip("multi-user tests need root to create accounts")
	}
	accountsOnce.Do(func() {
		run := func(name string, args ...string) {
			if accountsErr != "" {
				return
			}
			if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
				accountsErr = name + " " + strings.Join(args, " ") + ": " + err.Error() + ": " + string(out)
			}
		}
		for _, g := range []string{sharedGrp, localGrp} {
			if _, err := user.LookupGroup(g); err != nil {
				run("groupadd", "--system", g)
			}
		}
		for _, u := range []struct{ name, groups string }{
			{localUser, sharedGrp + "," + localGrp}, {remoteUser, sharedGrp}, {otherUser, ""}} {
			if _, err := user.Lookup(u.name); err != nil {
				args := []string{"--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--user-group"}
				if u.groups != "" {
					args = append(args, "--groups", u.groups)
				}
				run("useradd", append(args, u.name)...)
			}
			// An unlocked password field ("*": no password), or sshd
			// refuses the key login of a locked account.
			run("usermod", "-p", "*", u.name)
		}
	})
	if accountsErr != "" {
		t.Fatalf("creating test accounts: %s", accountsErr)
	}
	// fusermount3 opens /dev/fuse as the calling user: distributions ship
	// it as 0666 (udev); some containers make it root's only.
	if fi, err := os.Stat("/dev/fuse"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		t.Logf("making /dev/fuse usable by non-root users (mode 0666, as udev sets it)")
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]account{}
	for _, n := range []string{localUser, remoteUser, otherUser} {
		u, err := user.Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		out[n] = account{uid, gid}
	}
	for _, n := range []string{sharedGrp, localGrp} {
		g, err := user.LookupGroup(n)
		if err != nil {
			t.Fatal(err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		out[n] = account{-1, gid}
	}
	return out
}

// newUsersWorld is a world whose sshd login is rfs-remote and whose
// commands (mount, status, programs on the mount) run as rfs-local.
func newUsersWorld(t *testing.T) (*world, map[string]account) {
	t.Helper()
	requireFUSE(t)
	acc := ensureAccounts(t)
	srv := sshdtest.StartWith(t, sshdtest.Options{LoginUser: remoteUser})
	base, err := os.MkdirTemp("", "remotefs-users-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	w := newWorldAt(t, srv, base)
	local := acc[localUser]
	w.cred = &syscall.Credential{Uid: uint32(local.uid), Gid: uint32(local.gid)}
	// Supplementary groups, as a login of rfs-local has them.
	for _, g := range []string{sharedGrp, localGrp} {
		w.cred.Groups = append(w.cred.Groups, uint32(acc[g].gid))
	}
	// The local user's files: its ssh config and key, the mountpoint,
	// the XDG folders; and the way to the remotefs binary.
	for _, d := range []string{filepath.Join(base, "cache"), filepath.Join(base, "state")} {
		os.MkdirAll(d, 0o700)
	}
	for _, d := range []string{base, srv.Home} {
		filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
			if err == nil {
				os.Lchown(p, local.uid, local.gid)
			}
			return nil
		})
	}
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(binary), 0o755)
	os.Chmod(filepath.Dir(srv.Home), 0o755)
	return w, acc
}

// writeServerAs creates a file on the server owned by acc.
func (w *world) writeServerAs(rel, content string, mode os.FileMode, acc account) {
	w.t.Helper()
	w.writeServer(rel, content, mode)
	if err := os.Chown(w.s(rel), acc.uid, acc.gid); err != nil {
		w.t.Fatal(err)
	}
}

// statOnMount returns "uid gid mode" of a path on the mount, as the local
// user sees it (the mount is not open to other users, root included).
func (w *world) statOnMount(rel string) string {
	w.t.Helper()
	return strings.TrimSpace(w.must("stat", "-c", "%u %g %a", w.m(rel)))
}

func serverOwner(t *testing.T, p string) (uid, gid int, content string) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	b, _ := os.ReadFile(p)
	return int(st.Uid), int(st.Gid), string(b)
}

func itoa(i int) string { return strconv.Itoa(i) }

// A shared folder on a lab's server: a file another account owns, mode
// 644, in a folder the login user may write. Its owner shows as that
// account's number, the login user's files as the local user's, root's as
// root's; saving the other account's file through the mount fails with
// EACCES, as on the server, and the server's file keeps its content and
// owner. The login user's own file saves normally.
func TestOtherOwnersFileRefusedLikeOnServer(t *testing.T) {
	w, acc := newUsersWorld(t)
	rem, oth, loc := acc[remoteUser], acc[otherUser], acc[localUser]
	if err := os.MkdirAll(w.s("shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(w.s("shared"), rem.uid, rem.gid)
	w.writeServerAs("shared/theirs.txt", "theirs\n", 0o644, oth)
	w.writeServerAs("shared/mine.txt", "mine\n", 0o644, rem)
	w.writeServerAs("shared/roots.txt", "root\n", 0o644, account{0, 0})
	w.mount()

	want := map[string]string{
		"shared/theirs.txt": itoa(oth.uid) + " " + itoa(oth.gid) + " 644",
		"shared/mine.txt":   itoa(loc.uid) + " " + itoa(loc.gid) + " 644",
		"shared/roots.txt":  "0 0 644",
		"shared":            itoa(loc.uid) + " " + itoa(loc.gid) + " 755",
	}
	for p, wnt := range want {
		if got := w.statOnMount(p); got != wnt {
			t.Errorf("%s on the mount: uid gid mode %q, want %q", p, got, wnt)
		}
	}
	// ls -l tells the truth too.
	ls := w.must("ls", "-ln", w.m("shared"))
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) >= 9 && f[8] == "theirs.txt" && (f[2] != itoa(oth.uid) || f[3] != itoa(oth.gid)) {
			t.Errorf("ls -ln shows theirs.txt as %s:%s, want %d:%d\n%s", f[2], f[3], oth.uid, oth.gid, ls)
		}
	}

	// An editor's save in place (open O_TRUNC): refused as on the server.
	r := w.run("sh", "-c", "printf 'overwritten\\n' > "+w.m("shared/theirs.txt"))
	if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("saving another account's 644 file through the mount: exit %d, stderr %q; want Permission denied", r.code, r.stderr)
	}
	r = w.run("sh", "-c", "printf 'overwritten\\n' > "+w.m("shared/roots.txt"))
	if r.code == 0 {
		t.Errorf("saving root's 644 file through the mount succeeded")
	}
	// The login user's own file saves normally.
	w.must("sh", "-c", "printf 'mine, edited\\n' > "+w.m("shared/mine.txt"))
	w.must(binary, "flush", w.mnt)
	if st := w.status(); st.Pending != 0 || st.UploadError != "" {
		t.Errorf("status after the refused saves: %d pending, error %q", st.Pending, st.UploadError)
	}
	if uid, gid, c := serverOwner(t, w.s("shared/theirs.txt")); uid != oth.uid || gid != oth.gid || c != "theirs\n" {
		t.Errorf("server's theirs.txt: owner %d:%d content %q; want %d:%d %q", uid, gid, c, oth.uid, oth.gid, "theirs\n")
	}
	if uid, _, c := serverOwner(t, w.s("shared/roots.txt")); uid != 0 || c != "root\n" {
		t.Errorf("server's roots.txt: owner %d content %q", uid, c)
	}
	if uid, _, c := serverOwner(t, w.s("shared/mine.txt")); uid != rem.uid || c != "mine, edited\n" {
		t.Errorf("server's mine.txt: owner %d content %q; want %d and the edit", uid, c, rem.uid)
	}
	w.unmount()
}

// chown and chgrp through the mount are made on the server: a group the
// login user is in there is set; one it is not in is refused with the
// server's EPERM (the kernel allowed it: the local user is in that group);
// giving a file away is refused locally.
func TestChownReachesServer(t *testing.T) {
	w, acc := newUsersWorld(t)
	rem, oth := acc[remoteUser], acc[otherUser]
	w.writeServerAs("f.txt", "x\n", 0o644, rem)
	w.writeServerAs("g.txt", "y\n", 0o644, rem)
	w.mount()

	w.must("chgrp", sharedGrp, w.m("f.txt"))
	if _, gid, _ := serverOwner(t, w.s("f.txt")); gid != acc[sharedGrp].gid {
		t.Errorf("after chgrp %s on the mount, the server's group is %d, want %d", sharedGrp, gid, acc[sharedGrp].gid)
	}
	if got, want := w.statOnMount("f.txt"), itoa(acc[localUser].uid)+" "+itoa(acc[sharedGrp].gid)+" 644"; got != want {
		t.Errorf("after chgrp the mount shows %q, want %q", got, want)
	}
	r := w.run("chgrp", localGrp, w.m("g.txt"))
	if r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Errorf("chgrp to a group the server login is not in: exit %d %q; want Operation not permitted", r.code, r.stderr)
	}
	r = w.run("chown", otherUser, w.m("g.txt"))
	if r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Errorf("chown to another account: exit %d %q; want Operation not permitted", r.code, r.stderr)
	}
	if uid, gid, _ := serverOwner(t, w.s("g.txt")); uid != rem.uid || gid != rem.gid {
		t.Errorf("refused chgrp/chown changed the server's g.txt to %d:%d", uid, gid)
	}
	_ = oth
	if st := w.status(); st.Pending != 0 {
		t.Errorf("%d changes pending after chown/chgrp; want none", st.Pending)
	}
	w.unmount()
}

// An undeliverable save: the server's copy is made read-only to the login
// user after the local check (the file is open for writing on the mount),
// then the save completes. Nothing is lost and nothing is silent: the
// upload leaves the journal (no retry forever, later saves arrive), its
// content is kept in the cache folder, status and flush name the file,
// the reason and where the content is, flush and unmount exit non-zero,
// and `remotefs cache rescue` puts the content back where the user says.
func TestUndeliverableSaveIsSetAsideAndRescued(t *testing.T) {
	w, acc := newUsersWorld(t)
	rem := acc[remoteUser]
	os.MkdirAll(w.s("proj"), 0o755)
	os.Chown(w.s("proj"), rem.uid, rem.gid)
	w.writeServerAs("proj/report.txt", "v1\n", 0o644, rem)
	w.writeServerAs("proj/other.txt", "o1\n", 0o644, rem)
	w.mount()

	sync := filepath.Join(w.xdg, "sync")
	os.Mkdir(sync, 0o777)
	os.Chmod(sync, 0o777)
	script := `
import os, sys, time
p, sync = sys.argv[1], sys.argv[2]
fd = os.open(p, os.O_WRONLY)  # no O_TRUNC: a truncate would be uploaded at once
open(os.path.join(sync, "opened"), "w").close()
while not os.path.exists(os.path.join(sync, "go")):
    time.sleep(0.02)
os.write(fd, b"v2 precious\n")
os.close(fd)
`
	py := systemPython(t)
	done := make(chan result, 1)
	go func() { done <- w.run(py, "-c", script, w.m("proj/report.txt"), sync) }()
	eventually(t, 20*time.Second, "the file open for writing on the mount", func() bool {
		_, err := os.Stat(filepath.Join(sync, "opened"))
		return err == nil
	})
	// Now the server takes write permission away.
	if err := os.Chmod(w.s("proj/report.txt"), 0o444); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sync, "go"), nil, 0o644)
	if r := <-done; r.code != 0 {
		t.Fatalf("the save on the mount failed: %d %s", r.code, r.stderr)
	}

	// A later save to another file still arrives.
	w.must("sh", "-c", "printf 'o2\\n' > "+w.m("proj/other.txt"))
	r := w.run(binary, "flush", w.mnt)
	if r.code == 0 {
		t.Errorf("flush exited 0 with an undeliverable save")
	}
	for _, want := range []string{"proj/report.txt", "permission denied", filepath.Join(UndeliveredDirName(w), "")} {
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(want)) {
			t.Errorf("flush's message does not say %q:\n%s", want, r.stderr)
		}
	}
	if b, _ := os.ReadFile(w.s("proj/other.txt")); string(b) != "o2\n" {
		t.Errorf("the later save to other.txt did not arrive: %q", b)
	}
	st := w.status()
	if st.Pending != 0 || st.UploadError != "" {
		t.Errorf("status: %d pending, upload error %q; want the refused save out of the journal", st.Pending, st.UploadError)
	}
	if len(st.Undelivered) != 1 {
		t.Fatalf("status lists %d undelivered changes, want 1: %+v", len(st.Undelivered), st.Undelivered)
	}
	u := st.Undelivered[0]
	if u.Path != "proj/report.txt" || !strings.Contains(strings.ToLower(u.Reason), "permission denied") || u.Kept == "" {
		t.Errorf("undelivered entry %+v", u)
	}
	if b, err := os.ReadFile(u.Kept); err != nil || string(b) != "v2 precious\n" {
		t.Errorf("kept content at %s: %q, %v", u.Kept, b, err)
	}
	human := w.must(binary, "status", w.mnt)
	if !strings.Contains(human, "NOT DELIVERED") || !strings.Contains(human, "proj/report.txt") || !strings.Contains(human, u.Kept) {
		t.Errorf("remotefs status does not name the undelivered save:\n%s", human)
	}
	// The server's file is untouched, and the mount shows it again.
	if _, _, c := serverOwner(t, w.s("proj/report.txt")); c != "v1\n" {
		t.Errorf("server's report.txt now %q", c)
	}
	eventually(t, 10*time.Second, "the mount to show the server's report.txt again", func() bool {
		r := w.run("cat", w.m("proj/report.txt"))
		return r.code == 0 && r.stdout == "v1\n"
	})
	// Nothing retries: a few seconds later the journal is still empty and
	// the daemon logged the refusal once.
	time.Sleep(2 * time.Second)
	if st := w.status(); st.Pending != 0 {
		t.Errorf("%d changes pending later", st.Pending)
	}
	if n := strings.Count(w.daemonLog(), "will retry"); n != 0 {
		t.Errorf("the daemon retried %d times", n)
	}

	r = w.run(binary, "unmount", w.mnt)
	if r.code == 0 || !strings.Contains(r.stderr, "proj/report.txt") {
		t.Errorf("unmount: exit %d, stderr %q; want non-zero naming the file", r.code, r.stderr)
	}
	if mounted(w.mnt) {
		t.Errorf("unmount with only undeliverable changes left should still unmount")
	}
	// The kept content is not thrown away with the cache.
	if r := w.run(binary, "cache", "clear", w.spec()); r.code == 0 || !strings.Contains(r.stderr, "rescue") {
		t.Errorf("cache clear with a change set aside: exit %d, %q; want a refusal naming rescue", r.code, r.stderr)
	}
	if _, err := os.Stat(u.Kept); err != nil {
		t.Fatalf("kept content gone: %v", err)
	}
	// Rescue, unmounted, by the remote's name.
	dest := filepath.Join(w.xdg, "rescued")
	out := w.must(binary, "cache", "rescue", w.spec())
	if !strings.Contains(out, "proj/report.txt") {
		t.Errorf("cache rescue (list) does not name the file:\n%s", out)
	}
	out = w.must(binary, "cache", "rescue", w.spec(), dest)
	if b, err := os.ReadFile(filepath.Join(dest, "proj/report.txt")); err != nil || string(b) != "v2 precious\n" {
		t.Errorf("rescued content %q, %v (output %s)", b, err, out)
	}
	if out := w.must(binary, "cache", "rescue", w.spec()); !strings.Contains(out, "nothing was set aside") {
		t.Errorf("after the rescue, still listed:\n%s", out)
	}
	// With nothing left aside, a new mount flushes and unmounts cleanly,
	// and the cache can be cleared.
	w.mount()
	w.must(binary, "flush", w.mnt)
	w.unmount()
	w.must(binary, "cache", "clear", w.spec())
}

// UndeliveredDirName is the undelivered folder of w's cache (one cache).
func UndeliveredDirName(w *world) string {
	dirs, _ := filepath.Glob(filepath.Join(w.xdg, "cache", "remotefs", "*", "undelivered"))
	if len(dirs) != 1 {
		w.t.Fatalf("undelivered folders in the cache: %v", dirs)
	}
	return dirs[0]
}

// daemonLog is the mount daemon's log so far.
func (w *world) daemonLog() string {
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		c, _ := os.ReadFile(l)
		b.Write(c)
	}
	return b.String()
}

// systemPython is a python3 every account can run (not a per-user shim).
func systemPython(t *testing.T) string {
	for _, p := range []string{"/usr/bin/python3", "/usr/local/bin/python3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no system python3")
	return ""
}

// A file of another account that the login may write through a shared
// group is saved in place: it keeps its owner and group on the server
// (a replace would give it to the login user).
func TestSharedGroupFileKeepsOwner(t *testing.T) {
	w, acc := newUsersWorld(t)
	rem, oth, shared := acc[remoteUser], acc[otherUser], acc[sharedGrp]
	os.MkdirAll(w.s("lab"), 0o755)
	os.Chown(w.s("lab"), rem.uid, rem.gid)
	w.writeServerAs("lab/notes.txt", "theirs\n", 0o664, account{oth.uid, shared.gid})
	w.mount()
	w.waitHelperUploads()
	w.must("sh", "-c", "printf 'edited by the login user\\n' > "+w.m("lab/notes.txt"))
	w.must(binary, "flush", w.mnt)
	uid, gid, c := serverOwner(t, w.s("lab/notes.txt"))
	if c != "edited by the login user\n" || uid != oth.uid || gid != shared.gid {
		t.Errorf("server's notes.txt: %q owned by %d:%d; want the edit, owned by %d:%d", c, uid, gid, oth.uid, shared.gid)
	}
	// Only its owner may set its mtime: the mount records the time the
	// write left, so a second save is no conflict.
	w.must("sh", "-c", "printf 'second edit\n' > "+w.m("lab/notes.txt"))
	w.must(binary, "flush", w.mnt)
	if _, _, c := serverOwner(t, w.s("lab/notes.txt")); c != "second edit\n" {
		t.Errorf("second save: server has %q", c)
	}
	if st := w.status(); len(st.Conflicts) != 0 {
		t.Errorf("the second save made a conflict copy: %+v", st.Conflicts)
	}
	if ents, _ := os.ReadDir(w.s("lab")); len(ents) != 1 {
		t.Errorf("lab on the server holds %d names, want notes.txt only", len(ents))
	}
	w.unmount()
}

// newSharedMountWorld is a world whose server login is root, mounted with
// allow_other (default_permissions is always on), whose mountpoint other
// local users can reach: a machine's shared mount, as pjdfstest runs it.
func newSharedMountWorld(t *testing.T) (*world, map[string]account) {
	t.Helper()
	requireFUSE(t)
	acc := ensureAccounts(t)
	w := newWorld(t)
	// t.TempDir's folders are 0700.
	for d := filepath.Dir(w.mnt); len(d) > len(os.TempDir()); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return w, acc
}

// runAs runs a command as the local account acc (its uid and gid, no
// supplementary groups).
func (w *world) runAs(acc account, name string, args ...string) result {
	w.t.Helper()
	prev := w.cred
	w.cred = &syscall.Credential{Uid: uint32(acc.uid), Gid: uint32(acc.gid), Groups: []uint32{}}
	defer func() { w.cred = prev }()
	return w.run(name, args...)
}

// A root login, a mount open to other users: a file, a folder and a FIFO
// another local user makes through the mount belong to that user on the
// server (not to root, the login), as on a local disk, and the mount shows
// them as theirs at once; in a setgid folder they get the folder's group.
// So does a symlink (lsetstat@openssh.com), without touching its target.
func TestNewFileOwnedByLocalCreator(t *testing.T) {
	w, acc := newSharedMountWorld(t)
	oth, shared := acc[otherUser], acc[sharedGrp]
	os.MkdirAll(w.s("pub/sg"), 0o777)
	os.Chmod(w.s("pub"), 0o777)
	os.Chown(w.s("pub/sg"), 0, shared.gid)
	os.Chmod(w.s("pub/sg"), os.ModeSetgid|0o777)
	w.mount("--allow-other")

	for _, c := range [][]string{
		{"sh", "-c", "printf 'mine\\n' > " + w.m("pub/f.txt")},
		{"mkdir", w.m("pub/d")},
		{"mkfifo", w.m("pub/p")},
		{"sh", "-c", "printf 'grouped\\n' > " + w.m("pub/sg/g.txt")},
		{"mkdir", w.m("pub/sg/gd")},
	} {
		if r := w.runAs(oth, c[0], c[1:]...); r.code != 0 {
			t.Fatalf("%v as %s: exit %d %s", c, otherUser, r.code, r.stderr)
		}
	}
	want := map[string]account{
		"pub/f.txt":    oth,
		"pub/d":        oth,
		"pub/p":        oth,
		"pub/sg/g.txt": {oth.uid, shared.gid},
		"pub/sg/gd":    {oth.uid, shared.gid},
	}
	for rel, a := range want {
		if got := strings.Fields(w.must("stat", "-c", "%u %g", w.m(rel))); len(got) != 2 || got[0] != itoa(a.uid) || got[1] != itoa(a.gid) {
			t.Errorf("the mount shows %s owned by %v, want %d:%d", rel, got, a.uid, a.gid)
		}
	}
	w.must(binary, "flush", w.mnt)
	for rel, a := range want {
		if st := lstat(t, w.s(rel)); int(st.Uid) != a.uid || int(st.Gid) != a.gid {
			uid, gid := st.Uid, st.Gid
			t.Errorf("server's %s is owned by %d:%d, want %d:%d (its local creator's)", rel, uid, gid, a.uid, a.gid)
		}
	}
	if _, _, c := serverOwner(t, w.s("pub/f.txt")); c != "mine\n" {
		t.Errorf("server's f.txt holds %q", c)
	}
	if fi, err := os.Stat(w.s("pub/sg/gd")); err != nil || fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("a folder made in a setgid folder lost setgid on the server: %v %v", fi.Mode(), err)
	}
	if r := w.runAs(oth, "ln", "-s", "f.txt", w.m("pub/l")); r.code != 0 {
		t.Fatalf("ln -s: %s", r.stderr)
	}
	w.must(binary, "flush", w.mnt)
	if st := lstat(t, w.s("pub/l")); int(st.Uid) != oth.uid || int(st.Gid) != oth.gid {
		uid, gid := st.Uid, st.Gid
		t.Errorf("server's symlink is owned by %d:%d, want its creator's %d:%d (lsetstat)", uid, gid, oth.uid, oth.gid)
	}
	if got := strings.Fields(w.must("stat", "-c", "%u %g", w.m("pub/l"))); len(got) != 2 || got[0] != itoa(oth.uid) {
		t.Errorf("the mount shows the symlink owned by %v, want %d", got, oth.uid)
	}
	if st := w.status(); st.Pending != 0 {
		t.Errorf("%d changes pending after flush", st.Pending)
	}
	w.unmount()
}

// A sticky folder (mode 1777, as /tmp) on the server shows the bit on the
// mount, and the kernel applies its rule: another user may create files in
// it but not delete or rename someone else's.
func TestStickyFolderProtectsOthersFiles(t *testing.T) {
	w, acc := newSharedMountWorld(t)
	loc, oth := acc[localUser], acc[otherUser]
	os.MkdirAll(w.s("tmp"), 0o777)
	os.Chmod(w.s("tmp"), os.ModeSticky|0o777)
	w.writeServerAs("tmp/theirs.txt", "keep\n", 0o666, loc)
	w.mount("--allow-other")

	if got := strings.TrimSpace(w.must("stat", "-c", "%a", w.m("tmp"))); got != "1777" {
		t.Errorf("the sticky folder shows mode %s on the mount, want 1777", got)
	}
	if r := w.runAs(oth, "sh", "-c", "printf 'x' > "+w.m("tmp/own.txt")); r.code != 0 {
		t.Fatalf("another user cannot create in the sticky folder: %s", r.stderr)
	}
	if r := w.runAs(oth, "rm", "-f", w.m("tmp/theirs.txt")); r.code == 0 || !strings.Contains(r.stderr, "not permitted") {
		t.Errorf("another user's rm of a file in a sticky folder: exit %d %q; want Operation not permitted", r.code, r.stderr)
	}
	if r := w.runAs(oth, "mv", w.m("tmp/theirs.txt"), w.m("tmp/moved.txt")); r.code == 0 {
		t.Errorf("another user renamed a file in a sticky folder")
	}
	if r := w.runAs(oth, "rm", w.m("tmp/own.txt")); r.code != 0 {
		t.Errorf("the user cannot delete their own file in the sticky folder: %s", r.stderr)
	}
	w.must(binary, "flush", w.mnt)
	if _, _, c := serverOwner(t, w.s("tmp/theirs.txt")); c != "keep\n" {
		t.Errorf("server's theirs.txt holds %q", c)
	}
	w.unmount()
}
