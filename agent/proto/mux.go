package proto

// The agent's wire format: one exec channel (`remotefs __agent`) carries
// many requests at once, each a stream with its own id, like the commands
// of ssh sessions: the client opens a stream with a command line (argv:
// a command the agent knows, never a shell line), sends its stdin, reads
// its stdout and stderr, and gets its exit status.
//
// Everything is a frame. All integers are big-endian.
//
//	frame:  type:uint8 id:uint32 len:uint32 payload[len]   (len <= MaxPayload)
//
//	'H' hello   agent -> client, first frame, id 0: AgentHello, uid:uint32, gid:uint32
//	'O' open    client -> agent: argv, each argument ended by NUL (at least one)
//	'D' data    stdin (client -> agent) or stdout (agent -> client)
//	'e' stderr  agent -> client
//	'F' eof     no more data from the sender on this stream (stdin, or stdout+stderr)
//	'x' exit    agent -> client: code:int32; the stream's last frame
//	'K' kill    client -> agent: stop the command (its context ends, its stdin fails)
//	'W' window  either way: credit:uint32, bytes of data the sender may send more
//	'P' ping    client -> agent, id 0: any payload up to 8 bytes
//	'p' pong    agent -> client, id 0: the ping's payload
//
// Flow control works like an ssh channel's: on each stream, each side may
// send InitialWindow bytes of data ('D' and 'e' together) and then only as
// much as the other side granted with 'W' frames, which it sends as its
// reader consumes. So a stream whose reader is slow holds back only
// itself, and the side reading frames never blocks: it only buffers, at
// most a window per stream.
//
// Frames for a stream id that is not open (one that ended, or was
// abandoned by the client) are dropped. Anything else that breaks the
// format (unknown type, a payload too long, more data than the window,
// an open of an id in use) is ErrMalformedMux, and ends the mux: it
// cannot be resynchronised.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// AgentCommand is the hidden subcommand of the remotefs binary that runs
// the per-connection agent: `remotefs __agent`.
const AgentCommand = "__agent"

// AgentHello starts the agent's first frame. Its number changes with any
// change of the format or of the commands' outputs; both ends are the same
// build, so a mismatch means a wrong binary, never something to adapt to.
const AgentHello = "remotefs-agent 1\n"

// Frame types.
const (
	FrameHello  = 'H'
	FrameOpen   = 'O'
	FrameData   = 'D'
	FrameStderr = 'e'
	FrameEOF    = 'F'
	FrameExit   = 'x'
	FrameKill   = 'K'
	FrameWindow = 'W'
	FramePing   = 'P'
	FramePong   = 'p'
)

const (
	// MaxPayload is the largest frame payload.
	MaxPayload = 256 << 10
	// InitialWindow is how much data each side of a stream may send
	// before the other grants more.
	InitialWindow = 2 << 20
	maxArgs       = 4096
)

// ErrMalformedMux: the agent stream does not follow the format.
var ErrMalformedMux = errors.New("malformed agent stream")

// ErrKilled: the client stopped the command.
var ErrKilled = errors.New("stopped by the client")

// Frame is one decoded frame.
type Frame struct {
	Type    byte
	ID      uint32
	Payload []byte
}

// ReadFrame reads one frame. At a clean end of the stream (no byte of a
// new frame) it returns io.EOF; a frame that is cut short or breaks the
// format is an error wrapping ErrMalformedMux. It checks each type's
// payload size, not the stream state (Mux does).
func ReadFrame(r *bufio.Reader) (Frame, error) {
	var h [9]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: truncated frame header", ErrMalformedMux)
		}
		return Frame{}, err
	}
	f := Frame{Type: h[0], ID: binary.BigEndian.Uint32(h[1:]), Payload: nil}
	n := binary.BigEndian.Uint32(h[5:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: payload of %d bytes", ErrMalformedMux, n)
	}
	ok := true
	switch f.Type {
	case FrameData, FrameStderr, FrameOpen, FrameHello:
		ok = n > 0
	case FrameEOF, FrameKill:
		ok = n == 0
	case FrameExit, FrameWindow:
		ok = n == 4
	case FramePing, FramePong:
		ok = n <= 8 && f.ID == 0
	default:
		return Frame{}, fmt.Errorf("%w: frame type %q", ErrMalformedMux, f.Type)
	}
	if !ok {
		return Frame{}, fmt.Errorf("%w: %q frame with %d bytes", ErrMalformedMux, f.Type, n)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: truncated frame", ErrMalformedMux)
		}
		return Frame{}, err
	}
	return f, nil
}

