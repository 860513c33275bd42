package conntest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"remotefs/conn"
)

func TestNewPipe(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("hello"), 0o644)
	c := NewPipe(t, dir, conn.Options{})
	ctx := context.Background()
	fi, err := c.Lstat(ctx, "a")
	if err != nil || fi.Size != 5 {
		t.Fatalf("Lstat: %+v %v", fi, err)
	}
	if _, err := c.PutAtomic(ctx, "b", strings.NewReader("x"), 0o600, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lstat(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if c.RootPath() != dir {
		t.Fatalf("root %s", c.RootPath())
	}
}
