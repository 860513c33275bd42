package conn

// Uploads through the upload helper: the remotefs binary, installed on the
// server like the watch helper (installHelper), run as `HELPER __put` over
// an exec channel and kept running for the connection's life. Put sends it
// the whole upload in one message (agent/proto): destination,
// temporary name, mode, mtime, what the destination may hold, the conflict
// name, then the data; the helper writes, fsyncs, sets mode and mtime,
// checks the destination and renames, and answers once. An upload costs
// one round trip plus the transfer, where SFTP needs four (open; write and
// chmod; fsync and mtime; close and rename).
//
// Requests are pipelined: a session takes the next request as soon as the
// previous one's data is sent, and answers in order. Up to maxPutSessions
// sessions run, so a big upload does not hold back small ones for long.
//
// Fallback: while the helper starts (the first upload of a connection in
// UploadAuto mode), when it cannot run (another OS or architecture, no
// helper binary, exec refused) and for a while after a session died, Put
// uses SFTP. A session that dies during an upload fails it with an error
// wrapping ErrOffline (retry it, as after a lost link); one that dies
// before anything of the upload was read falls back at once.
//
// Lock order: uploader.mu before putSession.mu. Neither is held across
// network I/O.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"remotefs/agent/proto"
)

// Upload modes, as Options.UploadHelper.
const (
	// UploadAuto: through the upload helper when it can run on the server,
	// started at the first upload (which goes over SFTP meanwhile).
	UploadAuto = ""
	// UploadEager: the same, but the helper is started as soon as the
	// connection is up, so the first upload uses it too.
	UploadEager = "eager"
	// UploadSFTP: plain SFTP only.
	UploadSFTP = "sftp"
)

// PutHelperCommand is the hidden subcommand of the remotefs binary that
// runs the upload helper: `remotefs __put`. It reads requests on stdin and
// answers on stdout (agent/proto), and exits at stdin EOF.
const PutHelperCommand = proto.PutCommand

const (
	maxPutSessions = 2                // exec channels count against sshd's MaxSessions (10)
	putHelperPause = 30 * time.Second // SFTP only, after a session died by itself
	putChunk       = 256 << 10
)

type uploadState int

const (
	uploadNotStarted uploadState = iota
	uploadStarting
	uploadReady
	uploadOff
)

// uploader runs the upload helper sessions of one Client.
type uploader struct {
	// Set at construction.
	c    *Client
	mode string

	helperPuts atomic.Int64 // uploads delivered through the helper

	mu          sync.Mutex
	state       uploadState   // guarded by mu
	exe         string        // guarded by mu; uploadReady: the helper on the server
	offErr      error         // guarded by mu; uploadOff: why
	pausedUntil time.Time     // guarded by mu
	sessions    []*putSession // guarded by mu: live sessions
	starting    int           // guarded by mu: sessions being started
}

func newUploader(c *Client, mode string) *uploader {
	return &uploader{c: c, mode: mode}
}

