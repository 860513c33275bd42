package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"remotefs/internal/mountinfo"
)

// Large reads through the mount.
//
// A program reading a file through the page cache gets it from the
// daemon in READ requests as large as the kernel's readahead window for
// the mount, and no larger than the pages one request may carry. Both
// default to 128 KiB for a FUSE mount: a 256 MiB file is then 2048 READs,
// each a trip through the kernel, a worker and back, which on a busy
// machine held the reader about as long as the network did.
//
//   - readPages (FUSE_MAX_PAGES, a remotefs patch of bazil) lets a READ
//     carry up to 1 MiB, as much as fuse.MaxReadahead lets the kernel read
//     ahead.
//   - The window itself is the mount's backing device's read_ahead_kb
//     (/sys/class/bdi/MAJOR:MINOR), which the kernel sets to 128 at mount
//     whatever the daemon asked for in INIT, and which only root may
//     change. When the daemon may write it (it runs as root, as mergerfs
//     does for the same reason), it sets it to readaheadKB: 1 MiB READs,
//     eight times fewer. Otherwise the kernel's 128 KiB stays and the log
//     says so; reads are then smaller, not wrong.
const (
	readPages   = 256 // 1 MiB of 4 KiB pages: the kernel's own upper bound
	readaheadKB = readPages * 4
)

// raiseReadahead sets the read_ahead_kb of the FUSE mount at mountpoint to
// readaheadKB when it is below and the daemon may write it. It makes no
// FUSE request (the device comes from the mount table, not stat).
func raiseReadahead(mountpoint string, log *slog.Logger) {
	m, ok := mountinfo.Lookup(mountpoint)
	if !ok || m.Device == "" {
		log.Debug("readahead left as the kernel set it: the mount is not in the mount table", "mountpoint", mountpoint)
		return
	}
	dev := m.Device
	file := filepath.Join("/sys/class/bdi", dev, "read_ahead_kb")
	cur, err := readInt(file)
	if err != nil {
		log.Debug("readahead left as the kernel set it", "err", err)
		return
	}
	if cur >= readaheadKB {
		return
	}
	if err := os.WriteFile(file, []byte(strconv.Itoa(readaheadKB)), 0); err != nil {
		log.Info("readahead left as the kernel set it: reads reach the daemon in requests of at most this size",
			"kb", cur, "err", err)
		return
	}
	log.Debug("readahead raised", "bdi", dev, "from_kb", cur, "to_kb", readaheadKB)
}

func readInt(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
