package proto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testCommands is what the agent side of these tests serves:
//
//	echo ARGS...  stdin to stdout, "err:" ARGS on stderr, exit len(ARGS)
//	gen N SEED    N pseudo-random bytes of SEED on stdout
//	block         until killed; exit 9
func testCommands(killed chan<- string) func(s *Stream, argv []string) {
	return func(s *Stream, argv []string) {
		switch argv[0] {
		case "echo":
			fmt.Fprintf(s.StderrWriter(), "err:%q", argv[1:])
			io.Copy(s, s)
			s.Exit(len(argv) - 1)
		case "gen":
			n, _ := strconv.Atoi(argv[1])
			seed, _ := strconv.ParseUint(argv[2], 10, 64)
			s.Write(genBytes(n, seed))
			s.Exit(0)
		case "block":
			<-s.Context().Done()
			killed <- argv[0]
			s.Exit(9)
		default:
			s.Exit(127)
		}
	}
}

func genBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type muxPair struct {
	client    *Mux
	toServer  *io.PipeWriter
	toClient  *io.PipeWriter
	served    chan error
	killed    chan string
	closeOnce sync.Once
}

func startMuxPair(t *testing.T) *muxPair {
	t.Helper()
	sr, cw := io.Pipe() // client -> server
	cr, sw := io.Pipe() // server -> client
	p := &muxPair{toServer: cw, toClient: sw, served: make(chan error, 1), killed: make(chan string, 10)}
	go func() {
		err := ServeMux(sr, sw, 1000, 1001, 0, testCommands(p.killed))
		sw.Close()
		p.served <- err
	}()
	m, uid, gid, err := NewClientMux(cr, cw)
	if err != nil {
		t.Fatal(err)
	}
	if uid != 1000 || gid != 1001 {
		t.Fatalf("hello ids %d %d", uid, gid)
	}
	p.client = m
	t.Cleanup(p.close)
	return p
}

func (p *muxPair) close() {
	p.closeOnce.Do(func() { p.toServer.Close() })
}

// run runs argv with stdin and returns stdout, stderr and the exit code.
func run(s *Stream, stdin []byte) (stdout, stderr []byte, code int, err error) {
	go func() {
		s.Write(stdin)
		s.CloseWrite()
	}()
	var eb bytes.Buffer
	errDone := make(chan struct{})
	go func() {
		io.Copy(&eb, s.Stderr())
		close(errDone)
	}()
	stdout, err = io.ReadAll(s)
	<-errDone
	if err != nil {
		return nil, nil, -1, err
	}
	code, err = s.Wait()
	return stdout, eb.Bytes(), code, err
}