// start starts the helper in the background, unless it is started or
// cannot be used.
func (u *uploader) start() {
	if u.mode == UploadSFTP {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.startLocked()
}

func (u *uploader) startLocked() {
	if u.state != uploadNotStarted {
		return
	}
	if u.c.ssh == nil {
		u.state, u.offErr = uploadOff, errors.New("no ssh connection to run it over")
		return
	}
	u.state = uploadStarting
	u.starting++
	go u.install()
}

// session returns a helper session for an upload, or nil: use SFTP. It
// starts the helper, or one more session when all are busy.
func (u *uploader) session() *putSession {
	if u.mode == UploadSFTP {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == uploadNotStarted {
		u.startLocked()
	}
	if u.state != uploadReady || time.Now().Before(u.pausedUntil) {
		return nil
	}
	var best *putSession
	for _, s := range u.sessions {
		if best == nil || s.inflight.Load() < best.inflight.Load() {
			best = s
		}
	}
	if (best == nil || best.inflight.Load() > 0) && len(u.sessions)+u.starting < maxPutSessions {
		u.starting++
		go u.addSession(u.exe)
	}
	return best
}

// install finds out whether the helper can run, installs it and starts
// the first session.
func (u *uploader) install() {
	// Every step returns when the connection dies. No ctx of its own: a
	// canceled Exec sends SIGKILL to the server's process group, which on
	// a connection being closed would kill shell startup scripts midway.
	ctx := context.Background()
	exe, err := func() (string, error) {
		if u.c.agent.get(ctx, true) != nil {
			return "", nil // sessions are streams of the agent
		}
		if _, err := findLocalHelper(); err != nil {
			return "", err
		}
		info, err := u.c.probeWatch(ctx)
		if err != nil {
			return "", err
		}
		return u.c.installHelper(ctx, info)
	}()
	var s *putSession
	if err == nil {
		s, err = u.c.startPutSession(ctx, exe)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.starting--
	if err != nil {
		u.state, u.offErr = uploadOff, err
		if u.c.Err() == nil {
			u.c.log.Info("uploads use plain SFTP: the upload helper cannot run", "host", u.c.label, "err", err)
		}
		return
	}
	u.state, u.exe = uploadReady, exe
	u.addLocked(s)
	u.c.log.Debug("upload helper running", "host", u.c.label, "helper", exe)
}

// addSession starts one more session.
func (u *uploader) addSession(exe string) {
	ctx := context.Background() // see install
	s, err := u.c.startPutSession(ctx, exe)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.starting--
	if err != nil {
		if u.c.Err() == nil {
			u.c.log.Debug("another upload helper session did not start", "host", u.c.label, "err", err)
			u.pausedUntil = time.Now().Add(putHelperPause)
		}
		return
	}
	u.addLocked(s)
}

// addLocked adds a live session and drops it when it ends. Caller holds mu.
func (u *uploader) addLocked(s *putSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	u.sessions = append(u.sessions, s)
	s.onDeath = func(err error) {
		u.mu.Lock()
		defer u.mu.Unlock()
		for i, x := range u.sessions {
			if x == s {
				u.sessions = append(u.sessions[:i], u.sessions[i+1:]...)
				break
			}
		}
		if u.c.Err() == nil {
			u.pausedUntil = time.Now().Add(putHelperPause)
			u.c.log.Warn("upload helper stopped; uploads use SFTP for a while", "host", u.c.label, "err", err, "for", putHelperPause)
		}
	}
}

// How uploads go, as Client.Uploads reports it.
const (
	UploadsHelper   = "helper"
	UploadsSFTP     = "sftp"
	UploadsStarting = "starting helper"
)

// Uploads says how the next upload would go: UploadsHelper,
// UploadsStarting (SFTP until the helper runs) or UploadsSFTP.
func (c *Client) Uploads() string {
	u := c.uploads
	if u.mode == UploadSFTP {
		return UploadsSFTP
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.state == uploadStarting:
		return UploadsStarting
	case u.state == uploadReady && len(u.sessions) > 0 && !time.Now().Before(u.pausedUntil):
		return UploadsHelper
	}
	return UploadsSFTP
}

// Uploads is the current client's Uploads, or "" while offline.
func (m *Manager) Uploads() string {
	if c := m.Client(); c != nil {
		return c.Uploads()
	}
	return ""
}

// putSession is one running upload helper.
type putSession struct {
	// Set at construction.
	c      *Client
	in     *io.PipeWriter // the helper's stdin
	w      *bufio.Writer  // over in
	r      *bufio.Reader  // the helper's stdout
	kill   context.CancelFunc
	stderr *syncBuffer
	done   chan struct{} // closed when the session ended

	// send is held (a token in it) while one request is written.
	send     chan struct{}
	inflight atomic.Int32
	lastIO   atomic.Int64 // UnixNano: a write accepted by the channel, or a reply

	mu      sync.Mutex
	waiting []chan proto.Reply // guarded by mu: replies due, in request order
	err     error              // guarded by mu: why it ended
	onDeath func(error)        // guarded by mu: set by the uploader; called once by die
}

// progressWriter notes when the channel accepted bytes.
type progressWriter struct {
	w    io.Writer
	last *atomic.Int64
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if n > 0 {
		p.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// startPutSession runs the helper at exe (""; on the agent) and waits for its greeting
// (within OpTimeout).
func (c *Client) startPutSession(ctx context.Context, exe string) (*putSession, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	execCtx, kill := context.WithCancel(context.Background())
	s := &putSession{
		c: c, in: inW, r: bufio.NewReaderSize(outR, 4096), kill: kill,
		stderr: &syncBuffer{buf: limitedBuffer{buf: &bytes.Buffer{}, max: 4096}},
		done:   make(chan struct{}), send: make(chan struct{}, 1),
	}
	s.w = bufio.NewWriterSize(progressWriter{w: inW, last: &s.lastIO}, 64<<10)
	go func() {
		cmd := "" // exe "": on the agent only
		if exe != "" {
			cmd = shellQuote(exe) + " " + PutHelperCommand
		}
		code, err := c.runHelper(execCtx, []string{PutHelperCommand}, cmd, inR, outW, s.stderr)
		if err == nil {
			msg := s.stderr.String()
			if msg == "" {
				msg = "no message"
			}
			err = fmt.Errorf("exited with status %d: %s", code, msg)
		}
		s.die(err)
		outW.CloseWithError(io.EOF)
		inR.CloseWithError(io.ErrClosedPipe)
	}()

	hello := make(chan error, 1)
	go func() {
		uid, gid, err := proto.ReadHello(s.r)
		if err == nil {
			// The helper runs as the login user: its ids are exact,
			// where the start folder's owner was a guess.
			c.setOwner(uid, gid)
		}
		hello <- err
	}()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-hello:
		if err != nil {
			select {
			case <-s.done: // the exit status says more than the EOF
				err = s.deathErr()
			case <-time.After(time.Second):
			}
		}
	case <-timer.C:
		err = fmt.Errorf("no greeting within %v", c.opTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.done:
		err = c.Err()
	}
	if err != nil {
		s.die(err)
		return nil, fmt.Errorf("upload helper %s: %w", path.Base(cmp.Or(exe, "on the agent")), err)
	}
	go s.readReplies()
	return s, nil
}

// die ends the session (the first reason wins) and stops the helper. The
// uploader forgets the session before anyone waiting sees done.
func (s *putSession) die(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	s.waiting = nil
	onDeath := s.onDeath
	s.mu.Unlock()
	if onDeath != nil {
		onDeath(err)
	}
	close(s.done)
	if s.c.Err() == nil {
		// Stop the helper. When the connection is going away its end
		// stops it (stdin EOF); a signal now could reach the server while
		// the login shell still runs its startup files and kill them
		// midway.
		s.kill()
	}
	s.in.CloseWithError(io.ErrClosedPipe)
}

func (s *putSession) deathErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// readReplies hands each reply to the request it answers.
func (s *putSession) readReplies() {
	for {
		rep, err := proto.ReadReply(s.r)
		if err != nil {
			s.die(fmt.Errorf("reading its reply: %w", err))
			return
		}
		s.lastIO.Store(time.Now().UnixNano())
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.mu.Unlock()
			s.die(errors.New("a reply to no request"))
			return
		}
		ch := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		ch <- rep
	}
}

// helperStopped: the upload helper session ended during an upload. The
// upload may be retried (the connection may well be fine).
type helperStopped struct {
	host  string
	cause error
}

func (e *helperStopped) Error() string {
	return fmt.Sprintf("the upload helper on %s stopped: %v", e.host, e.cause)
}

func (e *helperStopped) Unwrap() []error { return []error{ErrOffline, e.cause} }

// errCallerReader: the caller's reader failed; the request was abandoned.
type errCallerReader struct{ err error }

func (e errCallerReader) Error() string { return e.err.Error() }
func (e errCallerReader) Unwrap() error { return e.err }

// putHelper runs one upload through s. used is false when nothing of r
// was read and the session could not take the request: the caller may
// upload another way.
func (c *Client) putHelper(ctx context.Context, s *putSession, p putPlan, o PutOptions, r io.Reader) (res PutResult, used bool, err error) {
	if err := c.Err(); err != nil {
		return PutResult{}, true, &fs.PathError{Op: "put", Path: p.rel, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return PutResult{}, true, &fs.PathError{Op: "put", Path: p.rel, Err: err}
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	select {
	case s.send <- struct{}{}:
	case <-s.done:
		return PutResult{}, false, nil
	case <-ctx.Done():
		return PutResult{}, true, &fs.PathError{Op: "put", Path: p.rel, Err: ctx.Err()}
	}
	reply := make(chan proto.Reply, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		<-s.send
		return PutResult{}, false, nil
	}
	s.waiting = append(s.waiting, reply)
	s.mu.Unlock()

	pr := &progress{}
	var readAny atomic.Bool
	sent := make(chan error, 1)
	go func() {
		defer func() { <-s.send }()
		sent <- s.write(p.req, guardedReader{pr, &noteReads{r: r, any: &readAny}})
	}()

	fail := func(err error) (PutResult, bool, error) {
		return PutResult{}, true, &fs.PathError{Op: "put", Path: p.rel, Err: err}
	}
	stopped := func() (PutResult, bool, error) {
		pr.abandon()
		if !readAny.Load() && c.Err() == nil {
			return PutResult{}, false, nil
		}
		if err := c.Err(); err != nil {
			return fail(err)
		}
		return fail(&helperStopped{host: c.label, cause: s.deathErr()})
	}
	var readerErr error // the caller's reader failed
	start := time.Now().UnixNano()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	for {
		select {
		case err := <-sent:
			sent = nil
			var re errCallerReader
			switch {
			case err == nil:
			case errors.As(err, &re):
				// The request was abandoned; its reply comes once the
				// helper has removed what it wrote.
				if errors.Is(err, errAbandoned) {
					return fail(context.Canceled)
				}
				readerErr = re.err
			default:
				s.die(fmt.Errorf("sending an upload: %w", err))
				return stopped()
			}
		case rep := <-reply:
			if readerErr != nil {
				return fail(readerErr)
			}
			return c.helperResult(p, o, rep)
		case <-s.done:
			return stopped()
		case <-c.done:
			pr.abandon()
			return fail(c.Err())
		case <-ctx.Done():
			pr.abandon()
			return fail(ctx.Err())
		case <-timer.C:
			var idle time.Duration
			if pr.busy.Load() == 0 {
				last := max(start, s.lastIO.Load(), pr.lastCaller.Load())
				idle = time.Since(time.Unix(0, last))
			}
			if idle >= c.opTimeout {
				pr.abandon()
				c.die(fmt.Errorf("no reply from the upload helper for %v", idle.Round(time.Millisecond)))
				return fail(c.Err())
			}
			timer.Reset(c.opTimeout - idle)
		}
	}
}

// noteReads records that something was read.
type noteReads struct {
	r   io.Reader
	any *atomic.Bool
}

func (n *noteReads) Read(b []byte) (int, error) {
	k, err := n.r.Read(b)
	if k > 0 || err != nil {
		n.any.Store(true)
	}
	return k, err
}

// write sends one request and its data. An error reading r abandons the
// request (the session stays usable) and comes back as errCallerReader;
// any other error means the session's stream is broken.
func (s *putSession) write(req proto.Request, r io.Reader) error {
	if err := proto.WriteRequest(s.w, req); err != nil {
		return err
	}
	data := proto.DataWriter{W: s.w}
	buf := make([]byte, putChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := data.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if err := data.Abort(); err != nil {
				return err
			}
			if err := s.w.Flush(); err != nil {
				return err
			}
			return errCallerReader{rerr}
		}
	}
	if err := data.End(); err != nil {
		return err
	}
	return s.w.Flush()
}

// helperResult turns the helper's reply into Put's result.
func (c *Client) helperResult(p putPlan, o PutOptions, rep proto.Reply) (PutResult, bool, error) {
	c.uploads.helperPuts.Add(1)
	if rep.Status == proto.StatusFailed {
		return PutResult{}, true, &fs.PathError{Op: "put", Path: p.rel, Err: helperError(rep)}
	}
	dest := p.abs
	if rep.Status == proto.StatusLandedConflict {
		dest = p.conflict
	}
	var found *FileInfo
	if rep.Found {
		found = &FileInfo{Name: path.Base(p.abs), Mode: fs.FileMode(rep.FoundMode), Size: rep.FoundSize,
			Mtime: time.Unix(rep.FoundMtime, 0), Target: rep.FoundTarget}
	}
	res := p.result(o, dest, rep.Size, found)
	if rep.Mtime != 0 {
		// A file written in place keeps the time of the write where
		// only its owner could set another.
		res.Info.Mtime = time.Unix(rep.Mtime, int64(rep.MtimeNsec))
	}
	if rep.Ctime != 0 {
		res.Info.Ctime = time.Unix(rep.Ctime, int64(rep.CtimeNsec))
		if rd := c.rootDev.Load(); rd != 0 && rd == rep.Dev|1<<63 {
			res.Info.Ino = rep.Ino // as WalkTree reports it (tree.go)
		}
	}
	return res, true, nil
}

// helperError is the error for a failed upload: its errno as the kind (so
// errors.Is finds fs.ErrNotExist, fs.ErrPermission, syscall.ENOSPC ...)
// and the helper's message, in the words the SFTP path uses for a full
// disk or a read-only filesystem.
func helperError(rep proto.Reply) error {
	msg := errors.New(rep.Message)
	errno := syscall.Errno(rep.Errno)
	switch errno {
	case 0:
		return msg
	case syscall.ENOSPC:
		return fmt.Errorf("no space left on the server's disk (%w): %v", errno, msg)
	case syscall.EDQUOT:
		return fmt.Errorf("disk quota exceeded on the server (%w): %v", errno, msg)
	case syscall.EROFS:
		return fmt.Errorf("the server's filesystem is read-only (%w): %v", errno, msg)
	}
	return withKind(errno, msg)
}
