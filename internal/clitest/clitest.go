// Package clitest is the test setup the command's packages share (config,
// cacheadmin, daemon, cmd/remotefs): a private home and XDG directories,
// and capturing what a command prints.
package clitest

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// IsolateEnv points HOME and the XDG directories at a temporary folder,
// which it returns.
func IsolateEnv(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	t.Setenv("HOME", d)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(d, "config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(d, "cache"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(d, "state"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(d, "run"))
	return d
}

// CaptureStdout runs f with os.Stdout redirected and returns what it
// printed.
func CaptureStdout(t testing.TB, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	ferr := f()
	os.Stdout = old
	w.Close()
	return <-done, ferr
}
