package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/internal/netproxy"
)

// Offline edits, reconnecting at once, and starting truthfully from the
// cache (remotefs help offline), through the blackholing proxy.

// fastKeepalive makes a dead link noticed in about 2s.
const fastKeepalive = "ServerAliveInterval 1\nServerAliveCountMax 2\nConnectTimeout 3"

// editorSave saves content (ending in a newline) as path on the mount the
// way an editor does (mode: see testdata/editor_save.py: rename = temp
// file, fsync, rename over; inplace = open with O_TRUNC and write; backup
// = rename the original aside, write, delete the backup), failing the
// test when the editor would have reported a failed save.
func (w *world) editorSave(mode, rel, content string) {
	w.t.Helper()
	if !strings.HasSuffix(content, "\n") {
		w.t.Fatalf("editorSave: content must end in a newline")
	}
	script, _ := filepath.Abs("testdata/editor_save.py")
	r := w.run("python3", script, mode, w.m(rel), strings.TrimSuffix(content, "\n"))
	if r.code != 0 {
		w.t.Fatalf("editor save (%s) of %s failed: exit %d: %s", mode, rel, r.code, strings.TrimSpace(r.stderr))
	}
}

// goOffline cuts the link (packets vanish) and waits until the mount
// says it is offline.
func (w *world) goOffline(p *netproxy.Proxy) {
	w.t.Helper()
	p.Blackhole(true)
	eventually(w.t, 30*time.Second, "the mount to notice the dead link", func() bool { return w.status().State != "online" })
}

