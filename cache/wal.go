package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// The commit log: how a change becomes durable without a bbolt transaction
// (two fdatasyncs, ~20 for a file created through the mount) per call.
//
// Every change the Store makes to meta.db (entries, journal records, the
// counters) is first appended to journal.wal with one write(2), under mu,
// before the call that made it returns: from then on it survives the
// daemon being killed (the kernel has it). close(2) and fsync(2) of a file,
// and the first write into a file that was clean, also wait for an
// fdatasync of the log (walFile.sync): everything appended before them is
// then on disk, and one fdatasync serves every caller waiting at that
// moment (group commit). The log is folded into meta.db in one
// transaction now and then (checkpointLocked: every second, when it grows
// past walMaxSize, when a change is too big to log, and at Close), then
// emptied.
//
// Records are framed (length, CRC-32C) and carry the checkpoint epoch they
// were written in; meta.db records the last epoch folded into it. On Open,
// the records of later epochs are applied in order up to the first torn or
// damaged one (what a crash while appending leaves), so the state restored
// is the one after some prefix of the calls, never a mix. A record of an
// older epoch (a log whose emptying did not reach the disk) is skipped: it
// is in meta.db already.

const walName = "journal.wal"

// walMaxSize: past this, the log is folded into meta.db at once.
const walMaxSize = 8 << 20

// walBatchMax: a change of more entries than this (a listing's worth,
// learned from the server) goes to meta.db directly instead of the log.
const walBatchMax = 2000

// walBatch is a set of changes to meta.db's entries and journal buckets.
type walBatch struct {
	entries map[uint64][]byte // ino -> record; nil: delete
	journal map[uint64][]byte // seq -> op record; nil: delete
	nextIno uint64            // 0: unchanged
	nextSeq uint64
}

func newWALBatch() *walBatch {
	return &walBatch{entries: map[uint64][]byte{}, journal: map[uint64][]byte{}}
}

func (b *walBatch) empty() bool {
	return len(b.entries) == 0 && len(b.journal) == 0 && b.nextIno == 0 && b.nextSeq == 0
}

// merge adds a later batch: its values win.
func (b *walBatch) merge(later *walBatch) {
	for k, v := range later.entries {
		b.entries[k] = v
	}
	for k, v := range later.journal {
		b.journal[k] = v
	}
	b.nextIno = max(b.nextIno, later.nextIno)
	b.nextSeq = max(b.nextSeq, later.nextSeq)
}

// apply writes the batch into a meta.db transaction.
func (b *walBatch) apply(tx *bolt.Tx) error {
	for _, x := range []struct {
		bucket []byte
		m      map[uint64][]byte
	}{{bucketEntries, b.entries}, {bucketJournal, b.journal}} {
		bk := tx.Bucket(x.bucket)
		for k, v := range x.m {
			var err error
			if v == nil {
				err = bk.Delete(u64key(k))
			} else {
				err = bk.Put(u64key(k), v)
			}
			if err != nil {
				return err
			}
		}
	}
	st := tx.Bucket(bucketState)
	for _, c := range []struct {
		key []byte
		v   uint64
	}{{keyNextIno, b.nextIno}, {keyNextSeq, b.nextSeq}} {
		if c.v == 0 {
			continue
		}
		if old := st.Get(c.key); len(old) == 8 && be64(old) >= c.v {
			continue
		}
		if err := st.Put(c.key, u64key(c.v)); err != nil {
			return err
		}
	}
	return nil
}

// Item kinds in an encoded batch.
const (
	walEntry   = 'e'
	walJournal = 'j'
	walState   = 's' // key 1: nextIno, 2: nextSeq
)

const walDelete = ^uint32(0) // value length of a deletion

// encode is the record payload: the epoch, then the items.
func (b *walBatch) encode(epoch uint64) []byte {
	n := 8 + 2*21
	for _, m := range []map[uint64][]byte{b.entries, b.journal} {
		for _, v := range m {
			n += 13 + len(v)
		}
	}
	p := binary.BigEndian.AppendUint64(make([]byte, 0, n), epoch)
	item := func(kind byte, k uint64, v []byte, del bool) {
		p = append(p, kind)
		p = binary.BigEndian.AppendUint64(p, k)
		if del {
			p = binary.BigEndian.AppendUint32(p, walDelete)
			return
		}
		p = binary.BigEndian.AppendUint32(p, uint32(len(v)))
		p = append(p, v...)
	}
	for k, v := range b.entries {
		item(walEntry, k, v, v == nil)
	}
	for k, v := range b.journal {
		item(walJournal, k, v, v == nil)
	}
	if b.nextIno != 0 {
		item(walState, 1, u64key(b.nextIno), false)
	}
	if b.nextSeq != 0 {
		item(walState, 2, u64key(b.nextSeq), false)
	}
	return p
}

