package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
)

// fakeDeliverer is the journal's whole world in these tests: no Store,
// no tree, no server. deliver answers from a script.
type fakeDeliverer struct {
	j       *journal
	offline bool
	answer  func(o *op) error // deliver's result (nil func: success)

	mu            sync.Mutex // guards the fields below (deliver runs without j.mu)
	deliveredSeqs []uint64
	refusedSeqs   []uint64
	failures      []time.Duration
	keep          bool // refused: could not set aside
}

func (f *fakeDeliverer) deliver(ctx context.Context, o *op) error {
	if f.answer != nil {
		return f.answer(o)
	}
	return nil
}
func (f *fakeDeliverer) canDeliver() bool { return !f.offline }
func (f *fakeDeliverer) delivered(o *op) {
	f.mu.Lock()
	f.deliveredSeqs = append(f.deliveredSeqs, o.Seq)
	f.mu.Unlock()
}
func (f *fakeDeliverer) refused(o *op, err error) bool {
	f.refusedSeqs = append(f.refusedSeqs, o.Seq)
	if f.keep {
		return false
	}
	f.j.remove(o)
	return true
}
func (f *fakeDeliverer) failed(o *op, err error, retryIn time.Duration) {
	f.failures = append(f.failures, retryIn)
}

func newTestJournal(uploads int) (*journal, *fakeDeliverer) {
	var mu sync.Mutex
	f := &fakeDeliverer{}
	j := newJournal(&mu, sync.NewCond(&mu), uploads, f)
	f.j = j
	return j, f
}

func seqs(ops []*op) []uint64 {
	var out []uint64
	for _, o := range ops {
		out = append(out, o.Seq)
	}
	return out
}

func addOps(j *journal, ops ...*op) {
	for i, o := range ops {
		if o.Seq == 0 {
			o.Seq = uint64(len(j.pending) + i + 1)
		}
	}
	for _, o := range ops {
		j.add(o)
	}
}

// An op waits for every earlier op on the same path, an ancestor or a
// descendant; unrelated ones start together, up to uploads at once.
func TestJournalOrder(t *testing.T) {
	j, _ := newTestJournal(3)
	now := time.Unix(1000, 0)
	addOps(j,
		&op{Seq: 1, Kind: opMkdir, Path: "a"},
		&op{Seq: 2, Kind: opPut, Path: "a/f"},              // under a: waits
		&op{Seq: 3, Kind: opPut, Path: "b"},                // unrelated
		&op{Seq: 4, Kind: opRename, Path: "b", Path2: "c"}, // after 3
		&op{Seq: 5, Kind: opPut, Path: "ab"},               // not under a
		&op{Seq: 6, Kind: opPut, Path: "d"},                // over the limit
	)
	if got := seqs(j.next(now)); !slices.Equal(got, []uint64{1, 3, 5}) {
		t.Fatalf("first dispatch %v, want [1 3 5]", got)
	}
	if got := j.next(now); len(got) != 0 {
		t.Fatalf("dispatch with %d in flight (limit 3) started %v", j.inflight, seqs(got))
	}
	j.finish(j.pending[0], nil, now) // mkdir a delivered
	if got := seqs(j.next(now)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after mkdir a: %v, want [2] (one slot free)", got)
	}
	j.finish(j.pending[j.index(findSeq(j, 3))], nil, now)
	if got := seqs(j.next(now)); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("after put b: %v, want [4]", got)
	}
	if j.touches("a/f/x") != true || j.touches("zzz") {
		t.Fatalf("touches: a/f/x %v, zzz %v", j.touches("a/f/x"), j.touches("zzz"))
	}
}

func findSeq(j *journal, seq uint64) *op {
	for _, o := range j.pending {
		if o.Seq == seq {
			return o
		}
	}
	return nil
}

