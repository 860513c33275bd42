package cache

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"remotefs/internal/testenv"
)

// Changes made offline (so nothing reaches the server) survive a crash
// between two checkpoints: they are in the commit log only, and the store
// opened after the crash has every one of them, pending, and delivers them.
func TestCommitLogKeepsChangesAcrossACrash(t *testing.T) {
	e := newEnv(t)
	e.server("keep.txt", "k0")
	e.mustRead("keep.txt")
	e.s.Connected()
	e.remote.offline.Store(true)
	want := map[string]string{"keep.txt": "k0"}
	for i := 0; i < 30; i++ {
		p := fmt.Sprintf("f%02d.txt", i)
		e.mustWrite(p, fmt.Sprintf("content %d", i))
		want[p] = fmt.Sprintf("content %d", i)
	}
	if err := e.s.Unlink(context.Background(), RootIno, "f03.txt"); err != nil {
		t.Fatal(err)
	}
	delete(want, "f03.txt")
	if err := e.s.Rename(context.Background(), RootIno, "f04.txt", RootIno, "renamed.txt"); err != nil {
		t.Fatal(err)
	}
	want["renamed.txt"] = want["f04.txt"]
	delete(want, "f04.txt")
	pending := e.s.Status().Pending
	if fi, err := os.Stat(filepath.Join(e.dir, walName)); err != nil || fi.Size() == 0 {
		t.Fatalf("commit log: %v, size %d; the changes should be in it", err, fi.Size())
	}

	// What `remotefs cache clear` and `cache list` count on the crashed
	// cache, before a mount folds the log in.
	copied := e.copyDir()
	db, err := bolt.Open(filepath.Join(copied, "meta.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, counted, err := CountPending(db, copied)
	db.Close()
	if err != nil || counted != pending {
		t.Fatalf("CountPending on the crashed cache: %d, %v; want %d", counted, err, pending)
	}

	e.crash()
	if got := e.s.Status().Pending; got != pending {
		t.Fatalf("%d changes pending after the crash, want %d", got, pending)
	}
	for p, c := range want {
		if got := e.mustRead(p); got != c {
			t.Fatalf("%s after the crash: %q, want %q", p, got, c)
		}
	}
	for _, gone := range []string{"f03.txt", "f04.txt"} {
		if _, err := e.lookup(gone); err == nil {
			t.Fatalf("%s is back after the crash", gone)
		}
	}
	e.remote.offline.Store(false)
	e.flush()
	for p, c := range want {
		if got := e.serverContent(p); got != c {
			t.Fatalf("server %s: %q, want %q", p, got, c)
		}
	}
	if fi, err := os.Stat(filepath.Join(e.dir, walName)); err != nil {
		t.Fatalf("commit log: %v", err)
	} else {
		t.Logf("commit log holds %d bytes", fi.Size())
	}
}

// A checkpoint folds the log into meta.db and empties it; the next
// records carry a new epoch.
func TestCommitLogCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.mustWrite("a.txt", "a")
	e.s.mu.Lock()
	epoch := e.s.walEpoch
	if e.s.wal.size == 0 {
		e.s.mu.Unlock()
		t.Fatal("the write left nothing in the commit log")
	}
	if err := e.s.checkpointLocked(0, nil); err != nil {
		e.s.mu.Unlock()
		t.Fatal(err)
	}
	size, empty, next := e.s.wal.size, e.s.walBatch.empty(), e.s.walEpoch
	e.s.mu.Unlock()
	if size != 0 || !empty || next != epoch+1 {
		t.Fatalf("after a checkpoint: log %d bytes, batch empty %v, epoch %d (was %d)", size, empty, next, epoch)
	}
	e.crash()
	if got := e.mustRead("a.txt"); got != "a" {
		t.Fatalf("a.txt after the checkpoint and a crash: %q", got)
	}
}

// Replay applies the records of epochs not folded in yet, in order, up to
// the first torn or damaged one, and skips records of folded epochs; the
// result equals applying that prefix to a map (the reference).
func TestCommitLogReplayPrefix(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 3))
			dir := t.TempDir()
			w, recs, err := openWAL(filepath.Join(dir, walName))
			if err != nil || len(recs) != 0 {
				t.Fatalf("new log: %v, %d records", err, len(recs))
			}
			const folded = 5 // meta.db has epochs up to this one
			ref := map[uint64]string{}
			var offsets []int64
			n := 2 + rng.IntN(30)
			cut := rng.IntN(n + 1) // records before this one count
			for i := 0; i < n; i++ {
				b := newWALBatch()
				for j := 0; j < 1+rng.IntN(5); j++ {
					k := uint64(rng.IntN(20))
					if rng.IntN(4) == 0 {
						b.entries[k] = nil
					} else {
						b.entries[k] = []byte(fmt.Sprintf("rec %d.%d", i, j))
					}
				}
				epoch := uint64(folded + 1)
				if i < 2 && rng.IntN(2) == 0 {
					epoch = folded // left from before the fold: skipped
				}
				offsets = append(offsets, w.size)
				if err := w.append(b.encode(epoch)); err != nil {
					t.Fatal(err)
				}
				if i < cut && epoch > folded {
					for k, v := range b.entries {
						if v == nil {
							delete(ref, k)
						} else {
							ref[k] = string(v)
						}
					}
				}
			}
			w.close()
			if cut < n {
				// Tear record cut: cut it short, or flip a byte in it.
				p := filepath.Join(dir, walName)
				if rng.IntN(2) == 0 {
					os.Truncate(p, offsets[cut]+int64(1+rng.IntN(12)))
				} else {
					f, _ := os.OpenFile(p, os.O_RDWR, 0)
					f.WriteAt([]byte{0xff}, offsets[cut]+8+int64(rng.IntN(9)))
					f.Close()
				}
			}
			db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			s := &Store{db: db, opts: Options{Dir: dir}, log: slog.New(slog.DiscardHandler)}
			if err := db.Update(func(tx *bolt.Tx) error {
				st, _ := tx.CreateBucketIfNotExists(bucketState)
				return st.Put(keyWALEpoch, u64key(folded))
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.replayWAL(); err != nil {
				t.Fatal(err)
			}
			got := map[uint64]string{}
			db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
					got[be64(k)] = string(v)
					return nil
				})
			})
			if fmt.Sprint(got) != fmt.Sprint(ref) {
				t.Fatalf("%d records, torn at %d: replayed %v, want %v", n, cut, got, ref)
			}
			if fi, _ := os.Stat(filepath.Join(dir, walName)); fi.Size() != 0 {
				t.Fatalf("log not emptied after replay: %d bytes", fi.Size())
			}
			s.wal.close()
			db.Close()
		})
	}
}