// WriteFrame writes one frame (not flushed).
func WriteFrame(w *bufio.Writer, f Frame) error {
	if len(f.Payload) > MaxPayload {
		return fmt.Errorf("frame of %d bytes cannot be encoded", len(f.Payload))
	}
	var h [9]byte
	h[0] = f.Type
	binary.BigEndian.PutUint32(h[1:], f.ID)
	binary.BigEndian.PutUint32(h[5:], uint32(len(f.Payload)))
	w.Write(h[:])
	_, err := w.Write(f.Payload)
	return err
}

// EncodeArgv is an open frame's payload.
func EncodeArgv(argv []string) ([]byte, error) {
	if len(argv) == 0 || len(argv) > maxArgs {
		return nil, fmt.Errorf("%d arguments cannot be sent", len(argv))
	}
	var b bytes.Buffer
	for _, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("NUL in argument %q", a)
		}
		b.WriteString(a)
		b.WriteByte(0)
	}
	if b.Len() > MaxPayload {
		return nil, fmt.Errorf("arguments of %d bytes cannot be sent", b.Len())
	}
	return b.Bytes(), nil
}

// DecodeArgv reads an open frame's payload.
func DecodeArgv(p []byte) ([]string, error) {
	if len(p) == 0 || p[len(p)-1] != 0 {
		return nil, fmt.Errorf("%w: arguments not NUL-terminated", ErrMalformedMux)
	}
	argv := strings.Split(string(p[:len(p)-1]), "\x00")
	if len(argv) > maxArgs {
		return nil, fmt.Errorf("%w: %d arguments", ErrMalformedMux, len(argv))
	}
	return argv, nil
}

// Mux is one end of an agent stream: the client's (NewClientMux) or the
// agent's (ServeMux). Its methods are safe for concurrent use.
//
// One goroutine reads frames and only ever buffers what it reads (at most
// a window per stream) and wakes waiters: it never writes, so it cannot be
// held up by a peer that does not read. Writers take wmu for one frame at
// a time; no lock is held while a writer waits for window credit.
type Mux struct {
	// Set at construction.
	client bool
	bw     *bufio.Writer
	accept func(s *Stream, argv []string) // agent: called on its own goroutine per open
	done   chan struct{}                  // closed when the mux ended

	wmu sync.Mutex // held while one frame is written and flushed

	// cmds counts the agent's commands running (Add under mu while the
	// mux is open, so never after ServeMux started waiting).
	cmds sync.WaitGroup

	// LastRecv is when a frame last arrived (UnixNano).
	LastRecv atomic.Int64
	pongs    chan []byte

	mu      sync.Mutex
	streams map[uint32]*Stream // guarded by mu: open streams
	nextID  uint32             // guarded by mu
	err     error              // guarded by mu: why it ended; set once, before done is closed
}

// Stream is one request on a Mux.
type Stream struct {
	// Set at construction.
	m   *Mux
	id  uint32
	ctx context.Context // agent: ends on kill or when the mux ends
	end context.CancelFunc

	mu      sync.Mutex
	cond    *sync.Cond
	in      [2][]byte // guarded by mu: data received (0: stdin or stdout; 1: stderr)
	inEOF   bool      // guarded by mu: the sender sent EOF (or exit)
	recvWin int       // guarded by mu: bytes the peer may still send
	owed    int       // guarded by mu: bytes consumed, not yet granted back
	sendWin int       // guarded by mu: bytes this side may still send
	exited  bool      // guarded by mu: client: the exit frame came
	code    int       // guarded by mu
	err     error     // guarded by mu: the stream ended abnormally (killed, mux died, abandoned)
}

