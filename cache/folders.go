package cache

import (
	"path"
	"strings"
)

// Folder policy. Server folders are where programs on the server write
// (results, runs, wandb, notebooks...): of their files only small ones are
// prefetched (64 KiB each, 16 MiB in all), and without a live change feed (polling, or none) they are
// re-checked on every open instead of after AttrTTL. With a live feed they
// are as current as everything else. A name
// without "/" matches a folder of that name at any depth; a name with "/"
// is a path relative to the remote root.

// inServerFolder reports whether e is under a server folder. Caller holds mu.
func (s *Store) inServerFolder(e *entry) bool {
	if len(s.opts.ServerFolders) == 0 {
		return false
	}
	p := s.pathOf(e)
	return matchesFolder(p, s.opts.ServerFolders, false)
}

// matchesFolder reports whether p lies inside (or, with self, is) one of
// the folders: base names (any depth) or root-relative paths.
func matchesFolder(p string, folders []string, self bool) bool {
	for _, f := range folders {
		f = strings.Trim(path.Clean(f), "/")
		if f == "" || f == "." {
			continue
		}
		if strings.Contains(f, "/") {
			if (self && p == f) || strings.HasPrefix(p, f+"/") {
				return true
			}
			continue
		}
		els := strings.Split(p, "/")
		if !self {
			els = els[:len(els)-1]
		}
		for _, el := range els {
			if el == f {
				return true
			}
		}
	}
	return false
}
