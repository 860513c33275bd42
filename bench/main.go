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
// Usage:
//
//	go run ./bench [-rtt 50ms] [-bandwidth 0] [-files 600] [-bigfile 256MiB]
//	               [-saves 20] [-only remotefs,sshfs,local]
//	               [-steps walk,git,grep,save,safesave,bigread]
//	               [-quick] [-out FILE.md] [-step-timeout 10m] [-keep] [-bin PATH]
//	go run ./bench -hold [-only remotefs] [-rtt ...]   # mount and wait, for manual tests
//
// The table goes to stdout (aligned Markdown), progress to stderr. The exit
// status is 1 when any cell is an error or a timeout.
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
	files       int
	bigfile     int64
	saves       int
	only        []string // systems, in run order
	steps       []string
	quick       bool
	out         string
	stepTimeout time.Duration
	keep        bool
	hold        bool
	bin         string    // prebuilt remotefs binary; "" = go build
	progress    io.Writer // progress lines; nil = discard
}

var (
	allSystems = []string{"remotefs", "sshfs", "local"}
	allSteps   = []string{"walk", "git", "grep", "save", "safesave", "bigread"}
)

func parseFlags(args []string) (*config, error) {
	cfg := &config{}
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	fl.DurationVar(&cfg.rtt, "rtt", 50*time.Millisecond, "round-trip time added between client and sshd (the proxy delays each direction by rtt/2)")
	bw := fl.String("bandwidth", "0", "bandwidth limit each way, e.g. 10MB, 100mbit, 2MiB (per second); 0 = unlimited")
	fl.IntVar(&cfg.files, "files", 600, "files in the generated Python project")
	big := fl.String("bigfile", "256MiB", "size of the big file read sequentially")
	fl.IntVar(&cfg.saves, "saves", 20, "editor saves per save step")
	only := fl.String("only", strings.Join(allSystems, ","), "systems to measure (comma list of remotefs,sshfs,local)")
	steps := fl.String("steps", strings.Join(allSteps, ","), "steps to run (comma list of "+strings.Join(allSteps, ",")+")")
	fl.BoolVar(&cfg.quick, "quick", false, "smoke run: 60 files, 4 MiB big file, 5 saves, rtt 10ms (explicit flags win)")
	fl.StringVar(&cfg.out, "out", "", "also write the report as Markdown to this file")
	fl.DurationVar(&cfg.stepTimeout, "step-timeout", 10*time.Minute, "a step taking longer is reported as \"timeout\" and the system's mount is abandoned")
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
		if !set["files"] {
			cfg.files = 60
		}
		if !set["bigfile"] {
			*big = "4MiB"
		}
		if !set["saves"] {
			cfg.saves = 5
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
