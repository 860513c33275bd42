package cache

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// meta.db in memory
//
// bbolt reads meta.db through a shared read-only mmap: every page a
// transaction touched stays in the daemon's resident set (RssFile, and so
// in VmRSS and VmHWM) until the kernel needs the memory, although the
// mirror lives in memory and the file is read only at Open and touched
// again only by checkpoints. With 100,000 entries that is about 50 MB of
// resident pages the daemon never reads again. releaseDBPages drops them
// from the process (madvise MADV_DONTNEED): they stay in the page cache,
// and a later transaction that needs one faults it back in at the cost of
// a page-table update, not a disk read. It runs after the load and after
// every checkpoint.
//
// It runs inside a read transaction: bbolt changes its mapping (to grow
// it) only when no read transaction is open, so the range advised is
// always the current mapping of meta.db and never memory reused for
// anything else.
func (s *Store) releaseDBPages() {
	s.db.View(func(tx *bolt.Tx) error {
		data, size := uintptr(tx.DB().Info().Data), uintptr(tx.Size())
		if data != 0 && size > 0 {
			syscall.Syscall(syscall.SYS_MADVISE, data, size, syscall.MADV_DONTNEED)
		}
		return nil
	})
}
