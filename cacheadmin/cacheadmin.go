// Package cacheadmin is `remotefs cache`: it lists, clears, pins and
// rescues the local caches of this user, mounted or not, and records in
// each cache directory which remote it mirrors (WriteInfo, called by the
// daemon at each mount).
//
// It reads a cache's meta.db only through bbolt with a short lock
// timeout: a mount holds that lock for as long as it runs, so a cache in
// use is reported busy at once, never waited for. A mounted cache is
// asked about over its daemon's control socket (a 3-5 s deadline per
// call); pin reads the files through the mount itself. Nothing here holds
// a lock of its own.
package cacheadmin

//
// A cache directory ($XDG_CACHE_HOME/remotefs/<key>/, or --cache-dir)
// holds meta.db (bbolt: entries, journal, state), content/, remote.json
// (written by the daemon at each mount: which remote it mirrors, when it
// was created and last mounted) and the pinned list (cache.PinnedFile).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"remotefs/cache"
	"remotefs/config"
	"remotefs/conn"
	"remotefs/internal/cli"
	"remotefs/internal/control"
	"remotefs/internal/mountinfo"
)

// InfoFile records which remote a cache directory mirrors.
const InfoFile = "remote.json"

// cacheInfo is the content of remote.json.
type cacheInfo struct {
	Remote     string    `json:"remote"`
	Created    time.Time `json:"created"`
	LastUsed   time.Time `json:"last_used"`
	Mountpoint string    `json:"mountpoint,omitempty"` // of the last mount
}

// WriteInfo records in dir which remote it mirrors and that it is used
// now, mounted on mountpoint. The daemon calls it once the cache is open.
func WriteInfo(dir, remote, mountpoint string) error {
	p := filepath.Join(dir, InfoFile)
	info := readCacheInfo(dir)
	now := time.Now().UTC().Truncate(time.Second)
	if info.Created.IsZero() || info.Remote != remote {
		info.Created = now
	}
	info.Remote, info.LastUsed, info.Mountpoint = remote, now, mountpoint
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(p, append(b, '\n'))
}

func readCacheInfo(dir string) cacheInfo {
	var info cacheInfo
	if b, err := os.ReadFile(filepath.Join(dir, InfoFile)); err == nil {
		json.Unmarshal(b, &info)
	}
	return info
}

