package conn

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"remotefs/agent/proto"
)

// Client is one live SSH+SFTP connection serving one remote root. It is
// safe for concurrent use. Once the connection dies (Done is closed) every
// call fails at once with an error wrapping ErrOffline; a new Client is
// needed (Manager does that).
type Client struct {
	// Set at construction; root is set by setRoot before the Client is
	// handed out. Never changed afterwards.
	label       string
	root        string
	sftp        *sftp.Client
	ssh         transport    // nil when not over ssh (NewClientPipe)
	ping        func() error // one round trip to the server (keepalive, probe); nil without ssh
	target      *Target      // what Dial resolved; nil for NewClientPipe
	links       forwardLink  // carries port forwards; nil when the connection cannot
	transport   []io.Closer  // closed in order when the connection dies
	opTimeout   time.Duration
	log         *slog.Logger
	posixRename bool
	hardlink    bool
	statvfs     bool
	fsync       bool
	uploads     *uploader
	linkAttrs   linkSetter // lsetstat.go
	agent       *agentRunner
	content     *contentPool // sessions for file content (sessions.go); nil: content uses sftp
	// the login user's ids (Owner): uid<<32 | gid | 1<<63, 0 unknown;
	// set with the root, corrected by the upload helper's greeting
	owner atomic.Uint64
	// rootDev: the device of the root folder, as the last stream of find
	// records (walk, subtree walk, batch stat) reported it
	// (parseFindStream's tagged form; 0 unknown). Uploads report the
	// inode number of a file that landed on it (helperResult).
	rootDev atomic.Uint64
	// home is the folder SFTP starts in (the login user's $HOME; "" when
	// unknown), set by setRoot before it closes homeKnown.
	home      string
	homeKnown chan struct{}

	// probing: a probeAfterChange loop runs; probeWanted: a network
	// change since its last probe started.
	probing, probeWanted atomic.Bool

	// lastRecv is when bytes last came from the sftp server (UnixNano);
	// any reply counts as progress for every pending operation.
	lastRecv atomic.Int64

	done    chan struct{}
	dieOnce sync.Once
	err     error // why the connection ended; written once, before done is closed
}

var _ Remote = (*Client)(nil)

// sftpOptions tune pkg/sftp for throughput: many requests in flight per
// file for reads and writes, fstat on the open handle.
func sftpOptions() []sftp.ClientOption {
	return []sftp.ClientOption{
		sftp.UseConcurrentReads(true),
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(sftpConcurrency),
		sftp.UseFstat(true),
	}
}

// startSFTPPipe starts an sftp client on a byte stream to the server,
// noting every read from it as progress.
func (c *Client) startSFTPPipe(rd io.Reader, wr io.WriteCloser) error {
	sc, err := c.newSFTPClient(rd, wr)
	if err != nil {
		return err
	}
	c.useMetadataSFTP(sc)
	return nil
}

// useMetadataSFTP makes sc the metadata session (the one opened at dial):
// the extensions it offers are noted, and its end is the connection's.
func (c *Client) useMetadataSFTP(sc *sftp.Client) {
	c.sftp = sc
	_, c.posixRename = sc.HasExtension("posix-rename@openssh.com")
	_, c.hardlink = sc.HasExtension("hardlink@openssh.com")
	_, c.statvfs = sc.HasExtension("statvfs@openssh.com")
	v, ok := sc.HasExtension("fsync@openssh.com")
	c.fsync = ok && v == "1"
	go func() {
		err := sc.Wait()
		c.die(fmt.Errorf("sftp session ended: %w", orEOF(err)))
	}()
}

// newSFTPClient starts an sftp client on a byte stream to the server
// (the metadata session or a content one), noting every read from it as
// progress.
func (c *Client) newSFTPClient(rd io.Reader, wr io.WriteCloser) (*sftp.Client, error) {
	return sftp.NewClientPipe(&recvCounter{r: rd, last: &c.lastRecv}, wr, sftpOptions()...)
}

type recvCounter struct {
	r    io.Reader
	last *atomic.Int64
}

func (r *recvCounter) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func newClientShell(label string, opts Options, transport []io.Closer) *Client {
	c := &Client{
		label:     label,
		transport: transport,
		opTimeout: opts.OpTimeout,
		log:       opts.Logger,
		done:      make(chan struct{}),
		homeKnown: make(chan struct{}),
	}
	c.uploads = newUploader(c, opts.UploadHelper)
	c.agent = newAgentRunner(c, opts.Agent, opts.AgentLinger)
	return c
}

