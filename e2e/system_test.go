package e2e

// How remotefs fits the system: mount(8) and /etc/fstab, the config file,
// status output, help, log files and `remotefs cache`.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	minfo "remotefs/internal/mountinfo"
)

// requireRoot skips tests that run mount(8) for a fuse.remotefs mount the
// way an administrator does.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount(8) and umount(8) of a FUSE filesystem")
	}
	if _, err := os.Stat("/sbin/mount.fuse3"); err != nil {
		if _, err := exec.LookPath("mount.fuse3"); err != nil {
			t.Skip("mount.fuse3 (package fuse3) is not installed")
		}
	}
}

// installBinary makes the built remotefs the one mount.fuse3 runs, as
// `make install` would. mount(8) runs helpers without PATH, so the shell's
// default PATH applies: /usr/local/sbin comes first. An existing
// remotefs there is left alone (the test is skipped).
func installBinary(t *testing.T) {
	t.Helper()
	const target = "/usr/local/sbin/remotefs"
	if old, err := os.Readlink(target); err == nil && strings.Contains(old, "remotefs-e2e-bin-") {
		os.Remove(target) // left by an interrupted run of this test
	}
	if _, err := os.Lstat(target); err == nil {
		t.Skipf("%s exists; not replacing it with the test build", target)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(target) })
}

