package fs

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The helper's side of the protocol, run on a plain folder: each request
// does its operation and answers ok, a failing one answers its error and
// the helper goes on, a malformed one ends it.
func TestEchoHelperPerformsRequests(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edited"), []byte("old"), 0o644)
	os.WriteFile(filepath.Join(dir, "gone"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "gonedir"), 0o755)
	os.WriteFile(filepath.Join(dir, "from"), []byte("x"), 0o644)
	var in bytes.Buffer
	for _, op := range []echoOp{
		{kind: "create", path: "new", num: 5},
		{kind: "modify", path: "edited", num: 10},
		{kind: "chmod", path: "edited", num: 0o600},
		{kind: "mkdir", path: "d"},
		{kind: "symlink", path: "d/link", arg: "../new"},
		{kind: "unlink", path: "gone"},
		{kind: "rmdir", path: "gonedir"},
		{kind: "rename", path: "from", arg: "d/to"},
		{kind: "create", path: "new"}, // exists: an error, not the end
		{kind: "bogus", path: "x"},
	} {
		in.WriteString(encodeEchoOp(op))
	}
	var out bytes.Buffer
	if err := RunEchoHelper(dir, &in, &out, 42); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{"ready 42", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "error: create new: file exists", "error: unknown echo operation \"bogus\""}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("answers\n%q\nwant\n%q", lines, want)
	}
	check := func(p string, size int64, mode os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		if fi.Size() != size || (mode != 0 && fi.Mode() != mode) {
			t.Errorf("%s: size %d mode %v, want %d %v", p, fi.Size(), fi.Mode(), size, mode)
		}
	}
	check("new", 5, 0)
	check("edited", 10, 0o600)
	check("d/to", 1, 0o644)
	if tgt, err := os.Readlink(filepath.Join(dir, "d/link")); err != nil || tgt != "../new" {
		t.Errorf("symlink: %q, %v", tgt, err)
	}
	for _, p := range []string{"gone", "gonedir", "from"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}

	// Paths that would leave the mount end the helper.
	for _, bad := range []string{"../x", "/etc/passwd", "a/../../b", "", "a//b"} {
		var out bytes.Buffer
		err := RunEchoHelper(dir, strings.NewReader(encodeEchoOp(echoOp{kind: "unlink", path: bad})), &out, 1)
		if err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}

func FuzzReadEchoOp(f *testing.F) {
	f.Add([]byte(encodeEchoOp(echoOp{kind: "rename", path: "a/b", arg: "c", num: 3})))
	f.Add([]byte("create\x00x\x00\x00-1\x00"))
	f.Add([]byte("unlink\x00../x\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			op, err := readEchoOp(r)
			if err != nil {
				if err != io.EOF && op != (echoOp{}) {
					t.Fatalf("error %v with an op %+v", err, op)
				}
				return
			}
			if !validEchoPath(op.path) || (op.kind == "rename" && !validEchoPath(op.arg)) {
				t.Fatalf("accepted %+v", op)
			}
			if filepath.IsAbs(op.path) || op.path == ".." || strings.HasPrefix(op.path, "../") {
				t.Fatalf("path leaves the mount: %q", op.path)
			}
			if again, err := readEchoOp(bufio.NewReader(strings.NewReader(encodeEchoOp(op)))); err != nil || again != op {
				t.Fatalf("round trip of %+v: %+v, %v", op, again, err)
			}
		}
	})
}