// NewClientPipe makes a Client that speaks SFTP over an existing byte
// stream (an in-process sftp.Server in tests, a subprocess), rooted at
// root (relative to the server's working directory unless absolute).
// closers are closed, in order, when the connection dies or is closed.
// There is no ssh connection: Exec returns ErrUnsupported and there is no
// keepalive; OpTimeout still applies.
func NewClientPipe(ctx context.Context, rd io.Reader, wr io.WriteCloser, label, root string, opts Options, closers ...io.Closer) (*Client, error) {
	opts = opts.withDefaults()
	c := newClientShell(label, opts, append([]io.Closer{wr}, closers...))
	if err := c.startSFTPPipe(rd, wr); err != nil {
		c.closeTransport()
		return nil, fmt.Errorf("cannot start sftp on %s: %w", label, err)
	}
	if err := c.setRoot(ctx, root); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// RootPath is the absolute remote path of the root.
func (c *Client) RootPath() string { return c.root }

// HostLabel is the host as the user wrote it.
func (c *Client) HostLabel() string { return c.label }

// Done is closed when the connection is dead or closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (wrapping ErrOffline), or nil while it
// is alive.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection. Pending and later calls fail with an error
// wrapping ErrOffline.
func (c *Client) Close() error {
	c.die(errClosed)
	return nil
}

var errClosed = errors.New("connection closed")

// offlineError says why a connection is down. It wraps ErrOffline and the
// cause.
type offlineError struct {
	host  string
	cause error
}

func (e *offlineError) Error() string {
	if errors.Is(e.cause, errClosed) {
		return fmt.Sprintf("connection to %s is closed", e.host)
	}
	return fmt.Sprintf("connection to %s lost: %v", e.host, e.cause)
}

func (e *offlineError) Unwrap() []error { return []error{ErrOffline, e.cause} }

// die marks the connection dead and closes the transport, which unblocks
// every goroutine waiting on it. It never blocks on the network.
func (c *Client) die(reason error) {
	c.dieOnce.Do(func() {
		c.err = &offlineError{host: c.label, cause: reason}
		close(c.done)
		if !errors.Is(reason, errClosed) { // Manager reports it; Err() has it
			c.log.Debug("connection lost", "host", c.label, "err", reason)
		}
		c.closeTransport()
	})
}

func (c *Client) closeTransport() {
	// The first closer is the TCP-level one (first hop): closing it fails
	// every write blocked on the link, so the closes after it cannot hang.
	// They may still try to send a close message, so they run apart.
	if len(c.transport) > 0 {
		c.transport[0].Close()
	}
	rest := c.transport[min(1, len(c.transport)):]
	sc := c.sftp
	c.content.close()
	go func() {
		for _, t := range rest {
			t.Close()
		}
		if sc != nil {
			sc.Close()
		}
	}()
}

// keepalive sends keepalive@openssh.com every interval and kills the
// connection when no reply has come for interval*countMax: the only way
// to notice a link where packets vanish without a TCP reset.
func (c *Client) keepalive(send func() error, interval time.Duration, countMax int) {
	limit := interval * time.Duration(countMax)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	replies := make(chan error, 1)
	pending := false
	missed := 0 // ticks since the outstanding request was sent
	var sentAt time.Time
	for {
		select {
		case <-c.done:
			return
		case err := <-replies:
			pending, missed = false, 0
			if err != nil {
				c.die(fmt.Errorf("keepalive failed: %w", err))
				return
			}
		case now := <-ticker.C:
			if pending {
				// Count ticks rather than compare clocks: a tick that lands a
				// hair early must not stretch the limit by a whole interval.
				if missed++; missed >= countMax || now.Sub(sentAt) >= limit {
					c.die(fmt.Errorf("no reply to keepalive for %v", now.Sub(sentAt).Round(time.Millisecond)))
					return
				}
				continue
			}
			pending, sentAt = true, now
			go func() { replies <- send() }()
		}
	}
}

// progress tracks one operation's use of the caller's reader or writer:
// time spent there is not the server's fault, and once the caller has
// returned the operation must not touch them again.
type progress struct {
	busy       atomic.Int32
	lastCaller atomic.Int64 // UnixNano of the last caller-side I/O
	abandoned  atomic.Bool

	ioMu sync.Mutex // held during caller-side I/O
}

var errAbandoned = errors.New("operation abandoned by the caller")

// abandon stops further caller-side I/O and waits for any in progress to
// end: after it returns the caller's reader/writer are not used again.
func (p *progress) abandon() {
	p.abandoned.Store(true)
	p.ioMu.Lock()
	p.ioMu.Unlock() // holding ioMu for a moment means no guard call is running
}

// abandonNoWait stops further caller-side I/O without waiting for a call
// in progress (for a reader that may block forever, like a stdin).
func (p *progress) abandonNoWait() { p.abandoned.Store(true) }

func (p *progress) guard(f func() (int, error)) (int, error) {
	p.ioMu.Lock()
	defer p.ioMu.Unlock()
	if p.abandoned.Load() {
		return 0, errAbandoned
	}
	p.busy.Add(1)
	n, err := f()
	p.busy.Add(-1)
	p.lastCaller.Store(time.Now().UnixNano())
	return n, err
}

type guardedWriter struct {
	p *progress
	w io.Writer
}

func (g guardedWriter) Write(b []byte) (int, error) {
	return g.p.guard(func() (int, error) { return g.w.Write(b) })
}

type guardedReader struct {
	p *progress
	r io.Reader
}

func (g guardedReader) Read(b []byte) (int, error) {
	return g.p.guard(func() (int, error) { return g.r.Read(b) })
}

// run runs fn on its own goroutine (pkg/sftp calls take no context) and
// waits for it, for ctx, and for the operation deadline: OpTimeout without
// any reply from the server (while fn is not busy in the caller's reader
// or writer). When the deadline passes the connection is declared dead and
// closed, which makes fn return too. When ctx ends first, run returns
// ctx.Err() at once and leaves the connection alone; fn finishes on its own
// and its result is dropped. Whatever fn writes may be read only when run
// returns nil: on an early return fn is still running.
func (c *Client) run(ctx context.Context, fn func(*progress) error) error {
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pr := &progress{}
	start := time.Now().UnixNano()
	errc := make(chan error, 1)
	go func() { errc <- fn(pr) }()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			pr.abandon()
			return ctx.Err()
		case <-c.done:
			pr.abandon()
			return c.Err()
		case <-timer.C:
			var idle time.Duration
			if pr.busy.Load() == 0 {
				last := max(start, c.lastRecv.Load(), pr.lastCaller.Load())
				idle = time.Since(time.Unix(0, last))
			}
			if idle >= c.opTimeout {
				pr.abandon()
				c.die(fmt.Errorf("no reply from the server for %v", idle.Round(time.Millisecond)))
				return c.Err()
			}
			timer.Reset(c.opTimeout - idle)
		}
	}
}

// do runs fn with run and maps its error for op on rel.
func (c *Client) do(ctx context.Context, op, rel string, fn func(*progress) error) error {
	return c.mapErr(op, rel, c.run(ctx, fn))
}

var errEscape = fmt.Errorf("%w: path is absolute or leaves the remote root", fs.ErrInvalid)

// abs turns a root-relative path into the remote absolute path, refusing
// paths that leave the root.
func (c *Client) abs(op, rel string) (string, error) {
	if strings.IndexByte(rel, 0) >= 0 {
		return "", &fs.PathError{Op: op, Path: rel, Err: fmt.Errorf("%w: NUL in path", fs.ErrInvalid)}
	}
	clean := path.Clean(rel)
	if path.IsAbs(rel) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", &fs.PathError{Op: op, Path: rel, Err: errEscape}
	}
	return path.Join(c.root, clean), nil
}