// mountinfo returns the fstype, source and per-mount options of dir.
func mountinfo(dir string) (fstype, source, opts string) {
	m, _ := minfo.Lookup(dir)
	return m.FSType, m.Source, m.Options
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// TestMountCommand mounts through mount(8) -t fuse.remotefs with -o
// options, and through an fstab line, as an administrator would.
func TestMountCommand(t *testing.T) {
	w := newWorld(t)
	requireRoot(t)
	installBinary(t)
	w.writeServer("proj/README.md", "# project\n", 0o644)
	w.writeServer("proj/run.sh", "#!/bin/sh\necho ran\n", 0o755)
	sshOpt := "ssh_config=" + w.srv.ConfigFile

	t.Run("mount -t fuse.remotefs", func(t *testing.T) {
		// What an admin types; mount.fuse3 adds dev,suid, drops _netdev and nofail.
		w.must("mount", "-t", "fuse.remotefs", w.spec(), w.mnt, "-o", sshOpt+",attr_ttl=2s,_netdev,nofail,noatime,allow_other,default_permissions")
		if !mounted(w.mnt) {
			t.Fatal("mount returned 0 but nothing is mounted")
		}
		fstype, source, _ := mountinfo(w.mnt)
		if fstype != "fuse.remotefs" || source != "remotefs:"+w.spec() {
			t.Errorf("mountinfo: type %q source %q", fstype, source)
		}
		if b, err := os.ReadFile(w.m("proj/README.md")); err != nil || string(b) != "# project\n" {
			t.Fatalf("read through the mount: %q %v", b, err)
		}
		st := w.status()
		if st.Remote != w.spec() || st.State != "online" || st.ReadOnly {
			t.Errorf("status: %+v", st)
		}
		if err := os.WriteFile(w.m("proj/saved.txt"), []byte("saved before umount\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// umount(8) as root: the daemon delivers the write, then exits.
		w.must("umount", w.mnt)
		if mounted(w.mnt) {
			t.Fatal("still mounted after umount")
		}
		eventually(t, 30*time.Second, "the daemon to exit after umount", func() bool { return !pidAlive(st.PID) })
		if b, err := os.ReadFile(w.s("proj/saved.txt")); err != nil || string(b) != "saved before umount\n" {
			t.Errorf("the write made before umount is not on the server: %q %v", b, err)
		}
	})

	t.Run("ro, then fusermount3 -u", func(t *testing.T) {
		w.must("mount", "-t", "fuse.remotefs", w.spec(), w.mnt, "-o", "ro,"+sshOpt)
		_, _, opts := mountinfo(w.mnt)
		if !strings.HasPrefix(opts, "ro") {
			t.Errorf("mount options %q: want ro", opts)
		}
		err := os.WriteFile(w.m("proj/nope.txt"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write on a ro mount: %v, want EROFS", err)
		}
		if st := w.status(); !st.ReadOnly || st.State != "online" {
			t.Errorf("status of a ro mount: read_only %v state %s (want read-only but online)", st.ReadOnly, st.State)
		}
		pid := w.status().PID
		w.must("fusermount3", "-u", w.mnt)
		eventually(t, 30*time.Second, "the daemon to exit after fusermount3 -u", func() bool { return !pidAlive(pid) })
	})

	t.Run("fstab line", func(t *testing.T) {
		fstab := filepath.Join(t.TempDir(), "fstab")
		line := w.spec() + " " + w.mnt + " fuse.remotefs " + sshOpt + ",noauto,_netdev,user,noexec,x-systemd.automount 0 0\n"
		if err := os.WriteFile(fstab, []byte("# test fstab\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		w.must("mount", "--fstab", fstab, w.mnt)
		if !mounted(w.mnt) {
			t.Fatal("mount --fstab returned 0 but nothing is mounted")
		}
		if _, _, opts := mountinfo(w.mnt); !strings.Contains(opts, "noexec") {
			t.Errorf("mount options %q: want noexec", opts)
		}
		if out, err := exec.Command(w.m("proj/run.sh")).CombinedOutput(); err == nil {
			t.Errorf("a program ran from a noexec mount: %s", out)
		}
		if b, err := os.ReadFile(w.m("proj/saved.txt")); err != nil || string(b) != "saved before umount\n" {
			t.Errorf("read through the fstab mount: %q %v", b, err)
		}
		w.must("umount", w.mnt)
		eventually(t, 10*time.Second, "unmount", func() bool { return !mounted(w.mnt) })
	})

	t.Run("unknown option", func(t *testing.T) {
		r := w.run("mount", "-t", "fuse.remotefs", w.spec(), w.mnt, "-o", sshOpt+",bogus_opt")
		if r.code == 0 || !strings.Contains(r.stderr, `unknown mount option "bogus_opt"`) {
			t.Errorf("exit %d, stderr %q: want a failure naming the option", r.code, r.stderr)
		}
		if mounted(w.mnt) {
			t.Error("mounted despite the bad option")
		}
	})

	t.Run("helper form directly", func(t *testing.T) {
		// What mount.fuse3 runs, typed by hand.
		w.must(binary, w.spec(), w.mnt, "-o", "rw,dev,suid,"+sshOpt+",dir_ttl=5s")
		if !mounted(w.mnt) {
			t.Fatal("not mounted")
		}
		w.unmount()
	})
}

// TestConfigFile: the config file sets defaults per host; the command line
// wins; a mistake names file and line.
func TestConfigFile(t *testing.T) {
	w := newWorld(t)
	w.writeServer("a.txt", "a\n", 0o644)
	confHome := filepath.Join(w.xdg, "config")
	w.env = append(w.env, "XDG_CONFIG_HOME="+confHome)
	conf := filepath.Join(confHome, "remotefs", "config.toml")
	os.MkdirAll(filepath.Dir(conf), 0o700)
	cacheDir := filepath.Join(w.xdg, "testbox-cache")
	text := "[defaults]\nattr_ttl = \"2s\"\nserver_folders = [\"results\", \"runs\"]\n\n[host.\"" + w.alias + "\"]\nread_only = true\ncache_dir = \"" + cacheDir + "\"\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	w.mount()
	st := w.status()
	if !st.ReadOnly || st.CacheDir != cacheDir {
		t.Errorf("config defaults not applied: read_only %v cache_dir %q (want true, %q)", st.ReadOnly, st.CacheDir, cacheDir)
	}
	if err := os.WriteFile(w.m("b.txt"), []byte("b"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write with read_only = true from the config: %v, want EROFS", err)
	}
	w.unmount()

	// The command line wins.
	w.mount("--read-only=false")
	if st := w.status(); st.ReadOnly || st.CacheDir != cacheDir {
		t.Errorf("--read-only=false did not win: %+v", st)
	}
	if err := os.WriteFile(w.m("b.txt"), []byte("b"), 0o644); err != nil {
		t.Errorf("write: %v", err)
	}
	w.unmount()

	// A mistake: one line with file:line, nothing mounted.
	os.WriteFile(conf, []byte("[defaults]\nattr_ttl = \"2s\"\ncache_sise = \"1G\"\n"), 0o600)
	r := w.run(binary, "mount", w.spec(), w.mnt)
	if r.code == 0 || !strings.Contains(r.stderr, conf+":3:") || !strings.Contains(r.stderr, "cache_sise") {
		t.Errorf("bad config: exit %d, stderr %q", r.code, r.stderr)
	}
	if mounted(w.mnt) {
		t.Error("mounted despite a bad config file")
	}
}

// TestStatusHelpAndLogs: status output, --help of every command, help
// topics, the log file and its rotation.
func TestStatusHelpAndLogs(t *testing.T) {
	w := newWorld(t)
	w.writeServer("a.txt", "a\n", 0o644)

	// A log over 10 MB is rotated when the next mount starts.
	logDir := filepath.Join(w.xdg, "state", "remotefs")
	os.MkdirAll(logDir, 0o700)
	w.mount("--debug")
	logs, _ := filepath.Glob(filepath.Join(logDir, "*.log"))
	if len(logs) != 1 {
		t.Fatalf("want one log file in %s, got %v", logDir, logs)
	}
	logFile := logs[0]
	os.ReadFile(w.m("a.txt"))

	out := w.must(binary, "status")
	for _, col := range []string{"MOUNTPOINT", "REMOTE", "STATE", "PENDING", "CONFLICTS", "CACHE", "PID", w.mnt, w.spec(), "online"} {
		if !strings.Contains(out, col) {
			t.Errorf("status table does not show %q:\n%s", col, out)
		}
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(w.must(binary, "status", "--json", w.mnt)), &one); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mountpoint", "remote", "state", "pid", "pending", "conflicts", "cache_bytes", "cache_dir", "read_only"} {
		if _, ok := one[k]; !ok {
			t.Errorf("status --json has no %q field: %v", k, one)
		}
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(w.must(binary, "status", "--json")), &all); err != nil || len(all) != 1 {
		t.Errorf("status --json (all mounts): %v %v", all, err)
	}
	w.unmount()

	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "mounted") || !strings.Contains(string(b), "level=DEBUG") {
		t.Errorf("log %s lacks the mount and --debug lines:\n%s", logFile, tailString(string(b), 2000))
	}
	big := make([]byte, 11<<20)
	os.WriteFile(logFile, big, 0o600)
	w.mount()
	w.unmount()
	if fi, err := os.Stat(logFile + ".1"); err != nil || fi.Size() != int64(len(big)) {
		t.Errorf("the 11 MB log was not rotated to .1: %v", err)
	}
	if fi, err := os.Stat(logFile); err != nil || fi.Size() > 1<<20 {
		t.Errorf("new log: %v, %v", fi, err)
	}

	for _, args := range [][]string{
		{"mount", "--help"}, {"unmount", "--help"}, {"flush", "--help"}, {"status", "--help"},
		{"cache", "--help"}, {"cache", "list", "--help"}, {"cache", "clear", "--help"}, {"cache", "pin", "--help"},
		{"help", "config"}, {"help", "fstab"}, {"help", "ssh"}, {"help", "cache"},
	} {
		out := w.must(binary, args...)
		if !strings.Contains(out, "Example") {
			t.Errorf("remotefs %s: no example in\n%s", strings.Join(args, " "), out)
		}
	}
	if out := w.must(binary, "--version"); !strings.HasPrefix(out, "remotefs ") {
		t.Errorf("--version: %q", out)
	}
	r := w.run(binary, "help", "nosuch")
	if r.code != 2 || !strings.Contains(r.stderr, "config, fstab, notify, offline, ssh") {
		t.Errorf("help nosuch: exit %d, %q", r.code, r.stderr)
	}
	r = w.run(binary, "cache", "frobnicate")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown subcommand "frobnicate"`) {
		t.Errorf("cache frobnicate: exit %d, %q", r.code, r.stderr)
	}
}

type cacheRowJSON struct {
	Dir        string   `json:"dir"`
	Remote     string   `json:"remote"`
	Mountpoint string   `json:"mountpoint"`
	DiskBytes  int64    `json:"disk_bytes"`
	Entries    int      `json:"entries"`
	Pending    int      `json:"pending"`
	Pinned     []string `json:"pinned"`
	LastUsed   string   `json:"last_used"`
}

func (w *world) cacheList() []cacheRowJSON {
	w.t.Helper()
	var rows []cacheRowJSON
	out := w.must(binary, "cache", "list", "--json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		w.t.Fatalf("cache list --json: %v\n%s", err, out)
	}
	return rows
}

// TestCacheCommands: cache list, clear (refused while mounted and while
// writes are pending) and pin.
func TestCacheCommands(t *testing.T) {
	w := newWorld(t)
	p := w.viaProxy()
	for i, name := range []string{"data/a.bin", "data/sub/b.bin", "data/sub/c.txt"} {
		w.writeServer(name, strings.Repeat(strconv.Itoa(i), 50000+i), 0o644)
	}
	// Larger than what the mount prefetches by itself (256 KiB).
	w.writeServer("other/unpinned.txt", strings.Repeat("never read\n", 30000), 0o644)

	if out := w.must(binary, "cache", "list"); !strings.Contains(out, "no caches") {
		t.Errorf("cache list before any mount: %q", out)
	}
	w.mount("--op-timeout=2s")
	rows := w.cacheList()
	if len(rows) != 1 || rows[0].Remote != w.spec() || rows[0].Mountpoint != w.mnt {
		t.Fatalf("cache list while mounted: %+v", rows)
	}
	cacheDir := rows[0].Dir
	if st := w.status(); st.CacheDir != cacheDir {
		t.Errorf("cache list dir %s, status cache_dir %s", cacheDir, st.CacheDir)
	}
	table := w.must(binary, "cache", "list")
	for _, s := range []string{"REMOTE", "MOUNTED ON", "SIZE", "ENTRIES", "PENDING", "LAST USED", "DIRECTORY", w.spec(), cacheDir} {
		if !strings.Contains(table, s) {
			t.Errorf("cache list table lacks %q:\n%s", s, table)
		}
	}

	// clear is refused while mounted, by remote and by directory.
	for _, arg := range []string{w.spec(), cacheDir, filepath.Base(cacheDir)} {
		r := w.run(binary, "cache", "clear", arg)
		if r.code == 0 || !strings.Contains(r.stderr, "unmount it first") {
			t.Errorf("cache clear %s while mounted: exit %d, %q", arg, r.code, r.stderr)
		}
	}

	// pin fetches a folder and records it.
	out := w.must(binary, "cache", "pin", w.m("data"))
	if !strings.Contains(out, "pinned "+w.m("data")+": 3 file(s)") {
		t.Errorf("cache pin: %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(cacheDir, "pinned")); string(b) != "data\n" {
		t.Errorf("pinned list: %q", b)
	}
	if rows := w.cacheList(); len(rows[0].Pinned) != 1 || rows[0].Pinned[0] != "data" {
		t.Errorf("cache list pinned: %+v", rows[0].Pinned)
	}
	if r := w.run(binary, "cache", "pin", filepath.Join(w.xdg, "cache")); r.code == 0 || !strings.Contains(r.stderr, "not on a remotefs mount") {
		t.Errorf("pin outside a mount: exit %d %q", r.code, r.stderr)
	}
	w.unmount()

	// The pinned folder reads offline; what was never read does not.
	w.mount("--offline")
	for i, name := range []string{"data/a.bin", "data/sub/b.bin", "data/sub/c.txt"} {
		b, err := os.ReadFile(w.m(name))
		if err != nil || len(b) != 50000+i {
			t.Errorf("offline read of pinned %s: %d bytes, %v", name, len(b), err)
		}
	}
	if _, err := os.ReadFile(w.m("other/unpinned.txt")); err == nil {
		t.Errorf("a file never read was readable offline: the test proves nothing")
	}
	w.unmount()

	// A write that could not be delivered keeps the cache from being cleared.
	w.mount("--op-timeout=2s")
	os.ReadDir(w.mnt)
	p.Blackhole(true)
	if err := os.WriteFile(w.m("unsent.txt"), []byte("not on the server yet\n"), 0o644); err != nil {
		t.Fatalf("write just as the link dies: %v", err)
	}
	w.must(binary, "unmount", "--force", w.mnt)
	if rows := w.cacheList(); len(rows) != 1 || rows[0].Pending == 0 || rows[0].Mountpoint != "" {
		t.Fatalf("cache list after a forced unmount: %+v", rows)
	}
	r := w.run(binary, "cache", "clear", w.spec())
	if r.code == 0 || !strings.Contains(r.stderr, "not yet on the server") || !strings.Contains(r.stderr, "mount "+w.spec()+" again") {
		t.Errorf("cache clear with pending writes: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "meta.db")); err != nil {
		t.Fatalf("the cache is gone: %v", err)
	}

	// Delivered by the next mount; then clear succeeds.
	p.Blackhole(false)
	w.mount()
	w.unmount()
	if b, err := os.ReadFile(w.s("unsent.txt")); err != nil || string(b) != "not on the server yet\n" {
		t.Errorf("the pending write was not delivered by the next mount: %q %v", b, err)
	}
	out = w.must(binary, "cache", "clear", w.spec())
	if !strings.Contains(out, "cleared") {
		t.Errorf("cache clear: %q", out)
	}
	if _, err := os.Stat(cacheDir); !os.IsNotExist(err) {
		t.Errorf("cache directory still there: %v", err)
	}
	if rows := w.cacheList(); len(rows) != 0 {
		t.Errorf("cache list after clear: %+v", rows)
	}
}
