package cache

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// A folder's link count (2 + its subfolders) follows every change of its
// names, and a getattr of a folder does not scan its entries: on a folder
// of 4,000 names it costs about what it costs on a folder of two (it used
// to take a scan per call under the store's lock; a walk stats every
// folder several times).
func TestFolderLinkCountKeptNotScanned(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	os.MkdirAll(e.remote.p("big/sub1"), 0o755)
	os.MkdirAll(e.remote.p("small/sub1"), 0o755)
	for i := 0; i < 4000; i++ {
		e.server(fmt.Sprintf("big/f%04d", i), "")
	}
	e.server("small/f", "")
	big, small := e.mustLookup("big"), e.mustLookup("small")
	if _, err := e.s.ReadDir(ctx, big.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.ReadDir(ctx, small.Ino); err != nil {
		t.Fatal(err)
	}
	links := func(ino Ino) uint32 {
		t.Helper()
		a, err := e.s.GetAttr(ino)
		if err != nil {
			t.Fatal(err)
		}
		return a.Nlink
	}
	if n := links(big.Ino); n != 3 {
		t.Fatalf("big has link count %d, want 3", n)
	}
	// Changes of its names move the count.
	if _, err := e.s.Mkdir(ctx, big.Ino, "sub2", 0o755); err != nil {
		t.Fatal(err)
	}
	if n := links(big.Ino); n != 4 {
		t.Errorf("after mkdir: %d, want 4", n)
	}
	if err := e.s.Rename(ctx, big.Ino, "sub2", small.Ino, "moved"); err != nil {
		t.Fatal(err)
	}
	if nb, ns := links(big.Ino), links(small.Ino); nb != 3 || ns != 4 {
		t.Errorf("after moving a folder: big %d small %d, want 3 and 4", nb, ns)
	}
	if err := e.s.Rmdir(ctx, small.Ino, "moved"); err != nil {
		t.Fatal(err)
	}
	if n := links(small.Ino); n != 3 {
		t.Errorf("after rmdir: %d, want 3", n)
	}
	e.flush()
	// A folder the server made, seen in a new listing.
	os.Mkdir(e.remote.p("big/fromserver"), 0o755)
	e.clock.Advance(time.Hour)
	if err := e.s.listDir(ctx, big.Ino); err != nil {
		t.Fatal(err)
	}
	if n := links(big.Ino); n != 4 {
		t.Errorf("after the server's mkdir: %d, want 4", n)
	}

	cost := func(ino Ino) time.Duration {
		best := time.Duration(1 << 62)
		for r := 0; r < 5; r++ {
			start := time.Now()
			for i := 0; i < 300; i++ {
				links(ino)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	cb, cs := cost(big.Ino), cost(small.Ino)
	t.Logf("300 getattrs: folder of 4,000 names %v, of 2 names %v", cb, cs)
	if cb > 20*cs+time.Millisecond {
		t.Errorf("a folder's getattr scales with its names: %v for 4,000 names, %v for 2", cb, cs)
	}
}

// The server's whole-second times keep a local time they stand for: the
// same second without its fraction, or a time past 2106 wrapped to the 32
// bits SFTP v3 carries (pjdfstest utimensat/09 saw 2^32 turn into 1970
// once the server's listing came back).
func TestServerTimeKeepsLocalItStandsFor(t *testing.T) {
	for _, c := range []struct {
		local, server time.Time
		keep          bool
	}{
		{time.Unix(1700000000, 123), time.Unix(1700000000, 0), true},
		{time.Unix(1700000000, 123), time.Unix(1700000001, 0), false},
		{time.Unix(1<<32, 0), time.Unix(0, 0), true},
		{time.Unix(1<<32+5, 7), time.Unix(5, 0), true},
		{time.Unix(5, 0), time.Unix(1<<32+5, 0), false},
		{time.Unix(1<<32, 0), time.Unix(1, 0), false},
		{time.Time{}, time.Unix(5, 0), false},
	} {
		got := sameSecond(c.local, c.server)
		if want := map[bool]time.Time{true: c.local, false: c.server}[c.keep]; !got.Equal(want) {
			t.Errorf("local %v, server %v: got %v, want %v", c.local.Unix(), c.server.Unix(), got.Unix(), want.Unix())
		}
	}
}

// Lookups do not ask the connection layer for the login's ids each time
// (a lock there per lookup): once per connection, and again only after a
// while.
func TestLookupsAskLoginIDsOncePerConnection(t *testing.T) {
	e := newEnv(t)
	e.server("d/f", "x")
	e.s.Connected()
	e.mustLookup("d/f")
	before := e.remote.ownerCalls.Load()
	for i := 0; i < 500; i++ {
		e.mustLookup("d/f")
	}
	if n := e.remote.ownerCalls.Load() - before; n > 1 {
		t.Errorf("500 lookups asked for the login's ids %d times", n)
	}
	// A new connection asks again.
	e.s.Connected()
	e.mustLookup("d/f")
	if n := e.remote.ownerCalls.Load() - before; n < 1 {
		t.Errorf("a new connection did not ask for the login's ids")
	}
	if _, _, ok := e.s.loginIDs(); !ok {
		t.Error("the login's ids are not known")
	}
}
