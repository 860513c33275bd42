package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKill9RightAfterBulkSaves creates and saves many files through the
// mount over a 50 ms link (new files, rewrites of earlier ones, editor
// saves through a temporary and a rename, chmods, deletes), kills the
// daemon with SIGKILL the moment the last call returned, mounts again and
// flushes: every change whose call returned must reach the server, byte
// for byte, and the mount must show the same. Randomized (the seed is
// logged; REMOTEFS_SEED repeats one) against a reference map.
//
// With strace on the machine it also counts the daemon's fdatasync and
// fsync calls during a 200-file create: the journal commits in groups, so a
// created file costs a few, not the ~20 that one bbolt transaction per
// change cost.
func TestKill9RightAfterBulkSaves(t *testing.T) {
	w := newCheckedWorld(t)
	p := w.viaProxy()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("REMOTEFS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("seed %d", seed)

	want := map[string]string{} // server path -> content; "" with gone[path]: deleted
	gone := map[string]bool{}
	var names []string
	w.mount()
	p.SetLatency(25 * time.Millisecond) // 50 ms round trips
	if err := os.Mkdir(w.m("bulk"), 0o755); err != nil {
		t.Fatal(err)
	}

	if _, err := exec.LookPath("strace"); err == nil {
		syncs, n := w.countSyncs(t, w.status().PID, func() int {
			const n = 200
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("bulk/s%03d.txt", i)
				c := fmt.Sprintf("counted %d\n", i)
				if err := os.WriteFile(w.m(name), []byte(c), 0o644); err != nil {
					t.Fatalf("create %s: %v", name, err)
				}
				want[name] = c
				names = append(names, name)
			}
			return n
		})
		per := float64(syncs) / float64(n)
		t.Logf("fdatasync+fsync by the daemon: %d for %d created files (%.2f a file)", syncs, n, per)
		// One for the file's content and one for the journal at close,
		// one before its upload is sent, and the journal's batched
		// checkpoints; 20 a file without group commit.
		if per > 4 {
			t.Errorf("%.2f fdatasync/fsync calls per created file; want at most 4 (group commit)", per)
		}
	} else if os.Getenv("REMOTEFS_REQUIRE_FUSE") == "1" {
		t.Errorf("no strace (scripts/install-deps.sh installs it): the fdatasync count is part of this test in CI")
	} else {
		t.Logf("no strace: fdatasync count not measured")
	}

	const rounds = 2
	for round := 0; round < rounds; round++ {
		if round > 0 {
			w.mount()
			p.SetLatency(25 * time.Millisecond)
		}
		pid := w.status().PID
		start := time.Now()
		const n = 300
		for i := 0; i < n; i++ {
			switch k := rng.IntN(10); {
			case k < 6 || len(names) == 0: // a new file
				name := fmt.Sprintf("bulk/r%d-%03d.dat", round, i)
				c := randomContent(rng, round, i)
				if err := os.WriteFile(w.m(name), []byte(c), 0o644); err != nil {
					t.Fatalf("round %d: create %s: %v", round, name, err)
				}
				want[name], gone[name] = c, false
				names = append(names, name)
			case k < 8: // rewrite an existing one in place
				name := names[rng.IntN(len(names))]
				c := randomContent(rng, round, i)
				if err := os.WriteFile(w.m(name), []byte(c), 0o644); err != nil {
					t.Fatalf("round %d: rewrite %s: %v", round, name, err)
				}
				want[name], gone[name] = c, false
			case k < 9: // an editor's save: temporary, fsync, rename over
				name := names[rng.IntN(len(names))]
				c := randomContent(rng, round, i)
				tmp := w.m(name + ".swp")
				f, err := os.Create(tmp)
				if err == nil {
					_, err = f.WriteString(c)
					if err == nil {
						err = f.Sync()
					}
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err == nil {
					err = os.Rename(tmp, w.m(name))
				}
				if err != nil {
					t.Fatalf("round %d: save %s: %v", round, name, err)
				}
				want[name], gone[name] = c, false
			default: // delete one, or chmod it
				name := names[rng.IntN(len(names))]
				if gone[name] {
					continue
				}
				if rng.IntN(2) == 0 {
					if err := os.Remove(w.m(name)); err != nil {
						t.Fatalf("round %d: remove %s: %v", round, name, err)
					}
					gone[name] = true
				} else if err := os.Chmod(w.m(name), 0o600); err != nil {
					t.Fatalf("round %d: chmod %s: %v", round, name, err)
				}
			}
		}
		took := time.Since(start)
		w.killDaemon(pid) // at once: nothing had time to reach the server
		t.Logf("round %d: %d calls in %v (%.0f/s) at 50 ms RTT, then kill -9", round, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
		w.clearDeadMount()
		if round == 0 {
			// The last changes are in the commit log only: clearing the
			// cache now would lose them.
			r := w.run(binary, "cache", "clear", w.spec())
			if r.code == 0 || !strings.Contains(r.stderr, "not yet on the server") {
				t.Fatalf("cache clear after the kill: exit %d, %q; want a refusal (changes pending)", r.code, r.stderr)
			}
		}

		p.SetLatency(0)
		w.mount()
		if r := w.run(binary, "flush", w.mnt); r.code != 0 {
			t.Fatalf("round %d: flush after the kill: exit %d: %s", round, r.code, r.stderr)
		}
		bad := 0
		for name, c := range want {
			b, err := os.ReadFile(w.s(name))
			mb, merr := os.ReadFile(w.m(name))
			if gone[name] {
				if err == nil || merr == nil {
					t.Errorf("round %d: %s was deleted, but the server (err %v) or the mount (err %v) still has it", round, name, err, merr)
					bad++
				}
			} else if err != nil || string(b) != c || merr != nil || string(mb) != c {
				t.Errorf("round %d: %s: server %d bytes (err %v), mount %d bytes (err %v); want %d bytes", round, name, len(b), err, len(mb), merr, len(c))
				bad++
			}
			if bad > 10 {
				t.FailNow()
			}
		}
		if t.Failed() {
			return
		}
		w.unmount()
	}
	noTempFiles(t, w.root)
	ents, _ := os.ReadDir(w.s("bulk"))
	live := 0
	for _, name := range names {
		if !gone[name] {
			live++
		}
	}
	if len(ents) != live {
		t.Errorf("server has %d entries in bulk/, want %d", len(ents), live)
	}
}

// randomContent is a file's content: from a few bytes to ~40 KiB, naming
// where it was written so a mix-up shows.
func randomContent(rng *rand.Rand, round, i int) string {
	line := fmt.Sprintf("round %d call %d %x\n", round, i, rng.Uint64())
	return strings.Repeat(line, 1+rng.IntN(1+rng.IntN(1500)))
}

// countSyncs runs f while strace counts the fdatasync and fsync calls of
// process pid (all its threads), and returns the count and f's result.
func (w *world) countSyncs(t *testing.T, pid int, f func() int) (int, int) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command("strace", "-f", "-c", "-e", "trace=fdatasync,fsync", "-o", out, "-p", strconv.Itoa(pid))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("strace: %v", err)
	}
	// strace attaches to every thread before it counts: wait for its
	// "Process N attached" lines to settle.
	time.Sleep(500 * time.Millisecond)
	n := f()
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Logf("strace exited: %v", err)
	}
	fh, err := os.Open(out)
	if err != nil {
		t.Fatalf("strace output: %v", err)
	}
	defer fh.Close()
	// -c summary lines: "% time seconds usecs/call calls errors syscall".
	re := regexp.MustCompile(`^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fdatasync|fsync)\s*$`)
	total := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			c, _ := strconv.Atoi(m[1])
			total += c
		}
	}
	return total, n
}
