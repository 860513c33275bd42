package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

func (b *bench) runStep(ctx context.Context, m *mountPoint, st *sysState, step, pass string) map[string]cell {
	switch step {
	case "walk":
		return b.stepWalk(ctx, m)
	case "git":
		return b.stepGit(ctx, m, st)
	case "grep":
		return b.stepGrep(ctx, m)
	case "save":
		return b.stepSave(ctx, m, st, pass, false)
	case "safesave":
		return b.stepSave(ctx, m, st, pass, true)
	case "bigread":
		return b.stepBigRead(ctx, m)
	case "freshgit", "freshwalk", "remountgit":
		return b.stepFreshGit(ctx, m, st, step, pass)
	case "bulk":
		return b.stepBulk(ctx, m, pass)
	case "format":
		return b.stepFormat(ctx, m, st)
	case "capread":
		return b.stepCapRead(ctx, m, pass)
	}
	return map[string]cell{step: {kind: cellError, note: "unknown step"}}
}

func errCell(format string, args ...any) cell {
	return cell{kind: cellError, note: fmt.Sprintf(format, args...)}
}

// entry is what a walk saw of one path.
type entry struct {
	typ  fs.FileMode
	size int64
}

// walkTree walks root and lstats every entry, as an IDE indexing a
// project does; it returns every path below root.
func walkTree(ctx context.Context, root string) (map[string]entry, error) {
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return errCanceled
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel := p[len(root)+1:]
		e := entry{typ: fi.Mode().Type()}
		if fi.Mode().IsRegular() {
			e.size = fi.Size()
		}
		out[rel] = e
		return nil
	})
	return out, err
}

// diffTrees describes how got (the mount) differs from want (the server).
func diffTrees(got, want map[string]entry) string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing on the mount: "+p)
		case g.typ != w.typ:
			diffs = append(diffs, fmt.Sprintf("%s: type %v on the mount, %v on the server", p, g.typ, w.typ))
		case g.size != w.size && !strings.HasPrefix(p, ".git/index"):
			diffs = append(diffs, fmt.Sprintf("%s: size %d on the mount, %d on the server", p, g.size, w.size))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "only on the mount: "+p)
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	sort.Strings(diffs)
	more := ""
	if len(diffs) > 5 {
		more = fmt.Sprintf(" (and %d more)", len(diffs)-5)
		diffs = diffs[:5]
	}
	return strings.Join(diffs, "; ") + more
}

func (b *bench) stepWalk(ctx context.Context, m *mountPoint) map[string]cell {
	root := filepath.Join(m.root, projDir)
	t0 := time.Now()
	got, err := walkTree(ctx, root)
	d := time.Since(t0)
	if err != nil {
		return map[string]cell{"walk": errCell("walk: %v", err)}
	}
	if m.remote {
		// The benchmark waited for every save to reach the server, so the
		// mount and the server must agree (give write-back a moment for
		// what git wrote).
		var diff string
		for try := 0; try < 5; try++ {
			want, err := walkTree(ctx, filepath.Join(m.b.srv.Dir, projDir))
			if err != nil {
				return map[string]cell{"walk": errCell("walk of the server dir: %v", err)}
			}
			if diff = diffTrees(got, want); diff == "" {
				break
			}
			time.Sleep(time.Second)
			if got, err = walkTree(ctx, root); err != nil {
				return map[string]cell{"walk": errCell("walk: %v", err)}
			}
		}
		if diff != "" {
			return map[string]cell{"walk": {kind: cellError, d: d, note: "the mount's tree differs from the server's: " + diff}}
		}
	}
	return map[string]cell{"walk": {kind: cellOK, d: d, note: fmt.Sprintf("%d entries", len(got))}}
}

func (b *bench) stepGit(ctx context.Context, m *mountPoint, st *sysState) map[string]cell {
	return map[string]cell{"git": b.gitStatus(ctx, filepath.Join(m.root, projDir), st)}
}

// gitStatus runs `git status --porcelain` in dir and checks it lists
// exactly the files the benchmark modified.
func (b *bench) gitStatus(ctx context.Context, dir string, st *sysState) cell {
	t0 := time.Now()
	out, err := runCmdSplit(ctx, b.gitEnv, dir, "git", "status", "--porcelain")
	d := time.Since(t0)
	if err != nil {
		return errCell("git status: %v", err)
	}
	var want []string
	for p := range st.modified {
		want = append(want, " M "+p)
	}
	sort.Strings(want)
	var got []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line != "" {
			got = append(got, line)
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		var extra, missing []string
		for _, l := range got {
			if !slices.Contains(want, l) {
				extra = append(extra, strings.TrimSpace(l))
			}
		}
		for _, l := range want {
			if !slices.Contains(got, l) {
				missing = append(missing, strings.TrimSpace(l))
			}
		}
		return cell{kind: cellError, d: d, note: fmt.Sprintf("git status --porcelain: %d lines, expected %d; unexpected: [%s]; missing: [%s]",
			len(got), len(want), clip(strings.Join(extra, ", "), 400), clip(strings.Join(missing, ", "), 400))}
	}
	return cell{kind: cellOK, d: d, note: fmt.Sprintf("%d modified", len(got))}
}

