package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestQueuedInvalidationKeepsEveryField: an invalidation comes out of the
// queue as it went in, whichever of its fields is set (a field added to
// Invalidation and not to the queue fails here).
func TestQueuedInvalidationKeepsEveryField(t *testing.T) {
	full := Invalidation{}
	v := reflect.ValueOf(&full).Elem()
	for i := 0; i < v.NumField(); i++ {
		one := Invalidation{}
		f := reflect.ValueOf(&one).Elem().Field(i)
		setNonZero(t, f)
		setNonZero(t, v.Field(i))
		if got := queueInvalidation(one); got.invalidation() != one {
			t.Errorf("field %s: %+v came back as %+v", v.Type().Field(i).Name, one, got.invalidation())
		}
	}
	if got := queueInvalidation(full); got.invalidation() != full {
		t.Errorf("%+v came back as %+v", full, got.invalidation())
	}
	if q := queueInvalidation(Invalidation{Dir: 3, Name: "x", Made: 9}); q.attrs != nil {
		t.Errorf("a new name's invalidation keeps attributes aside: %+v", q)
	}
}

func setNonZero(t *testing.T, f reflect.Value) {
	t.Helper()
	switch f.Kind() {
	case reflect.Bool:
		f.SetBool(true)
	case reflect.Uint8, reflect.Uint32, reflect.Uint64:
		f.SetUint(7)
	case reflect.String:
		f.SetString("name")
	case reflect.Struct:
		if f.Type() == reflect.TypeOf(Attr{}) {
			f.Set(reflect.ValueOf(Attr{Ino: 5, Size: 11, Mtime: time.Unix(1700000000, 5), Target: "t", Nlink: 1}))
			return
		}
		fallthrough
	default:
		t.Fatalf("no non-zero value for a %s field", f.Type())
	}
}

// TestRecencyOrder: the content recency list against a plain slice kept
// in the same order, under random uses, removals and evictions.
func TestRecencyOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	r := newRecency()
	ents := make([]*entry, 50)
	for i := range ents {
		ents[i] = &entry{ino: Ino(i + 2)}
	}
	var ref []*entry // least recent first
	bytes := map[*entry]int64{}
	for step := 0; step < 20000; step++ {
		e := ents[rng.IntN(len(ents))]
		switch rng.IntN(4) {
		case 0, 1:
			n := rng.Int64N(1000)
			old := r.add(e, n)
			if old != bytes[e] {
				t.Fatalf("seed %d step %d: add returned %d, want %d", seed, step, old, bytes[e])
			}
			bytes[e] = n
			if i := slices.Index(ref, e); i >= 0 {
				ref = slices.Delete(ref, i, i+1)
			}
			ref = append(ref, e)
		case 2:
			if got := r.remove(e); got != bytes[e] {
				t.Fatalf("seed %d step %d: remove returned %d, want %d", seed, step, got, bytes[e])
			}
			delete(bytes, e)
			if i := slices.Index(ref, e); i >= 0 {
				ref = slices.Delete(ref, i, i+1)
			}
		case 3:
			r.use(e)
			if i := slices.Index(ref, e); i >= 0 {
				ref = append(slices.Delete(ref, i, i+1), e)
			}
		}
		if r.Len() != len(ref) {
			t.Fatalf("seed %d step %d: %d in the list, want %d", seed, step, r.Len(), len(ref))
		}
		want := (*entry)(nil)
		if len(ref) > 0 {
			want = ref[0]
		}
		if got := r.oldest(); got != want {
			t.Fatalf("seed %d step %d: oldest %v, want %v", seed, step, got, want)
		}
	}
	// The whole order, oldest first.
	var got []*entry
	got = r.l.Keys()
	if !slices.Equal(got, ref) {
		t.Fatalf("seed %d: final order differs", seed)
	}
}

// TestUnchangedListingWritesNothing: listing a folder again whose files
// did not change marks none of them for meta.db; a file that changed is,
// and the new attributes are what a reopened store has.
func TestUnchangedListingWritesNothing(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 50; i++ {
		e.server(fmt.Sprintf("a/f%02d", i), strings.Repeat("x", i))
	}
	dir := e.mustLookup("a").Ino
	ctx := context.Background()
	if err := e.s.listDirNow(ctx, dir); err != nil {
		t.Fatal(err)
	}
	dirtyFiles := func() []string {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		var out []string
		for ino := range e.s.dirtyIno {
			if c := e.s.entries[ino]; c != nil && c.mode.IsRegular() {
				out = append(out, c.name)
			}
		}
		sort.Strings(out)
		return out
	}
	if got := dirtyFiles(); len(got) != 50 {
		t.Fatalf("a first listing marks %d files for meta.db, want 50", len(got))
	}
	e.s.mu.Lock()
	if err := e.s.checkpointLocked(0, nil); err != nil {
		t.Fatal(err)
	}
	e.s.mu.Unlock()
	if err := e.s.listDirNow(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if got := dirtyFiles(); len(got) != 0 {
		t.Fatalf("listing unchanged files again marks %q for meta.db", got)
	}
	e.server("a/f07", "changed on the server")
	if err := e.s.listDirNow(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if got := dirtyFiles(); !slices.Equal(got, []string{"f07"}) {
		t.Fatalf("after one file changed, %q are marked for meta.db, want f07", got)
	}
	e.reopen()
	if a := e.mustLookup("a/f07"); a.Size != int64(len("changed on the server")) {
		t.Fatalf("after a reopen a/f07 has size %d", a.Size)
	}
	if a := e.mustLookup("a/f09"); a.Size != 9 {
		t.Fatalf("after a reopen a/f09 has size %d", a.Size)
	}
}