func newMux(r io.Reader, w io.Writer, client bool) *Mux {
	m := &Mux{client: client, bw: bufio.NewWriterSize(w, 64<<10), done: make(chan struct{}),
		streams: map[uint32]*Stream{}, pongs: make(chan []byte, 4)}
	return m
}

// NewClientMux reads the agent's hello from r and starts reading frames.
// The caller bounds the wait for the hello (close r to give up).
func NewClientMux(r io.Reader, w io.Writer) (m *Mux, uid, gid uint32, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	f, err := ReadFrame(br)
	if err != nil {
		return nil, 0, 0, err
	}
	if f.Type != FrameHello || f.ID != 0 || len(f.Payload) != len(AgentHello)+8 || string(f.Payload[:len(AgentHello)]) != AgentHello {
		return nil, 0, 0, fmt.Errorf("%w: unexpected greeting %q", ErrMalformedMux, f.Payload)
	}
	id := f.Payload[len(AgentHello):]
	m = newMux(r, w, true)
	go m.readLoop(br)
	return m, binary.BigEndian.Uint32(id), binary.BigEndian.Uint32(id[4:]), nil
}

// ServeMux writes the hello and serves streams until r ends (nil), breaks
// the format, or nothing came from the client for idle (ErrIdle; 0: no
// limit; the client pings every few seconds); accept runs each opened
// stream's command and must end it with Exit. When ServeMux returns, every
// stream's context has ended and each command has returned or had
// StopGrace to do so (an upload cut short removes its temporary file); a
// read of r may still be pending: the caller exits.
func ServeMux(r io.Reader, w io.Writer, uid, gid uint32, idle time.Duration, accept func(s *Stream, argv []string)) error {
	m := newMux(r, w, false)
	m.accept = accept
	hello := append([]byte(AgentHello), u32(uid)...)
	hello = append(hello, u32(gid)...)
	if err := m.send(Frame{Type: FrameHello, Payload: hello}); err != nil {
		return err
	}
	m.LastRecv.Store(nowNano())
	go m.pongLoop()
	go m.readLoop(bufio.NewReaderSize(r, 256<<10))
	if idle > 0 {
		go func() {
			t := time.NewTicker(idle / 4)
			defer t.Stop()
			for {
				select {
				case <-m.done:
					return
				case <-t.C:
					if time.Duration(nowNano()-m.LastRecv.Load()) >= idle {
						m.Close(ErrIdle)
						return
					}
				}
			}
		}()
	}
	<-m.done
	ended := make(chan struct{})
	go func() {
		m.cmds.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(StopGrace):
	}
	if err := m.Err(); !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// StopGrace is how long ServeMux waits for the commands once the mux has
// ended.
const StopGrace = 3 * time.Second

// ErrIdle: nothing came from the client for the agent's idle limit (the
// link died without the server noticing).
var ErrIdle = errors.New("nothing from the client for too long")

// Done is closed when the mux has ended.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err says why the mux ended (io.EOF: the other side closed it), or nil.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close ends the mux: every stream fails with err. It does not close the
// underlying reader or writer (the caller does, which ends the read loop).
func (m *Mux) Close(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	streams := m.streams
	m.streams = map[uint32]*Stream{}
	m.mu.Unlock()
	close(m.done)
	for _, s := range streams {
		s.fail(err)
	}
}

// Streams is the number of open streams.
func (m *Mux) Streams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}

func (m *Mux) send(f Frame) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	select {
	case <-m.done:
		return m.Err()
	default:
	}
	WriteFrame(m.bw, f)
	if err := m.bw.Flush(); err != nil {
		m.Close(fmt.Errorf("writing to the agent stream: %w", err))
		return err
	}
	return nil
}

// Ping sends a ping; the agent answers with a pong (any frame that
// arrives counts in LastRecv).
func (m *Mux) Ping() error { return m.send(Frame{Type: FramePing}) }