func writeFileAtomic(p string, data []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Row is one cache in `remotefs cache list`; JSON names are stable.
type Row struct {
	Dir        string    `json:"dir"`
	Remote     string    `json:"remote"`
	Mountpoint string    `json:"mountpoint,omitempty"` // mounted there now
	DiskBytes  int64     `json:"disk_bytes"`
	Entries    int       `json:"entries"`
	Pending    int       `json:"pending"`
	Pinned     []string  `json:"pinned"`
	LastUsed   time.Time `json:"last_used"`
	Error      string    `json:"error,omitempty"`
}

// PrintList writes the table of `remotefs cache list`.
func PrintList(w io.Writer, rows []Row) {
	if len(rows) == 0 {
		fmt.Fprintf(w, "no caches in %s\n", config.CacheRoot())
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REMOTE\tMOUNTED ON\tSIZE\tENTRIES\tPENDING\tPINNED\tLAST USED\tDIRECTORY")
	for _, r := range rows {
		mp, entries, pending, used := "-", fmt.Sprint(r.Entries), fmt.Sprint(r.Pending), "-"
		if r.Mountpoint != "" {
			mp, used = r.Mountpoint, "now"
		} else if !r.LastUsed.IsZero() {
			used = r.LastUsed.Local().Format("2006-01-02 15:04")
		}
		if r.Error != "" {
			entries, pending = "?", "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Remote, mp, cli.HumanBytes(r.DiskBytes), entries, pending, len(r.Pinned), used, r.Dir)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Dir, r.Error)
		}
	}
}

// liveMounts asks every control socket of this user for its status.
func liveMounts(ctx context.Context) []*control.Status {
	out, _ := control.Statuses(ctx, "", 3*time.Second)
	return out
}

// knownCacheDirs: every directory under the cache root, the cache_dir of
// each host in the config file, and the cache of every live mount.
func knownCacheDirs(live []*control.Status) []string {
	seen := map[string]bool{}
	var dirs []string
	add := func(d string) {
		if d == "" {
			return
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		if !seen[d] && isCacheDir(d) {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	ents, _ := os.ReadDir(config.CacheRoot())
	for _, e := range ents {
		if e.IsDir() {
			add(filepath.Join(config.CacheRoot(), e.Name()))
		}
	}
	if c, err := config.Load(""); err == nil {
		for _, h := range c.Hosts {
			if h.CacheDir != nil {
				add(c.ExpandPath(*h.CacheDir))
			}
		}
	}
	for _, st := range live {
		add(st.CacheDir)
	}
	sort.Strings(dirs)
	return dirs
}

// isCacheDir: the directory has the files a remotefs cache has.
func isCacheDir(d string) bool {
	for _, f := range []string{"meta.db", InfoFile} {
		if fi, err := os.Stat(filepath.Join(d, f)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// List returns every cache of this user: under the cache root, named in
// the config file, or used by a live mount.
func List(ctx context.Context) []Row {
	live := liveMounts(ctx)
	rows := []Row{}
	for _, d := range knownCacheDirs(live) {
		info := readCacheInfo(d)
		r := Row{Dir: d, Remote: info.Remote, LastUsed: info.LastUsed, DiskBytes: diskUsage(d), Pinned: readPinned(d)}
		if r.Remote == "" {
			r.Remote = "(unknown)"
		}
		if fi, err := os.Stat(filepath.Join(d, "meta.db")); err == nil && fi.ModTime().After(r.LastUsed) {
			r.LastUsed = fi.ModTime()
		}
		if st := mountOfCache(live, d); st != nil {
			r.Mountpoint, r.Entries, r.Pending = st.Mountpoint, st.CachedEntries, st.Pending
			if r.Remote == "(unknown)" {
				r.Remote = st.Remote
			}
		} else if n, pending, err := inspectCache(d); err != nil {
			r.Error = err.Error()
		} else {
			r.Entries, r.Pending = n, pending
		}
		rows = append(rows, r)
	}
	return rows
}

func mountOfCache(live []*control.Status, dir string) *control.Status {
	for _, st := range live {
		if st.CacheDir == dir {
			return st
		}
	}
	return nil
}

// errCacheBusy: another process (a mount) has the cache's meta.db open.
var errCacheBusy = errors.New("in use by a running remotefs mount")

// openMeta opens dir/meta.db without waiting long for its lock: a mount
// holds it exclusively for as long as it runs.
func openMeta(dir string, readOnly bool) (*bolt.DB, error) {
	p := filepath.Join(dir, "meta.db")
	if _, err := os.Stat(p); err != nil {
		return nil, err
	}
	db, err := bolt.Open(p, 0o600, &bolt.Options{ReadOnly: readOnly, Timeout: 200 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, errCacheBusy
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", p, err)
	}
	return db, nil
}

// inspectCache reads the counts of an unmounted cache.
func inspectCache(dir string) (entries, pending int, err error) {
	db, err := openMeta(dir, true)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	return cache.CountPending(db, dir)
}

// diskUsage is the space dir takes on disk (allocated blocks).
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

// resolveCacheArg finds the cache directory an argument of `cache clear`
// names.
func resolveCacheArg(arg string) (dir, remote string, err error) {
	colon := strings.IndexByte(arg, ':')
	isSpec := colon > 0 && !strings.ContainsRune(arg[:colon], '/')
	switch {
	case !isSpec && (strings.ContainsRune(arg, '/') || arg == "." || arg == ".."):
		dir, err = filepath.Abs(arg)
		if err != nil {
			return "", "", err
		}
	case isSpec:
		spec, err := conn.ParseSpec(arg)
		if err != nil {
			return "", "", err
		}
		remote = spec.String()
		dir = config.DefaultCacheDir(spec)
		if c, cerr := config.Load(""); cerr == nil {
			if sec, _ := c.Section(spec); sec.CacheDir != nil {
				dir = c.ExpandPath(*sec.CacheDir)
			}
		}
		if !isCacheDir(dir) {
			// Mounted with --cache-dir: find it by its remote.json.
			for _, d := range knownCacheDirs(nil) {
				if readCacheInfo(d).Remote == remote {
					return d, remote, nil
				}
			}
			return "", "", fmt.Errorf("there is no cache of %s (remotefs cache list shows the caches)", remote)
		}
	default:
		dir = filepath.Join(config.CacheRoot(), arg)
		if !isCacheDir(dir) {
			return "", "", fmt.Errorf("no cache named %q in %s (remotefs cache list shows the caches; a remote is written HOST:PATH)", arg, config.CacheRoot())
		}
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if !isCacheDir(dir) {
		return "", "", fmt.Errorf("%s is not a remotefs cache directory (it has no meta.db)", dir)
	}
	if remote == "" {
		remote = readCacheInfo(dir).Remote
	}
	return dir, remote, nil
}

// Clear deletes the cache arg names (HOST:PATH, its directory or its
// name), refusing while it is mounted or holds changes not on the server.
func Clear(ctx context.Context, arg string) error {
	dir, remote, err := resolveCacheArg(arg)
	if err != nil {
		return err
	}
	what := dir
	if remote != "" {
		what = fmt.Sprintf("the cache of %s (%s)", remote, dir)
	}
	if st := mountOfCache(liveMounts(ctx), dir); st != nil {
		return fmt.Errorf("%s is in use by the mount on %s: unmount it first (remotefs unmount %s)", what, st.Mountpoint, st.Mountpoint)
	}
	// Hold meta.db's lock while deleting, so that no mount starts on it
	// meanwhile.
	db, err := openMeta(dir, false)
	if errors.Is(err, errCacheBusy) {
		return fmt.Errorf("%s is in use by a running remotefs: unmount it first", what)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %v; not cleared", what, err)
	}
	if db != nil {
		defer db.Close()
		_, pending, err := cache.CountPending(db, dir)
		if err != nil {
			return fmt.Errorf("%s: %v; not cleared", what, err)
		}
		if pending > 0 {
			hint := "mount it again so they are delivered (remotefs unmount waits for them), then clear it"
			if remote != "" {
				hint = fmt.Sprintf("mount %s again so they are delivered (remotefs unmount waits for them), then clear it", remote)
			}
			return fmt.Errorf("%s holds %d change(s) not yet on the server; %s", what, pending, hint)
		}
	}
	if us, _ := cache.ReadUndelivered(dir); len(us) > 0 {
		return fmt.Errorf("%s holds %d change(s) the server refused, kept aside; take them back first (remotefs cache rescue %s DEST_FOLDER), then clear it", what, len(us), arg)
	}
	size := diskUsage(dir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %v", dir, err)
	}
	fmt.Printf("cleared %s, %s freed\n", what, cli.HumanBytes(size))
	return nil
}

// mountOfPath finds the remotefs mount that holds p (absolute).
func mountOfPath(ctx context.Context, p string) (*control.Status, error) {
	for d := p; ; d = filepath.Dir(d) {
		if mi, mounted := mountinfo.Lookup(d); mounted {
			if !strings.Contains(mi.FSType, "remotefs") {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := control.Call(cctx, d, control.Request{Cmd: "status"}, nil)
			cancel()
			if err != nil || r.Status == nil {
				return nil, fmt.Errorf("%s is on %s, which is not served by a running remotefs of yours", p, d)
			}
			return r.Status, nil
		}
		if d == "/" {
			break
		}
	}
	return nil, fmt.Errorf("%s is not on a remotefs mount", p)
}

// Pin fetches every file under arg (on a remotefs mount) into the cache
// and records it in the cache's pinned list; with pin false it removes
// it from the list.
func Pin(ctx context.Context, arg string, pin bool) error {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return err
	}
	if pin {
		if _, err := os.Lstat(abs); err != nil {
			return fmt.Errorf("%s: %w", abs, unwrapPathError(err))
		}
	}
	st, err := mountOfPath(ctx, abs)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(st.Mountpoint, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("%s is not under %s", abs, st.Mountpoint)
	}
	rel = filepath.ToSlash(rel)
	if rel == "." {
		rel = "/"
	}
	list := readPinned(st.CacheDir)
	if !pin {
		var kept []string
		found := false
		for _, p := range list {
			if p == rel {
				found = true
				continue
			}
			kept = append(kept, p)
		}
		if !found {
			return fmt.Errorf("%s is not pinned (pinned on %s: %s)", abs, st.Mountpoint, strings.Join(orNone(list), ", "))
		}
		if err := writePinned(st.CacheDir, kept); err != nil {
			return err
		}
		fmt.Printf("unpinned %s\n", abs)
		return nil
	}
	// Record first, so that nothing read below is evicted meanwhile.
	if !contains(list, rel) {
		if err := writePinned(st.CacheDir, append(list, rel)); err != nil {
			return err
		}
	}
	files, bytes, errs := fetchTree(ctx, abs)
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", e)
		}
		return fmt.Errorf("pinned %s, but %d file(s) could not be read (is the server offline?): run remotefs cache pin %s again to fetch them", abs, len(errs), arg)
	}
	fmt.Printf("pinned %s: %d file(s), %s, kept in the cache for offline use\n", abs, files, cli.HumanBytes(bytes))
	return nil
}

func orNone(l []string) []string {
	if len(l) == 0 {
		return []string{"nothing"}
	}
	return l
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// fetchTree reads every regular file under root through the mount, which
// makes the cache fetch and keep it; progress goes to a terminal.
func fetchTree(ctx context.Context, root string) (files int, total int64, errs []error) {
	prog := cli.NewProgress()
	defer prog.Done()
	last := time.Time{}
	buf := make([]byte, 1<<20)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			errs = append(errs, cerr)
			return filepath.SkipAll
		}
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		for {
			n, rerr := f.Read(buf)
			total += int64(n)
			if time.Since(last) > 200*time.Millisecond {
				last = time.Now()
				prog.Show(fmt.Sprintf("pinning: %d file(s), %s: %s", files, cli.HumanBytes(total), p))
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				errs = append(errs, &fs.PathError{Op: "read", Path: p, Err: unwrapPathError(rerr)})
				break
			}
		}
		f.Close()
		files++
		return nil
	})
	return files, total, errs
}

// readPinned returns the pinned paths of the cache in dir (relative to
// the remote root; "/" is the root).
func readPinned(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, cache.PinnedFile))
	if err != nil {
		return []string{}
	}
	out := []string{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

func writePinned(dir string, list []string) error {
	sort.Strings(list)
	var b strings.Builder
	for _, p := range list {
		b.WriteString(p + "\n")
	}
	if err := writeFileAtomic(filepath.Join(dir, cache.PinnedFile), []byte(b.String())); err != nil {
		return fmt.Errorf("record pinned folders: %w", err)
	}
	return nil
}

// Rescue lists the changes the server refused for good in the cache of
// arg (a mountpoint, or what Clear accepts), or with dest copies their
// content there, forgetting them unless keep.
func Rescue(ctx context.Context, arg, dest string, keep bool) error {
	dir, err := rescueCacheDir(ctx, arg)
	if err != nil {
		return err
	}
	us, err := cache.ReadUndelivered(dir)
	if err != nil {
		return err
	}
	if len(us) == 0 {
		fmt.Println("nothing was set aside: every change reached the server")
		return nil
	}
	if dest == "" {
		for _, u := range us {
			kept := "(nothing to keep)"
			if u.Kept != "" {
				kept = u.Kept
			}
			fmt.Printf("%s  %s\n    refused: %s\n    at %s; content: %s\n", u.Path, u.Op, u.Reason, u.At.Local().Format("2006-01-02 15:04:05"), kept)
		}
		return nil
	}
	dest, err = filepath.Abs(dest)
	if err != nil {
		return err
	}
	var failed error
	for _, u := range us {
		if u.Kept != "" {
			to, err := rescueOne(u, dest)
			if err != nil {
				fmt.Fprintf(os.Stderr, "remotefs: %s: %v\n", u.Path, err)
				failed = cli.ErrSilent
				continue
			}
			fmt.Printf("%s -> %s\n", u.Path, to)
		} else {
			fmt.Printf("%s: %s had no content to keep (forgotten)\n", u.Path, u.Op)
		}
		if !keep {
			if u.Kept != "" {
				os.Remove(u.Kept)
			}
			os.Remove(u.Record)
		}
	}
	return failed
}

// rescueCacheDir finds the cache directory of a mountpoint, or of what
// resolveCacheArg accepts.
func rescueCacheDir(ctx context.Context, arg string) (string, error) {
	if abs, err := filepath.Abs(arg); err == nil {
		if fi, err := os.Stat(abs); err == nil && fi.IsDir() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := control.Call(cctx, abs, control.Request{Cmd: "status"}, nil)
			cancel()
			if err == nil && r.Status != nil && r.Status.CacheDir != "" {
				return r.Status.CacheDir, nil
			}
		}
	}
	dir, _, err := resolveCacheArg(arg)
	return dir, err
}

// rescueOne copies u's kept content to dest/u.Path, never over an existing
// file, and returns where it went.
func rescueOne(u cache.Undelivered, dest string) (string, error) {
	rel := filepath.FromSlash(u.Path)
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("refusing the recorded path %q", u.Path)
	}
	to := filepath.Join(dest, rel)
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return "", err
	}
	in, err := os.Open(u.Kept)
	if err != nil {
		return "", err
	}
	defer in.Close()
	var out *os.File
	for i := 0; ; i++ {
		name := to
		if i > 0 {
			name = fmt.Sprintf("%s.rescued-%d", to, i)
		}
		out, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) && i < 1000 {
			continue
		}
		if err != nil {
			return "", err
		}
		to = name
		break
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(to)
		return "", err
	}
	return to, nil
}
