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