// A put not yet started takes later saves of its file and follows a
// rename of it; once started, or once something else touched the path
// after it, a new save needs its own put.
func TestJournalFolding(t *testing.T) {
	j, _ := newTestJournal(8)
	now := time.Unix(1000, 0)
	put := &op{Seq: 1, Kind: opPut, Path: "dir/f", Ino: 7, notBefore: now.Add(settleDelay)}
	addOps(j, put)
	if !j.unstartedPut(7, "dir/f") {
		t.Fatal("a queued put does not take the next save")
	}
	if j.unstartedPut(8, "dir/f") || j.unstartedPut(7, "dir/g") {
		t.Fatal("a put took a save of another file or path")
	}
	addOps(j, &op{Seq: 2, Kind: opRelink, Path: "dir/f", Path2: "dir/h"})
	if !j.unstartedPut(7, "dir/f") {
		t.Fatal("the put's relink kept it from taking the next save")
	}
	// Settling: not started before notBefore.
	if got := j.next(now); len(got) != 0 {
		t.Fatalf("started %v before the settle delay", seqs(got))
	}
	if w := j.wait(now, time.Second); w > settleDelay+time.Millisecond {
		t.Fatalf("writer would sleep %v past a put due in %v", w, settleDelay)
	}
	// A rename before it starts: the put follows the file.
	if o := j.lastTouching("dir/f", "dir/g"); o != j.pending[1] {
		t.Fatalf("lastTouching: %v", o)
	}
	j.retarget(put, "dir/g")
	if !j.touches("dir/g") || j.pendingPath["dir/f"] != 1 || !j.unstartedPut(7, "dir/g") {
		t.Fatalf("after retarget: paths %v", j.pendingPath)
	}
	// Started: a new save needs its own put.
	if got := seqs(j.next(now.Add(time.Second))); !slices.Contains(got, 1) {
		t.Fatalf("the put did not start after its delay: %v", got)
	}
	if j.unstartedPut(7, "dir/g") {
		t.Fatal("a put in flight took a later save")
	}
	// Something else touched the path after it: no folding across it.
	j2, _ := newTestJournal(8)
	addOps(j2, &op{Seq: 1, Kind: opPut, Path: "x", Ino: 3}, &op{Seq: 2, Kind: opChmod, Path: "x"})
	if j2.unstartedPut(3, "x") {
		t.Fatal("a save folded into a put across a later chmod")
	}
	if j2.puts(3) != 1 || j2.upTo(1) != 1 || j2.upTo(2) != 2 {
		t.Fatalf("puts %d, upTo(1) %d, upTo(2) %d", j2.puts(3), j2.upTo(1), j2.upTo(2))
	}
}

// Offline failures retry in 200ms without counting; other failures back
// off 0.5s, 1s, 2s ... 32s and are the last error until the op succeeds;
// success removes the op and records it as delivered.
func TestJournalRetry(t *testing.T) {
	j, f := newTestJournal(8)
	now := time.Unix(1000, 0)
	o := &op{Seq: 1, Kind: opPut, Path: "f"}
	addOps(j, o)
	start := func() {
		t.Helper()
		if got := j.next(now); len(got) != 1 || got[0] != o {
			t.Fatalf("at %v: started %v, want the put", now, seqs(got))
		}
	}
	start()
	j.finish(o, fmt.Errorf("lost: %w", conn.ErrOffline), now)
	if !o.notBefore.Equal(now.Add(200*time.Millisecond)) || o.attempts != 0 || j.lastErr != nil {
		t.Fatalf("offline: retry at %v, attempts %d, lastErr %v", o.notBefore.Sub(now), o.attempts, j.lastErr)
	}
	now = o.notBefore
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 32 * time.Second, 32 * time.Second}
	for i, w := range want {
		start()
		j.finish(o, errors.New("server hiccup"), now)
		if got := o.notBefore.Sub(now); got != w || o.attempts != i+1 {
			t.Fatalf("failure %d: retry in %v (attempt %d), want %v", i+1, got, o.attempts, w)
		}
		if j.lastErr == nil || j.lastErrOp != o {
			t.Fatalf("failure %d: last error %v", i+1, j.lastErr)
		}
		if got := j.next(now.Add(w - time.Millisecond)); len(got) != 0 {
			t.Fatalf("failure %d: restarted before its backoff", i+1)
		}
		now = now.Add(w)
	}
	if !slices.Equal(f.failures, want) {
		t.Fatalf("deliverer told of retries %v, want %v", f.failures, want)
	}
	start()
	j.finish(o, nil, now)
	if len(j.pending) != 0 || j.lastErr != nil || j.applied != 1 || !slices.Equal(f.deliveredSeqs, []uint64{1}) {
		t.Fatalf("after success: %d pending, lastErr %v, applied %d, delivered %v", len(j.pending), j.lastErr, j.applied, f.deliveredSeqs)
	}
	if !j.changedSince("f", 0) || j.changedSince("g", 0) || j.changedSince("f", 1) {
		t.Fatal("changedSince does not follow the delivery")
	}
	if !j.deliveredWithin("f", now.Add(-time.Second)) || j.deliveredWithin("f", now.Add(time.Second)) {
		t.Fatal("deliveredWithin does not follow the delivery")
	}
}

