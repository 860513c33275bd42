package agent

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// The agent's socket is made only in a folder of the user's own closed
// to others, with mode 0600; it is not taken from an agent that answers
// on it, and replaces one whose agent is gone.
func TestListenSocket(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent-x.sock")
	if ln, _, err := listenSocket(sock); err == nil {
		ln.Close()
		t.Fatal("listened in a folder others may enter")
	}
	os.Chmod(dir, 0o700)
	ln, ino, err := listenSocket(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v, %v", fi, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if ln2, _, err := listenSocket(sock); err == nil {
		ln2.Close()
		t.Fatal("took the socket of an agent that answers on it")
	}
	ln.Close() // gone, its socket file left behind
	ln3, ino3, err := listenSocket(sock)
	if err != nil {
		t.Fatalf("a stale socket was not replaced: %v", err)
	}
	defer ln3.Close()
	if ino3 == ino {
		t.Errorf("the same inode after replacing the socket")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 1 {
		t.Errorf("files left in the folder: %q", left)
	}
}