// decodeWALBatch parses a record payload.
func decodeWALBatch(p []byte) (uint64, *walBatch, error) {
	bad := errors.New("commit log record: malformed")
	if len(p) < 8 {
		return 0, nil, bad
	}
	epoch := binary.BigEndian.Uint64(p)
	p = p[8:]
	b := newWALBatch()
	for len(p) > 0 {
		if len(p) < 13 {
			return 0, nil, bad
		}
		kind, k, n := p[0], binary.BigEndian.Uint64(p[1:9]), binary.BigEndian.Uint32(p[9:13])
		p = p[13:]
		var v []byte
		if n != walDelete {
			if uint64(len(p)) < uint64(n) {
				return 0, nil, bad
			}
			v = append([]byte{}, p[:n]...) // non-nil even when empty
			p = p[n:]
		}
		switch {
		case kind == walEntry:
			b.entries[k] = v
		case kind == walJournal:
			b.journal[k] = v
		case kind == walState && len(v) == 8 && k == 1:
			b.nextIno = be64(v)
		case kind == walState && len(v) == 8 && k == 2:
			b.nextSeq = be64(v)
		default:
			return 0, nil, bad
		}
	}
	return epoch, b, nil
}

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walFile is the log file. append and reset are called under Store.mu;
// sync is called without it (it waits for the disk).
type walFile struct {
	f    *os.File
	fd   int
	size int64 // bytes in the file; guarded by Store.mu

	written atomic.Uint64 // bytes appended since open, counting those emptied
	synced  atomic.Uint64 // of those, how many are known to be on disk
	syncMu  sync.Mutex    // one fdatasync at a time; the others wait for it
}

// openWAL opens the log and returns the payloads of its intact records,
// oldest first; it stops at the first torn or damaged one.
func openWAL(path string) (*walFile, [][]byte, error) {
	recs, err := readWAL(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("commit log: %w", err)
	}
	w := &walFile{f: f, fd: int(f.Fd())}
	if fi, err := f.Stat(); err == nil {
		w.size = fi.Size()
	}
	return w, recs, nil
}

// readWAL returns the payloads of the log's intact records, oldest first,
// up to the first torn or damaged one.
func readWAL(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("commit log: %w", err)
	}
	var recs [][]byte
	for len(data) >= 8 {
		n := binary.BigEndian.Uint32(data)
		sum := binary.BigEndian.Uint32(data[4:])
		if uint64(len(data)-8) < uint64(n) || crc32.Checksum(data[8:8+n], walCRC) != sum {
			break
		}
		recs = append(recs, data[8:8+n])
		data = data[8+n:]
	}
	return recs, nil
}

// CountPending returns the number of entries and of journal records
// (changes not yet on the server) of the cache in dir, whose meta.db is
// db (open, not by a mount), counting what its commit log adds: a mount
// that stopped without unmounting (kill -9, power loss) leaves its last
// changes there until the next mount folds them in.
func CountPending(db *bolt.DB, dir string) (entries, pending int, err error) {
	recs, err := readWAL(filepath.Join(dir, walName))
	if err != nil {
		return 0, 0, err
	}
	ents, jour := map[uint64]bool{}, map[uint64]bool{}
	err = db.View(func(tx *bolt.Tx) error {
		var done uint64
		if st := tx.Bucket(bucketState); st != nil {
			if v := st.Get(keyWALEpoch); len(v) == 8 {
				done = be64(v)
			}
		}
		for _, x := range []struct {
			bucket []byte
			set    map[uint64]bool
		}{{bucketEntries, ents}, {bucketJournal, jour}} {
			if b := tx.Bucket(x.bucket); b != nil {
				if err := b.ForEach(func(k, _ []byte) error {
					if len(k) == 8 {
						x.set[be64(k)] = true
					}
					return nil
				}); err != nil {
					return err
				}
			}
		}
		for _, r := range recs {
			epoch, b, err := decodeWALBatch(r)
			if err != nil {
				break
			}
			if epoch <= done {
				continue
			}
			for _, x := range []struct {
				m   map[uint64][]byte
				set map[uint64]bool
			}{{b.entries, ents}, {b.journal, jour}} {
				for k, v := range x.m {
					if v == nil {
						delete(x.set, k)
					} else {
						x.set[k] = true
					}
				}
			}
		}
		return nil
	})
	return len(ents), len(jour), err
}