// SFTP status codes (draft-ietf-secsh-filexfer; OpenSSH sends only 0-8).
const (
	fxNoSuchFile        = 2
	fxPermissionDenied  = 3
	fxFailure           = 4
	fxBadMessage        = 5
	fxNoConnection      = 6
	fxConnectionLost    = 7
	fxOpUnsupported     = 8
	fxNoSuchPath        = 10
	fxFileAlreadyExists = 11
	fxWriteProtect      = 12
	fxNoSpace           = 14
	fxQuotaExceeded     = 15
	fxDirNotEmpty       = 18
	fxNotADirectory     = 19
	fxInvalidFilename   = 20
	fxLinkLoop          = 21
	fxInvalidParameter  = 23
	fxFileIsADirectory  = 24
)

func statusKind(code uint32) error {
	switch code {
	case fxNoSuchFile, fxNoSuchPath:
		return fs.ErrNotExist
	case fxPermissionDenied:
		return fs.ErrPermission
	case fxOpUnsupported:
		return ErrUnsupported
	case fxFileAlreadyExists:
		return fs.ErrExist
	case fxWriteProtect:
		return syscall.EROFS
	case fxNoSpace:
		return syscall.ENOSPC
	case fxQuotaExceeded:
		return syscall.EDQUOT
	case fxDirNotEmpty:
		return ErrNotEmpty
	case fxNotADirectory:
		return syscall.ENOTDIR
	case fxBadMessage, fxInvalidFilename, fxInvalidParameter:
		return fs.ErrInvalid
	case fxLinkLoop:
		return syscall.ELOOP
	case fxFileIsADirectory:
		return syscall.EISDIR
	}
	return nil
}

// kindError classifies a server error: errors.Is matches kind (an io/fs
// sentinel, ErrNotEmpty, ErrUnsupported or a syscall.Errno) and the text
// keeps what the server said.
type kindError struct {
	kind  error
	cause error
}

func (e *kindError) Error() string {
	if e.cause == nil {
		return e.kind.Error()
	}
	return e.kind.Error() + " (server: " + e.cause.Error() + ")"
}

func (e *kindError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func withKind(kind, cause error) error { return &kindError{kind: kind, cause: cause} }

func statusCode(err error) (uint32, bool) {
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return se.Code, true
	}
	return 0, false
}

// explainFailure turns the bare "Failure" OpenSSH's sftp-server answers for
// a full disk or a read-only filesystem into an error that says so (SFTP v3
// has no status code for either), by asking the server about dir.
func (c *Client) explainFailure(dir string, err error) error {
	if !isFailure(err) || !c.statvfs || c.Err() != nil {
		return err
	}
	st, serr := c.sftp.StatVFS(dir)
	if serr != nil {
		return err
	}
	const stRdonly = 1
	switch {
	case st.Flag&stRdonly != 0:
		return fmt.Errorf("the server's filesystem is read-only (%w): %w", syscall.EROFS, err)
	case st.Bavail*st.Frsize < 1<<20 || (st.Favail == 0 && st.Files > 0):
		return fmt.Errorf("no space left on the server's disk (%d bytes free; %w): %w", st.Bavail*st.Frsize, syscall.ENOSPC, err)
	}
	return err
}

func isFailure(err error) bool {
	code, ok := statusCode(err)
	return ok && code == fxFailure
}

// isTransportError: the error means the link is gone, not that the
// operation failed.
func (c *Client) isTransportError(err error) bool {
	if code, ok := statusCode(err); ok {
		return code == fxNoConnection || code == fxConnectionLost
	}
	if c.Err() != nil {
		return true
	}
	for _, target := range []error{sftp.ErrSSHFxConnectionLost, sftp.ErrSSHFxNoConnection,
		io.EOF, io.ErrUnexpectedEOF, io.ErrClosedPipe, net.ErrClosed, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	var opErr *net.OpError
	return errors.As(err, &opErr)
}

// mapErr turns an error from run into the error the Remote contract
// promises: *fs.PathError with the root-relative path, wrapping ErrOffline
// for transport failures (which also kill the connection) or a kind.
func (c *Client) mapErr(op, rel string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == rel {
		return err // already mapped
	}
	switch {
	case errors.Is(err, ErrOffline), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	case errors.Is(err, errAbandoned):
		err = context.Canceled
	case c.isTransportError(err):
		c.die(err)
		err = c.Err()
	default:
		if p, ok := err.(*fs.PathError); ok {
			err = p.Err // pkg/sftp's PathError names the absolute path
		}
		var ke *kindError
		if code, ok := statusCode(err); ok && !errors.As(err, &ke) {
			if kind := statusKind(code); kind != nil {
				err = withKind(kind, err)
			}
		}
	}
	return &fs.PathError{Op: op, Path: rel, Err: err}
}

func toFileInfo(name string, fi os.FileInfo) FileInfo {
	out := FileInfo{Name: name, Mode: fi.Mode(), Size: fi.Size(), Mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*sftp.FileStat); ok {
		out.Uid, out.Gid, out.HasOwner = st.UID, st.GID, true
		if st.Atime != 0 {
			out.Atime = time.Unix(int64(st.Atime), 0)
		}
	}
	return out
}

// Lstat implements Remote.
func (c *Client) Lstat(ctx context.Context, rel string) (FileInfo, error) {
	abs, err := c.abs("lstat", rel)
	if err != nil {
		return FileInfo{}, err
	}
	var info FileInfo
	err = c.do(ctx, "lstat", rel, func(*progress) error {
		fi, err := c.sftp.Lstat(abs)
		if err != nil {
			return err
		}
		info = toFileInfo(path.Base(abs), fi)
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err := c.sftp.ReadLink(abs); err == nil {
				info.Target = target
			}
		}
		return nil
	})
	if err != nil {
		return FileInfo{}, err
	}
	return info, nil
}

