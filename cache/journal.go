package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"remotefs/conn"
)

// opKind names one kind of journal operation.
type opKind string

const (
	opPut     opKind = "put"     // upload content of Ino to Path
	opMkdir   opKind = "mkdir"   // Path, Mode
	opRemove  opKind = "remove"  // Path
	opRmdir   opKind = "rmdir"   // Path
	opRename  opKind = "rename"  // Path -> Path2 (DestExpect: what Path2 is expected to hold)
	opSymlink opKind = "symlink" // Path -> Target
	opChmod   opKind = "chmod"   // Path, Mode
	opUtimes  opKind = "utimes"  // Path, MtimeNs, AtimeNs (0: same as mtime)
	opLink    opKind = "link"    // hard link Path -> new name Path2 (Ino: the file)
	opChown   opKind = "chown"   // Path, Owner
	opMknod   opKind = "mknod"   // FIFO, socket or device node Path: Mode (with type), Rdev
	opRelink  opKind = "relink"  // after a put to Path: make Path2 a hard link of it again
)

// op is one journal record: a change the user made that the server has not
// acknowledged yet. Paths are relative to the remote root.
type op struct {
	Seq     uint64      `json:"seq"`
	Kind    opKind      `json:"k"`
	Path    string      `json:"p"`
	Path2   string      `json:"p2,omitempty"`
	Ino     Ino         `json:"i,omitempty"`
	Mode    fs.FileMode `json:"m,omitempty"`
	MtimeNs int64       `json:"t,omitempty"`
	AtimeNs int64       `json:"ta,omitempty"`
	Rdev    uint32      `json:"rd,omitempty"`
	Target  string      `json:"l,omitempty"`
	Owner   *[2]uint32  `json:"ow,omitempty"` // chown: server uid, gid
	// NoFollow (chown, utimes): of a symlink itself (linkattrs.go)
	NoFollow bool `json:"nf,omitempty"`
	// DestExpect: for a rename over an existing file, what the server was
	// expected to have there when the local rename replaced it (nil: no check).
	DestExpect *expect `json:"db,omitempty"`
	// DestIno: the file DestExpect is about (when it is a regular file):
	// each of its uploads that lands before o adds what it left there.
	DestIno Ino `json:"di,omitempty"`
	// Also (a rename over, or a removal of, one name of a file that lives
	// on under others): those other names. The operation is ordered with
	// them as with its own paths: on the server the names may still be
	// one inode, which an upload to one of them writes in place (the
	// upload helper keeps hard links), so a later upload of the file must
	// not overtake what this operation expects to find at its name.
	Also []string `json:"al,omitempty"`
	// At is when the change was made (unix ns), for status.
	At int64 `json:"at,omitempty"`
	// Tried (puts): the versions earlier attempts sent. Such an attempt may
	// have landed without the mount learning it (the server finishes an
	// upload it has received even when the mount dies or the link drops
	// before the answer), so a retry accepts finding one of them.
	Tried []Version `json:"tr,omitempty"`
	// Temps (puts): the temporary names on the server earlier attempts
	// wrote to. An attempt cut off by a lost link leaves its temporary
	// there; once the put is done (or no longer needed) they are removed.
	Temps []string `json:"tp,omitempty"`

	// the journal's state of the op, guarded by its lock, not persisted
	inflight  bool      // being applied now
	attempts  int       // failed attempts so far
	notBefore time.Time // not started before (settling, retry after a failure)

	// linkCopy (puts): not a journal record but the upload of a hard
	// link delivered as a copy to Path (applyLinkAsCopy), a name other
	// than the one the file's own uploads go to. wasClean: the file had
	// no local change before the copy marked it dirty.
	linkCopy, wasClean bool
}

func (o *op) String() string {
	switch o.Kind {
	case opRename, opLink, opRelink:
		return fmt.Sprintf("%s %s -> %s", o.Kind, o.Path, o.Path2)
	case opSymlink:
		return fmt.Sprintf("%s %s -> %s", o.Kind, o.Path, o.Target)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Path)
}

// paths returns the paths the operation touches (Also included).
func (o *op) paths() []string {
	ps := []string{o.Path}
	if o.Path2 != "" {
		ps = append(ps, o.Path2)
	}
	return append(ps, o.Also...)
}

func encodeOp(o *op) []byte {
	b, _ := json.Marshal(o)
	return b
}

