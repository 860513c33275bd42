package conn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// A symlink's own owner and times. SFTP v3's setstat follows a final
// symlink; OpenSSH's sftp-server offers lsetstat@openssh.com, which does
// not, but pkg/sftp does not send it. So it goes over a second SFTP
// channel of the same ssh connection, opened on the first such request
// and spoken here directly: SSH_FXP_INIT, then one SSH_FXP_EXTENDED
// request at a time, each answered by an SSH_FXP_STATUS. Only the built-in
// ssh client can open it (the user's own ssh runs commands, not
// subsystems, through this package); elsewhere, and on servers without
// the extension, the calls fail with ErrUnsupported.

const lsetstatExt = "lsetstat@openssh.com"

// SFTP v3 packet types and attribute flags used here.
const (
	fxpInit     = 1
	fxpVersion  = 2
	fxpStatus   = 101
	fxpExtended = 200

	attrUIDGID    = 0x2
	attrACModTime = 0x8
)

// linkSetter is the second SFTP channel.
type linkSetter struct {
	// reqMu serialises requests on the channel: one request and its
	// reply at a time. It is the channel's own lock, held only by the
	// goroutine doing the I/O, never by a caller waiting for it (the
	// caller gives up at its deadline and closes the channel, which ends
	// that I/O) and never together with any cache state.
	reqMu sync.Mutex
	id    uint32 // guarded by reqMu

	chMu sync.Mutex         // guards ch only; never held across I/O
	ch   io.ReadWriteCloser // nil until opened, or after a failure
}

// channel returns the open channel, if any.
func (ls *linkSetter) channel() io.ReadWriteCloser {
	ls.chMu.Lock()
	defer ls.chMu.Unlock()
	return ls.ch
}

// setChannel records ch as the open channel.
func (ls *linkSetter) setChannel(ch io.ReadWriteCloser) {
	ls.chMu.Lock()
	ls.ch = ch
	ls.chMu.Unlock()
}

// drop closes ch and forgets it, if it is still the open channel: the next
// request opens a new one.
func (ls *linkSetter) drop(ch io.ReadWriteCloser) {
	ls.chMu.Lock()
	if ls.ch == ch {
		ls.ch = nil
	}
	ls.chMu.Unlock()
	if ch != nil {
		ch.Close()
	}
}

// HasLinkAttrs reports whether Lchown and Lchtimes can work on this
// connection.
func (c *Client) HasLinkAttrs() bool {
	_, ok := c.sftp.HasExtension(lsetstatExt)
	_, builtin := c.ssh.(sshTransport)
	return ok && builtin
}

// Lchown sets the owner and group of path itself, not following a final
// symlink (lchown(2)).
func (c *Client) Lchown(ctx context.Context, rel string, uid, gid uint32) error {
	attrs := binary.BigEndian.AppendUint32(nil, attrUIDGID)
	attrs = binary.BigEndian.AppendUint32(attrs, uid)
	attrs = binary.BigEndian.AppendUint32(attrs, gid)
	return c.lsetstat(ctx, "lchown", rel, attrs)
}

// Lchtimes sets the access and modification times of path itself, not
// following a final symlink (utimensat with AT_SYMLINK_NOFOLLOW), in
// whole seconds as SFTP v3 carries them.
func (c *Client) Lchtimes(ctx context.Context, rel string, atime, mtime time.Time) error {
	attrs := binary.BigEndian.AppendUint32(nil, attrACModTime)
	attrs = binary.BigEndian.AppendUint32(attrs, uint32(atime.Unix()))
	attrs = binary.BigEndian.AppendUint32(attrs, uint32(mtime.Unix()))
	return c.lsetstat(ctx, "lchtimes", rel, attrs)
}

func (c *Client) lsetstat(ctx context.Context, op, rel string, attrs []byte) error {
	abs, err := c.abs(op, rel)
	if err != nil {
		return err
	}
	if !c.HasLinkAttrs() {
		return &fs.PathError{Op: op, Path: rel, Err: fmt.Errorf("%w: the server offers no %s", ErrUnsupported, lsetstatExt)}
	}
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return c.mapErr(op, rel, err)
	}
	ls := &c.linkAttrs
	var mu sync.Mutex
	var using io.ReadWriteCloser // guarded by mu: the channel the request is on
	gaveUp := false              // guarded by mu
	errc := make(chan error, 1)
	go func() {
		ls.reqMu.Lock()
		defer ls.reqMu.Unlock()
		ch := ls.channel()
		if ch == nil {
			var err error
			if ch, err = c.openLinkChannel(); err != nil {
				errc <- channelError(err)
				return
			}
			ls.setChannel(ch)
		}
		mu.Lock()
		using = ch
		late := gaveUp
		mu.Unlock()
		if late {
			ls.drop(ch)
			errc <- errAbandoned
			return
		}
		ls.id++
		req := sftpString(nil, lsetstatExt)
		req = sftpString(req, abs)
		req = append(req, attrs...)
		code, msg, err := request(ch, fxpExtended, ls.id, req)
		if err != nil {
			ls.drop(ch)
			errc <- channelError(err)
			return
		}
		errc <- statusError(code, msg)
	}()
	giveUp := func(err error) error {
		mu.Lock()
		gaveUp = true
		ch := using
		mu.Unlock()
		ls.drop(ch) // ends the request's wait for its reply
		return c.mapErr(op, rel, err)
	}
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	select {
	case err := <-errc:
		return c.mapErr(op, rel, err)
	case <-ctx.Done():
		return giveUp(ctx.Err())
	case <-c.done:
		return giveUp(c.Err())
	case <-timer.C:
		return giveUp(fmt.Errorf("%w: no reply from the server to %s within %v", ErrOffline, lsetstatExt, c.opTimeout))
	}
}