// ReadDir implements Remote. Entries are sorted by name; symlink targets
// are filled in (read concurrently).
func (c *Client) ReadDir(ctx context.Context, rel string) ([]FileInfo, error) {
	abs, err := c.abs("readdir", rel)
	if err != nil {
		return nil, err
	}
	var out []FileInfo
	err = c.do(ctx, "readdir", rel, func(*progress) error {
		entries, err := c.sftp.ReadDir(abs)
		if err != nil {
			return err
		}
		list := make([]FileInfo, 0, len(entries))
		for _, fi := range entries {
			list = append(list, toFileInfo(fi.Name(), fi))
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range list {
			if list[i].Mode&fs.ModeSymlink == 0 {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if target, err := c.sftp.ReadLink(path.Join(abs, list[i].Name)); err == nil {
					list[i].Target = target
				}
			}()
		}
		wg.Wait()
		out = list
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadLink implements Remote.
func (c *Client) ReadLink(ctx context.Context, rel string) (string, error) {
	abs, err := c.abs("readlink", rel)
	if err != nil {
		return "", err
	}
	var target string
	err = c.do(ctx, "readlink", rel, func(*progress) error {
		var err error
		target, err = c.sftp.ReadLink(abs)
		return err
	})
	if err != nil {
		return "", err
	}
	return target, nil
}

// ReadAt implements Remote. The data lands in p itself (no buffer of
// the Client's own: a sequential reader moves every byte of a big file
// through here, and a copy of each was a tenth of the daemon's CPU).
// When ReadAt fails because the read was abandoned (its deadline, a
// canceled ctx, the connection's death), requests still in flight may
// write p after it returned: a caller that gets an error does not reuse p.
func (c *Client) ReadAt(ctx context.Context, rel string, p []byte, off int64) (int, FileInfo, error) {
	abs, err := c.abs("read", rel)
	if err != nil {
		return 0, FileInfo{}, err
	}
	if off < 0 {
		return 0, FileInfo{}, &fs.PathError{Op: "read", Path: rel, Err: fmt.Errorf("%w: negative offset", fs.ErrInvalid)}
	}
	if n, info, err, ok := c.agentReadAt(ctx, rel, abs, p, off); ok {
		return n, info, err
	}
	var n int
	var eof bool
	var info FileInfo
	err = c.do(ctx, "read", rel, func(*progress) error {
		sc, done := c.contentSFTP()
		defer done()
		f, err := sc.Open(abs)
		if err != nil {
			return err
		}
		defer closeAsync(f)
		n, err = f.ReadAt(p, off)
		if errors.Is(err, io.EOF) {
			eof, err = true, nil
		}
		if err != nil {
			return err
		}
		// The server answers requests in order: this describes the file
		// as it was after every byte above was read.
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		info = toFileInfo(path.Base(abs), fi)
		return nil
	})
	if err != nil {
		return 0, FileInfo{}, err
	}
	if eof {
		return n, info, io.EOF
	}
	return n, info, nil
}

// agentReadMax: reads up to this size go to the running agent (pread: one
// round trip) rather than SFTP (open, read, fstat: three): the block a
// reader waits for, as git's reads in a large pack. Larger ones, the
// readahead runs of a sequential reader, keep to the content sessions,
// several in parallel.
const agentReadMax = 1 << 20

// agentReadAt is ReadAt through the running agent (never waiting for one
// being started); ok false when it did not answer (no agent, the read
// too large, the file could not be read: SFTP then reads, and names the
// error), ok true with its result otherwise.
func (c *Client) agentReadAt(ctx context.Context, rel, abs string, p []byte, off int64) (n int, info FileInfo, err error, ok bool) {
	m := c.agent.running()
	if m == nil || len(p) > agentReadMax || abs == c.root {
		return 0, FileInfo{}, nil, false
	}
	clean := path.Clean(rel)
	var out bytes.Buffer
	argv := []string{proto.PreadCommand, "--", c.root, clean, strconv.FormatInt(off, 10), strconv.Itoa(len(p))}
	// A deadline of its own: an agent that stops answering while the
	// link stays up must not hold the read (SFTP then reads, under the
	// operation timeout).
	actx, cancel := context.WithTimeout(ctx, c.opTimeout)
	code, err := c.agentExec(actx, m, argv, nil, &out, io.Discard)
	cancel()
	if err != nil || code != 0 {
		if ctx.Err() != nil {
			return 0, FileInfo{}, ctx.Err(), true
		}
		return 0, FileInfo{}, nil, false
	}
	b := out.Bytes()
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return 0, FileInfo{}, nil, false
	}
	n, cerr := strconv.Atoi(string(b[:i]))
	if cerr != nil || n < 0 || n > len(p) || len(b) < i+1+n {
		return 0, FileInfo{}, nil, false
	}
	got := 0
	if _, perr := parseFindStream(bytes.NewReader(b[i+1+n:]), func(q string, fi FileInfo) error {
		if q == clean {
			info, got = fi, got+1
		}
		return nil
	}); perr != nil || got != 1 {
		return 0, FileInfo{}, nil, false
	}
	copy(p, b[i+1:i+1+n])
	c.agent.preads.Add(1)
	if n < len(p) {
		return n, info, io.EOF, true
	}
	return n, info, nil, true
}

// Fetch implements Remote. The file is stat'ed on the open handle before
// and after it is read: a different version, or a byte count that is not
// the size, means it changed while it was read (ErrChanged).
func (c *Client) Fetch(ctx context.Context, rel string, w io.Writer) (FileInfo, error) {
	abs, err := c.abs("fetch", rel)
	if err != nil {
		return FileInfo{}, err
	}
	var info FileInfo
	err = c.do(ctx, "fetch", rel, func(pr *progress) error {
		sc, done := c.contentSFTP()
		defer done()
		f, err := sc.Open(abs)
		if err != nil {
			return err
		}
		defer closeAsync(f)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		info = toFileInfo(path.Base(abs), fi)
		n, err := f.WriteTo(guardedWriter{pr, w})
		if err != nil {
			return err
		}
		after, err := f.Stat()
		if err != nil {
			return err
		}
		if n != info.Size || !sameVersion(info, toFileInfo(info.Name, after)) {
			return &fs.PathError{Op: "fetch", Path: rel, Err: ErrChanged}
		}
		return nil
	})
	if err != nil {
		return FileInfo{}, err
	}
	return info, nil
}

// sameVersion reports whether a and b describe the same version of a file
// (size and mtime in whole seconds, the resolution SFTP v3 has).
func sameVersion(a, b FileInfo) bool {
	return a.Size == b.Size && a.Mtime.Unix() == b.Mtime.Unix() && a.Mode == b.Mode
}

// closeAsync closes a read-only handle without waiting for the server's
// answer: one round trip less per read; nothing depends on it.
func closeAsync(f *sftp.File) { go f.Close() }

// TempName returns the name PutAtomic gives the temporary file for a file
// named base: TempPrefix, random hex, "-", base (shortened so the whole
// name stays within 255 bytes).
func TempName(base string) string {
	var b [4]byte
	rand.Read(b[:])
	prefix := fmt.Sprintf("%s%08x%s-", TempPrefix, uint32(time.Now().Unix()), hex.EncodeToString(b[:]))
	if max := 255 - len(prefix); len(base) > max {
		base = base[:max]
	}
	return prefix + base
}

// TempNameAt is a TempName chosen by the caller: the same created time and
// tag give the same name, so a retried upload reuses (and overwrites) the
// temporary file of a failed attempt instead of leaving it behind.
func TempNameAt(base string, created time.Time, tag uint32) string {
	prefix := fmt.Sprintf("%s%08x%08x-", TempPrefix, uint32(created.Unix()), tag)
	if max := 255 - len(prefix); len(base) > max {
		base = base[:max]
	}
	return prefix + base
}

// TempCreated returns when the temporary file called name was created, from
// its name; ok is false for names TempName did not make.
func TempCreated(name string) (t time.Time, ok bool) {
	rest, found := strings.CutPrefix(name, TempPrefix)
	if !found || len(rest) < 17 || rest[16] != '-' {
		return time.Time{}, false
	}
	sec, err := strconv.ParseUint(rest[:8], 16, 32)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(sec), 0), true
}

// IsTempName reports whether name (a base name) is a PutAtomic temporary.
func IsTempName(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// chmodBits keeps the bits chmod can set.
func chmodBits(mode fs.FileMode) fs.FileMode {
	return mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// PutAtomic implements Remote: Put to path itself.
func (c *Client) PutAtomic(ctx context.Context, rel string, r io.Reader, mode fs.FileMode, mtime time.Time) (FileInfo, error) {
	res, err := c.Put(ctx, rel, r, PutOptions{Mode: mode, Mtime: mtime})
	return res.Info, err
}

// putPlan is one upload, resolved: absolute paths and the request the
// upload helper would get.
type putPlan struct {
	rel      string
	abs      string
	dir      string
	conflict string // absolute; "" without Accept
	req      proto.Request
}

// planPut checks Put's arguments.
func (c *Client) planPut(rel string, o PutOptions) (putPlan, error) {
	abs, err := c.abs("put", rel)
	if err != nil {
		return putPlan{}, err
	}
	if abs == c.root {
		return putPlan{}, &fs.PathError{Op: "put", Path: rel, Err: syscall.EISDIR}
	}
	p := putPlan{rel: rel, abs: abs, dir: path.Dir(abs)}
	tmpName := o.TempName
	if tmpName == "" {
		tmpName = TempName(path.Base(abs))
	}
	if !IsTempName(tmpName) || !proto.ValidBase(tmpName) {
		return putPlan{}, &fs.PathError{Op: "put", Path: rel, Err: fmt.Errorf("%w: temporary name %q", fs.ErrInvalid, tmpName)}
	}
	p.req = proto.Request{Dest: abs, Temp: tmpName, Mode: uint32(chmodBits(o.Mode)), Mtime: o.Mtime.Unix(), MtimeNsec: uint32(o.Mtime.Nanosecond())}
	if o.Accept != nil {
		if o.ConflictPath == "" {
			return putPlan{}, &fs.PathError{Op: "put", Path: rel, Err: fmt.Errorf("%w: Accept without a ConflictPath", fs.ErrInvalid)}
		}
		ca, err := c.abs("put", o.ConflictPath)
		if err != nil {
			return putPlan{}, err
		}
		if path.Dir(ca) != p.dir || ca == abs {
			return putPlan{}, &fs.PathError{Op: "put", Path: rel, Err: fmt.Errorf("%w: conflict path %q is not another name in the same folder", fs.ErrInvalid, o.ConflictPath)}
		}
		p.conflict = ca
		p.req.Check, p.req.Conflict = true, path.Base(ca)
		p.req.Absent, p.req.Link = o.Accept.Absent, o.Accept.Link
		for _, v := range o.Accept.Versions {
			p.req.Versions = append(p.req.Versions, proto.Version{Size: v.Size, Mtime: v.Mtime})
		}
	}
	return p, nil
}

// result is what Put returns once the file is at dest (absolute) with n
// bytes, having found found at the path.
func (p putPlan) result(o PutOptions, dest string, n int64, found *FileInfo) PutResult {
	res := PutResult{
		Info: FileInfo{Name: path.Base(dest), Mode: chmodBits(o.Mode), Size: n, Mtime: time.Unix(o.Mtime.Unix(), 0)},
		Path: p.rel, Conflict: dest != p.abs,
	}
	if res.Conflict {
		res.Path = o.ConflictPath
	}
	if o.Accept != nil {
		res.Found = found
	}
	return res
}

// Put implements Remote. Through the upload helper when it runs on the
// server (upload.go): one round trip plus the transfer. Otherwise over
// SFTP, the round trips overlapped where SFTP allows: open; chmod
// alongside the writes; fsync alongside setting the mtime (and the check
// of the path alongside all that); then close alongside the rename.
func (c *Client) Put(ctx context.Context, rel string, r io.Reader, o PutOptions) (PutResult, error) {
	p, err := c.planPut(rel, o)
	if err != nil {
		return PutResult{}, err
	}
	if s := c.uploads.session(); s != nil {
		res, used, err := c.putHelper(ctx, s, p, o, r)
		if used {
			return res, err
		}
	}
	return c.putSFTP(ctx, p, o, r)
}

// putSFTP is Put over plain SFTP.
func (c *Client) putSFTP(ctx context.Context, p putPlan, o PutOptions, r io.Reader) (PutResult, error) {
	openFlags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.TempName != "" {
		// The caller's own name, the same on every retry: a retry after a
		// lost link overwrites what the failed attempt left.
		openFlags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	dir, tmp := p.dir, path.Join(p.dir, p.req.Temp)
	var res PutResult
	err := c.do(ctx, "put", p.rel, func(pr *progress) (err error) {
		sc, done := c.contentSFTP()
		defer done()
		// What is at the path, asked alongside the upload; needed only
		// when the data is about to be renamed into place.
		type statResult struct {
			found *FileInfo
			err   error
		}
		var statc chan statResult
		if p.req.Check {
			statc = make(chan statResult, 1)
			go func() {
				fi, err := sc.Lstat(p.abs)
				if err != nil {
					if code, ok := statusCode(err); errors.Is(err, fs.ErrNotExist) || (ok && (code == fxNoSuchFile || code == fxNoSuchPath)) {
						err = nil
					}
					statc <- statResult{nil, err}
					return
				}
				info := toFileInfo(path.Base(p.abs), fi)
				if fi.Mode()&fs.ModeSymlink != 0 {
					info.Target, _ = sc.ReadLink(p.abs)
				}
				statc <- statResult{&info, nil}
			}()
		}
		f, err := sc.OpenFile(tmp, openFlags)
		if err != nil {
			return c.explainFailure(dir, err)
		}
		closed, renamed := false, false
		defer func() {
			if err == nil {
				return
			}
			if !closed {
				f.Close()
			}
			if !renamed && c.Err() == nil {
				sc.Remove(tmp)
			}
		}()
		chmodErr := make(chan error, 1)
		go func() { chmodErr <- sc.Chmod(tmp, chmodBits(o.Mode)) }()
		n, werr := f.ReadFromWithConcurrency(guardedReader{pr, r}, 0)
		if cerr := <-chmodErr; werr == nil {
			werr = cerr
		}
		if werr != nil {
			return c.explainFailure(dir, werr)
		}
		// fsync and the mtime: independent requests, one round trip.
		syncErr := make(chan error, 1)
		go func() {
			if c.fsync {
				syncErr <- f.Sync()
			} else {
				syncErr <- nil
			}
		}()
		terr := sc.Chtimes(tmp, o.Mtime, o.Mtime)
		if serr := <-syncErr; terr == nil {
			terr = serr
		}
		if terr != nil {
			return c.explainFailure(dir, terr)
		}
		dest := p.abs
		var found *FileInfo
		if statc != nil {
			st := <-statc
			if st.err != nil {
				return st.err
			}
			found = st.found
			var cur *proto.Current
			if found != nil {
				cur = &proto.Current{Mode: found.Mode, Size: found.Size, Mtime: found.Mtime.Unix()}
			}
			if !proto.Accepts(p.req, cur, n) {
				dest = p.conflict
			} else if found != nil && found.Mode.IsRegular() && !(found.Size == n && found.Mtime.Unix() == o.Mtime.Unix()) {
				if err := c.mayReplace(p, *found); err != nil {
					return err
				}
			}
			if found != nil && found.Mode.IsRegular() && dest == p.abs {
				c.keepOwner(tmp, *found, o.Mode)
			}
		}
		// Close and rename go out together: renaming an open file is fine,
		// and the data is already durable.
		closeErr := make(chan error, 1)
		go func() { closeErr <- f.Close() }()
		if c.posixRename {
			err = sc.PosixRename(tmp, dest)
		} else {
			err = sc.Rename(tmp, dest)
			if err != nil && isFailure(err) {
				if rerr := sc.Remove(dest); rerr == nil {
					err = sc.Rename(tmp, dest)
				}
			}
		}
		renamed = err == nil
		cerr := <-closeErr
		closed = true
		if err != nil {
			return err
		}
		if cerr != nil {
			return cerr
		}
		res = p.result(o, dest, n, found)
		return nil
	})
	if err != nil {
		return PutResult{}, err
	}
	return res, nil
}

// keepOwner gives the temporary file tmp, about to replace found, found's
// owner and group, as a write in place would keep them: a root login
// keeps both (another user's file stays theirs: a mount shared by several
// local users, each of whose files is chowned to them, would otherwise see
// its files turn root's with their first save, and the kernel then
// refuse their owners the next write); another login keeps the group of
// its own file (best effort: a group the login is not in is lost). One
// extra round trip, only when the owner differs.
// A chown clears setuid and setgid: they are set again.
func (c *Client) keepOwner(tmp string, found FileInfo, mode fs.FileMode) {
	ouid, ogid, ok := c.Owner()
	if !ok || !found.HasOwner || (found.Uid == ouid && found.Gid == ogid) {
		return
	}
	var err error
	switch {
	case ouid == 0:
		err = c.sftp.Chown(tmp, int(found.Uid), int(found.Gid))
	case found.Uid == ouid:
		err = c.sftp.Chown(tmp, int(ouid), int(found.Gid))
	default:
		return
	}
	if err == nil && mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		c.sftp.Chmod(tmp, chmodBits(mode))
	}
}

// mayReplace refuses, with EACCES, to replace a file the login user may
// not write: a write would be refused, and a rename in a writable folder
// would not be (the upload helper makes the same check on the server).
// The login user's own file is judged by its mode; another user's by
// opening it for writing (without truncating it). Over plain SFTP a
// replace of another user's file that the login may write still gives it
// to the login user (the helper writes such a file in place instead).
func (c *Client) mayReplace(p putPlan, found FileInfo) error {
	denied := &fs.PathError{Op: "write", Path: p.rel, Err: syscall.EACCES}
	ouid, _, ok := c.Owner()
	switch {
	case !ok || ouid == 0 || !found.HasOwner:
		return nil
	case found.Uid == ouid:
		if found.Mode&0o200 == 0 {
			return denied
		}
		return nil
	}
	f, err := c.sftp.OpenFile(p.abs, os.O_WRONLY)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return denied
		}
		if code, ok := statusCode(err); ok && code == fxPermissionDenied {
			return denied
		}
		return nil // gone meanwhile, or another failure: the rename decides
	}
	f.Close()
	return nil
}

// exists lstats p; errors count as "does not exist".
func (c *Client) exists(p string) (os.FileInfo, bool) {
	fi, err := c.sftp.Lstat(p)
	return fi, err == nil
}

// Mkdir implements Remote. OpenSSH's sftp-server answers a generic failure
// for an existing path; an lstat tells fs.ErrExist apart.
func (c *Client) Mkdir(ctx context.Context, rel string, mode fs.FileMode) error {
	abs, err := c.abs("mkdir", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "mkdir", rel, func(*progress) error {
		err := c.sftp.Mkdir(abs)
		if err != nil {
			if isFailure(err) {
				if _, ok := c.exists(abs); ok {
					return withKind(fs.ErrExist, err)
				}
			}
			return err
		}
		// SFTP mkdir applies the server's umask; chmod sets the mode asked for.
		return c.sftp.Chmod(abs, chmodBits(mode))
	})
}

// Remove implements Remote: files and symlinks only (a directory gives
// syscall.EISDIR), so it lstats first: pkg/sftp's Remove would also
// remove an empty directory.
func (c *Client) Remove(ctx context.Context, rel string) error {
	abs, err := c.abs("remove", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "remove", rel, func(*progress) error {
		fi, err := c.sftp.Lstat(abs)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return withKind(syscall.EISDIR, nil)
		}
		return c.sftp.Remove(abs)
	})
}

// Rmdir implements Remote. It lstats first (ENOTDIR for a non-directory);
// a generic failure is explained by looking: ErrNotEmpty when the
// directory has entries.
func (c *Client) Rmdir(ctx context.Context, rel string) error {
	abs, err := c.abs("rmdir", rel)
	if err != nil {
		return err
	}
	if abs == c.root {
		return &fs.PathError{Op: "rmdir", Path: rel, Err: fmt.Errorf("%w: cannot remove the root", fs.ErrPermission)}
	}
	return c.do(ctx, "rmdir", rel, func(*progress) error {
		// Look first: some servers (pkg/sftp's) implement RMDIR with
		// remove(3), which would delete a file.
		fi, err := c.sftp.Lstat(abs)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return withKind(syscall.ENOTDIR, nil)
		}
		err = c.sftp.RemoveDirectory(abs)
		if err == nil || !isFailure(err) {
			return err
		}
		if entries, derr := c.sftp.ReadDir(abs); derr == nil && len(entries) > 0 {
			return withKind(ErrNotEmpty, err)
		}
		return err
	})
}