// Many streams at once, of random sizes (several windows for some), all
// arrive whole and in order, with their stderr and exit codes; a stream
// nobody reads holds back only itself.
func TestMuxStreams(t *testing.T) {
	p := startMuxPair(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	// A big output nobody reads yet: more than a window.
	stalled, err := p.client.Open([]string{"gen", strconv.Itoa(3 * InitialWindow), "7"})
	if err != nil {
		t.Fatal(err)
	}
	stalled.CloseWrite()

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 24 {
		size := rng.IntN(64 << 10)
		if i%6 == 0 {
			size = InitialWindow + rng.IntN(3*InitialWindow)
		}
		in := genBytes(size, seed+uint64(i))
		args := []string{"echo"}
		for range i % 4 {
			args = append(args, fmt.Sprint("a", rng.IntN(100)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.client.Open(args)
			if err != nil {
				errs <- err
				return
			}
			out, stderr, code, err := run(s, in)
			switch {
			case err != nil:
				errs <- err
			case !bytes.Equal(out, in):
				errs <- fmt.Errorf("stream %d: %d bytes back, sent %d (equal prefix: %v)", i, len(out), len(in), bytes.HasPrefix(in, out))
			case string(stderr) != fmt.Sprintf("err:%q", args[1:]):
				errs <- fmt.Errorf("stream %d: stderr %q", i, stderr)
			case code != len(args)-1:
				errs <- fmt.Errorf("stream %d: exit %d", i, code)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("streams stuck behind the unread one")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	out, _, code, err := run(stalled, nil)
	if err != nil || code != 0 || !bytes.Equal(out, genBytes(3*InitialWindow, 7)) {
		t.Fatalf("the stalled stream: %d bytes, exit %d, %v", len(out), code, err)
	}
	if n := p.client.Streams(); n != 0 {
		t.Errorf("%d streams still open", n)
	}
}

// Abandoning a stream stops its command on the agent; the mux goes on.
func TestMuxAbandon(t *testing.T) {
	p := startMuxPair(t)
	s, err := p.client.Open([]string{"block"})
	if err != nil {
		t.Fatal(err)
	}
	errGone := errors.New("caller gone")
	s.Abandon(errGone)
	select {
	case <-p.killed:
	case <-time.After(5 * time.Second):
		t.Fatal("the command was not stopped")
	}
	if _, err := s.Wait(); !errors.Is(err, errGone) {
		t.Errorf("Wait after abandon: %v", err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, errGone) {
		t.Errorf("Read after abandon: %v", err)
	}
	// Still usable.
	s2, _ := p.client.Open([]string{"echo"})
	if out, _, code, err := run(s2, []byte("hi")); err != nil || string(out) != "hi" || code != 0 {
		t.Fatalf("after an abandon: %q %d %v", out, code, err)
	}
	if _, _, code, _ := run(mustOpen(t, p.client, "nosuch"), nil); code != 127 {
		t.Errorf("unknown command: exit %d", code)
	}
}

func mustOpen(t *testing.T, m *Mux, argv ...string) *Stream {
	t.Helper()
	s, err := m.Open(argv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// When the link goes, every stream fails and nothing hangs: the agent's
// commands are stopped and ServeMux returns.
func TestMuxLinkGone(t *testing.T) {
	p := startMuxPair(t)
	s := mustOpen(t, p.client, "block")
	s2 := mustOpen(t, p.client, "echo")
	time.Sleep(50 * time.Millisecond) // opened on the agent
	p.close()
	select {
	case err := <-p.served:
		if err != nil {
			t.Errorf("ServeMux at EOF: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeMux still running after its input ended")
	}
	select {
	case <-p.killed:
	case <-time.After(5 * time.Second):
		t.Fatal("the command was not stopped when the link went")
	}
	select {
	case <-p.client.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client mux did not notice")
	}
	for _, st := range []*Stream{s, s2} {
		if _, err := st.Wait(); err == nil {
			t.Error("Wait succeeded on a dead mux")
		}
	}
	if _, err := p.client.Open([]string{"echo"}); err == nil {
		t.Error("Open succeeded on a dead mux")
	}
}

// An agent whose client went silent (a link that died without the server
// noticing) ends after its idle limit; pings keep it.
func TestMuxIdle(t *testing.T) {
	const idle = 400 * time.Millisecond
	serve := func(ping bool) (error, time.Duration) {
		sr, cw := io.Pipe()
		cr, sw := io.Pipe()
		defer cw.Close()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- ServeMux(sr, sw, 0, 0, idle, testCommands(make(chan string, 1))) }()
		m, _, _, err := NewClientMux(cr, cw)
		if err != nil {
			t.Fatal(err)
		}
		mustOpen(t, m, "block") // a command waiting: still idle
		stopPing := time.After(3 * idle)
		for {
			select {
			case err := <-done:
				return err, time.Since(start)
			case <-stopPing:
				return nil, time.Since(start)
			case <-time.After(idle / 8):
				if ping {
					m.Ping()
				}
			}
		}
	}
	if err, d := serve(false); !errors.Is(err, ErrIdle) || d < idle || d > 3*idle {
		t.Errorf("silent client: ServeMux returned %v after %v, want ErrIdle after about %v", err, d, idle)
	}
	if err, d := serve(true); err != nil {
		t.Errorf("pinging client: ServeMux returned %v after %v", err, d)
	}
}

// What breaks the format ends the mux with ErrMalformedMux.
func TestMuxMalformed(t *testing.T) {
	frame := func(typ byte, id uint32, payload []byte) []byte {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		WriteFrame(w, Frame{Type: typ, ID: id, Payload: payload})
		w.Flush()
		return b.Bytes()
	}
	hello := frame(FrameHello, 0, append([]byte(AgentHello), 0, 0, 0, 1, 0, 0, 0, 2))
	for name, tail := range map[string][]byte{
		"beyond the window": append(frame(FrameData, 1, make([]byte, MaxPayload)), bytes.Repeat(frame(FrameData, 1, make([]byte, MaxPayload)), InitialWindow/MaxPayload)...),
		"unknown type":      frame('Z', 1, nil),
		"second hello":      hello,
		"open from agent":   frame(FrameOpen, 5, []byte("x\x00")),
		"kill from agent":   frame(FrameKill, 1, nil),
		"exit too short":    frame(FrameExit, 1, []byte{1}),
		"truncated":         frame(FrameData, 1, []byte("abc"))[:10],
		"data after eof":    append(frame(FrameEOF, 1, nil), frame(FrameData, 1, []byte("x"))...),
	} {
		t.Run(name, func(t *testing.T) {
			// The bad frames come only once stream 1 is open.
			pr, pw := io.Pipe()
			go pw.Write(hello)
			m, _, _, err := NewClientMux(pr, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.Open([]string{"x"})
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				pw.Write(tail)
				pw.Close()
			}()
			<-m.Done()
			if !errors.Is(m.Err(), ErrMalformedMux) {
				t.Errorf("mux ended with %v", m.Err())
			}
			if s != nil {
				if _, err := s.Wait(); err == nil {
					t.Error("Wait succeeded")
				}
			}
		})
	}
	if _, _, _, err := NewClientMux(bytes.NewReader(frame(FrameHello, 0, []byte("remotefs-agent 0\n\x00\x00\x00\x00\x00\x00\x00\x00"))), io.Discard); !errors.Is(err, ErrMalformedMux) {
		t.Errorf("another version's hello: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	WriteFrame(w, Frame{Type: FrameOpen, ID: 1, Payload: []byte("walk\x00--\x00/r\x00")})
	WriteFrame(w, Frame{Type: FrameData, ID: 1, Payload: []byte("data")})
	WriteFrame(w, Frame{Type: FrameWindow, ID: 1, Payload: []byte{0, 1, 0, 0}})
	WriteFrame(w, Frame{Type: FrameExit, ID: 1, Payload: []byte{0, 0, 0, 1}})
	WriteFrame(w, Frame{Type: FrameEOF, ID: 2})
	WriteFrame(w, Frame{Type: FramePing})
	w.Flush()
	f.Add(b.Bytes())
	f.Add([]byte("D\x00\x00\x00\x01\x00\x00\x00\x01x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The decoder: what it accepts re-encodes to exactly the input.
		br := bufio.NewReader(bytes.NewReader(data))
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		var err error
		for {
			var fr Frame
			fr, err = ReadFrame(br)
			if err != nil {
				break
			}
			if fr.Type == FrameOpen {
				if argv, err := DecodeArgv(fr.Payload); err == nil {
					if p, err := EncodeArgv(argv); err != nil || !bytes.Equal(p, fr.Payload) {
						t.Fatalf("argv %q re-encodes to %q, %v", fr.Payload, p, err)
					}
				}
			}
			WriteFrame(bw, fr)
		}
		bw.Flush()
		if err != io.EOF && !errors.Is(err, ErrMalformedMux) {
			t.Fatalf("error %v", err)
		}
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("re-encoded %q is no prefix of %q", out.Bytes(), data)
		}
		if err == io.EOF && out.Len() != len(data) {
			t.Fatalf("clean end after %d of %d bytes", out.Len(), len(data))
		}

		// Both ends of a mux fed the same bytes end without hanging.
		hello := []byte{FrameHello, 0, 0, 0, 0, 0, 0, 0, byte(len(AgentHello) + 8)}
		hello = append(append(hello, AgentHello...), make([]byte, 8)...)
		m, _, _, err := NewClientMux(bytes.NewReader(append(hello, data...)), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := m.Open([]string{"x"})
		<-m.Done()
		if s != nil {
			s.Wait()
		}
		done := make(chan struct{})
		go func() {
			ServeMux(bytes.NewReader(data), io.Discard, 0, 0, 0, testCommands(make(chan string, 100)))
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeMux did not end")
		}
	})
}