// channelError is a failure of the second channel. It does not wrap the
// I/O error: that would count as the connection's own transport failing
// (mapErr), and kill it; the channel is simply opened again next time.
func channelError(err error) error {
	if errors.Is(err, ErrUnsupported) {
		return err
	}
	return fmt.Errorf("%s channel: %v", lsetstatExt, err)
}

// openLinkChannel opens the sftp subsystem on a new channel and greets it.
func (c *Client) openLinkChannel() (io.ReadWriteCloser, error) {
	t, ok := c.ssh.(sshTransport)
	if !ok {
		return nil, ErrUnsupported
	}
	sess, err := t.c.NewSession()
	if err != nil {
		return nil, err
	}
	wr, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	rd, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	if err := sess.RequestSubsystem("sftp"); err != nil {
		sess.Close()
		return nil, err
	}
	ch := &sessionRW{sess: sess, r: rd, w: wr}
	if err := writePacket(ch, fxpInit, binary.BigEndian.AppendUint32(nil, 3)); err != nil {
		ch.Close()
		return nil, err
	}
	typ, _, err := readPacket(ch)
	if err == nil && typ != fxpVersion {
		err = fmt.Errorf("sftp greeting: packet type %d, want VERSION", typ)
	}
	if err != nil {
		ch.Close()
		return nil, err
	}
	return ch, nil
}

// request sends one request with id on ch and returns the status it gets.
func request(ch io.ReadWriter, typ byte, id uint32, payload []byte) (code uint32, msg string, err error) {
	if err := writePacket(ch, typ, append(binary.BigEndian.AppendUint32(nil, id), payload...)); err != nil {
		return 0, "", err
	}
	rtyp, body, err := readPacket(ch)
	if err != nil {
		return 0, "", err
	}
	if rtyp != fxpStatus || len(body) < 8 || binary.BigEndian.Uint32(body) != id {
		return 0, "", fmt.Errorf("sftp: unexpected reply (type %d) to %s", rtyp, lsetstatExt)
	}
	code = binary.BigEndian.Uint32(body[4:])
	if len(body) >= 12 {
		if n := binary.BigEndian.Uint32(body[8:]); uint64(len(body)) >= 12+uint64(n) {
			msg = string(body[12 : 12+n])
		}
	}
	return code, msg, nil
}

// statusError turns an SFTP status into the error pkg/sftp's calls give
// for it, so mapErr treats both alike.
func statusError(code uint32, msg string) error {
	switch code {
	case 0:
		return nil
	case fxNoSuchFile:
		return fs.ErrNotExist
	case fxPermissionDenied:
		return syscall.EPERM // what lchown(2) and utimensat(2) say
	case fxOpUnsupported:
		return ErrUnsupported
	}
	return fmt.Errorf("sftp status %d: %s", code, msg)
}

func sftpString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// writePacket writes one SFTP packet: length, type, payload.
func writePacket(w io.Writer, typ byte, payload []byte) error {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 5+len(payload)), uint32(1+len(payload)))
	b = append(b, typ)
	_, err := w.Write(append(b, payload...))
	return err
}

// readPacket reads one SFTP packet (at most 256 KiB: only status and
// version packets come on this channel).
func readPacket(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > 256<<10 {
		return 0, nil, fmt.Errorf("sftp: packet of %d bytes", n)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[4], body, nil
}

// sessionRW is an ssh session's stdin and stdout as one stream.
type sessionRW struct {
	sess *ssh.Session
	r    io.Reader
	w    io.WriteCloser
}

func (s *sessionRW) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *sessionRW) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *sessionRW) Close() error {
	s.w.Close()
	return s.sess.Close()
}

var (
	_ LinkAttrSetter = (*Client)(nil)
	_ LinkAttrSetter = (*Manager)(nil)
)
