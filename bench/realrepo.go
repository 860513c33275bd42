package main

// The realistic project: a repository shaped like a real one, as opposed to
// the small synthetic Python project of project.go. Real projects are where
// the tiny benchmark hid the costs: thousands of tracked files with a
// long-tailed size distribution (most 1-20 KB, some 100 KB-2 MB fixtures,
// notebooks and lock files, a few large binary assets), deep folders, a git
// history of 100+ MB in packfiles, and folders nobody tracks but every walk
// meets (__pycache__, node_modules).
//
// Everything is derived from a seed. The history is written with one `git
// fast-import` stream (fast: no work tree, no index, one pack), repacked
// with `git repack -ad` as a clone would have it, and followed by a second,
// small import of the most recent commits (loose objects or a second pack,
// as after a few pulls). `git reset --hard` then writes the work tree and
// the index on the server, so git's index holds the server's stat data, as
// it does for someone who also works on the server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// realShape sizes a generated repository.
type realShape struct {
	name     string // preset name: "3k", "30k"
	tracked  int    // files in the last commit (the work tree's tracked files)
	pycache  int    // .pyc files in __pycache__ folders (ignored by git)
	nodeMods int    // files under web/node_modules (ignored by git)
	history  int64  // target size of the packed history
	commits  int
	seed     uint64
}

// realPresets are the two sizes of -repo: a 3,000-file repository and a
// 30,000-file tree (15,000 tracked, the rest in cache folders).
var realPresets = map[string]realShape{
	"3k":  {name: "3k", tracked: 3000, pycache: 1000, nodeMods: 1500, history: 128 << 20, commits: 400},
	"30k": {name: "30k", tracked: 15000, pycache: 5000, nodeMods: 10000, history: 160 << 20, commits: 1000},
}

// scaled is the shape with tracked files set to n (caches and commits in
// proportion).
func (s realShape) scaled(n int) realShape {
	if n == s.tracked || s.tracked == 0 {
		return s
	}
	f := float64(n) / float64(s.tracked)
	s.pycache = int(float64(s.pycache) * f)
	s.nodeMods = int(float64(s.nodeMods) * f)
	s.commits = max(10, int(float64(s.commits)*math.Sqrt(f)))
	s.tracked = n
	return s
}

type fileKind int

const (
	kindText   fileKind = iota // generated text (source, docs, configs, data)
	kindPy                     // Python module
	kindBinary                 // incompressible bytes (images, weights, data)
)

// rfile is one tracked file of the last commit and its history.
type rfile struct {
	path  string
	kind  fileKind
	ext   string
	size  int
	seed  uint64
	exec  bool
	word  bool  // .py that contains the grep word
	messy bool  // .py with trailing whitespace (the formatter strips it)
	birth int   // commit that adds it
	edits []int // later commits that change it; the last one writes the final content
}

// goneFile is a file that lives only in the history (a checkpoint or data
// dump committed and later deleted: what makes real histories big).
type goneFile struct {
	path       string
	size       int
	seed       uint64
	add, del   int
	binaryData bool
}

// cacheFile is an untracked file of a cache folder; its content is made
// when written.
type cacheFile struct {
	path string
	size int
	seed uint64
	pyc  bool
}

func (c cacheFile) data() []byte {
	if c.pyc {
		return pycBytes(c.seed, c.size)
	}
	b := jsText(c.seed, c.size)
	switch n := c.size - len(b); { // pad to the planned size
	case n >= 3:
		b = append(append(b, "//"...), bytes.Repeat([]byte{' '}, n-3)...)
		b = append(b, '\n')
	case n > 0:
		b = append(b, bytes.Repeat([]byte{'\n'}, n)...)
	}
	return b
}

// realRepo is the generated repository: its tracked files, its history and
// its untracked cache folders.
type realRepo struct {
	shape     realShape
	files     []*rfile // sorted by path
	gone      []goneFile
	caches    []cacheFile // untracked, ignored files, sorted by path
	cacheDirs struct {
		pycache, nodeModules int // folders named __pycache__ / node_modules
	}
	dirs      []string // every folder of the tracked tree
	maxDepth  int      // deepest folder, counting every path element
	assets    int      // large binary assets in the last commit
	assetByte int64
	tail      int // files of 100 KB or more (not counting the large assets)
}

// fileRand is the random source of one file version: independent of
// generation order, so any content can be made again on its own.
func fileRand(seed uint64, version int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(version)+0x9e3779b97f4a7c15))
}

