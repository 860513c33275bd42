package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// project is the generated Python project: what was written, and what the
// steps should find in it.
type project struct {
	files    []genFile // sorted by path, relative to the project root
	dirs     []string  // every folder, relative ("" not included)
	pyFiles  []string  // relative paths of the .py files, sorted
	grepWord string
	grepHits int // lines of .py files that contain grepWord
	bytes    int64
	content  map[string][]byte // .py files of the realistic repository
	real     *realRepo         // the realistic repository; nil for the small project
}

// create writes the project under root for the first time.
func (p *project) create(ctx context.Context, root string, gitEnv []string, logf func(string, ...any)) error {
	if p.real != nil {
		return p.real.write(ctx, root, gitEnv, logf)
	}
	return p.write(root, gitEnv)
}

// reset puts the project back as created, before the next system's run.
func (p *project) reset(ctx context.Context, root string, gitEnv []string) error {
	if p.real != nil {
		return p.real.restore(ctx, root, gitEnv)
	}
	return p.write(root, gitEnv)
}

type genFile struct {
	path string
	data []byte
}

// grepWord appears in about one .py file in seven.
const benchGrepWord = "frobnicate"

var (
	pkgWords = []string{"core", "models", "data", "utils", "io", "training", "evaluation", "metrics",
		"layers", "optim", "schedulers", "callbacks", "cli", "config", "serving", "api", "storage",
		"cache", "auth", "plugins", "viz", "export", "tokenizers", "datasets", "transforms", "losses",
		"distributed", "profiling", "logging", "hub", "pipelines", "features", "registry", "sampling",
		"checkpoint", "inference", "quantization", "backends", "kernels", "monitoring", "search",
		"reports", "tasks", "workers", "queue", "schema", "validation", "migrations", "notebooks", "compat"}
	nameWords = []string{"batch", "buffer", "cache", "client", "config", "context", "dataset", "decoder",
		"encoder", "engine", "event", "factory", "feature", "filter", "graph", "handler", "index",
		"item", "job", "kernel", "layer", "loader", "manager", "matrix", "metric", "model", "node",
		"optimizer", "parser", "pipeline", "pool", "reader", "record", "registry", "request",
		"response", "result", "runner", "sample", "sampler", "schema", "scheduler", "session",
		"shard", "signal", "source", "state", "store", "stream", "task", "tensor", "token", "tracker",
		"trainer", "transform", "tree", "vector", "view", "worker", "writer"}
	verbWords = []string{"build", "compute", "load", "save", "parse", "render", "update", "apply",
		"collect", "merge", "split", "resolve", "fetch", "encode", "decode", "normalize", "validate",
		"register", "dispatch", "flush", "reset", "prepare", "evaluate", "score", "sample", "filter",
		"transform", "convert", "emit", "wrap"}
	stdImports = []string{"os", "sys", "json", "logging", "time", "re", "math", "itertools",
		"functools", "collections", "dataclasses", "pathlib", "typing", "contextlib", "threading",
		"hashlib", "random", "shutil", "tempfile", "argparse"}
	sentences = []string{"Helpers for the training loop.", "Utilities shared by the data pipeline.",
		"Thin wrappers around the storage backend.", "Configuration objects and their defaults.",
		"Metrics computed during evaluation.", "Glue code between the CLI and the library.",
		"Caching layer for expensive intermediate results.", "Schedulers for the learning rate.",
		"Readers and writers for the on-disk format.", "Registry of pluggable components."}
)

