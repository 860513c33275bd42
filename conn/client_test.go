package conn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// pipeServer runs pkg/sftp's server in-process over pipes, serving dir.
// The server-to-client stream goes through relay, so a test can slow it.
func pipeClient(t testing.TB, dir string, opts Options, relay func(dst io.Writer, src io.Reader)) *Client {
	t.Helper()
	clientRead, relayWrite := io.Pipe()
	relayRead, serverWrite := io.Pipe()
	serverRead, clientWrite := io.Pipe()
	if relay == nil {
		relay = func(dst io.Writer, src io.Reader) { io.Copy(dst, src) }
	}
	go func() {
		relay(relayWrite, relayRead)
		relayWrite.Close()
	}()
	// No WithServerWorkingDirectory: with it, pkg/sftp's server makes
	// relative symlink targets absolute. Client paths are absolute anyway.
	srv, err := sftp.NewServer(rwc{serverRead, serverWrite})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	c, err := NewClientPipe(context.Background(), clientRead, clientWrite, "pipe", dir, opts, serverRead, serverWrite, relayRead)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type rwc struct {
	*io.PipeReader
	*io.PipeWriter
}

func (p rwc) Close() error {
	p.PipeReader.Close()
	return p.PipeWriter.Close()
}

func TestPipeRemoteSuite(t *testing.T) {
	runRemoteSuite(t, func(t *testing.T) (Remote, string) {
		dir := t.TempDir()
		return pipeClient(t, dir, Options{}, nil), dir
	})
}

func TestNewClientPipeRoot(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	for _, tc := range []struct {
		root string
		want error
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist},
		{filepath.Join(dir, "file"), syscall.ENOTDIR},
	} {
		clientRead, serverWrite := io.Pipe()
		serverRead, clientWrite := io.Pipe()
		srv, _ := sftp.NewServer(rwc{serverRead, serverWrite}, sftp.WithServerWorkingDirectory(dir))
		go srv.Serve()
		_, err := NewClientPipe(context.Background(), clientRead, clientWrite, "pipe", tc.root, Options{Logger: quietLogger}, serverRead, serverWrite)
		if !errors.Is(err, ErrRemotePath) || !errors.Is(err, tc.want) {
			t.Errorf("root %s: %v", tc.root, err)
		}
	}
	// Relative to the server's working directory.
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	clientRead, serverWrite := io.Pipe()
	serverRead, clientWrite := io.Pipe()
	srv, _ := sftp.NewServer(rwc{serverRead, serverWrite}, sftp.WithServerWorkingDirectory(dir))
	go srv.Serve()
	c, err := NewClientPipe(context.Background(), clientRead, clientWrite, "pipe", "sub", Options{Logger: quietLogger}, serverRead, serverWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RootPath() != filepath.Join(dir, "sub") {
		t.Fatalf("root %s", c.RootPath())
	}
}

// newStatus builds the error pkg/sftp returns for a status reply.
func newStatus(code uint32) error { return &sftp.StatusError{Code: code} }

func TestStatusMapping(t *testing.T) {
	c := &Client{label: "x", done: make(chan struct{}), log: quietLogger}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{os.ErrNotExist, fs.ErrNotExist},
		{os.ErrPermission, fs.ErrPermission},
		{newStatus(fxNoSuchPath), fs.ErrNotExist},
		{newStatus(fxPermissionDenied), fs.ErrPermission},
		{newStatus(fxOpUnsupported), ErrUnsupported},
		{newStatus(fxFileAlreadyExists), fs.ErrExist},
		{newStatus(fxDirNotEmpty), ErrNotEmpty},
		{newStatus(fxNotADirectory), syscall.ENOTDIR},
		{newStatus(fxNoSpace), syscall.ENOSPC},
		{newStatus(fxQuotaExceeded), syscall.EDQUOT},
		{newStatus(fxWriteProtect), syscall.EROFS},
		{newStatus(fxFileIsADirectory), syscall.EISDIR},
		{newStatus(fxInvalidFilename), fs.ErrInvalid},
		{&fs.PathError{Op: "remove", Path: "/abs/p", Err: newStatus(fxPermissionDenied)}, fs.ErrPermission},
	} {
		err := c.mapErr("op", "rel/p", tc.err)
		if !errors.Is(err, tc.want) {
			t.Errorf("%v mapped to %v, want %v", tc.err, err, tc.want)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Path != "rel/p" || pe.Op != "op" {
			t.Errorf("%v mapped to %#v", tc.err, err)
		}
		if c.Err() != nil {
			t.Fatalf("%v killed the connection", tc.err)
		}
	}
	// The server's text stays in the message.
	if err := c.mapErr("op", "p", newStatus(fxNoSpace)); !strings.Contains(err.Error(), "SSH_FX_NO_SPACE") &&
		!strings.Contains(err.Error(), "server:") {
		t.Errorf("message %q lost the server's text", err)
	}
	// Transport errors kill the connection and wrap ErrOffline.
	for _, e := range []error{sftp.ErrSSHFxConnectionLost, io.EOF, newStatus(fxConnectionLost)} {
		c := &Client{label: "x", done: make(chan struct{}), log: quietLogger}
		err := c.mapErr("op", "p", e)
		if !errors.Is(err, ErrOffline) || c.Err() == nil {
			t.Errorf("%v: %v, dead=%v", e, err, c.Err())
		}
	}
}

// stuckServer answers the SFTP version handshake, then reads requests and
// never replies: a server (or link) that hangs.
func stuckServer(t *testing.T) (clientRead io.Reader, clientWrite io.WriteCloser, closers []io.Closer) {
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	go func() {
		var hdr [9]byte // length, type INIT, version
		if _, err := io.ReadFull(sr, hdr[:]); err != nil {
			return
		}
		var version [9]byte
		binary.BigEndian.PutUint32(version[0:], 5)
		version[4] = 2 // SSH_FXP_VERSION
		binary.BigEndian.PutUint32(version[5:], 3)
		sw.Write(version[:])
		io.Copy(io.Discard, sr)
	}()
	return cr, cw, []io.Closer{sr, sw}
}

// A call on a hung server returns within OpTimeout with ErrOffline, and
// the connection is declared dead.
func TestOpTimeoutKillsConnection(t *testing.T) {
	rd, wr, closers := stuckServer(t)
	c := newClientShell("stuck", Options{OpTimeout: 200 * time.Millisecond, Logger: quietLogger}, append([]io.Closer{wr}, closers...))
	if err := c.startSFTPPipe(rd, wr); err != nil {
		t.Fatal(err)
	}
	c.root = "/srv"
	start := time.Now()
	_, err := c.Lstat(context.Background(), "x")
	took := time.Since(start)
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("err = %v", err)
	}
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("took %v", took)
	}
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
	if !strings.Contains(err.Error(), "no reply from the server") {
		t.Errorf("message %q", err)
	}
	// Later calls fail at once.
	start = time.Now()
	if _, err := c.ReadDir(context.Background(), ""); !errors.Is(err, ErrOffline) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("after death: %v in %v", err, time.Since(start))
	}
}

