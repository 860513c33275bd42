package daemon

import (
	"context"
	"log/slog"
	"time"

	"remotefs/cache"
)

// keepPrunedFresh keeps the listings inside the pruned folders
// (node_modules, __pycache__, the config's ignore patterns), which the
// change feed does not watch, confirmed with the server while the mount
// is in use: while the feed is live, every three quarters of dirTTL in
// which the mount served a request (requests counts them), all of them
// are listed again in one request (cache.Store.PreloadPruned, the same
// listing the mount makes after its tree listing). The kernel keeps a
// listing the feed does not keep current until the cache would refresh
// it and again after a confirmation that changed nothing (fs, listing.go),
// so a warm walk or grep reads none of those folders again, where it read
// every one (two requests each, and an attribute request for its atime)
// once dirTTL had passed since the last; a server change inside them
// shows within dirTTL, or at their next use once the mount has been idle.
// A round that took long makes the next wait longer (20 times its
// duration at least), so a huge node_modules is not listed without end.
func keepPrunedFresh(ctx context.Context, store *cache.Store, dirTTL time.Duration, requests func() uint64, log *slog.Logger) {
	if dirTTL <= 0 {
		return
	}
	wait := dirTTL * 3 / 4
	last := requests()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = dirTTL * 3 / 4
		n := requests()
		if n == last || !store.ChangeFeedLive() {
			continue // idle, or every listing follows DirTTL on use anyway
		}
		last = n
		start := time.Now()
		st, err := store.PreloadPruned(ctx)
		took := time.Since(start)
		wait = max(wait, 20*took)
		if err != nil {
			log.Debug("pruned folders not confirmed", "err", err)
		} else if st.Pruned > 0 {
			log.Debug("pruned folders confirmed", "stats", st.String())
		}
	}
}
