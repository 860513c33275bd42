package daemon

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestMemoryLimitFollowsLiveHeap: after collections with 64 MiB live, the
// limit is about 1.7 times that, not the floor.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	stop := followLiveHeap(1 << 20)
	defer stop()
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer runs on its own goroutine
		lim := debug.SetMemoryLimit(-1)
		if lim >= 100<<20 && lim < 200<<20 {
			t.Logf("limit %d MiB with 64 MiB live", lim>>20)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("limit %d MiB with 64 MiB live; want about 1.7 times it", lim>>20)
		}
	}
	runtime.KeepAlive(live)
}