// append writes one record. A failed write is cut off again, so that no
// torn record hides the ones after it. Caller holds Store.mu.
func (w *walFile) append(payload []byte) error {
	rec := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint32(rec, uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(payload, walCRC))
	rec = append(rec, payload...)
	n, err := w.f.Write(rec)
	if err != nil {
		if n > 0 {
			w.f.Truncate(w.size)
		}
		return fmt.Errorf("commit log: %w", err)
	}
	w.size += int64(n)
	w.written.Add(uint64(n))
	return nil
}

// sync returns once everything appended before the call is on disk: one
// fdatasync, shared by every caller that arrives while it runs.
func (w *walFile) sync() error {
	target := w.written.Load()
	if w.synced.Load() >= target {
		return nil
	}
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	if w.synced.Load() >= target {
		return nil // a sync that started after our append covered it
	}
	upTo := w.written.Load()
	if err := unix.Fdatasync(w.fd); err != nil {
		return fmt.Errorf("commit log: fdatasync: %w", err)
	}
	storeMax(&w.synced, upTo)
	return nil
}

// reset empties the log after its records were folded into meta.db (which
// is on disk: everything appended so far counts as synced). Caller holds
// Store.mu.
func (w *walFile) reset() error {
	if w.size == 0 {
		return nil
	}
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("commit log: %w", err)
	}
	w.size = 0
	storeMax(&w.synced, w.written.Load())
	return nil
}

func (w *walFile) close() error { return w.f.Close() }

func storeMax(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if old >= v || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// keyWALEpoch: the last commit log epoch folded into meta.db.
var keyWALEpoch = []byte("walEpoch")

// replayWAL opens the commit log and folds what an earlier run left in it
// into meta.db, before load reads meta.db.
func (s *Store) replayWAL() error {
	w, recs, err := openWAL(s.walPath())
	if err != nil {
		return err
	}
	s.wal = w
	var done uint64
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketJournal, bucketState} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		st := tx.Bucket(bucketState)
		if v := st.Get(keyWALEpoch); len(v) == 8 {
			done = be64(v)
		}
		applied, last := 0, done
		for i, r := range recs {
			epoch, b, err := decodeWALBatch(r)
			if err != nil {
				s.log.Error("commit log record is damaged; what follows it is not replayed", "record", i, "of", len(recs), "err", err)
				break
			}
			if epoch <= done {
				continue // folded in already
			}
			if err := b.apply(tx); err != nil {
				return err
			}
			applied++
			last = max(last, epoch)
		}
		if applied > 0 {
			s.log.Info("replayed the commit log", "records", applied)
		}
		done = last
		return st.Put(keyWALEpoch, u64key(done))
	})
	if err != nil {
		w.close()
		return fmt.Errorf("replay commit log: %w", err)
	}
	s.walEpoch = done + 1
	s.walBatch = newWALBatch()
	return w.reset()
}

func (s *Store) walPath() string { return filepath.Join(s.opts.Dir, walName) }

// logLocked makes the changed entries, the new journal records and the
// removal of the delivered ones (done) survive a crash of the process:
// appended to the commit log, or, when that is a listing's worth, written
// to meta.db at once. syncJournal makes them survive a power loss too.
// Caller holds mu.
func (s *Store) logLocked(done []uint64, ops ...*op) error {
	if len(s.dirtyIno)+len(s.deletedIno) > walBatchMax {
		return s.checkpointLocked(0, done, ops...)
	}
	b := newWALBatch()
	for ino := range s.deletedIno {
		b.entries[uint64(ino)] = nil
	}
	for ino := range s.dirtyIno {
		if e := s.entries[ino]; e != nil {
			b.entries[uint64(ino)] = e.record()
		}
	}
	for _, seq := range done {
		b.journal[seq] = nil
	}
	for _, o := range ops {
		b.journal[o.Seq] = encodeOp(o)
	}
	b.nextIno, b.nextSeq = uint64(s.nextIno), s.nextSeq
	if err := s.wal.append(b.encode(s.walEpoch)); err != nil {
		return err
	}
	s.walBatch.merge(b)
	clear(s.dirtyIno)
	clear(s.deletedIno)
	if s.wal.size > walMaxSize {
		if err := s.checkpointLocked(0, nil); err != nil {
			s.log.Error("fold commit log into the metadata store", "err", err)
		}
	}
	return nil
}