// The caller's context ending returns at once and leaves the connection
// up: a short caller deadline says nothing about the link.
func TestContextEndsCallNotConnection(t *testing.T) {
	rd, wr, closers := stuckServer(t)
	c := newClientShell("stuck", Options{OpTimeout: 10 * time.Second, Logger: quietLogger}, append([]io.Closer{wr}, closers...))
	if err := c.startSFTPPipe(rd, wr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.root = "/srv"
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var buf bytes.Buffer
	start := time.Now()
	_, err := c.Fetch(ctx, "x", &buf)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("err = %v after %v", err, time.Since(start))
	}
	if c.Err() != nil {
		t.Fatalf("connection killed: %v", c.Err())
	}
}

// A transfer that keeps moving is not cut by OpTimeout, even when it takes
// much longer than OpTimeout in total.
func TestSlowTransferNotCut(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(1 << 20)
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	throttle := func(dst io.Writer, src io.Reader) {
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
				time.Sleep(8 * time.Millisecond)
			}
			if err != nil {
				return
			}
		}
	}
	c := pipeClient(t, dir, Options{OpTimeout: 300 * time.Millisecond}, throttle)
	var buf bytes.Buffer
	start := time.Now()
	if _, err := c.Fetch(context.Background(), "f", &buf); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 600*time.Millisecond {
		t.Logf("transfer took only %v; the test does not prove much", took)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("content differs")
	}
	p := make([]byte, len(data))
	if n, _, err := c.ReadAt(context.Background(), "f", p, 0); err != nil || n != len(p) {
		t.Fatalf("ReadAt: %d %v", n, err)
	}
}

// A caller's writer that is slow does not count against the server.
func TestSlowCallerWriterNotCut(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), randomBytes(256<<10), 0o644)
	c := pipeClient(t, dir, Options{OpTimeout: 100 * time.Millisecond}, nil)
	w := writerFunc(func(p []byte) (int, error) {
		time.Sleep(150 * time.Millisecond)
		return len(p), nil
	})
	if _, err := c.Fetch(context.Background(), "f", w); err != nil {
		t.Fatal(err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestCloseFailsCalls(t *testing.T) {
	c := pipeClient(t, t.TempDir(), Options{}, nil)
	c.Close()
	<-c.Done()
	_, err := c.Lstat(context.Background(), "")
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := c.Exec(context.Background(), "true", nil, nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Exec without ssh: %v", err)
	}
}

func TestTempName(t *testing.T) {
	n := TempName("main.go")
	if at, ok := TempCreated(n); !ok || time.Since(at) > time.Minute || time.Since(at) < -time.Minute {
		t.Fatalf("TempCreated(%q) = %v, %v", n, at, ok)
	}
	if _, ok := TempCreated(TempPrefix + "zz-x"); ok {
		t.Fatal("TempCreated accepted a foreign name")
	}
	if !strings.HasPrefix(n, TempPrefix) || !strings.HasSuffix(n, "-main.go") || !IsTempName(n) {
		t.Fatalf("TempName = %q", n)
	}
	if TempName("x") == TempName("x") {
		t.Fatal("not random")
	}
	long := strings.Repeat("a", 255)
	if n := TempName(long); len(n) > 255 {
		t.Fatalf("len %d", len(n))
	}
}
