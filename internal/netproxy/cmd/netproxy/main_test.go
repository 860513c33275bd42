package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"remotefs/internal/netproxy"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1500": 1500, "500k": 500_000, "10M": 10_000_000, "1G": 1_000_000_000,
		"64Ki": 64 << 10, "1Mi": 1 << 20, "2MiB": 2 << 20, "1.5M": 1_500_000, "3MB/s": 3_000_000,
	} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1", "10X", "1e20", "NaN", "Inf", "-0.5k"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) succeeded", bad)
		}
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"-target", "127.0.0.1:22", "-rtt", "50ms", "-bandwidth", "1M"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != "127.0.0.1:0" || o.rtt != 50*time.Millisecond || o.bandwidth != 1_000_000 {
		t.Fatalf("parsed %+v", o)
	}
	if _, err := parseFlags(nil, io.Discard); err == nil {
		t.Fatal("missing -target accepted")
	}
	if _, err := parseFlags([]string{"-target", "x:1", "extra"}, io.Discard); err == nil {
		t.Fatal("extra argument accepted")
	}
}

func TestControl(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	p, err := netproxy.New("127.0.0.1:0", target.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	steps := []struct {
		line string
		ok   func() bool
	}{
		{"rtt 100ms", func() bool { return p.Latency() == 50*time.Millisecond }},
		{"bw 2Mi", func() bool { return p.Bandwidth() == 2<<20 }},
		{"bandwidth 0", func() bool { return p.Bandwidth() == 0 }},
		{"blackhole on", p.Blackholed},
		{"blackhole off", func() bool { return !p.Blackholed() }},
		{"refuse on", func() bool { _, err := net.Dial("tcp", p.Addr()); return err != nil }},
		{"refuse off", func() bool {
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				return false
			}
			c.Close()
			return true
		}},
		{"reset", func() bool { return true }},
		{"", func() bool { return true }},
	}
	for _, s := range steps {
		if _, err := control(p, s.line); err != nil {
			t.Fatalf("%q: %v", s.line, err)
		}
		if !s.ok() {
			t.Fatalf("%q had no effect", s.line)
		}
	}
	if msg, err := control(p, "stats"); err != nil || !strings.HasPrefix(msg, "conns ") {
		t.Fatalf("stats: %q, %v", msg, err)
	}
	for _, bad := range []string{"blackhole maybe", "rtt soon", "bw lots", "jump"} {
		if _, err := control(p, bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// run starts a working proxy, announces its address and stops with ctx.
func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-target", ln.Addr().String(), "-rtt", "20ms"}, stdinR, outW) }()

	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		t.Fatal("no output")
	}
	first := lines.Text()
	addr, _, ok := strings.Cut(strings.TrimPrefix(first, "listening on "), " ")
	if !ok || !strings.HasPrefix(first, "listening on ") {
		t.Fatalf("first line %q", first)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Write([]byte("hi"))
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if rtt := time.Since(start); rtt < 20*time.Millisecond {
		t.Fatalf("round trip %v, want at least 20ms", rtt)
	}
	c.Close()

	io.WriteString(stdinW, "stats\n")
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "conns ") {
		t.Fatalf("stats answer %q", lines.Text())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	stdinW.Close()
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "10M", "1.5Gi", "64KiB/s", "", "-3k", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseBytes(s); err == nil && n < 0 {
			t.Fatalf("parseBytes(%q) = %d", s, n)
		}
	})
}