var (
	tsWords  = []string{"const", "let", "return", "await", "async", "export", "import", "interface", "type", "props", "state", "useEffect", "useMemo", "render", "fetch", "data", "items", "value", "onChange", "className"}
	authors  = []string{"Ada Lovelace <ada@example.com>", "Grace Hopper <grace@example.com>", "Alan Turing <alan@example.com>", "Barbara Liskov <barbara@example.com>", "Ken Thompson <ken@example.com>"}
	npmWords = []string{"lodash", "react", "react-dom", "scheduler", "tslib", "chalk", "debug", "ms", "semver", "yaml", "acorn", "esbuild", "postcss", "nanoid", "picocolors", "source-map", "buffer", "events", "util", "is-number", "kind-of", "glob", "minimatch", "brace-expansion", "balanced-match", "once", "wrappy", "inherits", "readable-stream", "safe-buffer", "core-js", "regenerator-runtime", "@babel/runtime", "@babel/types", "@types/react", "@types/node", "zod", "axios", "follow-redirects", "form-data"}
)

// area is one part of the tree: where, what share of the files, what kinds.
type area struct {
	root     string
	share    float64
	exts     []string
	maxDepth int
}

var realAreas = []area{
	{"src/acmeflow", 0.40, []string{".py"}, 7},
	{"tests", 0.14, []string{".py"}, 5},
	{"web/src", 0.20, []string{".ts", ".tsx", ".tsx", ".ts", ".css"}, 7},
	{"docs", 0.08, []string{".md", ".md", ".rst", ".png"}, 4},
	{"configs", 0.05, []string{".yaml", ".yaml", ".json", ".toml"}, 4},
	{"scripts", 0.04, []string{".py", ".sh"}, 3},
	{"schemas", 0.05, []string{".json", ".proto"}, 4},
	{"tools/ci", 0.04, []string{".yaml", ".sh", ".py"}, 3},
}