// flushUntilDelivered runs remotefs flush until it succeeds (it fails
// while the mount is still reconnecting) and returns how long that took.
func (w *world) flushUntilDelivered(limit time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	for {
		r := w.run(binary, "flush", w.mnt)
		if r.code == 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			w.t.Fatalf("flush still failing %v later: %s", limit, strings.TrimSpace(r.stderr))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serverHas checks the server's files byte for byte.
func (w *world) serverHas(what string, want map[string]string) {
	w.t.Helper()
	for name, c := range want {
		b, err := os.ReadFile(w.s(name))
		if err != nil || string(b) != c {
			w.t.Errorf("%s: %s on the server: %d bytes %q, %v; want %d bytes", what, name, len(b), tailString(string(b), 60), err, len(c))
		}
	}
}

func bigText(tag string, n int) string {
	return strings.Repeat(fmt.Sprintf("%s: a line of the file as the editor saved it\n", tag), n)
}

// TestOfflineSaves: editor-like saves (a safe save by temp file + fsync +
// rename, and an in-place save) made while the link is dead, made right
// after it returns (before the mount has reconnected), and made in mounts
// started without the server (--offline-edits, then --offline
// --offline-edits) across remounts: none fails, and all reach the server
// byte for byte once it is reachable.
func TestOfflineSaves(t *testing.T) {
	requireCommand(t, "python3")
	w := newCheckedWorld(t)
	p := w.viaProxyWith(fastKeepalive)
	w.writeServer("proj/a.py", "a = 1\n", 0o644)
	w.writeServer("proj/b.py", "b = 1\n", 0o644)
	w.writeServer("proj/notes.txt", "notes\n", 0o600)
	w.writeServer("proj/big-uncached.bin", strings.Repeat("z", 1<<20), 0o644) // listed, never read
	w.mount()
	for _, f := range []string{"proj/a.py", "proj/b.py", "proj/notes.txt"} {
		if _, err := os.ReadFile(w.m(f)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}

	// 1. During an outage.
	w.goOffline(p)
	want["proj/a.py"] = bigText("a, offline safe save", 200)
	w.editorSave("rename", "proj/a.py", want["proj/a.py"])
	want["proj/b.py"] = bigText("b, offline in-place save", 50)
	w.editorSave("inplace", "proj/b.py", want["proj/b.py"])
	want["proj/new.py"] = "created offline\n"
	w.editorSave("inplace", "proj/new.py", want["proj/new.py"])
	want["proj/notes.txt"] = "notes, backup-style save offline\n"
	w.editorSave("backup", "proj/notes.txt", want["proj/notes.txt"])
	// A file whose content was never fetched: replaced whole it is fine,
	// changed in place it is not (and says so).
	f, err := os.OpenFile(w.m("proj/big-uncached.bin"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		f.Close()
		t.Errorf("appending to a file whose content is not cached succeeded offline")
	} else if errnoOf(err) != syscall.ENETDOWN {
		t.Errorf("appending to a file whose content is not cached, offline: %v, want ENETDOWN", err)
	}
	want["proj/big-uncached.bin"] = "replaced whole offline\n"
	w.editorSave("rename", "proj/big-uncached.bin", want["proj/big-uncached.bin"])
	for name, c := range want {
		if b, err := os.ReadFile(w.m(name)); err != nil || string(b) != c {
			t.Errorf("offline: the mount's %s: %d bytes, %v; want what was saved (%d bytes)", name, len(b), err, len(c))
		}
	}
	st := w.status()
	t.Logf("offline: state %s since %v, %d changes (%d bytes) pending, oldest %v", st.State, st.Since.Format(time.TimeOnly), st.Pending, st.PendingBytes, st.OldestPending)
	if st.Pending == 0 || st.PendingBytes == 0 || st.OldestPending == nil || !st.OfflineEdits || st.OfflineSince == nil || st.OfflineSince.After(*st.OldestPending) {
		t.Errorf("status while offline with saves waiting: %+v", st)
	}
	out := w.must(binary, "status", w.mnt)
	if !strings.Contains(out, "offline since") || !strings.Contains(out, "wait to be delivered") {
		t.Errorf("remotefs status does not say what waits while offline:\n%s", out)
	}
	if b, _ := os.ReadFile(w.s("proj/a.py")); string(b) != "a = 1\n" {
		t.Fatalf("the server changed during the outage: %q", b)
	}

	// 2. Right after the link returns, before the mount has noticed.
	p.Blackhole(false)
	want["proj/a.py"] = bigText("a, saved as the link came back", 120)
	w.editorSave("rename", "proj/a.py", want["proj/a.py"])
	want["proj/b.py"] = bigText("b, saved as the link came back", 30)
	w.editorSave("inplace", "proj/b.py", want["proj/b.py"])
	took := w.flushUntilDelivered(30 * time.Second)
	t.Logf("everything delivered %v after the link returned", took.Round(time.Millisecond))
	w.serverHas("after the outage", want)
	if st := w.status(); len(st.Conflicts) > 0 || st.Pending != 0 {
		t.Errorf("after delivery: conflicts %v, pending %d", st.Conflicts, st.Pending)
	}
	w.unmount()
	logs, _ := filepath.Glob(filepath.Join(w.xdg, "state", "remotefs", "*.log"))
	var log string
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		log += string(b)
	}
	for _, line := range []string{"changes wait in the journal", "delivered the changes made while the server was unreachable"} {
		if !strings.Contains(log, line) {
			t.Errorf("the daemon log does not say %q", line)
		}
	}

	// 3. Mounts started without the server, with --offline-edits, across
	// remounts while it stays unreachable.
	if err := p.Refuse(true); err != nil {
		t.Fatal(err)
	}
	r := w.run(binary, "mount", "--offline-edits", w.spec(), w.mnt)
	if r.code != 0 {
		t.Fatalf("mount --offline-edits with the server down: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("mount --offline-edits with the server down: %s", strings.TrimSpace(r.stderr))
	want["proj/a.py"] = bigText("a, saved in a mount started offline", 80)
	w.editorSave("rename", "proj/a.py", want["proj/a.py"])
	want["proj/plane.txt"] = "written on a plane\n"
	w.editorSave("inplace", "proj/plane.txt", want["proj/plane.txt"])
	if err := os.Mkdir(w.m("proj/newdir"), 0o755); err != nil {
		t.Fatalf("mkdir in a mount started offline with --offline-edits: %v", err)
	}
	want["proj/newdir/x.txt"] = "in a new folder\n"
	w.editorSave("inplace", "proj/newdir/x.txt", want["proj/newdir/x.txt"])
	if r := w.run(binary, "unmount", w.mnt); r.code == 0 || !mounted(w.mnt) {
		t.Errorf("remotefs unmount with undelivered changes and the server down: exit %d, mounted %v; want a refusal", r.code, mounted(w.mnt))
	}
	w.must(binary, "unmount", "--force", w.mnt)

	w.mount("--offline", "--offline-edits")
	for name, c := range want {
		if b, err := os.ReadFile(w.m(name)); err != nil || string(b) != c {
			t.Errorf("--offline mount: %s: %d bytes, %v; want the undelivered save (%d bytes)", name, len(b), err, len(c))
		}
	}
	want["proj/b.py"] = bigText("b, saved in an --offline mount", 40)
	w.editorSave("inplace", "proj/b.py", want["proj/b.py"])
	want["proj/plane.txt"] = "written on a plane, then edited again\n"
	w.editorSave("rename", "proj/plane.txt", want["proj/plane.txt"])
	w.must(binary, "unmount", "--force", w.mnt)
	if _, err := os.Stat(w.s("proj/plane.txt")); err == nil {
		t.Fatalf("proj/plane.txt reached the server while it was unreachable?")
	}

	// The server is back: the first connection delivers it all.
	if err := p.Refuse(false); err != nil {
		t.Fatal(err)
	}
	w.mount()
	took = w.flushUntilDelivered(30 * time.Second)
	t.Logf("a later mount delivered the offline saves in %v", took.Round(time.Millisecond))
	w.serverHas("after the offline mounts", want)
	if copies, _ := filepath.Glob(w.s("proj/*.conflict-*")); len(copies) > 0 {
		t.Errorf("conflict copies where nothing changed on the server: %v", copies)
	}
	if _, err := os.Lstat(w.s("proj/notes.txt~")); err == nil {
		t.Errorf("the backup-style save left proj/notes.txt~ on the server")
	}
	noTempFiles(t, w.root)
	w.unmount()
}

// TestOfflineEditConflict: a file changed on the server during the outage
// and edited offline ends as the server's version under its name and the
// offline edit as a conflict copy, with status reporting it. A file
// deleted offline that the server changed meanwhile is not lost: its
// server version is kept as a conflict copy.
func TestOfflineEditConflict(t *testing.T) {
	requireCommand(t, "python3")
	w := newCheckedWorld(t)
	p := w.viaProxyWith(fastKeepalive)
	w.writeServer("notes/doc.txt", "version 1\n", 0o644)
	w.writeServer("notes/other.txt", "other, version 1\n", 0o644)
	w.writeServer("notes/unchanged.txt", "nobody changes this\n", 0o644)
	w.mount()
	if b, err := os.ReadFile(w.m("notes/doc.txt")); err != nil || string(b) != "version 1\n" {
		t.Fatalf("read: %q, %v", b, err)
	}
	w.goOffline(p)
	serverVersion := "version 2, saved on the server during the outage\n"
	if err := os.WriteFile(w.s("notes/doc.txt"), []byte(serverVersion), 0o644); err != nil {
		t.Fatal(err)
	}
	local := "version 2, edited offline\n"
	w.editorSave("rename", "notes/doc.txt", local)
	// Deleted offline: one file the server changes meanwhile (the
	// server's edit must survive), one it does not.
	for _, f := range []string{"notes/other.txt", "notes/unchanged.txt"} {
		if err := os.Remove(w.m(f)); err != nil {
			t.Fatalf("rm %s offline: %v", f, err)
		}
	}
	otherServer := "other, version 2, edited on the server after the local delete\n"
	if err := os.WriteFile(w.s("notes/other.txt"), []byte(otherServer), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Blackhole(false)
	w.flushUntilDelivered(30 * time.Second)

	if b, _ := os.ReadFile(w.s("notes/doc.txt")); string(b) != serverVersion {
		t.Errorf("server's notes/doc.txt: %q, want the server's version kept", b)
	}
	copies, _ := filepath.Glob(w.s("notes/doc.txt.conflict-*"))
	if len(copies) != 1 {
		t.Fatalf("want one conflict copy on the server, have %v", copies)
	}
	if b, _ := os.ReadFile(copies[0]); string(b) != local {
		t.Errorf("conflict copy %s: %q, want the offline edit", filepath.Base(copies[0]), b)
	}
	st := w.status()
	found := false
	for _, c := range st.Conflicts {
		if c.Path == "notes/doc.txt" && filepath.Base(c.CopyPath) == filepath.Base(copies[0]) {
			found = true
		}
	}
	if len(st.Conflicts) != 2 {
		t.Errorf("status lists %d conflicts, want 2 (doc.txt edited, other.txt deleted): %+v", len(st.Conflicts), st.Conflicts)
	}
	if !found {
		t.Errorf("status does not report the conflict on notes/doc.txt: %+v", st.Conflicts)
	}
	if out := w.must(binary, "status", w.mnt); !strings.Contains(out, "conflict") {
		t.Errorf("remotefs status does not show the conflict:\n%s", out)
	}
	eventually(t, 5*time.Second, "the mount to show the server's version", func() bool {
		b, err := os.ReadFile(w.m("notes/doc.txt"))
		return err == nil && string(b) == serverVersion
	})
	if b, err := os.ReadFile(w.m("notes/" + filepath.Base(copies[0]))); err != nil || string(b) != local {
		t.Errorf("the conflict copy on the mount: %q, %v", b, err)
	}
	others, _ := filepath.Glob(w.s("notes/other.txt.conflict-*"))
	if len(others) != 1 {
		t.Fatalf("a file deleted offline and changed on the server meanwhile: want its server version kept as one conflict copy, have %v", others)
	}
	if b, err := os.ReadFile(others[0]); err != nil || string(b) != otherServer {
		t.Errorf("%s on the server: %q, %v; want the server's edit", filepath.Base(others[0]), b, err)
	}
	for _, gone := range []string{"notes/other.txt", "notes/unchanged.txt"} {
		if _, err := os.Lstat(w.s(gone)); err == nil {
			t.Errorf("%s, deleted offline, is still on the server", gone)
		}
	}
	eventually(t, 5*time.Second, "the kept copy of notes/other.txt to show on the mount", func() bool {
		b, err := os.ReadFile(w.m("notes/" + filepath.Base(others[0])))
		return err == nil && string(b) == otherServer
	})
	w.unmount()
}

// TestReconnectAtOnce: with the redial backoff set to a minute, the mount
// is online again right after the link returns (over a 50 ms link): an
// access that needs the server redials at once, also while dials started
// during the outage are still stuck on the dead link; and so does a change
// of the machine's network (a new address), with nothing accessed.
func TestReconnectAtOnce(t *testing.T) {
	w := newCheckedWorld(t)
	w.env = append(w.env, "REMOTEFS_TEST_REDIAL_BACKOFF=60s")
	p := w.viaProxyWith(fastKeepalive)
	w.writeServer("uncached.bin", strings.Repeat("u", 1<<20), 0o644) // over the prefetch limit
	w.writeServer("small.txt", "small\n", 0o644)
	p.SetLatency(25 * time.Millisecond) // 50 ms round trips
	w.mount()

	w.goOffline(p)
	// The user keeps working: reads of content never fetched fail at once
	// (and start dials, which hang on the dead link).
	for i := 0; i < 10; i++ {
		err, _ := timed(t, "read of uncached content offline", 2*time.Second, func() error {
			_, err := os.ReadFile(w.m("uncached.bin"))
			return err
		})
		if errnoOf(err) != syscall.ENETDOWN {
			t.Fatalf("read of uncached content offline: %v, want ENETDOWN", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // past the timed redial: the next is a minute away

	p.Blackhole(false)
	back := time.Now()
	var readAt time.Duration
	for {
		b, err := os.ReadFile(w.m("uncached.bin"))
		if err == nil {
			if len(b) != 1<<20 {
				t.Fatalf("uncached.bin: %d bytes", len(b))
			}
			readAt = time.Since(back)
			break
		}
		if time.Since(back) > 20*time.Second {
			t.Fatalf("uncached.bin still unreadable %v after the link returned (backoff 60s): %v", time.Since(back).Round(time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("MEASURED: online again %v after the link returned (50 ms round trips, backoff 60s, accesses every 50 ms)", readAt.Round(time.Millisecond))
	if readAt > 2*time.Second {
		t.Errorf("reconnecting took %v after the link returned; want at most 2s (dials stuck on the dead link must not hold a new one back)", readAt.Round(time.Millisecond))
	}

	// A network change reconnects with nothing accessed.
	if os.Geteuid() != 0 {
		t.Skip("adding an address to lo needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command")
	}
	w.goOffline(p)
	time.Sleep(2 * time.Second)
	p.Blackhole(false)
	time.Sleep(500 * time.Millisecond)
	if st := w.status(); st.State == "online" {
		t.Fatalf("online again with neither an access nor a network change (backoff 60s)")
	}
	addr := "127.0.0.213/32"
	changed := time.Now()
	if out, err := exec.Command("ip", "addr", "add", addr, "dev", "lo").CombinedOutput(); err != nil {
		t.Skipf("ip addr add: %v: %s", err, out)
	}
	defer exec.Command("ip", "addr", "del", addr, "dev", "lo").Run()
	eventually(t, 10*time.Second, "online after a network change", func() bool { return w.status().State == "online" })
	t.Logf("MEASURED: online %v after a new address appeared (no access)", time.Since(changed).Round(time.Millisecond))
	w.unmount()
}

// TestStartTruthfully: a mount started from a cache answers for names the
// server created while nothing was mounted right away (the first command
// after mount sees them), never serves a file deleted meanwhile, and
// drops such names when the listing arrives. After a reconnect, a folder
// created on the server during the outage is there at once, and a file
// deleted during it disappears with an inotify event.
func TestStartTruthfully(t *testing.T) {
	requireCommand(t, "inotifywait")
	w := newCheckedWorld(t)
	p := w.viaProxyWith(fastKeepalive)
	p.SetLatency(25 * time.Millisecond)
	w.writeServer("proj/old.txt", "old content\n", 0o644)
	w.writeServer("proj/keep.txt", "keep\n", 0o644)
	w.writeServer("proj/gone-later.txt", "goes during the outage\n", 0o644)
	w.mount()
	for _, f := range []string{"proj/old.txt", "proj/keep.txt"} {
		if _, err := os.ReadFile(w.m(f)); err != nil {
			t.Fatal(err)
		}
	}
	w.unmount()

	// While nothing is mounted.
	w.writeServer("proj/new.txt", "created while unmounted\n", 0o644)
	w.writeServer("proj/newdir/inside.txt", "in a new folder\n", 0o644)
	if err := os.Remove(w.s("proj/old.txt")); err != nil {
		t.Fatal(err)
	}
	w.mount()
	// The first commands after mount returns.
	if b, err := os.ReadFile(w.m("proj/new.txt")); err != nil || string(b) != "created while unmounted\n" {
		t.Errorf("first read after mount of a file created while unmounted: %q, %v", b, err)
	}
	if b, err := os.ReadFile(w.m("proj/newdir/inside.txt")); err != nil || string(b) != "in a new folder\n" {
		t.Errorf("read after mount of a file in a folder created while unmounted: %q, %v", b, err)
	}
	if b, err := os.ReadFile(w.m("proj/old.txt")); err == nil {
		t.Errorf("a file deleted on the server while unmounted was served: %q", b)
	} else if errnoOf(err) != syscall.ENOENT {
		t.Errorf("read of a file deleted while unmounted: %v, want ENOENT", err)
	}
	eventually(t, 10*time.Second, "the listing to drop proj/old.txt", func() bool {
		ents, _ := os.ReadDir(w.m("proj"))
		for _, e := range ents {
			if e.Name() == "old.txt" {
				return false
			}
		}
		return len(ents) > 0
	})

	// An outage, during which the server changes.
	eventually(t, 10*time.Second, "the change feed to start", func() bool { return w.status().Watch != "starting" && w.status().Watch != "waiting for the server" })
	watcher := startEventWatcher(t, "inotifywait", []string{"inotifywait", "-m", "--format", "%e %w%f", w.m("proj")}, "Watches established", true)
	w.goOffline(p)
	from := watcher.mark()
	w.writeServer("proj/outage-dir/f.txt", "made during the outage\n", 0o644)
	if err := os.Remove(w.s("proj/gone-later.txt")); err != nil {
		t.Fatal(err)
	}
	p.Blackhole(false)
	eventually(t, 30*time.Second, "online again", func() bool { return w.status().State == "online" })
	if b, err := os.ReadFile(w.m("proj/outage-dir/f.txt")); err != nil || string(b) != "made during the outage\n" {
		t.Errorf("right after the reconnect, a file in a folder made during the outage: %q, %v", b, err)
	}
	eventually(t, 10*time.Second, "an inotify event for the file deleted during the outage", func() bool {
		return watcher.has(from, "DELETE", w.m("proj/gone-later.txt"))
	})
	if _, err := os.Stat(w.m("proj/gone-later.txt")); err == nil {
		t.Errorf("proj/gone-later.txt still on the mount after the catch-up listing")
	}
	w.unmount()
}

// TestNetworkChangeProbesConnection: when the machine's network changes,
// a connection that died silently with the old network is found dead
// within the probe's 5 s, not after the keepalive bound (5 s x 3).
func TestNetworkChangeProbesConnection(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("adding an address to lo needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command")
	}
	w := newCheckedWorld(t)
	p := w.viaProxy() // default keepalive: 5 s x 3
	w.mount()
	p.Blackhole(true)
	addr := "127.0.0.214/32"
	changed := time.Now()
	if out, err := exec.Command("ip", "addr", "add", addr, "dev", "lo").CombinedOutput(); err != nil {
		t.Skipf("ip addr add: %v: %s", err, out)
	}
	defer exec.Command("ip", "addr", "del", addr, "dev", "lo").Run()
	eventually(t, 12*time.Second, "the dead connection to be noticed after the network change", func() bool { return w.status().State != "online" })
	took := time.Since(changed)
	t.Logf("MEASURED: offline %v after the network changed (keepalive bound 15 s)", took.Round(time.Millisecond))
	if took > 9*time.Second {
		t.Errorf("the dead connection was noticed %v after the network change; the probe allows 5 s", took.Round(time.Millisecond))
	}
	p.Blackhole(false)
	w.flushUntilDelivered(30 * time.Second)
	w.unmount()
}