// Rename implements Remote.
func (c *Client) Rename(ctx context.Context, oldrel, newrel string) error {
	oldAbs, err := c.abs("rename", oldrel)
	if err != nil {
		return err
	}
	newAbs, err := c.abs("rename", newrel)
	if err != nil {
		return err
	}
	return c.do(ctx, "rename", oldrel, func(*progress) error {
		var err error
		if c.posixRename {
			err = c.sftp.PosixRename(oldAbs, newAbs)
		} else {
			err = c.sftp.Rename(oldAbs, newAbs)
		}
		if err == nil || !isFailure(err) {
			return err
		}
		oldFi, ok := c.exists(oldAbs)
		if !ok {
			return withKind(fs.ErrNotExist, err)
		}
		newFi, ok := c.exists(newAbs)
		switch {
		case !ok:
		case newFi.IsDir() && !oldFi.IsDir():
			return withKind(syscall.EISDIR, err)
		case !newFi.IsDir() && oldFi.IsDir():
			return withKind(syscall.ENOTDIR, err)
		case newFi.IsDir():
			if entries, derr := c.sftp.ReadDir(newAbs); derr == nil && len(entries) > 0 {
				return withKind(ErrNotEmpty, err)
			}
		case !c.posixRename:
			return withKind(fs.ErrExist, err)
		}
		return err
	})
}

