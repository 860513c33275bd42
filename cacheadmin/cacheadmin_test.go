package cacheadmin

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"remotefs/config"
	"remotefs/conn"
	"remotefs/internal/clitest"
)

// fakeCache makes a cache directory with n entries and pending journal
// records, as the daemon leaves it.
func fakeCache(t *testing.T, dir, remote string, entries, pending int) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "content"), 0o700)
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		key := func(i int) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, uint64(i)); return b }
		for name, n := range map[string]int{"entries": entries, "journal": pending} {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			for i := 1; i <= n; i++ {
				b.Put(key(i), []byte("x"))
			}
		}
		_, err := tx.CreateBucketIfNotExists([]byte("state"))
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "content", "2"), []byte(strings.Repeat("z", 10000)), 0o600)
	if remote != "" {
		spec, _ := conn.ParseSpec(remote)
		if err := WriteInfo(dir, spec.String(), "/mnt/x"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCacheInfo(t *testing.T) {
	dir := t.TempDir()
	spec, _ := conn.ParseSpec("box:proj")
	if err := WriteInfo(dir, spec.String(), "/m"); err != nil {
		t.Fatal(err)
	}
	first := readCacheInfo(dir)
	if first.Remote != "box:proj" || first.Created.IsZero() || first.Mountpoint != "/m" {
		t.Fatalf("%+v", first)
	}
	time.Sleep(1100 * time.Millisecond)
	WriteInfo(dir, spec.String(), "/m")
	second := readCacheInfo(dir)
	if !second.Created.Equal(first.Created) || !second.LastUsed.After(first.LastUsed) {
		t.Errorf("created must stay, last_used move: %+v then %+v", first, second)
	}
}

func TestCacheListAndClear(t *testing.T) {
	clitest.IsolateEnv(t)
	ctx := context.Background()
	spec, _ := conn.ParseSpec("box:proj")
	clean := config.DefaultCacheDir(spec)
	fakeCache(t, clean, "box:proj", 5, 0)
	dirty := filepath.Join(config.CacheRoot(), "dirty-one")
	fakeCache(t, dirty, "box:dirty", 3, 2)
	unknown := filepath.Join(config.CacheRoot(), "old")
	fakeCache(t, unknown, "", 1, 0)
	os.MkdirAll(filepath.Join(config.CacheRoot(), "not-a-cache"), 0o700)

	rows := List(ctx)
	if len(rows) != 3 {
		t.Fatalf("want 3 caches, got %+v", rows)
	}
	byDir := map[string]Row{}
	for _, r := range rows {
		byDir[r.Dir] = r
	}
	if r := byDir[clean]; r.Remote != "box:proj" || r.Entries != 5 || r.Pending != 0 || r.DiskBytes < 10000 || r.LastUsed.IsZero() {
		t.Errorf("clean: %+v", r)
	}
	if r := byDir[dirty]; r.Pending != 2 || r.Entries != 3 {
		t.Errorf("dirty: %+v", r)
	}
	if r := byDir[unknown]; r.Remote != "(unknown)" {
		t.Errorf("unknown: %+v", r)
	}

	// Pending writes: refused, names the remote and what to do.
	err := Clear(ctx, "box:dirty")
	if err == nil || !strings.Contains(err.Error(), "2 change(s) not yet on the server") || !strings.Contains(err.Error(), "mount box:dirty again") {
		t.Errorf("clear with pending writes: %v", err)
	}
	if !isCacheDir(dirty) {
		t.Fatal("dirty cache removed")
	}
	// In use (meta.db locked by a mount): refused.
	db, err := bolt.Open(filepath.Join(clean, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = Clear(ctx, "box:proj")
	db.Close()
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("clear while locked: %v", err)
	}
	// Not a cache: refused.
	if err := Clear(ctx, filepath.Join(config.CacheRoot(), "not-a-cache")); err == nil || !strings.Contains(err.Error(), "not a remotefs cache") {
		t.Errorf("clear of a non-cache: %v", err)
	}
	if err := Clear(ctx, "nosuch:proj"); err == nil || !strings.Contains(err.Error(), "no cache of nosuch:proj") {
		t.Errorf("clear of an unknown remote: %v", err)
	}
	// By remote, by name, by directory.
	if err := Clear(ctx, "box:proj"); err != nil {
		t.Fatal(err)
	}
	if err := Clear(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{clean, unknown} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there", d)
		}
	}
	// A cache mounted with --cache-dir is found by its remote.json.
	custom := filepath.Join(t.TempDir(), "custom")
	fakeCache(t, custom, "box:custom", 1, 0)
	os.MkdirAll(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "remotefs"), 0o700)
	os.WriteFile(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "remotefs", "config.toml"),
		[]byte("[host.\"box\"]\ncache_dir = \""+custom+"\"\n"), 0o600)
	rows = List(ctx)
	found := false
	for _, r := range rows {
		found = found || r.Dir == custom
	}
	if !found {
		t.Errorf("cache_dir from the config file not listed: %+v", rows)
	}
	if err := Clear(ctx, "box:custom"); err != nil {
		t.Fatal(err)
	}
}

func TestPinnedList(t *testing.T) {
	dir := t.TempDir()
	if got := readPinned(dir); len(got) != 0 {
		t.Fatalf("%q", got)
	}
	if err := writePinned(dir, []string{"b/c", "/", "a"}); err != nil {
		t.Fatal(err)
	}
	if got := readPinned(dir); !reflect.DeepEqual(got, []string{"/", "a", "b/c"}) {
		t.Errorf("%q", got)
	}
}