// An op the server refuses for good goes to the deliverer to be set
// aside and leaves the queue, freeing the ops that waited for it; one that
// cannot be set aside is retried like any failure.
func TestJournalSetAside(t *testing.T) {
	j, f := newTestJournal(8)
	now := time.Unix(1000, 0)
	bad := &op{Seq: 1, Kind: opPut, Path: "ro/f"}
	after := &op{Seq: 2, Kind: opChmod, Path: "ro/f"}
	addOps(j, bad, after)
	j.next(now)
	j.finish(bad, fmt.Errorf("put: %w", syscall.EACCES), now)
	if !slices.Equal(f.refusedSeqs, []uint64{1}) || j.index(bad) >= 0 || j.lastErr != nil {
		t.Fatalf("refused %v, still queued %v, lastErr %v", f.refusedSeqs, j.index(bad) >= 0, j.lastErr)
	}
	if got := seqs(j.next(now)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after the set-aside: started %v, want [2]", got)
	}
	j.finish(after, nil, now)

	f.keep = true // the local disk cannot keep it: retried
	stuck := &op{Seq: 3, Kind: opMkdir, Path: "x"}
	addOps(j, stuck)
	j.next(now)
	j.finish(stuck, syscall.EPERM, now)
	if j.index(stuck) < 0 || stuck.attempts != 1 || j.lastErrOp != stuck {
		t.Fatalf("could not set aside: queued %v, attempts %d", j.index(stuck) >= 0, stuck.attempts)
	}
	// A transient failure is never set aside.
	j.next(now.Add(time.Second))
	j.finish(stuck, syscall.EIO, now)
	if len(f.refusedSeqs) != 2 {
		t.Fatalf("refused %v after EIO, want only the two refusals", f.refusedSeqs)
	}
}

// The writer (run) delivers a random journal with answers that fail now
// and then: every op is delivered exactly once, and of two ops on related
// paths the earlier one finished before the later one started.
func TestJournalRunKeepsOrder(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			j, f := newTestJournal(4)
			var mu sync.Mutex
			var events []string // "s<seq>" start, "e<seq>" end
			tries := map[uint64]int{}
			f.answer = func(o *op) error {
				mu.Lock()
				events = append(events, fmt.Sprintf("s%d", o.Seq))
				tries[o.Seq]++
				fail := tries[o.Seq] == 1 && o.Seq%5 == 0
				pause := time.Duration(rng.IntN(3)) * time.Millisecond
				mu.Unlock()
				time.Sleep(pause)
				mu.Lock()
				events = append(events, fmt.Sprintf("e%d", o.Seq))
				mu.Unlock()
				if fail {
					return fmt.Errorf("%w", conn.ErrOffline)
				}
				return nil
			}
			paths := []string{"a", "a/b", "a/b/c", "d", "d/e", "f", "g/h"}
			var ops []*op
			j.mu.Lock()
			for i := 1; i <= 60; i++ {
				o := &op{Seq: uint64(i), Kind: opPut, Path: paths[rng.IntN(len(paths))]}
				if rng.IntN(4) == 0 {
					o.Kind, o.Path2 = opRename, paths[rng.IntN(len(paths))]
				}
				ops = append(ops, o)
				j.add(o)
			}
			j.mu.Unlock()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { j.run(stop); close(done) }()
			deadline := time.Now().Add(20 * time.Second)
			for {
				j.mu.Lock()
				n := len(j.pending)
				j.mu.Unlock()
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d ops still pending after 20s", n)
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(stop)
			j.mu.Lock()
			j.cond.Broadcast()
			j.mu.Unlock()
			<-done
			f.mu.Lock()
			got := slices.Clone(f.deliveredSeqs)
			f.mu.Unlock()
			slices.Sort(got)
			if len(got) != len(ops) || got[0] != 1 || got[len(got)-1] != uint64(len(ops)) {
				t.Fatalf("delivered %v, want each of 1..%d once", got, len(ops))
			}
			// last end of each op, first start of each op
			lastEnd, firstStart := map[uint64]int{}, map[uint64]int{}
			for i, ev := range events {
				var seq uint64
				fmt.Sscanf(ev[1:], "%d", &seq)
				if ev[0] == 'e' {
					lastEnd[seq] = i
				} else if _, ok := firstStart[seq]; !ok {
					firstStart[seq] = i
				}
			}
			for a := range ops {
				for b := a + 1; b < len(ops); b++ {
					if relatedOps(ops[a], ops[b]) && firstStart[ops[b].Seq] < lastEnd[ops[a].Seq] {
						t.Fatalf("%v started before the earlier related %v was done", ops[b], ops[a])
					}
				}
			}
		})
	}
}

func relatedOps(a, b *op) bool {
	for _, p := range a.paths() {
		for _, q := range b.paths() {
			if related(p, q) {
				return true
			}
		}
	}
	return false
}
