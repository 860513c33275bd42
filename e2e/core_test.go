package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"remotefs/conn"
	"remotefs/internal/sshdtest"
)

// seedProject writes the starting project into dir.
func seedProject(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"README.md":      "# project\n",
		"src/app.py":     "def main():\n    print('hello')\n",
		"src/util.py":    "def util():\n    return 1\n",
		"scripts/run.sh": "#!/bin/sh\necho run\n",
		"data/big.bin":   strings.Repeat("0123456789abcdef", 64*1024),
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// manifest describes a tree: type, permission bits, content hash or
// symlink target of every path. .git/index holds inode numbers and times,
// which differ between any two copies, so it is left out.
func manifest(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." || rel == ".git/index" {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			out[rel] = "link " + tgt
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %o", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %o %d %s", fi.Mode().Perm(), len(b), hex.EncodeToString(h[:6]))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func diffManifests(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var diffs []string
	for _, k := range keys {
		if want[k] != got[k] {
			diffs = append(diffs, fmt.Sprintf("  %s: want %q, got %q", k, want[k], got[k]))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%s differs from the reference in %d paths:\n%s", what, len(diffs), strings.Join(diffs, "\n"))
	}
}

func noTempFiles(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasPrefix(d.Name(), conn.TempPrefix) || strings.Contains(d.Name(), ".tmp-save")) {
			t.Errorf("temporary file left on the server: %s", p)
		}
		return nil
	})
}

// TestDeveloperDay runs the same day of work with ordinary programs (cp,
// mv, rm, chmod, ln, truncate, python editor saves, git) on a local
// reference folder and on the mount, then checks that the server holds
// exactly what the reference holds, and that git saw the same thing.
func TestDeveloperDay(t *testing.T) {
	forEachSSH(t, func(t *testing.T, _ string, setup func(*world) *world) { developerDay(t, setup(newWorld(t))) })
}

func developerDay(t *testing.T, w *world) {
	saveScript, _ := filepath.Abs("testdata/editor_save.py")
	workload, _ := filepath.Abs("testdata/workload.sh")
	w.env = append(w.env, "SAVE="+saveScript)

	refBase := t.TempDir()
	ref := filepath.Join(refBase, "proj")
	seedProject(t, ref)
	seedProject(t, w.s("proj"))

	w.mount()
	w.mustIn(ref, "bash", workload)
	w.mustIn(w.m("proj"), "bash", workload)

	refStatus, _ := os.ReadFile(filepath.Join(refBase, "status-proj.txt"))
	mntStatus, err := os.ReadFile(w.m("status-proj.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(refStatus) != string(mntStatus) || len(refStatus) == 0 {
		t.Errorf("git status on the mount:\n%s\nreference:\n%s", mntStatus, refStatus)
	}
	refHead := w.mustIn(ref, "git", "rev-parse", "HEAD")
	mntHead := w.mustIn(w.m("proj"), "git", "rev-parse", "HEAD")
	if refHead != mntHead {
		t.Errorf("commit on the mount %s differs from the reference %s (tree contents or modes differ)", mntHead, refHead)
	}
	diffManifests(t, "the mount (before unmount)", manifest(t, ref), manifest(t, w.m("proj")))

	w.unmount()
	diffManifests(t, "the server after unmount", manifest(t, ref), manifest(t, w.s("proj")))
	noTempFiles(t, w.root)
	if out := w.mustIn(w.s("proj"), "git", "fsck", "--no-progress"); strings.Contains(out, "error") {
		t.Errorf("git fsck on the server: %s", out)
	}

	// A second mount shows the same tree (from the persistent cache).
	w.mount()
	diffManifests(t, "the mount after remount", manifest(t, ref), manifest(t, w.m("proj")))
	w.unmount()
}

// The ssh_config people write: the host comes from an Included file and is
// reached through a ProxyJump bastion (here the same sshd, jumping to itself).
func TestMountThroughIncludeAndProxyJump(t *testing.T) {
	w := newWorld(t)
	confd := filepath.Join(w.srv.Home, ".ssh", "conf.d")
	if err := os.MkdirAll(confd, 0o700); err != nil {
		t.Fatal(err)
	}
	jump := w.srv.HostBlock(sshdtest.Host{Alias: "bastion"}) +
		w.srv.HostBlock(sshdtest.Host{Alias: "gpu-*", Lines: []string{"ProxyJump bastion"}})
	if err := os.WriteFile(filepath.Join(confd, "work.conf"), []byte(jump), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(w.srv.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	// Include must come before the first Host block to apply to all hosts.
	if err := os.WriteFile(w.srv.ConfigFile, append([]byte("Include conf.d/*.conf\n\n"), cfg...), 0o600); err != nil {
		t.Fatal(err)
	}
	w.roundTripThroughHop("gpu-box", "ProxyJump")
}

// roundTripThroughHop mounts alias (a host reached through a jump host or
// a ProxyCommand), reads a server file, saves one back, unmounts, and
// checks that the save is on the server and that sshd forwarded the
// connection (so the hop was really used).
func (w *world) roundTripThroughHop(alias, how string) {
	t := w.t
	t.Helper()
	w.writeServer("proj/hello.txt", "through "+how+"\n", 0o644)
	w.alias = alias
	w.mount()
	if b, err := os.ReadFile(w.m("proj/hello.txt")); err != nil || string(b) != "through "+how+"\n" {
		t.Fatalf("read through %s: %q, %v", how, b, err)
	}
	if err := os.WriteFile(w.m("proj/back.txt"), []byte("and back\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.unmount()
	if b, _ := os.ReadFile(w.s("proj/back.txt")); string(b) != "and back\n" {
		t.Fatalf("server back.txt = %q", b)
	}
	// Every public-key login logs "port-forwarding" among its key options:
	// only the request itself shows that a hop carried the connection.
	if log := w.srv.Log(); !strings.Contains(log, "server_request_direct_tcpip") {
		t.Errorf("sshd log shows no forwarded connection; was %s used?", how)
	}
}