// A commit log record decodes to what was encoded, or is refused; no
// input makes the decoder panic or read past the record.
func FuzzDecodeWALBatch(f *testing.F) {
	b := newWALBatch()
	b.entries[3] = []byte(`{"p":1,"n":"a"}`)
	b.entries[4] = nil
	b.journal[9] = encodeOp(&op{Seq: 9, Kind: opPut, Path: "a", Ino: 3})
	b.nextIno, b.nextSeq = 5, 10
	f.Add(b.encode(2))
	f.Add(newWALBatch().encode(1))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 'e', 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		epoch, b, err := decodeWALBatch(p)
		if err != nil {
			return
		}
		epoch2, b2, err := decodeWALBatch(b.encode(epoch))
		if err != nil || epoch2 != epoch || !sameBatch(b, b2) {
			t.Fatalf("re-encoded record decodes to %v %v (%v), want %v %v", epoch2, b2, err, epoch, b)
		}
	})
}

// sameBatch compares two batches, telling a deletion (nil) from an empty
// record.
func sameBatch(a, b *walBatch) bool {
	same := func(x, y map[uint64][]byte) bool {
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || (v == nil) != (w == nil) || !bytes.Equal(v, w) {
				return false
			}
		}
		return true
	}
	return same(a.entries, b.entries) && same(a.journal, b.journal) && a.nextIno == b.nextIno && a.nextSeq == b.nextSeq
}

// TestBackgroundCheckpointChunks: after a big listing, the background
// checkpoints write the dirty entries in chunks of persistChunk, lowest
// numbers first, each chunk after the last (disjoint, ascending), from one
// sort of the dirty set (not one per chunk), and once all are written the
// store reopened from disk has every entry.
func TestBackgroundCheckpointChunks(t *testing.T) {
	e := newEnv(t)
	const files = 4500
	for i := range files {
		testenv.WriteFile(t, e.remote.root, fmt.Sprintf("d%02d/f%04d", i%30, i), "x", 0o644)
	}
	if _, err := e.s.Preload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	s := e.s
	s.mu.Lock()
	dirty := len(s.dirtyIno)
	s.mu.Unlock()
	if dirty < files {
		t.Fatalf("%d dirty entries after listing %d files", dirty, files)
	}
	var last Ino
	for chunk := 0; ; chunk++ {
		s.mu.Lock()
		before := maps.Clone(s.dirtyIno)
		if len(before) <= persistChunk {
			s.mu.Unlock()
			break
		}
		if err := s.checkpointLocked(persistChunk, nil); err != nil {
			s.mu.Unlock()
			t.Fatal(err)
		}
		queued, sorts := len(s.persistOrder), s.persistSorts
		var written []Ino
		for ino := range before {
			if !s.dirtyIno[ino] {
				written = append(written, ino)
			}
		}
		s.mu.Unlock()
		slices.Sort(written)
		if len(written) != persistChunk || written[0] <= last {
			t.Fatalf("chunk %d wrote %d entries from %d (the last chunk ended at %d), want %d after it", chunk, len(written), written[0], last, persistChunk)
		}
		last = written[len(written)-1]
		if want := dirty - persistChunk*(chunk+1); queued != want || sorts != 1 {
			t.Fatalf("after chunk %d, %d entries queued from %d sorts, want %d from one sort for all chunks", chunk, queued, sorts, want)
		}
	}
	e.reopen()
	for _, p := range []string{"d00/f0000", "d29/f4499", "d15/f2235"} {
		e.mustLookup(p)
	}
}