// Symlink implements Remote. target is stored as given.
func (c *Client) Symlink(ctx context.Context, target, rel string) error {
	abs, err := c.abs("symlink", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "symlink", rel, func(*progress) error {
		err := c.sftp.Symlink(target, abs)
		if err != nil && isFailure(err) {
			if _, ok := c.exists(abs); ok {
				return withKind(fs.ErrExist, err)
			}
		}
		return err
	})
}

// Link implements Remote.
func (c *Client) Link(ctx context.Context, oldrel, newrel string) error {
	oldAbs, err := c.abs("link", oldrel)
	if err != nil {
		return err
	}
	newAbs, err := c.abs("link", newrel)
	if err != nil {
		return err
	}
	if !c.hardlink {
		return &fs.PathError{Op: "link", Path: newrel, Err: withKind(ErrUnsupported, errors.New("server lacks hardlink@openssh.com"))}
	}
	return c.do(ctx, "link", newrel, func(*progress) error {
		err := c.sftp.Link(oldAbs, newAbs)
		if err != nil && isFailure(err) {
			if _, ok := c.exists(newAbs); ok {
				return withKind(fs.ErrExist, err)
			}
		}
		return err
	})
}

// Chmod implements Remote.
func (c *Client) Chmod(ctx context.Context, rel string, mode fs.FileMode) error {
	abs, err := c.abs("chmod", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "chmod", rel, func(*progress) error { return c.sftp.Chmod(abs, chmodBits(mode)) })
}