// generateRealRepo plans the repository: paths, sizes, history. Content is
// made when written.
func generateRealRepo(shape realShape) *realRepo {
	shape.tracked = max(shape.tracked, 60)
	shape.commits = max(shape.commits, 4)
	r := rand.New(rand.NewPCG(shape.seed, 0x7ea1))
	g := &realRepo{shape: shape}
	used := map[string]bool{}
	seedN := uint64(0)
	add := func(p string, kind fileKind, size int) *rfile {
		seedN++
		f := &rfile{path: p, kind: kind, ext: path.Ext(p), size: size, seed: shape.seed<<20 ^ seedN*0x100000001b3}
		f.exec = f.ext == ".sh"
		g.files = append(g.files, f)
		used[p] = true
		return f
	}
	uniq := func(dir, base, ext string) string {
		p := path.Join(dir, base+ext)
		for i := 2; used[p]; i++ {
			p = path.Join(dir, fmt.Sprintf("%s_%d%s", base, i, ext))
		}
		return p
	}

	// Top-level files.
	for _, f := range []struct {
		p    string
		size int
	}{{".gitignore", 0}, {"README.md", 6000}, {"LICENSE", 11000}, {"pyproject.toml", 2500}, {"setup.cfg", 1200},
		{"Makefile", 1800}, {"requirements.txt", 700}, {"requirements-dev.txt", 400}, {".pre-commit-config.yaml", 900},
		{"web/package.json", 2200}, {"web/tsconfig.json", 700}, {"CHANGELOG.md", 180000}, {"web/package-lock.json", 900000}} {
		add(f.p, kindText, f.size)
	}

	// Folders per area: a random tree that favours going deeper.
	nTail := max(2, shape.tracked/120)
	nImages := max(2, shape.tracked/200)
	nAssets := 6
	if shape.tracked >= 10000 {
		nAssets = 10
	}
	areaFiles := max(len(realAreas)*2, shape.tracked-len(g.files)-nTail-nImages-nAssets)
	dirsOf := map[string][]string{}
	for _, a := range realAreas {
		n := int(a.share * float64(areaFiles))
		ndirs := max(2, n/11)
		ds := []string{a.root}
		depth := map[string]int{a.root: 0}
		for len(ds) < ndirs {
			var parent string
			if r.IntN(10) < 6 {
				parent = ds[len(ds)-1-r.IntN(min(len(ds), 3))] // keep digging near the last one
			} else {
				parent = ds[r.IntN(len(ds))]
			}
			if depth[parent] >= a.maxDepth {
				parent = ds[r.IntN(min(len(ds), 4))]
			}
			words := pkgWords
			if r.IntN(3) == 0 {
				words = nameWords
			}
			d := parent + "/" + words[r.IntN(len(words))]
			if _, ok := depth[d]; ok {
				continue
			}
			depth[d] = depth[parent] + 1
			ds = append(ds, d)
		}
		dirsOf[a.root] = ds
		// Python packages have an __init__.py in every folder.
		if a.exts[0] == ".py" && a.root != "scripts" {
			for _, d := range ds {
				add(d+"/__init__.py", kindPy, 60+r.IntN(900))
			}
		}
	}

	// Files of the areas.
	for _, a := range realAreas {
		n := int(a.share * float64(areaFiles))
		ds := dirsOf[a.root]
		have := 0
		for _, f := range g.files {
			if strings.HasPrefix(f.path, a.root+"/") {
				have++
			}
		}
		for ; have < n; have++ {
			d := ds[r.IntN(len(ds))]
			ext := a.exts[r.IntN(len(a.exts))]
			var base string
			switch {
			case ext == ".py" && strings.HasPrefix(a.root, "tests"):
				base = "test_" + nameWords[r.IntN(len(nameWords))]
			case ext == ".tsx":
				base = camel(nameWords[r.IntN(len(nameWords))]) + camel(verbWords[r.IntN(len(verbWords))])
			default:
				base = nameWords[r.IntN(len(nameWords))] + "_" + verbWords[r.IntN(len(verbWords))]
			}
			p := uniq(d, base, ext)
			kind := kindText
			switch ext {
			case ".py":
				kind = kindPy
			case ".png":
				kind = kindBinary
			}
			add(p, kind, textSize(r, ext))
		}
	}

	// The tail: fixtures, notebooks, vendored bundles of 100 KB-2 MB.
	tailDirs := []string{"data/fixtures", "notebooks", "web/public/vendor", "data/samples"}
	tailExt := map[string][]string{"data/fixtures": {".json", ".csv"}, "notebooks": {".ipynb"}, "web/public/vendor": {".min.js"}, "data/samples": {".csv", ".jsonl"}}
	for i := 0; i < nTail; i++ {
		d := tailDirs[i%len(tailDirs)]
		exts := tailExt[d]
		ext := exts[r.IntN(len(exts))]
		kind := kindText
		add(uniq(d, nameWords[r.IntN(len(nameWords))]+"_"+pkgWords[r.IntN(len(pkgWords))], ext), kind, logUniform(r, 100_000, 2_000_000))
	}
	// Images.
	for i := 0; i < nImages; i++ {
		add(uniq("web/public/img", nameWords[r.IntN(len(nameWords))], ".png"), kindBinary, logUniform(r, 20_000, 600_000))
	}

	// Large binary assets: a quarter of the history budget in the last
	// commit, the rest in replaced versions and deleted files.
	assetNames := []string{"models/tokenizer.bin", "models/encoder-small.pt", "data/reference.parquet", "web/public/media/intro.mp4",
		"models/decoder-small.pt", "data/embeddings.npy", "assets/fonts/Inter.woff2", "data/eval-set.parquet", "models/classifier.onnx", "assets/textures.bin"}
	budget := shape.history / 4
	var assets []*rfile
	for i := 0; i < nAssets; i++ {
		share := budget / int64(nAssets)
		size := int(float64(share) * (0.5 + r.Float64()))
		f := add(assetNames[i], kindBinary, max(size, 64<<10))
		assets = append(assets, f)
		g.assets++
		g.assetByte += int64(f.size)
	}

	// History: about 40% of the files come with the first commit, the rest
	// over time; a few files change in each commit.
	C := shape.commits
	for _, f := range g.files {
		if r.IntN(10) < 4 || f.path == ".gitignore" {
			f.birth = 0
		} else {
			f.birth = 1 + r.IntN(C-1)
		}
		if f.kind == kindPy {
			f.word = r.IntN(7) == 3
			f.messy = r.IntN(3) == 0
		}
	}
	var textFiles []*rfile
	for _, f := range g.files {
		if f.kind != kindBinary && f.size < 256<<10 {
			textFiles = append(textFiles, f)
		}
	}
	for c := 1; c < C; c++ {
		for k := 0; k < 1+r.IntN(8); k++ {
			f := textFiles[r.IntN(len(textFiles))]
			if f.birth < c && (len(f.edits) == 0 || f.edits[len(f.edits)-1] < c) {
				f.edits = append(f.edits, c)
			}
		}
	}

	// The rest of the budget: older versions of the assets and files that
	// were committed and deleted later. The text takes about two fifths of
	// its size once packed, with its older versions.
	var textBytes int64
	for _, f := range g.files {
		if f.kind != kindBinary {
			textBytes += int64(f.size)
		}
	}
	rest := shape.history - g.assetByte - textBytes*2/5
	for _, f := range assets {
		if rest <= 0 || f.birth >= C-2 {
			continue
		}
		for v := 0; v < 1+r.IntN(3) && rest > int64(f.size); v++ {
			c := f.birth + 1 + r.IntN(C-1-f.birth)
			if !slices.Contains(f.edits, c) {
				f.edits = append(f.edits, c)
				rest -= int64(f.size)
			}
		}
		slices.Sort(f.edits)
	}
	for i := 0; rest > 0; i++ {
		size := logUniform(r, 512<<10, 8<<20)
		if int64(size) > rest {
			size = int(max(rest, 4096))
		}
		add := 1 + r.IntN(C-2)
		del := add + 1 + r.IntN(min(40, C-1-add))
		seedN++
		g.gone = append(g.gone, goneFile{
			path: fmt.Sprintf("checkpoints/run-%03d/epoch-%02d.pt", i/4, i%4), size: size,
			seed: shape.seed<<20 ^ seedN*0x100000001b3, add: add, del: del, binaryData: true,
		})
		rest -= int64(size)
	}

	sort.Slice(g.files, func(i, j int) bool { return g.files[i].path < g.files[j].path })
	dset := map[string]bool{}
	for _, f := range g.files {
		for d := path.Dir(f.path); d != "." && !dset[d]; d = path.Dir(d) {
			dset[d] = true
		}
		if f.size >= 100_000 && !slices.Contains(assets, f) {
			g.tail++
		}
	}
	for d := range dset {
		g.dirs = append(g.dirs, d)
	}
	sort.Strings(g.dirs)
	g.planCaches(r)
	for _, p := range append(append([]string(nil), g.dirs...), cachePaths(g.caches)...) {
		g.maxDepth = max(g.maxDepth, strings.Count(p, "/")+1)
	}
	return g
}

