package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"remotefs/conn"
	"remotefs/internal/sshdtest"
	"remotefs/internal/testenv"
)

// countingClient is a real connection to a test sshd that counts the
// listings of one folder, by the store's connection epoch when each was
// sent.
type countingClient struct {
	*conn.Client
	folder string
	s      *Store

	mu      sync.Mutex
	byEpoch map[uint64]int
	gate    chan struct{} // when set, listings of folder wait for it
}

func (c *countingClient) ReadDir(ctx context.Context, p string) ([]conn.FileInfo, error) {
	if p == c.folder {
		c.s.mu.Lock()
		epoch := c.s.connEpoch
		c.s.mu.Unlock()
		c.mu.Lock()
		c.byEpoch[epoch]++
		gate := c.gate
		c.mu.Unlock()
		if gate != nil {
			<-gate
		}
	}
	return c.Client.ReadDir(ctx, p)
}

func (c *countingClient) listings(epoch uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byEpoch[epoch]
}

// dialTestServer starts a real sshd and connects to the folder root
// under it.
func dialTestServer(t *testing.T) (*conn.Client, string) {
	t.Helper()
	srv := sshdtest.Start(t)
	root := filepath.Join(srv.Dir, "tree")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, err := conn.ParseSpec("testbox:" + root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := conn.Dial(ctx, spec, conn.Options{Home: srv.Home, SystemConfigFile: "none",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, root
}

// A huge folder (more than confirmListMax names) not yet confirmed in a
// connection: lookups in it start a background refresh while readdirs
// confirm it, all at once. They share one listing per connection: none
// is sent again once one has confirmed the folder.
func TestConcurrentConfirmationsShareOneListing(t *testing.T) {
	client, root := dialTestServer(t)
	for i := 0; i <= confirmListMax+50; i++ {
		testenv.WriteFile(t, root, fmt.Sprintf("big/f%05d", i), "x", 0o644)
	}
	rem := &countingClient{Client: client, folder: "big", byEpoch: map[uint64]int{}}
	clock := &fakeClock{t: time.Now()}
	s, err := Open(Options{Dir: t.TempDir(), Remote: rem, Online: func() bool { return true },
		Now: clock.Now, ConflictLabel: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rem.s = s
	ctx := context.Background()
	s.Connected()
	bigAttr, err := s.Lookup(ctx, RootIno, "big")
	if err != nil {
		t.Fatal(err)
	}
	big := bigAttr.Ino
	if _, err := s.ReadDir(ctx, big); err != nil {
		t.Fatal(err)
	}
	inFlight := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.listing[big] != nil
	}
	const rounds = 40
	for round := 0; round < rounds; round++ {
		// A reconnect, long after the last listing: the folder is
		// unconfirmed and its listing older than DirTTL.
		s.Connected()
		clock.Advance(time.Minute)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var err error
				if g%3 == 0 {
					_, err = s.ReadDir(ctx, big)
				} else {
					_, err = s.Lookup(ctx, big, fmt.Sprintf("f%05d", round*6+g))
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		// Every listing the round started is registered by now.
		testenv.Eventually(t, 10*time.Second, "the round's listings to end", func() bool { return !inFlight() })
	}
	rem.mu.Lock()
	extra := 0
	for epoch, n := range rem.byEpoch {
		if n > 1 {
			extra += n - 1
			t.Errorf("connection %d: the huge folder was listed %d times", epoch, n)
		}
	}
	if len(rem.byEpoch) < rounds {
		t.Errorf("listings in %d connections of %d: a readdir of an unconfirmed folder must list it", len(rem.byEpoch), rounds+1)
	}
	t.Logf("%d connections, %d listings more than one per connection", len(rem.byEpoch), extra)
	rem.mu.Unlock()

	// The windows those rounds rarely hit, one at a time. A lookup's
	// background refresh is registered before the lookup returns (not
	// when its goroutine gets to run), so a readdir right after it
	// waits for it: with one P, the refresh's goroutine has not run yet
	// when ensureListed returns.
	s.Connected()
	clock.Advance(time.Minute)
	epoch := s.connEpoch
	gate := make(chan struct{})
	rem.mu.Lock()
	rem.gate = gate
	rem.mu.Unlock()
	procs := runtime.GOMAXPROCS(1)
	err = s.ensureListed(ctx, big)
	registered := inFlight()
	runtime.GOMAXPROCS(procs)
	if err != nil {
		t.Fatal(err)
	}
	if !registered {
		t.Errorf("a lookup started a refresh of the stale folder that was not registered when it returned: a readdir meanwhile sends another listing")
	}
	if st := s.Status(); st.Settling == 0 {
		t.Errorf("status while a listing runs: settling %d, want it counted", st.Settling)
	}
	done := make(chan error, 1)
	go func() { _, err := s.ReadDir(ctx, big); done <- err }()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the refresh to end", func() bool { return !inFlight() })
	testenv.Eventually(t, 10*time.Second, "nothing settling", func() bool { return s.Status().Settling == 0 })
	if n := rem.listings(epoch); n != 1 {
		t.Errorf("a lookup's refresh and a readdir: %d listings, want 1", n)
	}

	// A readdir that found the folder unconfirmed (listing number seen)
	// while another listing was running, which has ended since, takes
	// that listing instead of sending its own.
	s.Connected()
	epoch = s.connEpoch
	s.mu.Lock()
	seen := s.listSeq
	s.mu.Unlock()
	if err := s.listDirNow(ctx, big, ^uint64(0)); err != nil { // the other listing
		t.Fatal(err)
	}
	if err := s.confirmListing(ctx, big, seen); err != nil {
		t.Fatal(err)
	}
	if n := rem.listings(epoch); n != 1 {
		t.Errorf("a confirmation decided before another listing ended: %d listings, want 1", n)
	}
}

// A listing asked before the one a folder shows never undoes it: the
// tree listing's stream, still running when a readdir listed the folder
// itself, leaves the newer listing's names in place.
func TestOlderListingDoesNotUndoNewer(t *testing.T) {
	e := newEnv(t)
	e.server("d/old", "1")
	ctx := context.Background()
	e.s.Connected()
	d := e.mustLookup("d").Ino
	// A stream of the tree listing has read d (only "old" then) and is
	// still going when d is listed on its own, after "new" appeared.
	l := e.s.newBulkLister("", RootIno, nil)
	l.stack[0].infos = []conn.FileInfo{fileInfo(e, "d")}
	e.s.mu.Lock()
	l.stack = append(l.stack, &frame{path: "d", infos: []conn.FileInfo{fileInfo(e, "d/old")}, call: e.s.claimListingLocked(d)})
	e.s.mu.Unlock()
	e.server("d/new", "2")
	if err := e.s.listDirNow(ctx, d, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lookup("d/new"); err != nil {
		t.Fatalf("d/new after the folder's own listing: %v", err)
	}
	l.finish() // the stream ends: its older listing of d is merged now
	if _, err := e.lookup("d/new"); err != nil {
		t.Errorf("d/new after the older stream ended: %v (the older listing undid the newer one)", err)
	}
	if _, err := e.lookup("d/old"); err != nil {
		t.Errorf("d/old: %v", err)
	}
}

func fileInfo(e *env, rel string) conn.FileInfo {
	e.t.Helper()
	fi, err := e.remote.Lstat(context.Background(), rel)
	if err != nil {
		e.t.Fatal(err)
	}
	return fi
}