// Chown implements Remote.
func (c *Client) Chown(ctx context.Context, rel string, uid, gid uint32) error {
	abs, err := c.abs("chown", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "chown", rel, func(*progress) error { return c.sftp.Chown(abs, int(uid), int(gid)) })
}

// Owner implements OwnerReporter: the ids the upload helper runs as, once
// it has greeted (exact); before that, or without the helper, the owner
// and group of the folder the SFTP server starts in (the login user's
// home, or sftp-server -d), read when the connection was made: SFTP has no
// "who am I". A home owned by someone else (a chroot) without the helper is
// corrected with the uid_map setting.
func (c *Client) Owner() (uid, gid uint32, ok bool) {
	v := c.owner.Load()
	return uint32(v>>32) &^ (1 << 31), uint32(v), v != 0
}

// setOwner records the login user's ids (uids above 2^31 are not kept).
func (c *Client) setOwner(uid, gid uint32) {
	if uid < 1<<31 {
		c.owner.Store(uint64(uid)<<32 | uint64(gid) | 1<<63)
	}
}

// Chtimes implements Remote.
func (c *Client) Chtimes(ctx context.Context, rel string, atime, mtime time.Time) error {
	abs, err := c.abs("chtimes", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "chtimes", rel, func(*progress) error { return c.sftp.Chtimes(abs, atime, mtime) })
}