func cachePaths(fs []cacheFile) []string {
	var out []string
	for _, f := range fs {
		out = append(out, path.Dir(f.path))
	}
	return out
}

func logUniform(r *rand.Rand, lo, hi int) int {
	return int(math.Exp(math.Log(float64(lo)) + r.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
}

// textSize draws a source file's size: most 1-20 KB, some tiny, a few
// 20-100 KB.
func textSize(r *rand.Rand, ext string) int {
	if ext == ".png" {
		return logUniform(r, 4_000, 90_000)
	}
	switch k := r.IntN(100); {
	case k < 8:
		return 60 + r.IntN(940)
	case k < 96:
		return logUniform(r, 1_000, 20_000)
	default:
		return logUniform(r, 20_000, 100_000)
	}
}

// planCaches lays out the untracked folders: __pycache__ next to the
// Python modules (some with .pyc files of two interpreter versions) and
// an npm-style web/node_modules with nested packages.
func (g *realRepo) planCaches(r *rand.Rand) {
	byDir := map[string][]*rfile{}
	var pyDirs []string
	for _, f := range g.files {
		if f.kind == kindPy {
			d := path.Dir(f.path)
			if byDir[d] == nil {
				pyDirs = append(pyDirs, d)
			}
			byDir[d] = append(byDir[d], f)
		}
	}
	sort.Strings(pyDirs)
	n := 0
	for _, v := range []string{"cpython-311", "cpython-310", "cpython-312"} {
		for _, d := range pyDirs {
			if n >= g.shape.pycache {
				break
			}
			if v != "cpython-311" && r.IntN(3) != 0 {
				continue
			}
			dirUsed := false
			for _, f := range byDir[d] {
				if n >= g.shape.pycache {
					break
				}
				name := strings.TrimSuffix(path.Base(f.path), ".py") + "." + v + ".pyc"
				g.caches = append(g.caches, cacheFile{path: d + "/__pycache__/" + name, size: 16 + f.size*3/5, seed: f.seed ^ uint64(len(v))<<40 ^ uint64(n), pyc: true})
				n++
				dirUsed = true
			}
			if dirUsed && v == "cpython-311" {
				g.cacheDirs.pycache++
			}
		}
	}

	// node_modules: packages with package.json, README, LICENSE, lib/,
	// dist/, and some with their own nested node_modules.
	n = 0
	var pkg func(dir string, depth int)
	pkg = func(dir string, depth int) {
		files := []string{"package.json", "README.md", "LICENSE", "index.js", "index.d.ts"}
		for i := 0; i < 2+r.IntN(12); i++ {
			sub := []string{"lib", "dist", "lib/internal", "dist/esm", "dist/cjs", "src"}[r.IntN(6)]
			files = append(files, fmt.Sprintf("%s/%s_%s.js", sub, nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))]))
		}
		seen := map[string]bool{}
		for _, f := range files {
			if n >= g.shape.nodeMods || seen[f] {
				continue
			}
			seen[f] = true
			size := logUniform(r, 200, 24_000)
			if strings.HasPrefix(f, "dist/") && r.IntN(8) == 0 {
				size = logUniform(r, 60_000, 400_000)
			}
			g.caches = append(g.caches, cacheFile{path: dir + "/" + f, size: size, seed: uint64(n) ^ g.shape.seed<<32})
			n++
		}
		if depth < 3 && r.IntN(4) == 0 {
			g.cacheDirs.nodeModules++
			for k := 0; k < 1+r.IntN(3) && n < g.shape.nodeMods; k++ {
				pkg(dir+"/node_modules/"+npmWords[r.IntN(len(npmWords))], depth+1)
			}
		}
	}
	if g.shape.nodeMods > 0 {
		g.cacheDirs.nodeModules++
	}
	for i := 0; n < g.shape.nodeMods; i++ {
		name := npmWords[i%len(npmWords)]
		if i >= len(npmWords) {
			name = fmt.Sprintf("%s-%s%d", name, verbWords[r.IntN(len(verbWords))], i/len(npmWords))
		}
		pkg("web/node_modules/"+name, 0)
	}
	sort.Slice(g.caches, func(i, j int) bool { return g.caches[i].path < g.caches[j].path })
}