// syncJournal returns once every change logged before the call is on disk
// (close, fsync). Callers do not hold mu.
func (s *Store) syncJournal() error {
	return s.wal.sync()
}

// SyncJournal makes every change made so far durable on local disk
// (fsync of a folder).
func (s *Store) SyncJournal() error { return s.syncJournal() }

// persistChunkLocked picks the next at most max dirty entries for a
// background checkpoint: the lowest numbers first, neighbours in meta.db,
// so one transaction touches (and copies) as few pages as it can. The
// dirty set is sorted once into persistOrder and taken from in chunks
// (sorting it for every chunk cost a big listing's persisting n*n/max);
// entries dirtied meanwhile wait for the next sort. Caller holds mu.
func (s *Store) persistChunkLocked(max int) []Ino {
	if len(s.persistOrder) == 0 {
		s.persistOrder = make([]Ino, 0, len(s.dirtyIno))
		for ino := range s.dirtyIno {
			s.persistOrder = append(s.persistOrder, ino)
		}
		slices.Sort(s.persistOrder)
		s.persistSorts++
	}
	some := make([]Ino, 0, max)
	for len(some) < max && len(s.persistOrder) > 0 {
		ino := s.persistOrder[0]
		s.persistOrder = s.persistOrder[1:]
		if s.dirtyIno[ino] {
			some = append(some, ino)
		}
	}
	return some
}

// checkpointLocked folds the commit log into meta.db in one transaction,
// with the changed entries (at most max of them, 0: all; only for what
// was learned from the server), the new journal records and the removal
// of the delivered ones, and empties the log. Caller holds mu.
func (s *Store) checkpointLocked(max int, done []uint64, ops ...*op) error {
	var some []Ino
	if max > 0 && len(s.dirtyIno) > max {
		some = s.persistChunkLocked(max)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.walBatch.apply(tx); err != nil {
			return err
		}
		eb := tx.Bucket(bucketEntries)
		for ino := range s.deletedIno {
			if err := eb.Delete(u64key(uint64(ino))); err != nil {
				return err
			}
		}
		put := func(ino Ino) error {
			e := s.entries[ino]
			if e == nil {
				return nil
			}
			return eb.Put(u64key(uint64(ino)), e.record())
		}
		if some != nil {
			for _, ino := range some {
				if err := put(ino); err != nil {
					return err
				}
			}
		} else {
			for ino := range s.dirtyIno {
				if err := put(ino); err != nil {
					return err
				}
			}
		}
		jb := tx.Bucket(bucketJournal)
		for _, seq := range done {
			if err := jb.Delete(u64key(seq)); err != nil {
				return err
			}
		}
		for _, o := range ops {
			if err := jb.Put(u64key(o.Seq), encodeOp(o)); err != nil {
				return err
			}
		}
		st := tx.Bucket(bucketState)
		if err := st.Put(keyNextIno, u64key(uint64(s.nextIno))); err != nil {
			return err
		}
		if err := st.Put(keyNextSeq, u64key(s.nextSeq)); err != nil {
			return err
		}
		return st.Put(keyWALEpoch, u64key(s.walEpoch))
	})
	if err != nil {
		return fmt.Errorf("cache commit: %w", err)
	}
	s.releaseDBPages()
	if some != nil {
		for _, ino := range some {
			delete(s.dirtyIno, ino)
		}
	} else {
		clear(s.dirtyIno)
		s.persistOrder = nil
	}
	clear(s.deletedIno)
	s.walEpoch++
	s.walBatch = newWALBatch()
	if err := s.wal.reset(); err != nil {
		// The records stay; their epoch is folded in, so a replay skips them.
		s.log.Warn("empty commit log", "err", err)
	}
	return nil
}
