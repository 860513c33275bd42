package proto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"reflect"
	"testing"
)

func encode(t testing.TB, r Request, data []byte, abort bool) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := WriteRequest(w, r); err != nil {
		t.Fatal(err)
	}
	d := DataWriter{W: w}
	d.Write(data)
	if abort {
		d.Abort()
	} else {
		d.End()
	}
	w.Flush()
	return b.Bytes()
}

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Dest: "/srv/p/a.txt", Temp: ".remotefs-tmp-x-a.txt", Conflict: "a.txt.conflict", Mode: 0o4755, Mtime: -5, MtimeNsec: 999999999,
		Check: true, Absent: true, Link: true, Versions: []Version{{1, 2}, {3, 4}}}
	data := bytes.Repeat([]byte("0123456789"), MaxChunk/4) // several chunks
	br := bufio.NewReader(bytes.NewReader(encode(t, r, data, false)))
	got, err := ReadRequest(br)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("ReadRequest = %+v, %v", got, err)
	}
	b, err := io.ReadAll(NewDataReader(br))
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("data: %d bytes, %v", len(b), err)
	}
	if _, err := ReadRequest(br); err != io.EOF {
		t.Fatalf("after the last request: %v, want io.EOF", err)
	}
	// Aborted data.
	br = bufio.NewReader(bytes.NewReader(encode(t, r, []byte("half"), true)))
	ReadRequest(br)
	if _, err := io.ReadAll(NewDataReader(br)); !errors.Is(err, ErrAborted) {
		t.Fatalf("aborted data: %v", err)
	}
	// What cannot be encoded is refused.
	for _, bad := range []Request{
		{Dest: "rel", Temp: "t"}, {Dest: "/a/../b", Temp: "t"}, {Dest: "/", Temp: "t"},
		{Dest: "/a", Temp: "x/y"}, {Dest: "/a", Temp: ".."}, {Dest: "/a", Temp: "t", Check: true},
	} {
		if err := WriteRequest(bufio.NewWriter(io.Discard), bad); err == nil {
			t.Errorf("WriteRequest(%+v) succeeded", bad)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, r := range []Reply{
		{Status: StatusLanded, Size: 10, Mtime: 1700000000},
		{Status: StatusLanded, Size: 10, Mtime: 1700000000, MtimeNsec: 123456789, Ino: 1 << 40, Dev: 2049, Ctime: 1700000001, CtimeNsec: 5},
		{Status: StatusLandedConflict, Size: 3, Found: true, FoundMode: uint32(fs.ModeSymlink | 0o777), FoundSize: 6, FoundMtime: 99, FoundTarget: "elsewhere"},
		{Status: StatusFailed, Errno: 28, Message: "write /x: no space left on device"},
	} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		if err := WriteReply(w, r); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		got, err := ReadReply(bufio.NewReader(&b))
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("ReadReply = %+v, %v; want %+v", got, err, r)
		}
	}
	for _, bad := range []string{"", "R", "X\x00", "R\x09", "R\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02", "R\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00"} {
		if _, err := ReadReply(bufio.NewReader(bytes.NewReader([]byte(bad)))); !errors.Is(err, ErrMalformed) {
			t.Errorf("ReadReply(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestAccepts(t *testing.T) {
	r := Request{Mtime: 50, Versions: []Version{{Size: 3, Mtime: 10}}}
	file := func(size, mtime int64) *Current { return &Current{Mode: 0o644, Size: size, Mtime: mtime} }
	for _, c := range []struct {
		name   string
		r      Request
		cur    *Current
		accept bool
	}{
		{"absent refused", r, nil, false},
		{"absent accepted", Request{Absent: true}, nil, true},
		{"expected version", r, file(3, 10), true},
		{"other version", r, file(4, 10), false},
		{"own upload landed", r, file(7, 50), true},
		{"directory", Request{Absent: true, Link: true}, &Current{Mode: fs.ModeDir | 0o755}, false},
		{"symlink refused", r, &Current{Mode: fs.ModeSymlink | 0o777, Size: 3, Mtime: 10}, false},
		{"symlink accepted", Request{Link: true}, &Current{Mode: fs.ModeSymlink | 0o777}, true},
		{"fifo", r, &Current{Mode: fs.ModeNamedPipe, Size: 3, Mtime: 10}, false},
	} {
		if got := Accepts(c.r, c.cur, 7); got != c.accept {
			t.Errorf("%s: Accepts = %v", c.name, got)
		}
	}
}

// FuzzRequestStream: whatever the helper is sent, it either reads
// requests that encode back to exactly what it read, or stops with
// ErrMalformed; it never panics.
func FuzzRequestStream(f *testing.F) {
	f.Add(encode(f, Request{Dest: "/a/b", Temp: ".remotefs-tmp-1-b", Mode: 0o644, Mtime: 1}, []byte("data"), false))
	f.Add(encode(f, Request{Dest: "/a/b", Temp: "t", Conflict: "c", Check: true, Absent: true, Versions: []Version{{1, 2}}}, nil, true))
	f.Add([]byte("P\x00\x02/a\x00\x01t\x00\x00\x00\x00\x01\xa4\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x7f\xff\xff\xff"))
	f.Add([]byte("Q"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		for {
			r, err := ReadRequest(br)
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v is not ErrMalformed", err)
				}
				return
			}
			if !ValidDest(r.Dest) || !ValidBase(r.Temp) || (r.Check && r.Conflict == "") {
				t.Fatalf("accepted a bad request %+v", r)
			}
			if err := WriteRequest(w, r); err != nil {
				t.Fatalf("an accepted request cannot be encoded: %v", err)
			}
			d := NewDataReader(br)
			data, err := io.ReadAll(d)
			dw := DataWriter{W: w}
			switch {
			case err == nil:
				dw.Write(data)
				dw.End()
			case errors.Is(err, ErrAborted):
				dw.Write(data)
				dw.Abort()
			case errors.Is(err, ErrMalformed):
				return
			default:
				t.Fatalf("data error %v", err)
			}
		}
		w.Flush()
		// Chunk boundaries may differ; compare what the reader sees.
		a, b := bufio.NewReader(bytes.NewReader(in)), bufio.NewReader(&out)
		for {
			ra, ea := ReadRequest(a)
			rb, eb := ReadRequest(b)
			if ea != eb || !reflect.DeepEqual(ra, rb) {
				t.Fatalf("re-encoded request differs: %+v %v / %+v %v", ra, ea, rb, eb)
			}
			if ea != nil {
				return
			}
			da, ea := io.ReadAll(NewDataReader(a))
			db, eb := io.ReadAll(NewDataReader(b))
			if !bytes.Equal(da, db) || (ea == nil) != (eb == nil) {
				t.Fatalf("re-encoded data differs")
			}
		}
	})
}

// FuzzReply: the mount's reader of the helper's replies never panics, and
// what it accepts encodes back to the same bytes.
func FuzzReply(f *testing.F) {
	f.Add([]byte("R\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00"))
	f.Add([]byte("R\x02\x00\x00\x00\x1c\x00\x03abc"))
	f.Add([]byte("R\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x01\xa4\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		r, err := ReadReply(br)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		if err := WriteReply(w, r); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("re-encoded %q, input %q", out.Bytes(), in)
		}
	})
}

func TestHelloCarriesIdentity(t *testing.T) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	WriteHello(w, 1001, 50)
	w.Flush()
	uid, gid, err := ReadHello(&b)
	if err != nil || uid != 1001 || gid != 50 {
		t.Errorf("ReadHello = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := ReadHello(bytes.NewReader([]byte("remotefs-put 1\n\x00\x00\x00\x00\x00\x00\x00\x00"))); err == nil {
		t.Error("an older greeting was accepted")
	}
}