// pycBytes is a compiled-module look-alike: a header and binary bytes.
func pycBytes(seed uint64, size int) []byte {
	r := fileRand(seed, -7)
	b := make([]byte, size)
	copy(b, []byte{0xa7, 0x0d, 0x0d, 0x0a})
	for i := 16; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// content returns version v of f: v < len(f.edits) is an older version;
// the last one (v == len(f.edits)) is what the work tree has.
func (f *rfile) content(v int) []byte {
	if f.kind == kindBinary {
		if v == len(f.edits) {
			v = 1 << 20 // the final version's stream
		}
		return binaryBytes(f.seed, v, f.size, f.ext)
	}
	final := f.final()
	if v == len(f.edits) {
		return final
	}
	// An older version: a block of lines missing and a draft line instead.
	r := fileRand(f.seed, v)
	lines := bytes.SplitAfter(final, []byte("\n"))
	if len(lines) < 4 {
		return append([]byte(fmt.Sprintf("draft %d\n", v)), final...)
	}
	a := r.IntN(len(lines))
	b := min(len(lines), a+1+r.IntN(max(1, len(lines)/8)))
	var out bytes.Buffer
	for _, l := range lines[:a] {
		out.Write(l)
	}
	fmt.Fprintf(&out, "draft revision %d of %s\n", v, path.Base(f.path))
	for _, l := range lines[b:] {
		out.Write(l)
	}
	return out.Bytes()
}

// final is the last commit's content of a text file.
func (f *rfile) final() []byte {
	r := fileRand(f.seed, -1)
	switch f.kind {
	case kindPy:
		var data []byte
		if path.Base(f.path) == "__init__.py" {
			data = []byte(fmt.Sprintf("\"\"\"%s\"\"\"\n\nfrom .%s import *  # noqa: F401,F403\n", sentences[r.IntN(len(sentences))], nameWords[r.IntN(len(nameWords))]))
			for len(data) < f.size {
				data = fmt.Appendf(data, "from .%s_%s import %s\n", nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], camel(nameWords[r.IntN(len(nameWords))]))
			}
			if f.word {
				data = append(data, "# frobnicate is re-exported by the modules above\n"...)
			}
		} else {
			data = pyModule(r, f.path, f.size, f.word)
		}
		if f.messy {
			data = messUp(data)
		}
		return data
	}
	name := path.Base(f.path)
	switch {
	case name == ".gitignore":
		return []byte("__pycache__/\n*.py[cod]\n*.egg-info/\n.venv/\nbuild/\ndist/\nnode_modules/\n.pytest_cache/\n.mypy_cache/\n.coverage\n*.log\n.idea/\n.vscode/\n")
	case strings.HasSuffix(name, ".ipynb"):
		return notebookText(r, f.size)
	case strings.HasSuffix(name, ".min.js"):
		return minJSText(r, f.size)
	case f.ext == ".csv":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			return fmt.Appendf(b, "%d,%s,%s,%.6f,%.6f,%d\n", r.IntN(1e6), nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], r.Float64(), r.NormFloat64(), r.IntN(10))
		})
	case f.ext == ".json" || f.ext == ".jsonl":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			return fmt.Appendf(b, "{\"id\": %d, \"%s\": \"%s %s\", \"score\": %.4f, \"tags\": [\"%s\", \"%s\"]},\n", r.IntN(1e6), nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], nameWords[r.IntN(len(nameWords))], r.Float64(), pkgWords[r.IntN(len(pkgWords))], pkgWords[r.IntN(len(pkgWords))])
		})
	case f.ext == ".ts" || f.ext == ".tsx" || f.ext == ".js":
		return jsText(f.seed, f.size)
	case f.ext == ".css":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			return fmt.Appendf(b, ".%s-%s {\n  margin: %dpx %dpx;\n  color: #%06x;\n  display: %s;\n}\n\n", nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], r.IntN(32), r.IntN(32), r.IntN(1<<24), []string{"flex", "grid", "block", "none"}[r.IntN(4)])
		})
	case f.ext == ".yaml" || f.ext == ".toml" || f.ext == ".cfg" || f.ext == ".txt" || name == "Makefile":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			return fmt.Appendf(b, "%s_%s: %d  # %s\n", nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], r.IntN(4096), sentences[r.IntN(len(sentences))])
		})
	case f.ext == ".sh":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			if len(b) == 0 {
				return append(b, "#!/bin/sh\nset -eu\n"...)
			}
			return fmt.Appendf(b, "python -m acmeflow.cli %s --%s %d\n", verbWords[r.IntN(len(verbWords))], nameWords[r.IntN(len(nameWords))], r.IntN(100))
		})
	case f.ext == ".proto":
		return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
			return fmt.Appendf(b, "message %s%s {\n  string %s = 1;\n  int64 %s = 2;\n}\n\n", camel(nameWords[r.IntN(len(nameWords))]), camel(verbWords[r.IntN(len(verbWords))]), nameWords[r.IntN(len(nameWords))], nameWords[r.IntN(len(nameWords))])
		})
	}
	// Markdown, reStructuredText, LICENSE, README, CHANGELOG.
	return fill(r, f.size, func(b []byte, r *rand.Rand) []byte {
		if r.IntN(8) == 0 {
			return fmt.Appendf(b, "\n## %s %s\n\n", camel(verbWords[r.IntN(len(verbWords))]), nameWords[r.IntN(len(nameWords))])
		}
		return fmt.Appendf(b, "%s %s %s\n", sentences[r.IntN(len(sentences))], sentences[r.IntN(len(sentences))], sentences[r.IntN(len(sentences))])
	})
}