func (b *bench) stepGrep(ctx context.Context, m *mountPoint) map[string]cell {
	dir := filepath.Join(m.root, projDir)
	t0 := time.Now()
	out, err := runCmdSplit(ctx, b.gitEnv, dir, "grep", "-r", "--include=*.py", b.proj.grepWord, ".")
	d := time.Since(t0)
	if err != nil {
		return map[string]cell{"grep": errCell("grep: %v", err)}
	}
	hits := strings.Count(out, "\n")
	if hits != b.proj.grepHits {
		return map[string]cell{"grep": {kind: cellError, d: d, note: fmt.Sprintf("grep found %d lines, the project has %d", hits, b.proj.grepHits)}}
	}
	return map[string]cell{"grep": {kind: cellOK, d: d, note: fmt.Sprintf("%d .py files, %d hits", len(b.proj.pyFiles), hits)}}
}

// runCmdSplit runs a command and returns its stdout; stderr goes into the
// error.
func runCmdSplit(ctx context.Context, env []string, dir, name string, args ...string) (string, error) {
	cmd := execCommand(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), errCanceled
	}
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, clip(strings.TrimSpace(errb.String()), 400))
	}
	return out.String(), nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// stepSave makes cfg.saves editor saves of different files and times each.
// In place: open O_TRUNC, write, close. Safe: write a temp file in the same
// folder, fsync, rename it over the file (VS Code / JetBrains "safe
// write"). After each save it waits until the server has the new content
// and times that too.
func (b *bench) stepSave(ctx context.Context, m *mountPoint, st *sysState, pass string, safe bool) map[string]cell {
	row, visRow, files := "save", "savevis", st.saveFiles
	if safe {
		row, visRow, files = "safesave", "safevis", st.safeFiles
	}
	var times, vis []time.Duration
	visErr := ""
	for i, rel := range files {
		if ctx.Err() != nil {
			return map[string]cell{row: errCell("canceled")}
		}
		data := append(append([]byte(nil), b.proj.content[rel]...),
			fmt.Sprintf("\n# edited by the benchmark: %s %s %s %d\n", m.name, pass, row, i)...)
		target := filepath.Join(m.root, projDir, rel)
		t0 := time.Now()
		var err error
		if safe {
			err = safeSave(target, data)
		} else {
			err = plainSave(target, data)
		}
		d := time.Since(t0)
		if err != nil {
			return map[string]cell{row: errCell("%s of %s: %v", row, rel, err)}
		}
		st.modified[rel] = true
		times = append(times, d)
		if m.remote && visErr == "" {
			// Well inside the step timeout, so a save that never arrives is
			// reported as such rather than as a hung step.
			v, err := waitOnServer(ctx, filepath.Join(b.srv.Dir, projDir, rel), data, t0.Add(d), min(time.Minute, b.cfg.stepTimeout/4))
			if err != nil {
				visErr = fmt.Sprintf("%s: %v", rel, err)
			} else {
				vis = append(vis, v)
			}
		}
	}
	res := map[string]cell{row: {kind: cellOK, d: median(times), note: spread(times)}}
	switch {
	case !m.remote:
		res[visRow] = cell{kind: cellDash}
	case visErr != "":
		res[visRow] = errCell("new content not on the server: %s", visErr)
	default:
		res[visRow] = cell{kind: cellOK, d: median(vis), note: spread(vis)}
	}
	return res
}

func plainSave(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func safeSave(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".bench-save~")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// waitOnServer polls the server-side file until it holds want, and returns
// the time since closed.
func waitOnServer(ctx context.Context, file string, want []byte, closed time.Time, max time.Duration) (time.Duration, error) {
	deadline := closed.Add(max)
	for {
		if got, err := os.ReadFile(file); err == nil && bytes.Equal(got, want) {
			return time.Since(closed), nil
		}
		if ctx.Err() != nil {
			return 0, errCanceled
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not there %v after close", max)
		}
		time.Sleep(time.Millisecond)
	}
}

func (b *bench) stepBigRead(ctx context.Context, m *mountPoint) map[string]cell {
	return map[string]cell{"bigread": b.readBig(ctx, m, bigPath)}
}

// readBig reads a big file sequentially through m and checks every block.
func (b *bench) readBig(ctx context.Context, m *mountPoint, rel string) cell {
	t0 := time.Now()
	n, err := readBigFile(filepath.Join(m.root, rel), b.cfg.bigfile, func() bool { return ctx.Err() != nil })
	d := time.Since(t0)
	if err != nil {
		return errCell("reading %s: %v (after %s)", rel, err, fmtSize(n))
	}
	mbps := float64(n) / 1e6 / d.Seconds()
	return cell{kind: cellOK, d: d, rate: mbps, unit: "MB/s", note: fmt.Sprintf("%s in %s", fmtSize(n), fmtDur(d))}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is "min .. max of N".
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return ""
	}
	return fmt.Sprintf("min %s, max %s of %d", fmtDur(slices.Min(ds)), fmtDur(slices.Max(ds)), len(ds))
}
