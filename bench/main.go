// Command bench measures remotefs against sshfs and the local disk on the
// work an IDE does with a remote project: walk the tree, git status, grep,
// editor saves (in place and "safe" temp+rename saves), and a sequential read
// of a big file, each cold (fresh mount, empty cache) and warm (again on the
// same mount).
//
// Everything runs on this machine: a real OpenSSH sshd on loopback
// (internal/sshdtest) reached through a TCP proxy that adds latency and
// optionally limits bandwidth (internal/netproxy), so the numbers model a
// remote server at -rtt. The served directory is local, so the benchmark
// also sees the server side directly: it checks every result (walk
// entries, git status output, grep hits, bytes read) and, after each save,
// measures how long the new content takes to appear on the server.
//
// With -repo 3k or -repo 30k the project is a realistic repository instead
// of the small synthetic one (realrepo.go): a long-tailed file size
// distribution, deep folders, 100+ MB of packed git history, __pycache__
// and node_modules folders, binary assets; and the steps include a first
// `git status` on a fresh mount, a checkout-like bulk write, a
// formatter-like rewrite of every .py file and a read at a bandwidth cap.
// -slow-login 1s gives the server account a login shell that takes a
// second to start, as conda or pyenv init in ~/.bashrc does: every exec
// channel pays it, the SFTP subsystem (internal-sftp) does not.
//
// Usage:
//
//	go run ./bench [-rtt 50ms] [-bandwidth 0] [-files 600] [-bigfile 256MiB]
//	               [-repo small|3k|30k] [-history 128MiB] [-seed 1] [-slow-login 0]
//	               [-bulk 500] [-cap 20MB] [-saves 20] [-only remotefs,sshfs,local]
//	               [-steps walk,git,grep,freshgit,freshwalk,remountgit,bulk,format,save,safesave,bigread,capread]
//	               [-quick] [-out FILE.md] [-step-timeout 10m] [-sshfs-cap 30s] [-keep] [-bin PATH]
//	go run ./bench -hold [-only remotefs] [-rtt ...]   # mount and wait, for manual tests
//
// sshfs takes many minutes for some steps of the realistic repositories
// (a first git status over it re-reads every tracked file). -sshfs-cap
// (default 30s for -repo 3k/30k, none for the small project) stops an
// sshfs step that runs longer: its cells say "> 30 s" and the ratio
// "> N x" (a bound: remotefs is at least that much faster). A capped step
// is not a failure. After it the benchmark repairs what the stopped step
// left on the server (a half-extracted bulk folder, a stale
// .git/index.lock, a safe-save's temp file, files the formatter had
// rewritten so far: git status must then list them) and, when it had to
// or when the step did not return (a call stuck in the mount), replaces
// the sshfs mount by a fresh one; the following steps run as usual.
//
// The table goes to stdout (aligned Markdown), progress to stderr. The exit
// status is 1 when any cell is an error or a timeout (capped cells are
// neither).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	rtt         time.Duration
	bandwidth   int64 // bytes per second each way; 0 = unlimited
	files       int   // small: files of the project; realistic: tracked files
	repo        string
	shape       realShape // -repo 3k/30k with -files, -history, -seed applied
	seed        uint64
	slowLogin   time.Duration
	bulk        int   // files of the bulk step
	capRate     int64 // bandwidth of the capread step
	bigfile     int64
	saves       int
	only        []string // systems, in run order
	steps       []string
	quick       bool
	out         string
	stepTimeout time.Duration
	sshfsCap    time.Duration // per-step cap of sshfs; 0 = none
	keep        bool
	hold        bool
	bin         string    // prebuilt remotefs binary; "" = go build
	progress    io.Writer // progress lines; nil = discard
	hooks       benchHooks
}

// benchHooks let tests act at points of a run (no flags set them).
type benchHooks struct {
	beforeStep func(b *bench, sys, pass, step string) // just before a step starts
	afterCap   func(b *bench, sys, pass, step string) // a step was stopped at its cap, before the mount is checked or replaced
}

// defaultSSHFSCap is -sshfs-cap's default for the realistic repositories:
// short enough that a -repo 3k run beside sshfs ends in about 15 minutes
// (about seven sshfs steps pass it in each pass).
const defaultSSHFSCap = 30 * time.Second