// fill appends lines until size bytes, then cuts at a line end.
func fill(r *rand.Rand, size int, line func([]byte, *rand.Rand) []byte) []byte {
	b := make([]byte, 0, size+256)
	for len(b) < size {
		b = line(b, r)
	}
	if i := bytes.LastIndexByte(b[:size], '\n'); i > 0 {
		return b[:i+1]
	}
	return b[:size]
}

func jsText(seed uint64, size int) []byte {
	r := fileRand(seed, -3)
	return fill(r, size, func(b []byte, r *rand.Rand) []byte {
		w := func() string { return tsWords[r.IntN(len(tsWords))] }
		return fmt.Appendf(b, "export function %s%s(%s: %s): %s {\n  %s %s = %s(%s, %d);\n  return %s;\n}\n\n",
			verbWords[r.IntN(len(verbWords))], camel(nameWords[r.IntN(len(nameWords))]), w(), camel(nameWords[r.IntN(len(nameWords))]),
			camel(nameWords[r.IntN(len(nameWords))]), w(), nameWords[r.IntN(len(nameWords))], w(), w(), r.IntN(1000), w())
	})
}

func minJSText(r *rand.Rand, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, "/*! bundle, minified */"...)
	for len(b) < size-1 {
		b = fmt.Appendf(b, "function %c%d(%c){return %c.%s(%d)||%c}", 'a'+rune(r.IntN(26)), r.IntN(999), 'e', 'e', tsWords[r.IntN(len(tsWords))], r.IntN(99), 'e')
	}
	return append(b[:min(len(b), size-1)], '\n')
}

// notebookText is a Jupyter notebook with code cells and base64 PNG
// outputs (incompressible, as real plots are).
func notebookText(r *rand.Rand, size int) []byte {
	var b bytes.Buffer
	b.WriteString("{\n \"cells\": [\n")
	img := make([]byte, 0, 64<<10)
	for b.Len() < size-200 {
		fmt.Fprintf(&b, "  {\"cell_type\": \"code\", \"execution_count\": %d, \"metadata\": {}, \"source\": [\"df = %s.%s(%s)\\n\", \"df.plot()\"],\n", r.IntN(100), nameWords[r.IntN(len(nameWords))], verbWords[r.IntN(len(verbWords))], nameWords[r.IntN(len(nameWords))])
		n := min(logUniform(r, 2_000, 60_000), max(0, (size-b.Len())*3/4-200))
		img = img[:n]
		for i := range img {
			img[i] = byte(r.Uint32())
		}
		fmt.Fprintf(&b, "   \"outputs\": [{\"output_type\": \"display_data\", \"data\": {\"image/png\": \"%s\"}}]},\n", base64.StdEncoding.EncodeToString(img))
	}
	b.WriteString("  {\"cell_type\": \"markdown\", \"metadata\": {}, \"source\": [\"end\"]}\n ],\n \"nbformat\": 4\n}\n")
	return b.Bytes()
}

// messUp adds trailing whitespace to every fifth line, which the formatter
// step strips.
func messUp(data []byte) []byte {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var out bytes.Buffer
	for i, l := range lines {
		if i%5 == 2 && bytes.HasSuffix(l, []byte("\n")) && len(l) > 1 {
			out.Write(l[:len(l)-1])
			out.WriteString("   \n")
			continue
		}
		out.Write(l)
	}
	return out.Bytes()
}

// formatPy is what the formatter step does to a file: strip trailing
// whitespace.
func formatPy(data []byte) []byte {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var out bytes.Buffer
	out.Grow(len(data))
	for _, l := range lines {
		nl := bytes.HasSuffix(l, []byte("\n"))
		out.Write(bytes.TrimRight(l, " \t\n"))
		if nl {
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// binaryBytes is incompressible data with a plausible header.
func binaryBytes(seed uint64, v, size int, ext string) []byte {
	c := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40), byte(seed >> 48), byte(seed >> 56),
		byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), 'b', 'i', 'n'})
	b := make([]byte, size)
	c.Read(b)
	switch ext {
	case ".png":
		copy(b, "\x89PNG\r\n\x1a\n")
	case ".pt":
		copy(b, "PK\x03\x04")
	case ".parquet":
		copy(b, "PAR1")
	}
	return b
}

