package proto

import (
	"bufio"
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestReadWatchRecords(t *testing.T) {
	rec := func(k byte, p string) string { return string(k) + "\x00" + p + "\x00" }
	in := rec('S', "") + rec('C', "a b.txt") + rec('D', "dir") + rec('D', "") + rec('G', "dir/x") +
		rec('H', "dir/sub") + rec('X', "queue overflow") + rec('C', "new\nline") + rec('E', "boom") + rec('L', "")
	var got []string
	err := ReadWatchRecords(strings.NewReader(in), func(k byte, p string) error {
		got = append(got, string(k)+":"+p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"S:", "C:a b.txt", "D:dir", "D:", "G:dir/x", "H:dir/sub", "X:queue overflow", "C:new\nline", "E:boom", "L:"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, bad := range []string{
		rec('C', ""), rec('C', "/abs"), rec('C', "a/../b"), rec('G', "a//b"), rec('C', "a/"),
		rec('H', "."), rec('Q', "x"), "CC\x00x\x00", rec('S', "x"), "C\x00x", "C\x00", "C",
	} {
		if err := ReadWatchRecords(strings.NewReader(bad), func(byte, string) error { return nil }); !errors.Is(err, ErrWatchStream) {
			t.Errorf("stream %q: %v, want ErrWatchStream", bad, err)
		}
	}
	if err := ReadWatchRecords(strings.NewReader(""), nil); err != nil {
		t.Errorf("empty stream: %v", err)
	}
}

func FuzzWatchRecords(f *testing.F) {
	f.Add([]byte("S\x00\x00C\x00a/b\x00D\x00\x00H\x00x\x00R\x00y\x00"))
	f.Add([]byte("G\x00../x\x00"))
	f.Add([]byte("X\x00\x00E\x00msg\x00L\x00\x00"))
	f.Add([]byte("C\x00a\x00C"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		n := 0
		err := ReadWatchRecords(bytes.NewReader(data), func(k byte, p string) error {
			n++
			switch k {
			case WatchRecChange, WatchRecGone, WatchRecGoneDir, WatchRecMoved:
				if p == "" {
					t.Fatalf("empty path for %c", k)
				}
				fallthrough
			case WatchRecDir:
				if !ValidRel(p) {
					t.Fatalf("accepted bad path %q", p)
				}
			case WatchRecStarted:
				if p != "" {
					t.Fatalf("start record with a path")
				}
			case WatchRecOverflow, WatchRecError, WatchRecLimit:
			default:
				t.Fatalf("accepted kind %q", k)
			}
			WriteWatchRecord(bw, k, p)
			return nil
		})
		bw.Flush()
		if err == nil {
			// What was accepted is exactly the input.
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("re-encoded %q, input %q", out.Bytes(), data)
			}
		} else if !errors.Is(err, ErrWatchStream) {
			t.Fatalf("error %v is not ErrWatchStream", err)
		}
	})
}