func (m *Mux) pongLoop() {
	for {
		select {
		case <-m.done:
			return
		case p := <-m.pongs:
			m.send(Frame{Type: FramePong, Payload: p})
		}
	}
}

// readLoop reads frames until the stream ends or breaks.
func (m *Mux) readLoop(br *bufio.Reader) {
	for {
		f, err := ReadFrame(br)
		if err != nil {
			m.Close(err)
			return
		}
		m.LastRecv.Store(nowNano())
		if err := m.handle(f); err != nil {
			m.Close(err)
			return
		}
	}
}

func (m *Mux) handle(f Frame) error {
	switch f.Type {
	case FrameHello:
		return fmt.Errorf("%w: a second hello", ErrMalformedMux)
	case FramePing:
		if m.client {
			return fmt.Errorf("%w: ping from the agent", ErrMalformedMux)
		}
		select {
		case m.pongs <- f.Payload:
		default: // pings faster than pongs go: one answer is enough
		}
		return nil
	case FramePong:
		return nil
	case FrameOpen:
		if m.client {
			return fmt.Errorf("%w: open from the agent", ErrMalformedMux)
		}
		argv, err := DecodeArgv(f.Payload)
		if err != nil {
			return err
		}
		m.mu.Lock()
		if m.err != nil {
			m.mu.Unlock()
			return m.err
		}
		if _, dup := m.streams[f.ID]; dup {
			m.mu.Unlock()
			return fmt.Errorf("%w: stream %d opened twice", ErrMalformedMux, f.ID)
		}
		s := m.newStream(f.ID)
		s.ctx, s.end = context.WithCancel(context.Background())
		m.streams[f.ID] = s
		m.cmds.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.cmds.Done()
			m.accept(s, argv)
		}()
		return nil
	}
	if (m.client && f.Type == FrameKill) || (!m.client && (f.Type == FrameExit || f.Type == FrameStderr)) {
		return fmt.Errorf("%w: %q frame in the wrong direction", ErrMalformedMux, f.Type)
	}
	m.mu.Lock()
	s := m.streams[f.ID]
	if s != nil && f.Type == FrameExit {
		delete(m.streams, f.ID)
	}
	m.mu.Unlock()
	if s == nil {
		return nil // ended or abandoned
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.cond.Broadcast()
	switch f.Type {
	case FrameData, FrameStderr:
		if len(f.Payload) > s.recvWin {
			return fmt.Errorf("%w: %d bytes on stream %d beyond its window", ErrMalformedMux, len(f.Payload), f.ID)
		}
		if s.inEOF {
			return fmt.Errorf("%w: data after EOF on stream %d", ErrMalformedMux, f.ID)
		}
		s.recvWin -= len(f.Payload)
		k := 0
		if f.Type == FrameStderr {
			k = 1
		}
		s.in[k] = append(s.in[k], f.Payload...)
	case FrameEOF:
		s.inEOF = true
	case FrameExit:
		s.inEOF, s.exited, s.code = true, true, int(int32(binary.BigEndian.Uint32(f.Payload)))
	case FrameKill:
		if s.err == nil {
			s.err = ErrKilled
		}
		s.end()
	case FrameWindow:
		c := int(binary.BigEndian.Uint32(f.Payload))
		if s.sendWin+c > 1<<30 {
			return fmt.Errorf("%w: window overflow on stream %d", ErrMalformedMux, f.ID)
		}
		s.sendWin += c
	}
	return nil
}

// newStream makes a stream. Caller holds m.mu.
func (m *Mux) newStream(id uint32) *Stream {
	s := &Stream{m: m, id: id, recvWin: InitialWindow, sendWin: InitialWindow}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Open starts a command on the agent (client side).
func (m *Mux) Open(argv []string) (*Stream, error) {
	p, err := EncodeArgv(argv)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	m.nextID++
	s := m.newStream(m.nextID)
	m.streams[s.id] = s
	m.mu.Unlock()
	if err := m.send(Frame{Type: FrameOpen, ID: s.id, Payload: p}); err != nil {
		return nil, err
	}
	return s, nil
}

// fail ends the stream's waits with err (the first reason wins).
func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.cond.Broadcast()
	if s.end != nil {
		s.end()
	}
}