// decodeOp parses a journal record, refusing records that could not have
// been written by this package (so a damaged journal is reported, not replayed).
func decodeOp(b []byte) (*op, error) {
	var o op
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("journal record: %w", err)
	}
	switch o.Kind {
	case opPut, opMkdir, opRemove, opRmdir, opChmod, opUtimes, opMknod:
	case opChown:
		if o.Owner == nil {
			return nil, fmt.Errorf("journal record: chown without owner")
		}
	case opRename, opLink, opRelink:
		if o.Path2 == "" {
			return nil, fmt.Errorf("journal record: %s without destination", o.Kind)
		}
	case opSymlink:
	default:
		return nil, fmt.Errorf("journal record: unknown kind %q", o.Kind)
	}
	for _, p := range o.paths() {
		if !validRelPath(p) {
			return nil, fmt.Errorf("journal record: bad path %q", p)
		}
	}
	return &o, nil
}

// validRelPath reports whether p is a clean, non-empty relative path.
func validRelPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// related reports whether a and b are the same path or one contains the other.
func related(a, b string) bool {
	if a == b || a == "" || b == "" {
		return true
	}
	return isUnder(b, a) || isUnder(a, b)
}

// isUnder reports whether p is below dir (dir + "/" + something), without
// building dir + "/": the writer calls related for every pair of pending
// operations, and paths can be 4 KiB long.
func isUnder(p, dir string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

// journal is the write-back queue: the ordered list of operations the
// server has not acknowledged, and the rules that say which one goes next,
// which wait, which fold into an earlier one and what a failure does. It
// knows operations and paths, not the tree: what delivering an operation
// means, and what its delivery changes, is the deliverer's business (the
// Store, writeback.go), so these rules are tested on their own
// (journal_test.go).
//
// The rules:
//   - Order: an operation waits for every earlier one on a related path
//     (the same path, an ancestor or a descendant); unrelated ones run in
//     parallel, up to uploads at once, looking at most dispatchWindow
//     operations deep.
//   - Folding: a put not yet started takes the later saves of its file
//     (unstartedPut: the store queues no second one), and follows the file
//     when it is renamed before it starts (retarget).
//   - Settling: an op with notBefore in the future waits until then.
//   - Retry: an op that failed because the server is unreachable (or the
//     store is closing) is tried again 200ms later and counts no attempt;
//     one the server refused for good is handed to the deliverer's refused
//     (set aside, undelivered.go) and leaves the journal; any other
//     failure is retried after 0.5s, 1s, 2s ... 32s and is the journal's
//     last error (Flush and Status report it) until that op succeeds.
//
// Its lock is the store's mutex (mu): every method is called with it
// held, except run, which takes it itself and releases it while an op is
// being delivered.
type journal struct {
	// set at construction
	mu      *sync.Mutex
	cond    *sync.Cond // signalled when the queue or the writer's state changes
	uploads int        // ops in flight at most
	d       deliverer

	// guarded by mu
	pending     []*op          // oldest first
	pendingPath map[string]int // path -> number of pending ops touching it
	inflight    int            // ops being delivered now
	applied     uint64         // ops delivered so far
	recentDone  []doneOp       // the last ones, for changedSince
	lastErr     error          // last failure other than offline
	lastErrOp   *op            // the op that failed
}

// deliverer is what the journal needs from the rest of the store: how to
// deliver an operation, and what to do with the result.
type deliverer interface {
	// deliver applies o to the server; called without mu. Replays are
	// idempotent: an operation whose effect is there already succeeds.
	deliver(ctx context.Context, o *op) error
	// canDeliver reports whether ops may start now (online, writable).
	canDeliver() bool
	// delivered is told, with mu held, that o reached the server and left
	// the journal: it records what that changed, durably.
	delivered(o *op)
	// refused is told, with mu held, that the server refused o for good
	// (permanentRefusal); it sets o aside and returns true, or returns
	// false when it could not (o is then retried like any failure).
	refused(o *op, err error) bool
	// failed is told, with mu held, of a failure that will be retried.
	failed(o *op, err error, retryIn time.Duration)
}

func newJournal(mu *sync.Mutex, cond *sync.Cond, uploads int, d deliverer) *journal {
	return &journal{mu: mu, cond: cond, uploads: uploads, d: d, pendingPath: map[string]int{}}
}

// add appends o to the queue. Caller holds mu.
func (j *journal) add(o *op) {
	j.pending = append(j.pending, o)
	for _, p := range o.paths() {
		j.pendingPath[p]++
	}
	j.cond.Broadcast()
}

// index is o's place in the queue, -1 when not there. Caller holds mu.
func (j *journal) index(o *op) int {
	for i, p := range j.pending {
		if p == o {
			return i
		}
	}
	return -1
}

// remove takes o out of the queue. Caller holds mu.
func (j *journal) remove(o *op) {
	if i := j.index(o); i >= 0 {
		j.pending = append(j.pending[:i], j.pending[i+1:]...)
	}
	for _, p := range o.paths() {
		j.pendingPath[p]--
		if j.pendingPath[p] <= 0 {
			delete(j.pendingPath, p)
		}
	}
	if j.lastErrOp == o {
		j.lastErr, j.lastErrOp = nil, nil
	}
	j.cond.Broadcast()
}

// dispatchWindow bounds how far into the journal the writer looks for
// runnable operations.
const dispatchWindow = 512

// next marks the operations that may start now as in flight and returns
// them, oldest first. Caller holds mu.
func (j *journal) next(now time.Time) []*op {
	var blocking []string
	isBlocked := func(o *op) bool {
		for _, p := range o.paths() {
			for _, b := range blocking {
				if related(p, b) {
					return true
				}
			}
		}
		return false
	}
	var start []*op
	for i, o := range j.pending {
		if i >= dispatchWindow || j.inflight >= j.uploads {
			break
		}
		if !o.inflight && !o.notBefore.After(now) && !isBlocked(o) {
			o.inflight = true
			j.inflight++
			start = append(start, o)
		}
		blocking = append(blocking, o.paths()...)
	}
	return start
}

// wait is how long the writer may sleep: at most d, less when a waiting
// operation becomes due sooner. Caller holds mu.
func (j *journal) wait(now time.Time, d time.Duration) time.Duration {
	for i, o := range j.pending {
		if i >= dispatchWindow {
			break
		}
		if !o.inflight && o.notBefore.After(now) {
			d = min(d, o.notBefore.Sub(now)+time.Millisecond)
		}
	}
	return d
}

// done records a change of paths that reached the server now: a listing
// that started before it is stale for them (changedSince). Delivered
// operations, and changes made on the server at once (a chown answered
// by the server). Caller holds mu.
func (j *journal) done(paths []string, now time.Time) {
	j.applied++
	j.recentDone = append(j.recentDone, doneOp{n: j.applied, paths: paths, at: now})
	if len(j.recentDone) > recentDoneMax {
		j.recentDone = append(j.recentDone[:0:0], j.recentDone[len(j.recentDone)-recentDoneMax/2:]...)
	}
}

// finish records the outcome of delivering o (err) by the rules above.
// Caller holds mu.
func (j *journal) finish(o *op, err error, now time.Time) {
	o.inflight = false
	j.inflight--
	defer j.cond.Broadcast()
	if err == nil {
		j.remove(o)
		j.done(o.paths(), now)
		j.d.delivered(o)
		return
	}
	if errors.Is(err, conn.ErrOffline) || errors.Is(err, context.Canceled) {
		o.notBefore = now.Add(200 * time.Millisecond)
		return
	}
	if permanentRefusal(o, err) && j.d.refused(o, err) {
		return
	}
	o.attempts++
	backoff := 500 * time.Millisecond << min(o.attempts-1, 6) // up to 32s
	o.notBefore = now.Add(backoff)
	if !strings.Contains(err.Error(), o.Path) {
		err = fmt.Errorf("%s: %w", o, err)
	}
	j.lastErr, j.lastErrOp = err, o
	j.d.failed(o, err, backoff)
}

// run is the writer: it delivers operations by the rules until stop is
// closed, then waits for those in flight.
func (j *journal) run(stop <-chan struct{}) {
	var running sync.WaitGroup
	defer running.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if j.d.canDeliver() {
			for _, o := range j.next(time.Now()) {
				running.Add(1)
				go func() {
					defer running.Done()
					j.deliver(o, stop)
				}()
			}
		}
		waitCond(j.mu, j.cond, j.wait(time.Now(), 200*time.Millisecond))
	}
}