var (
	allSystems = []string{"remotefs", "sshfs", "local"}
	allSteps   = []string{"walk", "git", "grep", "freshgit", "freshwalk", "remountgit", "bulk", "format", "save", "safesave", "bigread", "capread"}
	// smallSteps are the default steps of the small project (the README's
	// table); the realistic repositories run all of them.
	smallSteps = []string{"walk", "git", "grep", "save", "safesave", "bigread"}
)

func parseFlags(args []string) (*config, error) {
	cfg := &config{}
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	fl.DurationVar(&cfg.rtt, "rtt", 50*time.Millisecond, "round-trip time added between client and sshd (the proxy delays each direction by rtt/2)")
	bw := fl.String("bandwidth", "0", "bandwidth limit each way, e.g. 10MB, 100mbit, 2MiB (per second); 0 = unlimited")
	fl.IntVar(&cfg.files, "files", 600, "files in the generated Python project (-repo small), or tracked files of the realistic repository (default 3000 for -repo 3k, 15000 for -repo 30k)")
	fl.StringVar(&cfg.repo, "repo", "small", "project: small (synthetic 600-file Python project), 3k (realistic repository, 3,000 tracked files, about 5,500 with cache folders) or 30k (30,000 files, 15,000 tracked)")
	hist := fl.String("history", "", "packed git history of the realistic repository (default 128MiB for -repo 3k, 160MiB for 30k; 8MiB with -quick)")
	seed := fl.Uint64("seed", 1, "seed of the realistic repository (the same seed makes the same repository)")
	fl.DurationVar(&cfg.slowLogin, "slow-login", 0, "make the server account's login shell take this long to start (a ~/.bashrc that sleeps, as conda/pyenv init): every exec channel pays it, the SFTP subsystem does not; e.g. 1s")
	fl.IntVar(&cfg.bulk, "bulk", 500, "files the bulk step extracts (tar -x) into the mount and deletes (rm -rf)")
	capRate := fl.String("cap", "20MB", "bandwidth cap of the capread step (the read at a capped link), per second")
	big := fl.String("bigfile", "256MiB", "size of the big file read sequentially")
	fl.IntVar(&cfg.saves, "saves", 20, "editor saves per save step")
	only := fl.String("only", strings.Join(allSystems, ","), "systems to measure (comma list of remotefs,sshfs,local)")
	steps := fl.String("steps", "", "steps to run (comma list of "+strings.Join(allSteps, ",")+"); default "+strings.Join(smallSteps, ",")+" for -repo small, all for the realistic repositories")
	fl.BoolVar(&cfg.quick, "quick", false, "smoke run: 60 files (a tenth of a realistic repository's), 8 MiB of history, 4 MiB big file, 5 saves, 100 bulk files, rtt 10ms (explicit flags win)")
	fl.StringVar(&cfg.out, "out", "", "also write the report as Markdown to this file")
	fl.DurationVar(&cfg.stepTimeout, "step-timeout", 10*time.Minute, "a step taking longer is reported as \"timeout\" and the system's mount is abandoned")
	fl.DurationVar(&cfg.sshfsCap, "sshfs-cap", 0, "stop an sshfs step that runs longer than this and report it as \"> D\" (not a failure); the following steps still run, on a fresh sshfs mount if the step left it unusable (default "+defaultSSHFSCap.String()+" for -repo 3k/30k, none for -repo small; 0 = none)")
	fl.BoolVar(&cfg.keep, "keep", false, "keep the work directory (server tree, caches, logs) at the end")
	fl.StringVar(&cfg.bin, "bin", "", "use this remotefs binary instead of building ./cmd/remotefs")
	fl.BoolVar(&cfg.hold, "hold", false, "measure nothing: set up sshd, proxy and project, mount the first -only system, print how to use it, and wait for Ctrl-C (to reproduce problems by hand)")
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fl.Args())
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.quick {
		if !set["rtt"] {
			cfg.rtt = 10 * time.Millisecond
		}
		if !set["files"] && cfg.repo == "small" {
			cfg.files = 60
		}
		if !set["bigfile"] {
			*big = "4MiB"
		}
		if !set["saves"] {
			cfg.saves = 5
		}
		if !set["bulk"] {
			cfg.bulk = 100
		}
		if !set["history"] {
			*hist = "8MiB"
		}
	}
	cfg.seed = *seed
	if !set["sshfs-cap"] && cfg.repo != "small" {
		cfg.sshfsCap = defaultSSHFSCap
	}
	if cfg.sshfsCap < 0 {
		return nil, errors.New("-sshfs-cap must not be negative")
	}
	if cfg.repo != "small" {
		shape, ok := realPresets[cfg.repo]
		if !ok {
			return nil, fmt.Errorf("-repo: unknown %q (small, 3k or 30k)", cfg.repo)
		}
		switch {
		case set["files"]:
			shape = shape.scaled(cfg.files)
		case cfg.quick:
			shape = shape.scaled(shape.tracked / 10)
		}
		if *hist != "" {
			h, err := parseSize(*hist)
			if err != nil || h < 1<<20 {
				return nil, fmt.Errorf("-history: want a size of at least 1MiB, got %q", *hist)
			}
			shape.history = h
		}
		shape.seed = cfg.seed
		cfg.shape = shape
		cfg.files = shape.tracked
	} else if set["history"] {
		return nil, errors.New("-history applies to -repo 3k or 30k")
	}
	if *steps == "" {
		*steps = strings.Join(smallSteps, ",")
		if cfg.repo != "small" {
			*steps = strings.Join(allSteps, ",")
		}
	}
	var err error
	if cfg.bandwidth, err = parseRate(*bw); err != nil {
		return nil, fmt.Errorf("-bandwidth: %v", err)
	}
	if cfg.bigfile, err = parseSize(*big); err != nil {
		return nil, fmt.Errorf("-bigfile: %v", err)
	}
	if cfg.bigfile <= 0 {
		return nil, errors.New("-bigfile must be positive")
	}
	if cfg.capRate, err = parseRate(*capRate); err != nil || cfg.capRate <= 0 {
		return nil, fmt.Errorf("-cap: want a positive rate, got %q", *capRate)
	}
	if cfg.bulk < 1 {
		return nil, errors.New("-bulk must be at least 1")
	}
	if cfg.slowLogin < 0 {
		return nil, errors.New("-slow-login must not be negative")
	}
	if cfg.files < 20 {
		return nil, errors.New("-files must be at least 20")
	}
	if cfg.saves < 1 {
		return nil, errors.New("-saves must be at least 1")
	}
	if cfg.rtt < 0 {
		return nil, errors.New("-rtt must not be negative")
	}
	if cfg.only, err = parseList(*only, allSystems); err != nil {
		return nil, fmt.Errorf("-only: %v", err)
	}
	if cfg.steps, err = parseList(*steps, allSteps); err != nil {
		return nil, fmt.Errorf("-steps: %v", err)
	}
	return cfg, nil
}