// generateProject builds the deterministic project description for n files.
func generateProject(n int) *project {
	if n < 20 {
		n = 20
	}
	r := rand.New(rand.NewPCG(0x5eed, uint64(n)))
	p := &project{grepWord: benchGrepWord, content: map[string][]byte{}}

	// Folders: about one per 15 files, src/acmeflow/<pkg>[/<sub>] and tests.
	wantDirs := max(8, n/15)
	dirs := []string{"docs", "configs", "scripts", "src", "src/acmeflow", "tests", "tests/unit", "tests/integration"}
	var pkgDirs []string // folders that hold Python modules
	pkgDirs = append(pkgDirs, "src/acmeflow", "tests/unit", "tests/integration", "scripts")
	words := append([]string(nil), pkgWords...)
	r.Shuffle(len(words), func(i, j int) { words[i], words[j] = words[j], words[i] })
	wi := 0
	nextWord := func() string {
		w := words[wi%len(words)]
		if wi >= len(words) {
			w = fmt.Sprintf("%s%d", w, wi/len(words)+1)
		}
		wi++
		return w
	}
	var top []string
	for len(dirs) < wantDirs {
		var d string
		switch k := r.IntN(10); {
		case k < 6 || len(top) == 0:
			d = "src/acmeflow/" + nextWord()
			top = append(top, d)
		case k < 8:
			d = top[r.IntN(len(top))] + "/" + nextWord()
		default:
			d = "tests/unit/" + nextWord()
		}
		dirs = append(dirs, d)
		pkgDirs = append(pkgDirs, d)
	}
	sort.Strings(dirs)
	p.dirs = dirs

	add := func(rel string, data []byte) {
		p.files = append(p.files, genFile{rel, data})
	}
	// A few non-Python files, as in any real project.
	add(".gitignore", []byte("__pycache__/\n*.py[cod]\n*.egg-info/\n.venv/\nbuild/\ndist/\n.pytest_cache/\n.mypy_cache/\n.coverage\nhtmlcov/\n*.log\n.idea/\n.vscode/\n"))
	add("README.md", []byte(readme(r)))
	add("pyproject.toml", []byte("[build-system]\nrequires = [\"setuptools>=68\", \"wheel\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"acmeflow\"\nversion = \"0.14.2\"\nrequires-python = \">=3.10\"\ndependencies = [\"numpy>=1.26\", \"pyyaml>=6\", \"requests>=2.31\"]\n\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n"))
	add("requirements.txt", []byte("numpy==1.26.4\npyyaml==6.0.1\nrequests==2.31.0\npytest==8.1.1\nmypy==1.9.0\n"))
	add("LICENSE", []byte(strings.Repeat("Permission is hereby granted, free of charge, to any person obtaining a copy of this software.\n", 12)))
	add("Makefile", []byte(".PHONY: test lint\n\ntest:\n\tpytest -q\n\nlint:\n\truff check src tests\n\tmypy src\n"))
	add("docs/index.md", []byte("# acmeflow\n\n"+strings.Repeat("acmeflow trains and serves models. ", 40)+"\n"))
	add("docs/api.rst", []byte("API\n===\n\n.. automodule:: acmeflow\n   :members:\n"))
	add("configs/default.yaml", []byte("model:\n  layers: 12\n  hidden: 768\ntraining:\n  lr: 3.0e-4\n  batch_size: 64\n  epochs: 20\n"))
	add("configs/logging.json", []byte("{\n  \"version\": 1,\n  \"root\": {\"level\": \"INFO\", \"handlers\": [\"console\"]}\n}\n"))
	add("scripts/train.sh", []byte("#!/bin/sh\nset -e\npython -m acmeflow.cli train --config configs/default.yaml \"$@\"\n"))

	// Python files: an __init__.py in every package folder, then modules.
	used := map[string]bool{}
	for _, f := range p.files {
		used[f.path] = true
	}
	var py []string
	for _, d := range pkgDirs {
		if strings.HasPrefix(d, "src/") || strings.HasPrefix(d, "tests/") {
			py = append(py, d+"/__init__.py")
			used[d+"/__init__.py"] = true
		}
	}
	for len(p.files)+len(py) < n {
		d := pkgDirs[r.IntN(len(pkgDirs))]
		var name string
		if strings.HasPrefix(d, "tests") {
			name = "test_" + nameWords[r.IntN(len(nameWords))] + ".py"
		} else {
			name = nameWords[r.IntN(len(nameWords))] + "_" + verbWords[r.IntN(len(verbWords))] + ".py"
		}
		rel := d + "/" + name
		if used[rel] {
			continue
		}
		used[rel] = true
		py = append(py, rel)
	}
	for i, rel := range py {
		// Sizes log-uniform in 200 B .. 20 KB; __init__.py small.
		lo, hi := math.Log(200), math.Log(20000)
		size := int(math.Exp(lo + r.Float64()*(hi-lo)))
		if path.Base(rel) == "__init__.py" {
			size = 200 + r.IntN(400)
		}
		fr := rand.New(rand.NewPCG(uint64(i), 0xc0de))
		add(rel, pyModule(fr, rel, size, i%7 == 3))
	}
	sort.Slice(p.files, func(i, j int) bool { return p.files[i].path < p.files[j].path })
	for _, f := range p.files {
		p.content[f.path] = f.data
		p.bytes += int64(len(f.data))
		if strings.HasSuffix(f.path, ".py") {
			p.pyFiles = append(p.pyFiles, f.path)
			for _, line := range bytes.Split(f.data, []byte("\n")) {
				if bytes.Contains(line, []byte(p.grepWord)) {
					p.grepHits++
				}
			}
		}
	}
	return p
}

func readme(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString("# acmeflow\n\nA small machine-learning toolkit: data pipelines, models, training and serving.\n\n## Install\n\n    pip install -e .\n\n## Usage\n\n")
	for i := 0; i < 20; i++ {
		b.WriteString(sentences[r.IntN(len(sentences))])
		b.WriteString(" ")
	}
	b.WriteString("\n\n## Layout\n\n- `src/acmeflow`: the library\n- `tests`: unit and integration tests\n- `configs`: example configurations\n")
	return b.String()
}

