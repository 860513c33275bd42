package cache

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ListingFresh says how long the cache serves a folder's listing as it
// is: DirTTL after it was confirmed with the server, counting down; after
// that a read refreshes it in the background (listing meanwhile) and the
// countdown starts again; nothing while offline.
func TestListingFresh(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	os.MkdirAll(filepath.Join(e.remote.root, "src"), 0o755)
	os.WriteFile(filepath.Join(e.remote.root, "src", "a.py"), []byte("a"), 0o644)
	src, err := e.s.Lookup(ctx, RootIno, "src")
	if err != nil {
		t.Fatal(err)
	}
	if at, fresh, _ := e.s.ListingFresh(src.Ino); !at.IsZero() || fresh != 0 {
		t.Fatalf("a folder never listed: ListingFresh %v, %v; want zero", at, fresh)
	}
	if _, err := e.s.ReadDir(ctx, src.Ino); err != nil {
		t.Fatal(err)
	}
	at0, fresh, _ := e.s.ListingFresh(src.Ino)
	if !at0.Equal(e.clock.Now()) || fresh != 10*time.Second {
		t.Fatalf("just listed: ListingFresh %v, %v; want now, the default DirTTL (10s)", at0, fresh)
	}
	e.clock.Advance(4 * time.Second)
	if _, fresh, _ := e.s.ListingFresh(src.Ino); fresh != 6*time.Second {
		t.Fatalf("4 s later: fresh for %v, want 6s", fresh)
	}
	e.clock.Advance(7 * time.Second)
	if _, fresh, _ := e.s.ListingFresh(src.Ino); fresh != 0 {
		t.Fatalf("11 s later: fresh for %v, want 0", fresh)
	}
	// A read now is served at once and refreshes the listing behind it.
	os.WriteFile(filepath.Join(e.remote.root, "src", "b.py"), []byte("b"), 0o644)
	if ents, err := e.s.ReadDir(ctx, src.Ino); err != nil || len(ents) != 1 {
		t.Fatalf("a stale listing's read: %v, %v; want the kept listing (a.py) at once, the refresh behind it", ents, err)
	}
	eventuallyT(t, "the refresh after a read of a stale listing", func() bool {
		at, _, listing := e.s.ListingFresh(src.Ino)
		return !listing && at.After(at0)
	})
	if _, fresh, _ := e.s.ListingFresh(src.Ino); fresh != 10*time.Second {
		t.Fatalf("refreshed: fresh for %v, want 10s", fresh)
	}
	if ents, _ := e.s.ReadDir(ctx, src.Ino); len(ents) != 2 {
		t.Fatalf("refreshed listing %v, want a.py and b.py", ents)
	}
	e.remote.offline.Store(true)
	if at, fresh, _ := e.s.ListingFresh(src.Ino); !at.IsZero() || fresh != 0 {
		t.Fatalf("offline: ListingFresh %v, %v; want zero", at, fresh)
	}
}
