package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotateLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.log")
	os.WriteFile(p, []byte(strings.Repeat("x", 100)), 0o600)
	rotateLog(p, 1000)
	if _, err := os.Stat(p + ".1"); err == nil {
		t.Fatal("rotated a small log")
	}
	rotateLog(p, 10)
	if b, err := os.ReadFile(p + ".1"); err != nil || len(b) != 100 {
		t.Fatalf("not rotated: %v", err)
	}
	if _, err := os.Stat(p); err == nil {
		t.Fatal("old log still in place")
	}
}
