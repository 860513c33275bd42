package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"syscall"
	"testing"
	"time"
)

// Seeded random saves to files, some of which the server refuses for good
// (EACCES) or cannot name (ENAMETOOLONG-like EINVAL): every save is either
// on the server (the last one of each accepted file) or kept in
// undelivered/ (the last one of each refused file), the journal drains
// (nothing is retried forever), and the accepted files are never held
// back by the refused ones.
func TestUndeliveredSavesAgainstReference(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			e := newEnv(t)
			const files = 8
			refused := map[string]error{}
			for i := 0; i < files; i++ {
				p := fmt.Sprintf("f%d.txt", i)
				e.server(p, "server "+p)
				switch rng.Intn(4) {
				case 0:
					refused[p] = syscall.EACCES
				case 1:
					refused[p] = syscall.EINVAL
				}
			}
			e.remote.mu.Lock()
			e.remote.refuse = refused
			e.remote.mu.Unlock()
			last := map[string]string{}
			for n := 0; n < 40; n++ {
				p := fmt.Sprintf("f%d.txt", rng.Intn(files))
				content := fmt.Sprintf("save %d of %s seed %d", n, p, seed)
				e.mustWrite(p, content)
				last[p] = content
				if rng.Intn(5) == 0 {
					time.Sleep(time.Duration(rng.Intn(30)) * time.Millisecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := e.s.Flush(ctx)
			anyRefused := false
			for p := range last {
				if refused[p] != nil {
					anyRefused = true
				}
			}
			if anyRefused != errors.Is(err, ErrUndelivered) {
				t.Fatalf("flush: %v (refused saves: %v)", err, anyRefused)
			}
			if st := e.s.Status(); st.Pending != 0 || st.LastError != "" {
				t.Fatalf("after flush: %d pending, error %q", st.Pending, st.LastError)
			}
			kept := map[string]string{} // path -> content of its latest kept save
			for _, u := range e.s.Undelivered() {
				if u.Kept == "" {
					t.Errorf("%s set aside without its content", u.Path)
					continue
				}
				b, err := os.ReadFile(u.Kept)
				if err != nil {
					t.Fatal(err)
				}
				kept[u.Path] = string(b)
			}
			if os.Getenv("DEBUGU") != "" {
				for _, u := range e.s.Undelivered() {
					b, _ := os.ReadFile(u.Kept)
					t.Logf("kept %d %s %q", u.Seq, u.Path, b)
				}
				ents, _ := os.ReadDir(e.remote.root)
				for _, x := range ents {
					t.Logf("server: %s", x.Name())
				}
			}
			for p, want := range last {
				if refused[p] != nil {
					if kept[p] != want {
						t.Errorf("%s (refused): latest kept %q, want %q", p, kept[p], want)
					}
					if got := e.serverContent(p); got != "server "+p {
						t.Errorf("%s (refused) changed on the server: %q", p, got)
					}
					continue
				}
				if got := e.serverContent(p); got != want {
					t.Errorf("%s: server has %q, want %q", p, got, want)
				}
				if _, ok := kept[p]; ok {
					t.Errorf("%s was delivered but also set aside", p)
				}
			}
			// The mount shows the server's version of refused files again.
			for p := range last {
				if refused[p] != nil {
					if got := e.mustRead(p); got != "server "+p {
						t.Errorf("%s reads %q after being set aside, want the server's", p, got)
					}
				}
			}
		})
	}
}

// A refused mkdir is set aside without content, the folder disappears
// from the mount, and an upload into it is set aside with its content
// (the folder is not on the server); both are named by Flush.
func TestRefusedMkdirSetAside(t *testing.T) {
	e := newEnv(t)
	e.remote.mu.Lock()
	e.remote.refuse = map[string]error{"locked": syscall.EACCES}
	e.remote.mu.Unlock()
	a, err := e.s.Mkdir(context.Background(), RootIno, "locked", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, h, err := e.s.Create(context.Background(), a.Ino, "inside.txt", 0o644, os.O_RDWR, true)
	if err != nil {
		t.Fatal(err)
	}
	h.WriteAt([]byte("precious"), 0)
	h.Release()
	e.mustWrite("free.txt", "delivered")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = e.s.Flush(ctx)
	if !errors.Is(err, ErrUndelivered) {
		t.Fatalf("flush: %v", err)
	}
	us := e.s.Undelivered()
	if len(us) != 2 || us[0].Path != "locked" || us[0].Kept != "" || us[1].Path != "locked/inside.txt" || us[1].Kept == "" {
		t.Fatalf("undelivered: %+v", us)
	}
	if b, _ := os.ReadFile(us[1].Kept); string(b) != "precious" {
		t.Errorf("kept content %q", b)
	}
	if e.serverContent("free.txt") != "delivered" {
		t.Errorf("free.txt not delivered")
	}
	if _, err := e.lookup("locked"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused folder still shows on the mount: %v", err)
	}
	if st := e.s.Status(); st.Pending != 0 {
		t.Errorf("%d pending", st.Pending)
	}
}

// chown of a file whose creation is still in the journal goes through the
// journal, after it.
func TestChownQueuedAfterCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another group")
	}
	e := newEnv(t)
	e.s.Close()
	s, err := Open(Options{Dir: e.dir, Remote: e.remote, Now: e.clock.Now, ConflictLabel: "laptop",
		Owners: Owners{LocalUID: 0, LocalGID: 0}})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	t.Cleanup(func() { s.Close() })
	e.remote.putGate = make(chan struct{}) // hold the upload
	a, h, err := s.Create(context.Background(), RootIno, "new.txt", 0o644, os.O_RDWR, true)
	if err != nil {
		t.Fatal(err)
	}
	h.WriteAt([]byte("x"), 0)
	h.Release()
	gid := uint32(4321)
	got, err := s.Chown(context.Background(), a.Ino, nil, &gid)
	if err != nil || got.Gid != 4321 {
		t.Fatalf("chown: %+v %v", got, err)
	}
	close(e.remote.putGate)
	e.flush()
	fi, err := os.Stat(e.remote.p("new.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if g := fi.Sys().(*syscall.Stat_t).Gid; g != 4321 {
		t.Errorf("server group %d, want 4321", g)
	}
}

// TestChownOfflineWaitsInJournal: a chown made while the server is
// unreachable is accepted into the journal, like every other change, and
// reaches the server when it is back.
func TestChownOfflineWaitsInJournal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another group")
	}
	e := newEnv(t)
	e.server("f.txt", "x")
	a := e.mustLookup("f.txt")
	e.s.Connected()
	e.remote.offline.Store(true)
	gid := uint32(4321)
	got, err := e.s.Chown(context.Background(), a.Ino, nil, &gid)
	if err != nil || got.Gid != 4321 {
		t.Fatalf("chown offline: %+v %v", got, err)
	}
	if st := e.s.Status(); st.Pending != 1 {
		t.Fatalf("pending = %d, want the chown in the journal", st.Pending)
	}
	e.remote.offline.Store(false)
	e.flush()
	fi, err := os.Stat(e.remote.p("f.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if g := fi.Sys().(*syscall.Stat_t).Gid; g != 4321 {
		t.Errorf("server gid = %d, want 4321", g)
	}
}
