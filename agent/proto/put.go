package proto

// The upload helper's wire format: between a mount (package conn) and
// the upload helper it runs on the server (`remotefs __put`, package
// agent): a stream of requests on the helper's stdin, one reply per
// request on its stdout, in the order of the requests.
//
// Both ends are the same remotefs binary (the helper's file name holds the
// binary's hash), so the format has no negotiation: the helper writes Hello
// when it starts, and a mount that reads anything else stops using it.
//
// The helper first writes Hello and the uid and gid it runs as.
//
// All integers are big-endian. A string is a uint16 length and its bytes.
//
//	request: 'P' dest:string temp:string conflict:string mode:uint32
//	         mtime:int64 mtimensec:uint32 flags:uint8 nversions:uint16
//	         (size:int64 mtime:int64)* data
//	data:    (len:uint32 bytes)* 0:uint32    -- or AbortChunk instead of 0
//	reply:   'R' status:uint8, then
//	           Landed/LandedConflict: size:int64 mtime:int64 stat found:uint8
//	                                   [mode:uint32 size:int64 mtime:int64 target:string]
//	           Failed:                errno:uint32 message:string
//
//	stat:    mtimensec:uint32 ino:uint64 dev:uint64 ctime:int64 ctimensec:uint32
//	         -- the landed file's, as lstat saw it after the rename (0s: unknown)
//
// Chunks are 1 to MaxChunk bytes. AbortChunk ends the data early: the
// sender could not read all of it (the helper removes what it wrote and
// answers Failed). A stream that breaks the format cannot be resynchronised:
// the reader stops with ErrMalformed.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Hello is the first thing the helper writes, followed by its identity:
// the uid and gid it runs as (uint32 each), which are the login user's.
const Hello = "remotefs-put 3\n"

// WriteHello writes Hello and the helper's identity.
func WriteHello(w *bufio.Writer, uid, gid uint32) error {
	w.WriteString(Hello)
	w.Write(u32(uid))
	_, err := w.Write(u32(gid))
	return err
}

// ReadHello reads Hello and the identity after it.
func ReadHello(r io.Reader) (uid, gid uint32, err error) {
	b := make([]byte, len(Hello)+8)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, 0, err
	}
	if string(b[:len(Hello)]) != Hello {
		return 0, 0, fmt.Errorf("%w: unexpected greeting %q", ErrMalformed, b)
	}
	id := b[len(Hello):]
	return binary.BigEndian.Uint32(id), binary.BigEndian.Uint32(id[4:]), nil
}

const (
	reqMagic   = 'P'
	replyMagic = 'R'
	// MaxChunk is the largest data chunk.
	MaxChunk = 1 << 20
	// AbortChunk in place of a chunk length abandons the request.
	AbortChunk   = 0xFFFFFFFF
	maxString    = 4096
	maxVersions  = 1024
	flagCheck    = 1
	flagAbsent   = 2
	flagLink     = 4
	knownFlags   = flagCheck | flagAbsent | flagLink
	maxMessage   = 2048
	StatusLanded = 0 // the file is at Dest
	// StatusLandedConflict: Dest held something not accepted; the file is
	// at the conflict name.
	StatusLandedConflict = 1
	StatusFailed         = 2 // nothing was changed; Errno and Message say why
)

// ErrMalformed: the stream does not follow the format.
var ErrMalformed = errors.New("malformed upload helper stream")

// ErrAborted: the request's sender abandoned the data (AbortChunk).
var ErrAborted = errors.New("upload abandoned by the client")

// Version is a regular file's size and mtime (whole seconds).
type Version struct {
	Size  int64
	Mtime int64
}

// Request is one upload, without its data.
type Request struct {
	// Dest is the absolute, clean path of the file to replace.
	Dest string
	// Temp is the temporary file's base name, in Dest's folder. An existing
	// file of that name is overwritten (a retry reuses it).
	Temp string
	// Conflict is the base name, in Dest's folder, the file goes to when
	// Dest holds something not accepted; used only with Check.
	Conflict string
	Mode     uint32 // io/fs.FileMode permission bits (with setuid, setgid, sticky)
	Mtime    int64  // Unix seconds; also the atime
	// MtimeNsec: the nanoseconds of Mtime (the versions compared are
	// whole seconds).
	MtimeNsec uint32
	// Check: compare Dest with what is accepted before replacing it.
	// Without it Dest is replaced whatever it is.
	Check bool
	// Accepted at Dest: nothing (Absent), a symlink (Link), a regular file
	// of one of Versions, or a regular file of exactly the uploaded size
	// and Mtime (an earlier attempt of the same upload). A directory never.
	Absent   bool
	Link     bool
	Versions []Version
}

// Reply answers one Request.
type Reply struct {
	Status byte
	// Landed, LandedConflict: bytes written, the landed file's mtime
	// (Request.Mtime, unless a file written in place could not take it);
	// what was at Dest just before the rename (Found false: nothing).
	Size  int64
	Mtime int64
	// Landed: the file as lstat saw it once in place, so the mount shows
	// what the server has (0 when unknown): its mtime's nanoseconds, inode
	// and device numbers, and ctime.
	MtimeNsec   uint32
	Ino, Dev    uint64
	Ctime       int64
	CtimeNsec   uint32
	Found       bool
	FoundMode   uint32 // io/fs.FileMode
	FoundSize   int64
	FoundMtime  int64
	FoundTarget string // a symlink's target
	// Failed: the errno (0 when there is none) and a message.
	Errno   uint32
	Message string
}