// Truncate implements Remote.
func (c *Client) Truncate(ctx context.Context, rel string, size int64) error {
	abs, err := c.abs("truncate", rel)
	if err != nil {
		return err
	}
	return c.do(ctx, "truncate", rel, func(*progress) error { return c.sftp.Truncate(abs, size) })
}

// StatFS implements Remote.
func (c *Client) StatFS(ctx context.Context, rel string) (StatFS, error) {
	abs, err := c.abs("statfs", rel)
	if err != nil {
		return StatFS{}, err
	}
	if !c.statvfs {
		return StatFS{}, &fs.PathError{Op: "statfs", Path: rel, Err: withKind(ErrUnsupported, errors.New("server lacks statvfs@openssh.com"))}
	}
	var st StatFS
	err = c.do(ctx, "statfs", rel, func(*progress) error {
		v, err := c.sftp.StatVFS(abs)
		if err != nil {
			return err
		}
		st = StatFS{BlockSize: v.Bsize, FragmentSize: v.Frsize, Blocks: v.Blocks, BlocksFree: v.Bfree,
			BlocksAvail: v.Bavail, Files: v.Files, FilesFree: v.Ffree, NameMax: v.Namemax}
		return nil
	})
	if err != nil {
		return StatFS{}, err
	}
	return st, nil
}

// Exec runs cmd on the server (through the user's login shell, like `ssh
// HOST cmd`) in a new session and returns its exit code. A command that
// runs and exits non-zero is not an error. Exec honours ctx (the remote
// command is sent SIGKILL and the session closed) but has no operation
// deadline, since commands may run long; only opening the session is
// bounded by OpTimeout. stdin, stdout and stderr may be nil and are not
// used after Exec returns.
func (c *Client) Exec(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if c.ssh == nil {
		return -1, fmt.Errorf("exec on %s: %w", c.label, ErrUnsupported)
	}
	var sess session
	err := c.run(ctx, func(pr *progress) error {
		s, err := c.ssh.newSession()
		if err != nil {
			return err
		}
		pr.ioMu.Lock()
		defer pr.ioMu.Unlock()
		if pr.abandoned.Load() {
			s.close()
			return errAbandoned
		}
		sess = s
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrOffline) && c.isTransportError(err) {
			c.die(err)
			err = c.Err()
		}
		return -1, fmt.Errorf("exec on %s: %w", c.label, err)
	}
	defer sess.close()
	// The session keeps copying stdin on its own goroutine, even after the
	// command ends: stop it without waiting for a Read that may block.
	in, out := &progress{}, &progress{}
	defer in.abandonNoWait()
	var sin io.Reader
	var sout, serr io.Writer
	if stdin != nil {
		sin = guardedReader{in, stdin}
	}
	if stdout != nil {
		sout = guardedWriter{out, stdout}
	}
	if stderr != nil {
		serr = guardedWriter{out, stderr}
	}
	sess.setIO(sin, sout, serr)
	if err := sess.start(cmd); err != nil {
		return -1, fmt.Errorf("exec on %s: %w", c.label, err)
	}
	waitc := make(chan waited, 1)
	go func() {
		st, err := sess.wait()
		waitc <- waited{st, err}
	}()
	var w waited
	select {
	case w = <-waitc:
	case <-ctx.Done():
		if !leaveRunning(ctx) {
			sess.signal("KILL")
		}
		sess.close()
		out.abandon()
		return -1, fmt.Errorf("exec on %s: %w", c.label, ctx.Err())
	case <-c.done:
		out.abandon()
		return -1, fmt.Errorf("exec on %s: %w", c.label, c.Err())
	}
	switch err = w.err; {
	case err != nil:
	case w.st.missing:
		return -1, fmt.Errorf("exec on %s: command ended without an exit status", c.label)
	case w.st.signal != "":
		return -1, fmt.Errorf("exec on %s: command killed by signal %s", c.label, w.st.signal)
	default:
		return w.st.code, nil
	}
	if c.Err() != nil {
		return -1, fmt.Errorf("exec on %s: %w", c.label, c.Err())
	}
	return -1, fmt.Errorf("exec on %s: %w", c.label, err)
}

// probeAfterChange probes the connection after a network change, once per
// burst: changes come in bursts (an address, then routes, then a link;
// containers starting), so one probe runs at a time, probes start at least
// probeSpacing apart, and changes during one make exactly one more after
// it (the last change of a burst is never left unprobed).
func (c *Client) probeAfterChange(d time.Duration) {
	c.probeWanted.Store(true)
	if !c.probing.CompareAndSwap(false, true) {
		return // the running prober sees probeWanted
	}
	go func() {
		for {
			for c.probeWanted.Swap(false) {
				c.probe(d)
				select {
				case <-c.done:
					c.probing.Store(false)
					return
				case <-time.After(probeSpacing):
				}
			}
			c.probing.Store(false)
			if !c.probeWanted.Load() || !c.probing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// probeSpacing: the least time between two probes after network changes.
const probeSpacing = 250 * time.Millisecond

// probe checks that the connection still answers: a keepalive request
// that gets no reply within d, while nothing else arrives from the sftp
// server either, closes it (after a network change the old TCP
// connection may be dead without a reset, which the periodic keepalive
// would notice only after ServerAliveInterval*CountMax).
func (c *Client) probe(d time.Duration) {
	if c.ping == nil {
		return
	}
	replied := make(chan error, 1)
	go func() { replied <- c.ping() }()
	t := time.NewTimer(d)
	defer t.Stop()
	for waited := 1; ; waited++ {
		select {
		case err := <-replied:
			if err != nil {
				c.die(fmt.Errorf("keepalive after a network change failed: %w", err))
			}
			return
		case <-t.C:
			// Bytes that arrive just after the change may have been on
			// their way before it: only bytes in the last half of the
			// wait show a live link (a busy one, whose reply is queued
			// behind them), and then the wait goes on a while.
			if time.Since(time.Unix(0, c.lastRecv.Load())) < d/2 {
				if waited < 4 {
					t.Reset(d)
					continue
				}
				return // still receiving: slow, not dead
			}
			c.die(fmt.Errorf("no reply to a keepalive within %v after the network changed", time.Duration(waited)*d))
			return
		case <-c.done:
			return
		}
	}
}
