package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// heapProfiles writes a heap profile of the daemon to PREFIX.PID.N.heap
// each time it receives SIGUSR1, when REMOTEFS_HEAP_PROFILE=PREFIX is in
// its environment (a debugging switch for its memory use: go tool pprof
// -sample_index=inuse_space bin/remotefs FILE). Off otherwise: SIGUSR1
// then keeps its default action.
func heapProfiles(log *slog.Logger) {
	prefix := os.Getenv("REMOTEFS_HEAP_PROFILE")
	if prefix == "" {
		return
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	go func() {
		for n := 1; ; n++ {
			<-sigs
			path := fmt.Sprintf("%s.%d.%d.heap", prefix, os.Getpid(), n)
			if err := writeHeapProfile(path); err != nil {
				log.Warn("heap profile", "err", err)
				continue
			}
			log.Info("heap profile written", "path", path)
		}
	}()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the profile shows the heap as of the last collection
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