// Context ends when the client killed the stream or the mux ended (agent
// side).
func (s *Stream) Context() context.Context { return s.ctx }

// Read reads stdin (agent side) or stdout (client side).
func (s *Stream) Read(p []byte) (int, error) { return s.read(0, p) }

// Stderr reads the command's stderr (client side).
func (s *Stream) Stderr() io.Reader { return stderrReader{s} }

type stderrReader struct{ s *Stream }

func (r stderrReader) Read(p []byte) (int, error) { return r.s.read(1, p) }

func (s *Stream) read(k int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	for len(s.in[k]) == 0 && !s.inEOF && s.err == nil {
		s.cond.Wait()
	}
	if len(s.in[k]) == 0 {
		err := s.err
		if err == nil || (s.inEOF && !errors.Is(err, ErrKilled)) {
			err = io.EOF
		}
		s.mu.Unlock()
		return 0, err
	}
	n := copy(p, s.in[k])
	s.in[k] = s.in[k][n:]
	if len(s.in[k]) == 0 {
		s.in[k] = nil
	}
	s.owed += n
	grant := 0
	if s.owed >= InitialWindow/4 && s.err == nil && !s.inEOF {
		grant, s.owed = s.owed, 0
		s.recvWin += grant
	}
	s.mu.Unlock()
	if grant > 0 {
		s.m.send(Frame{Type: FrameWindow, ID: s.id, Payload: u32(uint32(grant))})
	}
	return n, nil
}

// Write sends stdin (client side) or stdout (agent side).
func (s *Stream) Write(p []byte) (int, error) { return s.write(FrameData, p) }

// StderrWriter writes the command's stderr (agent side).
func (s *Stream) StderrWriter() io.Writer { return stderrWriter{s} }

type stderrWriter struct{ s *Stream }

func (w stderrWriter) Write(p []byte) (int, error) { return w.s.write(FrameStderr, p) }

func (s *Stream) write(typ byte, p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		s.mu.Lock()
		for s.sendWin == 0 && s.err == nil && !s.exited {
			s.cond.Wait()
		}
		if s.err != nil || s.exited {
			err := s.err
			if err == nil {
				err = io.ErrClosedPipe
			}
			s.mu.Unlock()
			return n, err
		}
		c := min(len(p), s.sendWin, MaxPayload)
		s.sendWin -= c
		s.mu.Unlock()
		if err := s.m.send(Frame{Type: typ, ID: s.id, Payload: p[:c]}); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CloseWrite sends EOF: no more stdin (client) or output (agent).
func (s *Stream) CloseWrite() error {
	return s.m.send(Frame{Type: FrameEOF, ID: s.id})
}

// Exit ends the stream with the command's exit code (agent side).
func (s *Stream) Exit(code int) error {
	s.m.mu.Lock()
	if s.m.streams[s.id] == s {
		delete(s.m.streams, s.id)
	}
	s.m.mu.Unlock()
	s.fail(io.ErrClosedPipe)
	return s.m.send(Frame{Type: FrameExit, ID: s.id, Payload: u32(uint32(int32(code)))})
}

// Wait waits for the exit code (client side). It fails when the stream was
// abandoned or the mux ended first.
func (s *Stream) Wait() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.exited && s.err == nil {
		s.cond.Wait()
	}
	if s.exited {
		return s.code, nil
	}
	return -1, s.err
}

// Abandon stops the command (client side): the agent gets a kill, and
// every read, write and Wait of the stream fails with err from now on. It
// does not wait for the network.
func (s *Stream) Abandon(err error) {
	s.m.mu.Lock()
	if s.m.streams[s.id] == s {
		delete(s.m.streams, s.id)
	}
	s.m.mu.Unlock()
	s.mu.Lock()
	if s.exited {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.fail(err)
	go s.m.send(Frame{Type: FrameKill, ID: s.id})
}

func nowNano() int64 { return time.Now().UnixNano() }
