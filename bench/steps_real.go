package main

// The steps added for the realistic repositories: a first git status on a
// fresh mount, a checkout-like bulk write, a formatter-like rewrite and a
// read at a capped link. Each checks its result against the server
// directory, as the other steps do.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// stepFreshGit mounts the system a second time, on its own mount point
// with its own cache, and runs git status as the first thing on it: what
// someone sees who mounts a project and asks git about it. freshgit starts
// with an empty cache (cold pass only: a warm pass would measure the same);
// freshwalk is the same with a walk of every entry instead of git status,
// timed from the mount command's start: the cold walk a user sees whose
// laptop has no cache of the project but whose server has run remotefs
// before (the benchmark's first walk is the server's first connection
// ever, which also installs the agent there); remotefs's main mount is up,
// so its agent is there to be reused, as after any mount in the last
// minutes. remountgit mounts again with the cache the previous second mount left
// (remotefs keeps it across mounts; sshfs has none), in both passes: in the
// warm pass the server has changed since (format, saves). The system's main
// mount stays up meanwhile, idle.
func (b *bench) stepFreshGit(ctx context.Context, m *mountPoint, st *sysState, step, pass string) map[string]cell {
	empty := step == "freshgit" || step == "freshwalk"
	if empty && pass == "warm" {
		return map[string]cell{step: {kind: cellDash}}
	}
	if !m.remote {
		if step == "freshwalk" {
			return map[string]cell{step: b.stepWalk(ctx, m)["walk"]}
		}
		return map[string]cell{step: b.gitStatus(ctx, filepath.Join(m.root, projDir), st)}
	}
	fm := b.newMountPoint(m.name, freshSuffix)
	if empty {
		os.RemoveAll(filepath.Join(b.work, m.name+freshSuffix, "cache"))
	}
	md, err := fm.mount(ctx)
	if err != nil {
		fm.release()
		return map[string]cell{step: errCell("mounting a second time: %v", err)}
	}
	var c cell
	if step == "freshwalk" {
		// Counted from the mount command's start, as the first step of a
		// run counts its mount.
		if c = b.stepWalk(ctx, fm)["walk"]; c.kind == cellOK {
			c.d += md
			c.note += "; includes the mount (" + fmtDur(md) + ")"
		}
	} else if c = b.gitStatus(ctx, filepath.Join(fm.root, projDir), st); c.kind == cellOK {
		c.note += "; mount " + fmtDur(md)
	}
	if fm.name == "remotefs" && ctx.Err() == nil {
		b.checkRemotefs(ctx, fm.name+" (second mount, "+step+" "+pass+")", fm)
	}
	fm.release()
	if releaseFailed(fm.releaseNote) {
		b.rep.problemf("%s second mount (%s %s) did not unmount cleanly: %s", m.name, step, pass, fm.releaseNote)
	}
	return map[string]cell{step: c}
}

// releaseFailed reports whether an unmount needed force or failed.
func releaseFailed(note string) bool {
	for _, s := range []string{"STILL MOUNTED", "needed", "had to kill", "unmount failed"} {
		if strings.Contains(note, s) {
			return true
		}
	}
	return false
}

// bulkSet is the bulk step's archive: a package-like tree of files with
// the sizes of a source tree, extracted with tar as a checkout writes it.
type bulkSet struct {
	tar   string
	files map[string][]byte // path inside the extraction folder -> content
	dirs  int
}

