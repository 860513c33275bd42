package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"remotefs/internal/sshdtest"
)

// TestBadInput checks that each mistake a user can make gets one clear
// line on stderr, a non-zero exit status, and leaves nothing mounted.
func TestBadInput(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()

	// A port with nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	// A key the server does not accept, one protected by a passphrase, and
	// a known_hosts that records another key for the server.
	strangerKey := writeKey(t, filepath.Join(dir, "stranger_key"), nil)
	lockedKey := writeKey(t, filepath.Join(dir, "locked_key"), []byte("secret"))
	_ = lockedKey
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshOther, _ := ssh.NewPublicKey(otherPub)
	hostPattern := fmt.Sprintf("[127.0.0.1]:%d", w.srv.Port)
	impostorKH := filepath.Join(dir, "impostor_known_hosts")
	os.WriteFile(impostorKH, []byte(hostPattern+" "+string(ssh.MarshalAuthorizedKey(sshOther))), 0o600)
	emptyKH := filepath.Join(dir, "empty_known_hosts")
	os.WriteFile(emptyKH, nil, 0o600)

	for _, h := range []sshdtest.Host{
		{Alias: "deadbox", Port: deadPort, KnownHostsFile: w.srv.KnownHostsFile},
		{Alias: "strangerbox", KnownHostsFile: emptyKH},
		{Alias: "impostorbox", KnownHostsFile: impostorKH},
		{Alias: "wrongkeybox", IdentityFile: strangerKey},
		{Alias: "lockedbox", IdentityFile: lockedKey},
	} {
		if err := w.srv.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}

	w.writeServer("a-file", "not a folder", 0o644)
	notDir := filepath.Join(dir, "plainfile")
	os.WriteFile(notDir, nil, 0o644)

	// An existing mount for the "already mounted" case.
	busy := filepath.Join(dir, "busy")
	os.Mkdir(busy, 0o755)
	w.must(binary, "mount", w.spec(), busy)
	defer w.run(binary, "unmount", "--force", busy)

	// PATH without fusermount3.
	noFuseBin := filepath.Join(dir, "nofusebin")
	os.Mkdir(noFuseBin, 0o755)

	good := w.spec()
	cases := []struct {
		name   string
		args   []string
		env    []string
		code   int
		want   []string // substrings of the message (case-insensitive)
		mntDir string
	}{
		{"no arguments", nil, nil, 2, []string{"no command"}, ""},
		{"mount without arguments", []string{"mount"}, nil, 2, []string{"HOST:PATH", "MOUNTPOINT"}, ""},
		{"bad spec", []string{"mount", "no-colon-here", w.mnt}, nil, 1, []string{"HOST:PATH"}, w.mnt},
		{"unknown host", []string{"mount", "nosuchhost.invalid:proj", w.mnt}, nil, 1, []string{"nosuchhost.invalid"}, w.mnt},
		{"unreachable host", []string{"mount", "deadbox:" + w.root, w.mnt}, nil, 1, []string{"deadbox", "refused"}, w.mnt},
		{"authentication failure", []string{"mount", "wrongkeybox:" + w.root, w.mnt}, nil, 1, []string{"authentication", "wrongkeybox"}, w.mnt},
		{"passphrase key without agent", []string{"mount", "lockedbox:" + w.root, w.mnt}, nil, 1, []string{"passphrase", "ssh-add"}, w.mnt},
		{"unknown host key", []string{"mount", "strangerbox:" + w.root, w.mnt}, nil, 1, []string{"strangerbox", emptyKH}, w.mnt},
		{"changed host key", []string{"mount", "impostorbox:" + w.root, w.mnt}, nil, 1, []string{"impostorbox", impostorKH}, w.mnt},
		{"remote path missing", []string{"mount", w.alias + ":" + w.root + "/nope", w.mnt}, nil, 1, []string{"/nope", "does not exist"}, w.mnt},
		{"remote path not a directory", []string{"mount", w.alias + ":" + w.root + "/a-file", w.mnt}, nil, 1, []string{"a-file", "not a directory"}, w.mnt},
		{"mountpoint missing", []string{"mount", good, filepath.Join(dir, "nope")}, nil, 1, []string{"nope", "does not exist"}, ""},
		{"mountpoint not a directory", []string{"mount", good, notDir}, nil, 1, []string{"plainfile", "not a directory"}, ""},
		{"mountpoint already mounted", []string{"mount", good, busy}, nil, 1, []string{"busy", "already mounted"}, ""},
		{"no fusermount3", []string{"mount", good, w.mnt}, []string{"PATH=" + noFuseBin}, 1, []string{"fusermount3"}, w.mnt},
		{"unmount of something not mounted", []string{"unmount", w.mnt}, nil, 1, []string{"not a remotefs mount"}, w.mnt},
		{"unknown command", []string{"mounty"}, nil, 2, []string{"unknown command"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			saved := w.env
			w.env = append(append([]string(nil), w.env...), tc.env...)
			r := w.run(binary, tc.args...)
			w.env = saved
			if r.code != tc.code {
				t.Errorf("exit status %d, want %d (stderr: %s)", r.code, tc.code, r.stderr)
			}
			msg := lastLine(r.stderr)
			t.Logf("exit %d: %s", r.code, msg)
			for _, s := range tc.want {
				if !strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
					t.Errorf("message %q does not mention %q", msg, s)
				}
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("want one line on stderr, got:\n%s", r.stderr)
			}
			if tc.mntDir != "" && mounted(tc.mntDir) {
				t.Errorf("%s was left mounted", tc.mntDir)
			}
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// writeKey writes a new ed25519 private key (encrypted with passphrase
// when given) and returns its path.
func writeKey(t *testing.T, path string, passphrase []byte) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase != nil {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", passphrase)
	} else {
		block, err = ssh.MarshalPrivateKey(priv, "")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNoFUSEDevice runs mount in a mount namespace whose /dev has no fuse
// device (needs root for unshare).
func TestNoFUSEDevice(t *testing.T) {
	w := newWorld(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to hide /dev/fuse in a private mount namespace")
	}
	emptyDev := t.TempDir()
	r := w.run("unshare", "-m", "sh", "-c", `mount --bind "$0" /dev && exec "$@"`, emptyDev, binary, "mount", w.spec(), w.mnt)
	msg := lastLine(r.stderr)
	if r.code != 1 || !strings.Contains(msg, "/dev/fuse") {
		t.Fatalf("exit %d, message %q: want 1 and a message about /dev/fuse", r.code, msg)
	}
	if mounted(w.mnt) {
		t.Fatal("left mounted")
	}
}