// trackedPy lists the tracked .py files and counts the lines with word.
func (g *realRepo) trackedPy(word string) (files []string, content map[string][]byte, hits int) {
	content = map[string][]byte{}
	for _, f := range g.files {
		if f.kind != kindPy {
			continue
		}
		data := f.final()
		files = append(files, f.path)
		content[f.path] = data
		for _, line := range bytes.Split(data, []byte("\n")) {
			if bytes.Contains(line, []byte(word)) {
				hits++
			}
		}
	}
	return files, content, hits
}

// generateRealProject is the realistic repository as the steps see it.
func generateRealProject(shape realShape) *project {
	g := generateRealRepo(shape)
	p := &project{grepWord: benchGrepWord, real: g, dirs: g.dirs}
	p.pyFiles, p.content, p.grepHits = g.trackedPy(p.grepWord)
	for _, f := range g.files {
		p.bytes += int64(f.size)
	}
	return p
}

// --- writing ---

// fastImport streams commits [lo, hi) into `git fast-import`.
func (g *realRepo) fastImport(ctx context.Context, root string, gitEnv []string, lo, hi int) error {
	cmd := exec.CommandContext(ctx, "git", "-c", "pack.compression=1", "fast-import", "--quiet", "--done", "--big-file-threshold=512k")
	cmd.Dir, cmd.Env = root, gitEnv
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	werr := g.writeStream(in, lo, hi)
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %v: %s", err, clip(stderr.String(), 600))
	}
	if werr != nil {
		return fmt.Errorf("writing to git fast-import: %v", werr)
	}
	return nil
}

type op struct {
	del  bool
	path string
	exec bool
	data func() []byte
}

func (g *realRepo) writeStream(w0 io.Writer, lo, hi int) error {
	ops := make([][]op, g.shape.commits)
	for _, f := range g.files {
		ops[f.birth] = append(ops[f.birth], op{path: f.path, exec: f.exec, data: func() []byte { return f.content(0) }})
		for i, c := range f.edits {
			v := i + 1
			ops[c] = append(ops[c], op{path: f.path, exec: f.exec, data: func() []byte { return f.content(v) }})
		}
	}
	for _, gf := range g.gone {
		ops[gf.add] = append(ops[gf.add], op{path: gf.path, data: func() []byte { return binaryBytes(gf.seed, 0, gf.size, ".pt") }})
		ops[gf.del] = append(ops[gf.del], op{del: true, path: gf.path})
	}
	w := bufio.NewWriterSize(w0, 1<<20)
	t0 := time.Date(2024, 1, 8, 9, 0, 0, 0, time.UTC).Unix()
	for c := lo; c < hi; c++ {
		r := fileRand(g.shape.seed, 100000+c)
		when := t0 + int64(c)*3*3600 + int64(r.IntN(3000))
		who := authors[r.IntN(len(authors))]
		msg := commitMessage(r, c, ops[c])
		fmt.Fprintf(w, "commit refs/heads/main\nauthor %s %d +0000\ncommitter %s %d +0000\ndata %d\n%s\n", who, when, who, when, len(msg), msg)
		if c == lo && c > 0 {
			w.WriteString("from refs/heads/main^0\n")
		}
		for _, o := range ops[c] {
			if o.del {
				fmt.Fprintf(w, "D %s\n", o.path)
				continue
			}
			mode := "100644"
			if o.exec {
				mode = "100755"
			}
			data := o.data()
			fmt.Fprintf(w, "M %s inline %s\ndata %d\n", mode, o.path, len(data))
			w.Write(data)
			if _, err := w.WriteString("\n"); err != nil {
				return err
			}
		}
		w.WriteString("\n")
	}
	w.WriteString("done\n")
	return w.Flush()
}

func commitMessage(r *rand.Rand, c int, ops []op) string {
	if c == 0 {
		return "Initial import"
	}
	what := "misc"
	if len(ops) > 0 {
		what = path.Base(path.Dir(ops[0].path))
	}
	return fmt.Sprintf("%s: %s %s the %s\n\n%s", what, camel(verbWords[r.IntN(len(verbWords))]), []string{"and tidy", "for", "in", "around"}[r.IntN(4)], nameWords[r.IntN(len(nameWords))], sentences[r.IntN(len(sentences))])
}

// write creates the repository under root (removed first): history,
// packs, work tree, index, cache folders.
func (g *realRepo) write(ctx context.Context, root string, gitEnv []string, logf func(string, ...any)) error {
	t0 := time.Now()
	phase := func(what string) {
		logf("  %s: %s", what, fmtDur(time.Since(t0)))
		t0 = time.Now()
	}
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = root, gitEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, clip(string(out), 600))
		}
		return nil
	}
	if err := git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	C := g.shape.commits
	recent := max(1, C/20)
	if err := g.fastImport(ctx, root, gitEnv, 0, C-recent); err != nil {
		return err
	}
	phase("git fast-import")
	// As a clone has it: one pack. Blobs of 512 KiB and more are not
	// delta-compressed (they are incompressible assets; trying costs
	// minutes and saves nothing).
	if err := git("-c", "core.bigFileThreshold=512k", "-c", "pack.threads=2", "repack", "-a", "-d", "-q"); err != nil {
		return err
	}
	phase("git repack -ad")
	// The latest commits as a few pulls leave them.
	if err := g.fastImport(ctx, root, gitEnv, C-recent, C); err != nil {
		return err
	}
	phase("git fast-import of the recent commits")
	if err := git("reset", "-q", "--hard", "main"); err != nil {
		return err
	}
	phase("git reset --hard (work tree and index)")
	for _, f := range g.caches {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data(), 0o644); err != nil {
			return err
		}
	}
	phase("cache folders")
	return settleIndex(ctx, root, gitEnv)
}