// parseList splits a comma list, checks every name is known, and returns
// them in the canonical order.
func parseList(s string, known []string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(known, f) {
			return nil, fmt.Errorf("unknown name %q (known: %s)", f, strings.Join(known, ","))
		}
		want[f] = true
	}
	var out []string
	for _, k := range known {
		if want[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// parseSize reads "256MiB", "4M", "1.5GB", "1048576".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	t := strings.ToLower(s)
	t = strings.TrimSuffix(t, "b")
	mult := 1.0
	for _, u := range []struct {
		suf string
		m   float64
	}{{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(v * mult), nil
}

// parseRate reads a per-second rate: "0", "10MB", "2MiB", "100mbit",
// "10MB/s".
func parseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "/s")
	t = strings.TrimSuffix(t, "ps")
	if strings.HasSuffix(t, "bit") {
		v, err := parseSize(strings.TrimSuffix(t, "bit"))
		if err != nil {
			return 0, fmt.Errorf("bad rate %q", s)
		}
		return v / 8, nil
	}
	v, err := parseSize(t)
	if err != nil {
		return 0, fmt.Errorf("bad rate %q", s)
	}
	return v, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	cfg.progress = os.Stderr

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				fmt.Fprintln(os.Stderr, "bench: interrupted; unmounting and cleaning up (this can take a few seconds)")
				cancel()
			} else {
				fmt.Fprintln(os.Stderr, "bench: still cleaning up (mounts must not be left behind); please wait")
			}
		}
	}()

	rep, err := run(ctx, cfg)
	if rep != nil {
		text := rep.render()
		fmt.Print(text)
		if cfg.out != "" {
			if werr := os.WriteFile(cfg.out, []byte(text), 0o644); werr != nil {
				fmt.Fprintln(os.Stderr, "bench:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if rep != nil && rep.failed() {
		os.Exit(1)
	}
}
