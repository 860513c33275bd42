package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"remotefs/agent/proto"
	"remotefs/internal/testenv"
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

// When the session of the connection that started the agent ends (here:
// its stdin closed), that connection sees its output end at once, while
// the process goes on serving its socket for others.
func TestFirstSessionEndHangsUp(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	sock := filepath.Join(dir, "agent-x.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- servePersistent(ctx, sock, time.Minute, inR, outW) }()
	testenv.Eventually(t, 5*time.Second, "the agent's socket", func() bool {
		_, err := os.Lstat(sock)
		return err == nil
	})
	eof := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, outR); eof <- err }()
	inW.Close()
	select {
	case err := <-eof:
		if err != nil {
			t.Errorf("output ended with %v, want EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first session ended but its output stayed open")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the socket stopped serving when the first session ended: %v", err)
	}
	defer c.Close()
	// A connection through the socket is greeted by the agent.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	greeting := make([]byte, 256)
	n, err := io.ReadAtLeast(c, greeting, len(proto.AgentHello))
	if err != nil || !bytes.Contains(greeting[:n], []byte(proto.AgentHello)) {
		t.Fatalf("no greeting through the socket after the first session ended: %q, %v", greeting[:n], err)
	}
	select {
	case err := <-served:
		t.Fatalf("the agent ended with its first session: %v", err)
	default:
	}
}