func camel(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// pyModule writes plausible Python of about size bytes.
func pyModule(r *rand.Rand, rel string, size int, withWord bool) []byte {
	var b bytes.Buffer
	pick := func(ws []string) string { return ws[r.IntN(len(ws))] }
	fmt.Fprintf(&b, "\"\"\"%s\"\"\"\n\nfrom __future__ import annotations\n\n", pick(sentences))
	for i := 0; i < 2+r.IntN(4); i++ {
		fmt.Fprintf(&b, "import %s\n", pick(stdImports))
	}
	fmt.Fprintf(&b, "from typing import Any, Optional\n\nfrom acmeflow.%s import %s\n\nlogger = logging.getLogger(__name__)\n\n%s_LIMIT = %d\n",
		pick(pkgWords), camel(pick(nameWords)), strings.ToUpper(pick(nameWords)), r.IntN(1000))
	wordPlaced := false
	for b.Len() < size {
		if r.IntN(3) == 0 {
			cls := camel(pick(nameWords)) + camel(pick(nameWords))
			attr := pick(nameWords)
			fmt.Fprintf(&b, "\n\nclass %s:\n    \"\"\"%s\"\"\"\n\n    def __init__(self, %s: int = %d, label: Optional[str] = None) -> None:\n        self.%s = %s\n        self.label = label\n",
				cls, pick(sentences), attr, r.IntN(64), attr, attr)
			for m := 0; m < 1+r.IntN(4) && b.Len() < size; m++ {
				method(&b, r, "    ", withWord && !wordPlaced)
				if withWord {
					wordPlaced = true
				}
			}
		} else {
			method(&b, r, "", withWord && !wordPlaced)
			if withWord {
				wordPlaced = true
			}
		}
	}
	if withWord && !wordPlaced {
		fmt.Fprintf(&b, "\n\n# %s is applied last\n", benchGrepWord)
	}
	out := b.Bytes()
	// Cut back to the requested size at a line boundary, keeping ≥ 200 B.
	limit := size
	if withWord {
		limit = max(200, size-40) // room for the line added below
	}
	if len(out) > limit {
		cut := bytes.LastIndexByte(out[:limit], '\n')
		if cut >= 200 {
			out = out[:cut+1]
		}
	}
	if withWord && !bytes.Contains(out, []byte(benchGrepWord)) {
		out = append(out, []byte("# "+benchGrepWord+" is applied last\n")...)
	}
	return out
}

func method(b *bytes.Buffer, r *rand.Rand, ind string, word bool) {
	pick := func(ws []string) string { return ws[r.IntN(len(ws))] }
	name := pick(verbWords) + "_" + pick(nameWords)
	self := ""
	if ind != "" {
		self = "self, "
	}
	arg := pick(nameWords)
	fmt.Fprintf(b, "\n%sdef %s(%s%s: Any, limit: int = %d) -> dict[str, Any]:\n", ind, name, self, arg, r.IntN(100))
	fmt.Fprintf(b, "%s    \"\"\"%s\"\"\"\n", ind, camel(pick(verbWords))+" the "+pick(nameWords)+" and return a summary.")
	fmt.Fprintf(b, "%s    result: dict[str, Any] = {}\n", ind)
	fmt.Fprintf(b, "%s    if %s is None:\n%s        raise ValueError(\"%s must not be None\")\n", ind, arg, ind, arg)
	fmt.Fprintf(b, "%s    for i, item in enumerate(%s):\n", ind, arg)
	fmt.Fprintf(b, "%s        if i >= limit:\n%s            break\n", ind, ind)
	if word {
		fmt.Fprintf(b, "%s        item = %s(item)\n", ind, benchGrepWord)
	}
	fmt.Fprintf(b, "%s        result[str(i)] = %s(item)\n", ind, pick([]string{"str", "repr", "hash", "len", "sorted"}))
	fmt.Fprintf(b, "%s    logger.debug(\"%s: %%d items\", len(result))\n", ind, name)
	fmt.Fprintf(b, "%s    return result\n", ind)
}

// write creates the project under root (removed first) and commits it.
func (p *project) write(root string, gitEnv []string) error {
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	for _, d := range append([]string{""}, p.dirs...) {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range p.files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f.path, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(root, f.path), f.data, mode); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"commit", "-q", "-m", "Initial import"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		cmd.Env = gitEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Big file: pseudo-random (incompressible) data where every 4 KiB block
// starts with its own offset, so a read can be checked cheaply.
const stampBlock = 4096

func writeBigFile(file string, size int64, key byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	r := rand.NewChaCha8([32]byte{'r', 'e', 'm', 'o', 't', 'e', 'f', 's', key})
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := int(min(int64(len(buf)), size-off))
		chunk := buf[:n]
		r.Read(chunk)
		stamp(chunk, off)
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return err
		}
		off += int64(n)
	}
	return f.Close()
}

func stamp(chunk []byte, off int64) {
	for i := 0; i+8 <= len(chunk); i += stampBlock {
		binary.LittleEndian.PutUint64(chunk[i:], uint64(off+int64(i)))
	}
}

// readBigFile reads file sequentially and checks the stamps; it returns
// the number of bytes read.
func readBigFile(file string, want int64, canceled func() bool) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if canceled() {
			return off, errCanceled
		}
		n, err := io.ReadFull(f, buf)
		for i := 0; i+8 <= n; i += stampBlock {
			if got := binary.LittleEndian.Uint64(buf[i:]); got != uint64(off+int64(i)) {
				return off, fmt.Errorf("wrong data at offset %d: stamp says %d", off+int64(i), got)
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return off, err
		}
	}
	if off != want {
		return off, fmt.Errorf("read %d bytes, want %d", off, want)
	}
	return off, nil
}