func makeBulkSet(file string, n int, seed uint64) (*bulkSet, error) {
	r := rand.New(rand.NewPCG(seed, 0xb01c))
	bs := &bulkSet{tar: file, files: map[string][]byte{}}
	dirs := []string{"pkg"}
	for len(dirs) < max(2, n/12) {
		parent := dirs[r.IntN(len(dirs))]
		if strings.Count(parent, "/") >= 4 {
			continue
		}
		d := parent + "/" + pkgWords[r.IntN(len(pkgWords))]
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	bs.dirs = len(dirs)
	exts := []string{".js", ".ts", ".d.ts", ".json", ".md", ".js"}
	for i := 0; len(bs.files) < n; i++ {
		ext := exts[r.IntN(len(exts))]
		p := fmt.Sprintf("%s/%s_%s%s", dirs[r.IntN(len(dirs))], nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], ext)
		if _, ok := bs.files[p]; ok {
			continue
		}
		bs.files[p] = jsText(seed<<16^uint64(i), textSize(r, ext))
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	var names []string
	for p := range bs.files {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		data := bs.files[p]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return bs, os.WriteFile(file, buf.Bytes(), 0o644)
}

// stepBulk extracts the archive into a new folder of the project (tar -x,
// as a checkout or an unpacked download writes files: mkdir, create,
// write, close), then deletes it with rm -rf. Each is reported in files
// per second of the command's run time; on a network filesystem it then
// waits until the server has all files (and then none), and notes when.
func (b *bench) stepBulk(ctx context.Context, m *mountPoint, pass string) map[string]cell {
	bs := b.bulk
	n := len(bs.files)
	name := "bulk-" + pass
	dest := filepath.Join(m.root, projDir, name)
	srvDest := filepath.Join(b.srv.Dir, projDir, name)
	res := map[string]cell{}

	t0 := time.Now()
	if err := os.Mkdir(dest, 0o755); err != nil {
		return map[string]cell{"bulk": errCell("mkdir: %v", err)}
	}
	if _, err := runCmdSplit(ctx, nil, "", "tar", "--no-same-owner", "-x", "-m", "-f", bs.tar, "-C", dest); err != nil {
		return map[string]cell{"bulk": errCell("tar -x: %v", err)}
	}
	d := time.Since(t0)
	create := cell{kind: cellOK, d: d, rate: float64(n) / d.Seconds(), unit: "files/s", note: fmt.Sprintf("%d files in %d folders in %s", n, bs.dirs, fmtDur(d))}
	if m.remote {
		vis, err := waitFor(ctx, 2*time.Minute, func() (bool, string) { return bs.missing(srvDest) })
		if err != nil {
			return map[string]cell{"bulk": {kind: cellError, d: d, note: "extracted files not on the server: " + err.Error()}}
		}
		create.note += fmt.Sprintf("; all on the server %s after tar returned", fmtDur(vis))
	}
	res["bulk"] = create

	t0 = time.Now()
	if _, err := runCmdSplit(ctx, nil, "", "rm", "-rf", dest); err != nil {
		res["bulkrm"] = errCell("rm -rf: %v", err)
		return res
	}
	d = time.Since(t0)
	if _, err := os.Lstat(dest); err == nil {
		res["bulkrm"] = errCell("%s still exists after rm -rf", name)
		return res
	}
	del := cell{kind: cellOK, d: d, rate: float64(n) / d.Seconds(), unit: "files/s", note: fmt.Sprintf("%d files in %s", n, fmtDur(d))}
	if m.remote {
		gone, err := waitFor(ctx, 2*time.Minute, func() (bool, string) {
			_, err := os.Lstat(srvDest)
			return os.IsNotExist(err), name + " is still on the server"
		})
		if err != nil {
			del = cell{kind: cellError, d: d, note: err.Error()}
		} else {
			del.note += fmt.Sprintf("; gone from the server %s after rm returned", fmtDur(gone))
		}
	}
	res["bulkrm"] = del
	return res
}

// missing reports whether dir holds every file of the set with its
// content, and if not, what is missing.
func (bs *bulkSet) missing(dir string) (bool, string) {
	bad := 0
	var first string
	for p, want := range bs.files {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(got, want) {
			if bad == 0 {
				first = p
			}
			bad++
		}
	}
	if bad > 0 {
		return false, fmt.Sprintf("%d of %d files missing or different (e.g. %s)", bad, len(bs.files), first)
	}
	return true, ""
}

// waitFor polls done until it holds and returns how long that took, or an
// error with done's last word after limit. It sleeps at least as long as a
// poll took, so that checking thousands of files does not take the CPU
// from the system being measured.
func waitFor(ctx context.Context, limit time.Duration, done func() (bool, string)) (time.Duration, error) {
	t0 := time.Now()
	for {
		p0 := time.Now()
		ok, why := done()
		if ok {
			return time.Since(t0), nil
		}
		if ctx.Err() != nil {
			return 0, errCanceled
		}
		if time.Since(t0) > limit {
			return 0, fmt.Errorf("after %v: %s", limit, why)
		}
		time.Sleep(max(20*time.Millisecond, time.Since(p0)))
	}
}

// stepFormat does what a code formatter run over the project does: read
// every tracked .py file and write it back formatted (trailing whitespace
// stripped; a third of the files have some). It checks every file read
// through the mount is what the server has, waits until the server has
// every rewritten file, and then runs git status, which must list exactly
// the files whose content changed (it re-reads every rewritten file: their
// times changed).
func (b *bench) stepFormat(ctx context.Context, m *mountPoint, st *sysState) map[string]cell {
	root := filepath.Join(m.root, projDir)
	srv := filepath.Join(b.srv.Dir, projDir)
	before := map[string][]byte{}
	for _, rel := range b.proj.pyFiles {
		data, err := os.ReadFile(filepath.Join(srv, rel))
		if err != nil {
			return map[string]cell{"format": errCell("reading the server's %s: %v", rel, err)}
		}
		before[rel] = data
	}

	t0 := time.Now()
	changed := 0
	for _, rel := range b.proj.pyFiles {
		if ctx.Err() != nil {
			return map[string]cell{"format": errCell("canceled")}
		}
		p := filepath.Join(root, rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return map[string]cell{"format": errCell("reading %s: %v", rel, err)}
		}
		if !bytes.Equal(data, before[rel]) {
			return map[string]cell{"format": errCell("%s read through the mount (%d bytes) is not what the server has (%d bytes)", rel, len(data), len(before[rel]))}
		}
		out := formatPy(data)
		if !bytes.Equal(out, data) {
			changed++
		}
		if err := plainSave(p, out); err != nil {
			return map[string]cell{"format": errCell("writing %s: %v", rel, err)}
		}
	}
	d := time.Since(t0)
	n := len(b.proj.pyFiles)
	c := cell{kind: cellOK, d: d, note: fmt.Sprintf("%d files (%d changed), %.0f files/s", n, changed, float64(n)/d.Seconds())}
	for _, rel := range b.proj.pyFiles {
		if bytes.Equal(formatPy(before[rel]), b.proj.content[rel]) {
			delete(st.modified, rel)
		} else {
			st.modified[rel] = true
		}
	}
	if m.remote {
		pending := append([]string(nil), b.proj.pyFiles...)
		vis, err := waitFor(ctx, 3*time.Minute, func() (bool, string) {
			var still []string
			for _, rel := range pending {
				if got, err := os.ReadFile(filepath.Join(srv, rel)); err != nil || !bytes.Equal(got, formatPy(before[rel])) {
					still = append(still, rel)
				}
			}
			pending = still
			if len(still) == 0 {
				return true, ""
			}
			return false, fmt.Sprintf("%d rewritten files not on the server (e.g. %s)", len(still), still[0])
		})
		if err != nil {
			return map[string]cell{"format": {kind: cellError, d: d, note: err.Error()}}
		}
		c.note += fmt.Sprintf("; all on the server %s after the last close", fmtDur(vis))
	}
	return map[string]cell{"format": c, "formatgit": b.gitStatus(ctx, root, st)}
}

// stepCapRead reads a second big file (so the first read has not cached
// it) with the link limited to -cap, the way the bigread step reads on the
// link as configured.
func (b *bench) stepCapRead(ctx context.Context, m *mountPoint, pass string) map[string]cell {
	b.proxy.SetBandwidth(b.cfg.capRate)
	defer b.proxy.SetBandwidth(b.cfg.bandwidth)
	c := b.readBig(ctx, m, cappedBig)
	if c.kind == cellOK && m.remote && pass == "cold" {
		c.note += fmt.Sprintf("; %.0f%% of the %s cap", c.rate*1e6/float64(b.cfg.capRate)*100, fmtRate(float64(b.cfg.capRate)/1e6, "MB/s"))
	}
	return map[string]cell{"capread": c}
}
