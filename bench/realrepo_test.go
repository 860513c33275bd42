package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tinyShape is a realistic repository small enough for a unit test.
var tinyShape = realShape{name: "tiny", tracked: 240, pycache: 80, nodeMods: 120, history: 6 << 20, commits: 40, seed: 7}

func gitOut(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// The two presets are planned with the shape the README promises: about
// 3,000 tracked files, and about 30,000 files in all; sizes with a long
// tail; deep folders; cache folders.
func TestRealPresetsShape(t *testing.T) {
	for name, want := range map[string]struct{ tracked, total int }{"3k": {3000, 5500}, "30k": {15000, 30000}} {
		g := generateRealRepo(realPresets[name])
		tracked, total := len(g.files), len(g.files)+len(g.caches)
		if tracked < want.tracked*97/100 || tracked > want.tracked*103/100 || total < want.total*95/100 || total > want.total*105/100 {
			t.Errorf("%s: %d tracked, %d files in all; want about %d and %d", name, tracked, total, want.tracked, want.total)
		}
		var sizes []int
		small, tail := 0, 0
		for _, f := range g.files {
			sizes = append(sizes, f.size)
			if f.size >= 1000 && f.size <= 20000 {
				small++
			}
			if f.size >= 100_000 && f.size <= 2_000_000 {
				tail++
			}
		}
		slices.Sort(sizes)
		if small < tracked*3/4 {
			t.Errorf("%s: %d of %d files are 1-20 KB, want most", name, small, tracked)
		}
		if tail < tracked/150 || tail > tracked/40 {
			t.Errorf("%s: %d files of 100 KB-2 MB, want about 1%%", name, tail)
		}
		if g.assets < 5 || sizes[len(sizes)-1] < 2<<20 {
			t.Errorf("%s: %d large binary assets, the largest file %d bytes", name, g.assets, sizes[len(sizes)-1])
		}
		if g.maxDepth < 8 {
			t.Errorf("%s: deepest folder %d levels", name, g.maxDepth)
		}
		if g.cacheDirs.pycache < 50 || g.cacheDirs.nodeModules < 10 {
			t.Errorf("%s: %d __pycache__ and %d node_modules folders", name, g.cacheDirs.pycache, g.cacheDirs.nodeModules)
		}
	}
}

// A tiny repository written to disk has the promised shape: the work tree
// is the last commit exactly, the history is packed and about the size
// asked for, the cache folders are there and ignored, grep finds what the
// benchmark expects; and the same seed makes the same repository.
func TestRealRepoWrite(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	env := benchGitEnv(filepath.Join(dir, "home"))
	p := generateRealProject(tinyShape)
	g := p.real
	a := filepath.Join(dir, "a")
	t0 := time.Now()
	if err := p.create(ctx, a, env, t.Logf); err != nil {
		t.Fatal(err)
	}
	t.Logf("written in %v", time.Since(t0))
	st, err := readGitStats(ctx, a, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(g.describe(st, len(p.pyFiles)))

	// History: every commit, packed, about the size asked for.
	if st.commits != tinyShape.commits {
		t.Errorf("%d commits, want %d", st.commits, tinyShape.commits)
	}
	if st.packs < 1 || st.packBytes < tinyShape.history*7/10 || st.packBytes > tinyShape.history*2 {
		t.Errorf("history: %d packs of %d bytes in all, want about %d", st.packs, st.packBytes, tinyShape.history)
	}
	if st.looseBytes > st.packBytes/4 {
		t.Errorf("history not packed: %d bytes loose, %d packed", st.looseBytes, st.packBytes)
	}
	// Deleted files and older versions are in the history only.
	if len(g.gone) == 0 {
		t.Error("no deleted files in the history")
	}
	if out := gitOut(t, a, env, "log", "--diff-filter=D", "--name-only", "--format="); !strings.Contains(out, "checkpoints/") {
		t.Errorf("no deletions in the history: %q", out)
	}

	// The work tree is the last commit, byte for byte, with the planned
	// sizes, and the cache folders are ignored.
	if out := gitOut(t, a, env, "status", "--porcelain"); out != "" {
		t.Errorf("git status after generation: %q", clip(out, 500))
	}
	tracked := strings.Split(gitOut(t, a, env, "ls-files"), "\n")
	if len(tracked) != len(g.files) {
		t.Errorf("%d tracked files, planned %d", len(tracked), len(g.files))
	}
	for _, f := range g.files {
		fi, err := os.Stat(filepath.Join(a, f.path))
		if err != nil || int(fi.Size()) != len(f.content(len(f.edits))) {
			t.Fatalf("%s: %v (planned %d bytes)", f.path, err, f.size)
		}
	}
	ignored := gitOut(t, a, env, "status", "--porcelain", "--ignored")
	if !strings.Contains(ignored, "__pycache__/") || !strings.Contains(ignored, "web/node_modules/") {
		t.Errorf("cache folders not there or not ignored: %q", clip(ignored, 500))
	}
	for _, c := range g.caches {
		if fi, err := os.Stat(filepath.Join(a, c.path)); err != nil || int(fi.Size()) != c.size {
			t.Fatalf("cache file %s: %v", c.path, err)
		}
	}
	// git's index is settled: a status reads no file (no racily clean
	// entries), so the local disk's first git status is a fair baseline.
	if out := gitOut(t, a, env, "-c", "core.untrackedCache=false", "update-index", "--refresh"); out != "" {
		t.Errorf("update-index --refresh: %q", out)
	}
	// grep finds the lines the benchmark expects.
	cmd := exec.Command("grep", "-r", "--include=*.py", p.grepWord, ".")
	cmd.Dir = a
	out, _ := cmd.Output()
	if hits := bytes.Count(out, []byte("\n")); hits != p.grepHits || hits == 0 {
		t.Errorf("grep found %d lines, the project says %d", hits, p.grepHits)
	}
	// The formatter has work: a third of the .py files change.
	changed := 0
	for _, rel := range p.pyFiles {
		f := formatPy(p.content[rel])
		if !bytes.Equal(f, p.content[rel]) {
			changed++
		}
		if !bytes.Equal(formatPy(f), f) {
			t.Fatalf("formatting %s twice changes it again", rel)
		}
	}
	if changed < len(p.pyFiles)/5 || changed > len(p.pyFiles)/2 {
		t.Errorf("the formatter changes %d of %d .py files, want about a third", changed, len(p.pyFiles))
	}

	// restore undoes what the steps do: edits, new files; caches stay.
	os.WriteFile(filepath.Join(a, p.pyFiles[0]), []byte("changed\n"), 0o644)
	os.MkdirAll(filepath.Join(a, "bulk-cold", "x"), 0o755)
	os.WriteFile(filepath.Join(a, "bulk-cold", "x", "y.js"), []byte("y\n"), 0o644)
	if err := p.reset(ctx, a, env); err != nil {
		t.Fatal(err)
	}
	if out := gitOut(t, a, env, "status", "--porcelain", "--untracked-files=all"); out != "" {
		t.Errorf("git status after restore: %q", clip(out, 500))
	}
	if _, err := os.Stat(filepath.Join(a, g.caches[0].path)); err != nil {
		t.Errorf("restore removed a cache file: %v", err)
	}

	// Determinism: the same seed makes the same commits and caches; another
	// seed another repository.
	b := filepath.Join(dir, "b")
	p2 := generateRealProject(tinyShape)
	if err := p2.create(ctx, b, env, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	if h1, h2 := gitOut(t, a, env, "rev-parse", "HEAD"), gitOut(t, b, env, "rev-parse", "HEAD"); h1 != h2 {
		t.Errorf("same seed, different HEAD: %s, %s", h1, h2)
	}
	if !slices.Equal(g.caches, p2.real.caches) {
		t.Error("same seed, different cache folders")
	}
	for i := 0; i < len(g.caches); i += len(g.caches) / 10 {
		d1, _ := os.ReadFile(filepath.Join(a, g.caches[i].path))
		d2, _ := os.ReadFile(filepath.Join(b, g.caches[i].path))
		if !bytes.Equal(d1, d2) {
			t.Errorf("same seed, different %s", g.caches[i].path)
		}
	}
	other := tinyShape
	other.seed++
	g3 := generateRealRepo(other)
	if slices.EqualFunc(g.files, g3.files, func(x, y *rfile) bool { return x.path == y.path && x.size == y.size }) {
		t.Error("another seed made the same files")
	}
}
