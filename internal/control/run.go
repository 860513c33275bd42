package control

// Streaming requests, used by "run" (remotefs run COMMAND):
//
//  1. The client sends the request line with its stdin, stdout and stderr
//     attached (SCM_RIGHTS on the same sendmsg as the request's bytes), so
//     the daemon can wire the remote command straight to them: no output
//     passes through the client, stdout and stderr stay separate, and the
//     command sees end of file when the client's stdin ends.
//  2. The daemon answers progress lines while it flushes, then one line
//     with RunStatus{Started: true} once the command runs, then the final
//     reply (Done) with the exit status, or Error when nothing ran or the
//     command was lost.
//  3. Meanwhile the client may send RunEvent lines: window size changes and
//     signals to forward. Closing the connection (the client died) makes
//     the daemon stop the command; before it started, it runs nothing.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// RunRequest is the "run" request: a command to run on the server.
type RunRequest struct {
	// Args are the program and its arguments (not shell syntax).
	Args []string `json:"args"`
	// Dir is the working directory relative to the mount root, with
	// slashes; "" or "." is the root.
	Dir string `json:"dir"`
	// Terminal, when set, runs the command on a pseudo-terminal.
	Terminal *Terminal `json:"terminal,omitempty"`
}

// Terminal describes the client's terminal.
type Terminal struct {
	Term string `json:"term"`
	Rows int    `json:"rows"`
	Cols int    `json:"cols"`
}

// RunEvent is a message from the client while a run request is active.
type RunEvent struct {
	// Resize reports the terminal's new size.
	Resize *Terminal `json:"resize,omitempty"`
	// Signal is a signal to forward ("INT", "TERM", "HUP", "QUIT").
	// Before the command has started it cancels the run.
	Signal string `json:"signal,omitempty"`
	// Ready: the client has set up its terminal (raw mode) after Started;
	// on a pseudo-terminal the command's output waits for it, so none of
	// it is written through the terminal's cooked-mode processing.
	Ready bool `json:"ready,omitempty"`
}

// RunStatus travels in Reply.Extra of run replies.
type RunStatus struct {
	// Started: the command was started on the server.
	Started bool `json:"started,omitempty"`
	// Exited: the command ended and ExitCode is its status (for a signal
	// death 128 + the signal number, with Signal naming it).
	Exited   bool   `json:"exited,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
}

// RunReply is a reply carrying st.
func RunReply(st RunStatus) Reply {
	b, _ := json.Marshal(st)
	return Reply{Extra: b}
}

// Run decodes the RunStatus r carries; ok is false when it carries none.
func (r *Reply) Run() (st RunStatus, ok bool) {
	if len(r.Extra) == 0 || json.Unmarshal(r.Extra, &st) != nil {
		return RunStatus{}, false
	}
	return st, true
}

// maxFiles is the most files one request may carry.
const maxFiles = 8

// fileReader reads a connection with recvmsg, keeping the files passed
// along (SCM_RIGHTS) until a handler claims them.
type fileReader struct {
	c net.Conn // set at construction

	mu    sync.Mutex
	files []*os.File // guarded by mu: received, not yet claimed
}

func (r *fileReader) Read(p []byte) (int, error) {
	uc, ok := r.c.(*net.UnixConn)
	if !ok {
		return r.c.Read(p)
	}
	oob := make([]byte, unix.CmsgSpace(maxFiles*4))
	// On Linux the received descriptors are close-on-exec (net sets
	// MSG_CMSG_CLOEXEC).
	n, oobn, _, _, err := uc.ReadMsgUnix(p, oob)
	if oobn > 0 {
		r.keep(oob[:oobn])
	}
	return n, err
}

func (r *fileReader) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			r.files = append(r.files, os.NewFile(uintptr(fd), fmt.Sprintf("passed-fd-%d", len(r.files))))
		}
	}
}

func (r *fileReader) claim() []*os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.files
	r.files = nil
	return f
}

func (r *fileReader) closeUnclaimed() {
	for _, f := range r.claim() {
		f.Close()
	}
}

// Stream is the daemon side of one connection beyond its request.
type Stream struct {
	// Set at construction.
	in  *fileReader
	dec *json.Decoder // read by one goroutine at a time

	mu  sync.Mutex    // serialises Send
	enc *json.Encoder // guarded by mu
}

// Files hands over the files the client passed with its request, in the
// order it passed them; the caller closes them. Files not taken are closed
// when the handler returns.
func (s *Stream) Files() []*os.File { return s.in.claim() }

// Receive reads the client's next message into v. It fails (io.EOF) once
// the client has closed the connection, and when the handler has returned.
// One goroutine at a time.
func (s *Stream) Receive(v any) error { return s.dec.Decode(v) }

// Send writes a reply line that is not the last one (progress, or a
// RunReply); the handler's return value is the last. Safe for concurrent
// use.
func (s *Stream) Send(r Reply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enc.Encode(r)
}

// Conn is the client side of a streaming request (Open).
type Conn struct {
	// Set at construction.
	c   *net.UnixConn
	dec *json.Decoder // read by one goroutine at a time

	mu  sync.Mutex    // serialises Send
	enc *json.Encoder // guarded by mu
}

// Open sends req, with files attached, to the daemon at socket sock and
// returns the connection for the replies and further messages. ctx bounds
// connecting and sending only. It fails with ErrNoDaemon when no daemon
// answers. The files stay open in the caller too.
func Open(ctx context.Context, sock string, req Request, files ...*os.File) (*Conn, error) {
	if len(files) > maxFiles {
		return nil, fmt.Errorf("at most %d files per request", maxFiles)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, ErrNoDaemon
	}
	uc := nc.(*net.UnixConn)
	line, err := json.Marshal(req)
	if err != nil {
		uc.Close()
		return nil, err
	}
	line = append(line, '\n')
	stop := context.AfterFunc(ctx, func() { uc.SetWriteDeadline(time.Now()) })
	err = withFDs(files, func(fds []int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		n, _, err := uc.WriteMsgUnix(line, oob, nil)
		if err == nil && n < len(line) {
			_, err = uc.Write(line[n:])
		}
		return err
	})
	stop()
	if err != nil {
		uc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("send request to the daemon: %w", err)
	}
	uc.SetWriteDeadline(time.Time{})
	return &Conn{c: uc, dec: json.NewDecoder(uc), enc: json.NewEncoder(uc)}, nil
}

// withFDs calls fn with the descriptors of files, valid for the call. It
// uses SyscallConn, not Fd, which would switch a non-blocking descriptor
// to blocking mode (a change the file's other users would see).
func withFDs(files []*os.File, fn func(fds []int) error) error {
	var fds []int
	var inner error
	var step func(i int) error
	step = func(i int) error {
		if i == len(files) {
			inner = fn(fds)
			return nil
		}
		rc, err := files[i].SyscallConn()
		if err != nil {
			return fmt.Errorf("%s: %w", files[i].Name(), err)
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			serr = step(i + 1)
		})
		if err != nil {
			return fmt.Errorf("%s: %w", files[i].Name(), err)
		}
		return serr
	}
	if err := step(0); err != nil {
		return err
	}
	return inner
}

// Next returns the daemon's next reply line (progress, a RunReply, or the
// final one with Done set). io.EOF or another error means the connection
// ended without a final reply.
func (c *Conn) Next() (*Reply, error) {
	var r Reply
	if err := c.dec.Decode(&r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Send writes a message (a RunEvent) to the daemon. Safe for concurrent
// use.
func (c *Conn) Send(v any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(v)
}

// Close closes the connection; Next then fails.
func (c *Conn) Close() error { return c.c.Close() }
