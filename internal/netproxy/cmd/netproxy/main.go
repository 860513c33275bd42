// Command netproxy forwards TCP connections through a simulated network
// link (see package remotefs/internal/netproxy), for benchmarks and manual
// tests:
//
//	netproxy -listen 127.0.0.1:2222 -target 127.0.0.1:22 -rtt 50ms -bandwidth 10M
//
// It prints "listening on ADDR" once ready, then runs until interrupted.
// Lines on standard input change the link while it runs:
//
//	rtt 100ms | bandwidth 1M | blackhole on|off | refuse on|off | reset | stats
//
// Bandwidth is in bytes per second with an optional k, M or G suffix
// (powers of 1000; Ki, Mi, Gi for powers of 1024); 0 means unlimited.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"remotefs/internal/netproxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "netproxy:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	listen, target string
	rtt            time.Duration
	bandwidth      int64
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var bw string
	fs := flag.NewFlagSet("netproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to listen on")
	fs.StringVar(&o.target, "target", "", "address to forward to (required)")
	fs.DurationVar(&o.rtt, "rtt", 0, "round-trip time to add (half each way)")
	fs.StringVar(&bw, "bandwidth", "0", "bytes per second each way, e.g. 500k, 10M, 1Gi (0: unlimited)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.target == "" {
		return o, errors.New("-target is required")
	}
	var err error
	if o.bandwidth, err = parseBytes(bw); err != nil {
		return o, fmt.Errorf("-bandwidth: %w", err)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	p, err := netproxy.New(o.listen, o.target)
	if err != nil {
		return err
	}
	defer p.Close()
	p.SetLatency(o.rtt / 2)
	p.SetBandwidth(o.bandwidth)
	fmt.Fprintf(stdout, "listening on %s -> %s (rtt %v, bandwidth %s)\n", p.Addr(), o.target, o.rtt, formatRate(o.bandwidth))

	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if msg, err := control(p, sc.Text()); err != nil {
				fmt.Fprintln(stdout, "error:", err)
			} else if msg != "" {
				fmt.Fprintln(stdout, msg)
			}
		}
	}()
	<-ctx.Done()
	return nil
}

// control applies one command line read from standard input.
func control(p *netproxy.Proxy, line string) (string, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", nil
	}
	arg := ""
	if len(f) > 1 {
		arg = f[1]
	}
	onOff := func() (bool, error) {
		switch arg {
		case "on":
			return true, nil
		case "off":
			return false, nil
		}
		return false, fmt.Errorf("%s: want on or off", f[0])
	}
	switch f[0] {
	case "rtt":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return "", err
		}
		p.SetLatency(d / 2)
		return "rtt " + d.String(), nil
	case "bandwidth", "bw":
		b, err := parseBytes(arg)
		if err != nil {
			return "", err
		}
		p.SetBandwidth(b)
		return "bandwidth " + formatRate(b), nil
	case "blackhole":
		on, err := onOff()
		if err != nil {
			return "", err
		}
		p.Blackhole(on)
		return "blackhole " + arg, nil
	case "refuse":
		on, err := onOff()
		if err != nil {
			return "", err
		}
		return "refuse " + arg, p.Refuse(on)
	case "reset":
		p.ResetAll()
		return "reset", nil
	case "stats":
		return fmt.Sprintf("conns %d up %d down %d dropped %d", p.Conns(), p.BytesUp(), p.BytesDown(), p.BytesDropped()), nil
	}
	return "", fmt.Errorf("unknown command %q (rtt, bandwidth, blackhole, refuse, reset, stats)", f[0])
}

// parseBytes reads "0", "1500", "500k", "10M", "1G", "64Ki", "1Mi", with an
// optional trailing "B" or "/s".
func parseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	v := n * float64(mult)
	if err != nil || !(v >= 0 && v < math.MaxInt64) { // also rejects NaN
		return 0, fmt.Errorf("bad byte rate %q", s)
	}
	return int64(v), nil
}

func formatRate(b int64) string {
	if b <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(b, 10) + " B/s"
}
