package daemon

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// softMemoryLimit sets a soft limit on the Go runtime's memory (what
// GOMEMLIMIT sets) that follows the live heap: 1.7 times it, and never
// under 160 MiB. The daemon's heap is mostly the metadata mirror, so the
// garbage collector's own target (GOGC=50: 1.5 times the live heap) is
// what it normally runs by; the limit only matters when a burst of
// short-lived allocation (a big listing merged, a checkpoint rewriting
// much of meta.db) outruns the collector on a busy machine, when it makes
// the runtime collect and return freed memory to the system sooner instead
// of letting the resident set overshoot. Following the live heap, it never
// makes a large tree's mount collect without end. GOMEMLIMIT in the
// environment replaces it.
func softMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		followLiveHeap(160 << 20)
	}
}

// followLiveHeap sets the memory limit to floor, then after each
// collection to 1.7 times the live heap when that is more, until stop.
func followLiveHeap(floor int64) (stop func()) {
	var stopped atomic.Bool
	debug.SetMemoryLimit(floor)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	// A finalizer runs once after each collection that found its object
	// unreachable: re-armed every time, it runs about once per cycle.
	type cycle struct{ _ [32]byte } // not a tiny allocation: those may never be finalized
	var arm func()
	arm = func() {
		runtime.SetFinalizer(new(cycle), func(*cycle) {
			if stopped.Load() {
				return
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				live := int64(sample[0].Value.Uint64())
				debug.SetMemoryLimit(max(floor, live/10*17))
			}
			arm()
		})
	}
	arm()
	return func() { stopped.Store(true) }
}