func writeString(w *bufio.Writer, s string) {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(len(s)))
	w.Write(b[:])
	w.WriteString(s)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func i64(v int64) []byte  { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// ValidBase reports whether name can be a file name in a folder.
func ValidBase(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 255 && !strings.ContainsAny(name, "/\x00")
}

// ValidDest reports whether p is an absolute clean path of a file (not "/").
func ValidDest(p string) bool {
	return len(p) > 1 && len(p) <= maxString && p[0] == '/' && path.Clean(p) == p && !strings.Contains(p, "\x00")
}

// WriteRequest writes the header of r (the data follows, see DataWriter).
func WriteRequest(w *bufio.Writer, r Request) error {
	if !ValidDest(r.Dest) || !ValidBase(r.Temp) || (r.Conflict != "" && !ValidBase(r.Conflict)) ||
		(r.Check && r.Conflict == "") || len(r.Versions) > maxVersions {
		return fmt.Errorf("upload request for %q cannot be encoded", r.Dest)
	}
	w.WriteByte(reqMagic)
	writeString(w, r.Dest)
	writeString(w, r.Temp)
	writeString(w, r.Conflict)
	w.Write(u32(r.Mode))
	w.Write(i64(r.Mtime))
	w.Write(u32(r.MtimeNsec))
	var flags byte
	if r.Check {
		flags |= flagCheck
	}
	if r.Absent {
		flags |= flagAbsent
	}
	if r.Link {
		flags |= flagLink
	}
	w.WriteByte(flags)
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(r.Versions)))
	w.Write(n[:])
	for _, v := range r.Versions {
		w.Write(i64(v.Size))
		w.Write(i64(v.Mtime))
	}
	return nil
}

type reader struct {
	br  *bufio.Reader
	err error
}

func (r *reader) full(n int) []byte {
	if r.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: truncated", ErrMalformed)
		}
		r.err = err
		return nil
	}
	return b
}