// deliver delivers one op, cancelled when stop closes, and records the
// outcome.
func (j *journal) deliver(o *op, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := j.d.deliver(ctx, o)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.finish(o, err, time.Now())
}

// waitCond waits on cond for at most d (so state that changes without a
// signal, like going offline, is noticed). Caller holds mu.
func waitCond(mu *sync.Mutex, cond *sync.Cond, d time.Duration) {
	t := time.AfterFunc(d, func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
	cond.Wait()
	t.Stop()
}

// unstartedPut reports whether an upload of ino to p is queued and not
// yet started, with nothing touching p after it: a later save of the file
// folds into it. Caller holds mu.
func (j *journal) unstartedPut(ino Ino, p string) bool {
	for i := len(j.pending) - 1; i >= 0; i-- {
		o := j.pending[i]
		if o.Kind == opRelink && o.Path == p && !o.inflight {
			continue // follows the put it belongs to
		}
		for _, q := range o.paths() {
			if related(p, q) {
				return o.Kind == opPut && o.Ino == ino && o.Path == p && !o.inflight
			}
		}
	}
	return false
}

// lastTouching returns the newest pending op related to any of paths.
// Caller holds mu.
func (j *journal) lastTouching(paths ...string) *op {
	for i := len(j.pending) - 1; i >= 0; i-- {
		o := j.pending[i]
		for _, p := range paths {
			for _, q := range o.paths() {
				if related(p, q) {
					return o
				}
			}
		}
	}
	return nil
}

// retarget moves a put not yet started to newPath (its file was renamed).
// Caller holds mu.
func (j *journal) retarget(o *op, newPath string) {
	j.pendingPath[o.Path]--
	if j.pendingPath[o.Path] <= 0 {
		delete(j.pendingPath, o.Path)
	}
	o.Path = newPath
	j.pendingPath[newPath]++
}

// puts counts the uploads of ino in the queue, in flight or not. Caller
// holds mu.
func (j *journal) puts(ino Ino) int {
	n := 0
	for _, o := range j.pending {
		if o.Kind == opPut && o.Ino == ino {
			n++
		}
	}
	return n
}

// mark is the count of operations delivered so far: what was learned from
// the server after reading it may predate the deliveries after it
// (changedSince). Caller holds mu.
func (j *journal) mark() uint64 { return j.applied }

// len is the number of pending operations. Caller holds mu.
func (j *journal) len() int { return len(j.pending) }

// each calls f for every pending operation, oldest first. f must not
// change the queue. Caller holds mu.
func (j *journal) each(f func(o *op)) {
	for _, o := range j.pending {
		f(o)
	}
}

// lastSeq is the newest pending operation's number, 0 when none is.
// Caller holds mu.
func (j *journal) lastSeq() uint64 {
	if len(j.pending) == 0 {
		return 0
	}
	return j.pending[len(j.pending)-1].Seq
}

// onPath reports whether a pending operation names p itself. Caller
// holds mu.
func (j *journal) onPath(p string) bool { return j.pendingPath[p] > 0 }

// err is the last failure the writer will retry (nil when the op it
// belongs to has since been delivered), for Flush and Status. Caller
// holds mu.
func (j *journal) err() error { return j.lastErr }

// forgetErr clears the last failure (Flush reports only new ones).
// Caller holds mu.
func (j *journal) forgetErr() { j.lastErr, j.lastErrOp = nil, nil }

// upTo counts pending operations with Seq <= last. Caller holds mu.
func (j *journal) upTo(last uint64) int {
	n := 0
	for _, o := range j.pending {
		if o.Seq <= last {
			n++
		}
	}
	return n
}

// doneOp records the paths of a delivered journal operation.
type doneOp struct {
	n     uint64 // value of journal.applied after it
	paths []string
	at    time.Time
}

const recentDoneMax = 4096

// changedSince reports whether an operation delivered after the moment
// applied read since touched p (or an ancestor or descendant). Caller
// holds mu.
func (j *journal) changedSince(p string, since uint64) bool {
	if since >= j.applied {
		return false
	}
	if len(j.recentDone) == 0 || j.recentDone[0].n > since+1 {
		return true // too old to tell: assume it did
	}
	for i := len(j.recentDone) - 1; i >= 0 && j.recentDone[i].n > since; i-- {
		for _, q := range j.recentDone[i].paths {
			if related(p, q) {
				return true
			}
		}
	}
	return false
}

// deliveredWithin reports whether an operation delivered since the time
// since touched p (or an ancestor or descendant). Caller holds mu.
func (j *journal) deliveredWithin(p string, since time.Time) bool {
	for i := len(j.recentDone) - 1; i >= 0 && j.recentDone[i].at.After(since); i-- {
		for _, q := range j.recentDone[i].paths {
			if related(p, q) {
				return true
			}
		}
	}
	return false
}

// touches reports whether a pending operation touches p, an ancestor of
// p or a descendant of p. Caller holds mu.
func (j *journal) touches(p string) bool {
	for q := range j.pendingPath {
		if related(p, q) {
			return true
		}
	}
	return false
}

// touchesBut is touches, not counting the pending operation own.
func (j *journal) touchesBut(p string, own *op) bool {
	for q, n := range j.pendingPath {
		if !related(p, q) {
			continue
		}
		for _, oq := range own.paths() {
			if oq == q {
				n--
			}
		}
		if n > 0 {
			return true
		}
	}
	return false
}
