package mountinfo

import (
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	text := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:32 / /home/a\040b rw,nosuid,nodev - fuse.remotefs remotefs:box:p\040q rw,user_id=1000
37 36 0:33 / /home/a\040b rw,nosuid,nodev,noexec - fuse.remotefs remotefs:box:p rw
bad line
`
	ms := Parse(text)
	if len(ms) != 3 {
		t.Fatalf("got %d mounts: %+v", len(ms), ms)
	}
	if m := ms[1]; m.Point != "/home/a b" || m.FSType != "fuse.remotefs" || m.Source != "remotefs:box:p q" || m.Options != "rw,nosuid,nodev" || m.Device != "0:32" {
		t.Errorf("second mount: %+v", m)
	}
	if m := ms[0]; m.Point != "/" || m.FSType != "ext4" || m.Source != "/dev/sda1" || m.Device != "8:1" {
		t.Errorf("root: %+v", m)
	}
}

func TestLookupRoot(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc")
	}
	if m, ok := Lookup("/"); !ok || m.FSType == "" {
		t.Errorf("/ is not a mount point: %+v, %v", m, ok)
	}
	if _, ok := Lookup("/nonexistent-dir-for-mountinfo-test"); ok {
		t.Error("a missing directory is a mount point")
	}
	if Unescape(`a\134b\011c`) != "a\\b\tc" {
		t.Errorf("unescape: %q", Unescape(`a\134b\011c`))
	}
}

// Any text parses without a panic, one Mount per line with six or more
// fields, and unescaping never makes a field longer.
func FuzzParse(f *testing.F) {
	f.Add("36 22 0:32 / /home/a\\040b rw,nosuid - fuse.remotefs remotefs:box:p rw\n")
	f.Add("1 2 3 4 5 6 -\n\\\\\\1 2 3 4 5 6\n")
	f.Fuzz(func(t *testing.T, text string) {
		want := 0
		for _, line := range strings.Split(text, "\n") {
			if len(strings.Fields(line)) >= 6 {
				want++
			}
		}
		if got := len(Parse(text)); got != want {
			t.Fatalf("%d mounts from %d lines of six fields", got, want)
		}
		for _, fld := range strings.Fields(text) {
			if u := Unescape(fld); len(u) > len(fld) {
				t.Fatalf("Unescape(%q) = %q", fld, u)
			}
		}
	})
}