func (r *reader) u8() byte {
	if b := r.full(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.full(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.full(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) i64() int64 {
	if b := r.full(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (r *reader) str(limit int) string {
	n := int(r.u16())
	if r.err == nil && n > limit {
		r.err = fmt.Errorf("%w: string of %d bytes", ErrMalformed, n)
	}
	return string(r.full(n))
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// ReadRequest reads a request header. At a clean end of the stream (no
// byte of a new request) it returns io.EOF.
func ReadRequest(br *bufio.Reader) (Request, error) {
	m, err := br.ReadByte()
	if err == io.EOF {
		return Request{}, io.EOF
	}
	if err != nil {
		return Request{}, err
	}
	if m != reqMagic {
		return Request{}, fmt.Errorf("%w: request starts with %q", ErrMalformed, m)
	}
	r := &reader{br: br}
	var q Request
	q.Dest = r.str(maxString)
	q.Temp = r.str(maxString)
	q.Conflict = r.str(maxString)
	q.Mode = r.u32()
	q.Mtime = r.i64()
	q.MtimeNsec = r.u32()
	flags := r.u8()
	n := int(r.u16())
	if r.err == nil {
		switch {
		case !ValidDest(q.Dest):
			r.fail("bad destination %q", q.Dest)
		case !ValidBase(q.Temp):
			r.fail("bad temporary name %q", q.Temp)
		case q.Conflict != "" && !ValidBase(q.Conflict):
			r.fail("bad conflict name %q", q.Conflict)
		case flags&^knownFlags != 0:
			r.fail("unknown flags %#x", flags)
		case flags&flagCheck != 0 && q.Conflict == "":
			r.fail("a check without a conflict name")
		case n > maxVersions:
			r.fail("%d versions", n)
		case q.MtimeNsec >= 1e9:
			r.fail("mtime nanoseconds %d", q.MtimeNsec)
		}
	}
	q.Check, q.Absent, q.Link = flags&flagCheck != 0, flags&flagAbsent != 0, flags&flagLink != 0
	for i := 0; i < n && r.err == nil; i++ {
		q.Versions = append(q.Versions, Version{Size: r.i64(), Mtime: r.i64()})
	}
	if r.err != nil {
		return Request{}, r.err
	}
	return q, nil
}

// DataWriter writes a request's data as chunks.
type DataWriter struct{ W *bufio.Writer }

// Write sends p as one or more chunks.
func (d DataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxChunk)
		d.W.Write(u32(uint32(c)))
		if _, err := d.W.Write(p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// End ends the data.
func (d DataWriter) End() error {
	_, err := d.W.Write(u32(0))
	return err
}

// Abort abandons the request.
func (d DataWriter) Abort() error {
	_, err := d.W.Write(u32(AbortChunk))
	return err
}

// DataReader reads a request's data: io.EOF after the last chunk,
// ErrAborted when the sender abandoned it, ErrMalformed for a bad chunk.
// Reading it to its end leaves the stream at the next request.
type DataReader struct {
	br   *bufio.Reader
	left uint32 // bytes left in the current chunk
	err  error  // sticky
}

// NewDataReader reads the data that follows a request header.
func NewDataReader(br *bufio.Reader) *DataReader { return &DataReader{br: br} }

func (d *DataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.left == 0 {
		var b [4]byte
		if _, err := io.ReadFull(d.br, b[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: data truncated", ErrMalformed)
			}
			d.err = err
			return 0, err
		}
		switch n := binary.BigEndian.Uint32(b[:]); {
		case n == 0:
			d.err = io.EOF
			return 0, io.EOF
		case n == AbortChunk:
			d.err = ErrAborted
			return 0, ErrAborted
		case n > MaxChunk:
			d.err = fmt.Errorf("%w: chunk of %d bytes", ErrMalformed, n)
			return 0, d.err
		default:
			d.left = n
		}
	}
	if len(p) > int(d.left) {
		p = p[:d.left]
	}
	n, err := d.br.Read(p)
	d.left -= uint32(n)
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: data truncated", ErrMalformed)
		}
		d.err = err
		return n, err
	}
	return n, nil
}

// Drain reads what is left of the data; nil when it ended (normally or
// aborted) and the stream is at the next request.
func (d *DataReader) Drain() error {
	_, err := io.Copy(io.Discard, d)
	if errors.Is(err, ErrAborted) {
		return nil
	}
	return err
}

// WriteReply writes one reply.
func WriteReply(w *bufio.Writer, r Reply) error {
	w.WriteByte(replyMagic)
	w.WriteByte(r.Status)
	switch r.Status {
	case StatusLanded, StatusLandedConflict:
		w.Write(i64(r.Size))
		w.Write(i64(r.Mtime))
		w.Write(u32(r.MtimeNsec))
		w.Write(i64(int64(r.Ino)))
		w.Write(i64(int64(r.Dev)))
		w.Write(i64(r.Ctime))
		w.Write(u32(r.CtimeNsec))
		if !r.Found {
			return w.WriteByte(0)
		}
		w.WriteByte(1)
		w.Write(u32(r.FoundMode))
		w.Write(i64(r.FoundSize))
		w.Write(i64(r.FoundMtime))
		writeString(w, truncate(r.FoundTarget, maxString))
	case StatusFailed:
		w.Write(u32(r.Errno))
		writeString(w, truncate(r.Message, maxMessage))
	default:
		return fmt.Errorf("reply status %d cannot be encoded", r.Status)
	}
	_, err := w.Write(nil)
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ReadReply reads one reply.
func ReadReply(br *bufio.Reader) (Reply, error) {
	r := &reader{br: br}
	if m := r.u8(); r.err == nil && m != replyMagic {
		return Reply{}, fmt.Errorf("%w: reply starts with %q", ErrMalformed, m)
	}
	var p Reply
	p.Status = r.u8()
	if r.err != nil {
		return Reply{}, r.err
	}
	switch p.Status {
	case StatusLanded, StatusLandedConflict:
		p.Size = r.i64()
		p.Mtime = r.i64()
		p.MtimeNsec = r.u32()
		p.Ino = uint64(r.i64())
		p.Dev = uint64(r.i64())
		p.Ctime = r.i64()
		p.CtimeNsec = r.u32()
		if r.err == nil && (p.MtimeNsec >= 1e9 || p.CtimeNsec >= 1e9) {
			r.fail("nanoseconds out of range")
		}
		switch r.u8() {
		case 0:
		case 1:
			p.Found = true
			p.FoundMode = r.u32()
			p.FoundSize = r.i64()
			p.FoundMtime = r.i64()
			p.FoundTarget = r.str(maxString)
		default:
			r.fail("bad found flag")
		}
		if r.err == nil && p.Size < 0 {
			r.fail("negative size")
		}
	case StatusFailed:
		p.Errno = r.u32()
		p.Message = r.str(maxMessage)
	default:
		r.fail("unknown status %d", p.Status)
	}
	if r.err != nil {
		return Reply{}, r.err
	}
	return p, nil
}

// Current is what lstat says is at a destination.
type Current struct {
	Mode  fs.FileMode
	Size  int64
	Mtime int64 // whole seconds
}

// Accepts reports whether an upload of size bytes under r may replace cur
// (nil: nothing there). Both ends use it: the helper on the server, and
// the plain-SFTP upload in the mount.
func Accepts(r Request, cur *Current, size int64) bool {
	switch {
	case cur == nil:
		return r.Absent
	case cur.Mode.IsDir():
		return false
	case cur.Mode&fs.ModeSymlink != 0:
		return r.Link
	case !cur.Mode.IsRegular():
		return false
	}
	v := Version{Size: cur.Size, Mtime: cur.Mtime}
	if v == (Version{Size: size, Mtime: r.Mtime}) {
		return true // an earlier attempt of this very upload landed
	}
	for _, w := range r.Versions {
		if w == v {
			return true
		}
	}
	return false
}