// settleIndex has git refresh its index once the files are older than
// it, as after someone ran `git status` on the server: entries written in
// the index's own second are "racily clean" and would make the next git
// status re-read them (on the server as well as through a mount).
func settleIndex(ctx context.Context, root string, gitEnv []string) error {
	if fi, err := os.Stat(filepath.Join(root, ".git", "index")); err == nil {
		if wait := time.Until(fi.ModTime().Truncate(time.Second).Add(1100 * time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
	}
	cmd := exec.CommandContext(ctx, "git", "update-index", "-q", "--really-refresh")
	cmd.Dir, cmd.Env = root, gitEnv
	out, err := cmd.CombinedOutput()
	if err != nil && len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("git update-index --really-refresh: %v: %s", err, clip(string(out), 400))
	}
	return nil
}

// restore puts the repository back as generated after a system's run:
// tracked files as committed (git rewrites only what changed), untracked
// non-ignored files removed. The cache folders are ignored by git and no
// step touches them.
func (g *realRepo) restore(ctx context.Context, root string, gitEnv []string) error {
	for _, args := range [][]string{{"reset", "-q", "--hard", "main"}, {"clean", "-q", "-f", "-d"}} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = root, gitEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, clip(string(out), 400))
		}
	}
	return settleIndex(ctx, root, gitEnv)
}

// gitStats is what the header says about the repository on disk.
type gitStats struct {
	commits    int
	packs      int
	packBytes  int64
	looseObjs  int
	looseBytes int64
	headCommit string
}

func readGitStats(ctx context.Context, root string, gitEnv []string) (gitStats, error) {
	var st gitStats
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = root, gitEnv
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	out, err := run("count-objects", "-v")
	if err != nil {
		return st, fmt.Errorf("git count-objects: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "count":
			st.looseObjs = int(n)
		case "size":
			st.looseBytes = n << 10
		case "packs":
			st.packs = int(n)
		case "size-pack":
			st.packBytes = n << 10
		}
	}
	if out, err = run("rev-list", "--count", "HEAD"); err != nil {
		return st, fmt.Errorf("git rev-list: %v", err)
	}
	st.commits, _ = strconv.Atoi(out)
	if st.headCommit, err = run("rev-parse", "HEAD"); err != nil {
		return st, err
	}
	return st, nil
}

// describe is the header line of the project.
func (g *realRepo) describe(st gitStats, pyFiles int) string {
	var sizes []int
	var total int64
	for _, f := range g.files {
		sizes = append(sizes, f.size)
		total += int64(f.size)
	}
	slices.Sort(sizes)
	in1to20 := 0
	for _, s := range sizes {
		if s >= 1000 && s <= 20000 {
			in1to20++
		}
	}
	var cacheBytes int64
	for _, f := range g.caches {
		cacheBytes += int64(f.size)
	}
	return fmt.Sprintf("project: realistic %s (seed %d): %d tracked files (%d .py) in %d folders, %s; sizes: %d%% 1-20 KB, median %s, 90th percentile %s, %d files of 100 KB-2 MB, %d large binary assets (%s); "+
		"%d untracked files in cache folders (%s): %d in %d __pycache__ folders, %d under web/node_modules (%d node_modules folders); deepest path %d levels; "+
		"git: %d commits, history %s in %d pack(s) + %d loose objects (%s), index written by git on the server",
		g.shape.name, g.shape.seed, len(g.files), pyFiles, len(g.dirs), fmtSize(total),
		in1to20*100/max(1, len(sizes)), fmtSize(int64(sizes[len(sizes)/2])), fmtSize(int64(sizes[len(sizes)*9/10])), g.tail, g.assets, fmtSize(g.assetByte),
		len(g.caches), fmtSize(cacheBytes), g.countCaches("__pycache__"), g.cacheDirs.pycache, g.countCaches("node_modules"), g.cacheDirs.nodeModules, g.maxDepth,
		st.commits, fmtSize(st.packBytes), st.packs, st.looseObjs, fmtSize(st.looseBytes))
}

func (g *realRepo) countCaches(part string) int {
	n := 0
	for _, f := range g.caches {
		if strings.Contains(f.path, "/"+part+"/") {
			n++
		}
	}
	return n
}
