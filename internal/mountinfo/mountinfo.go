// Package mountinfo reads this process's mount table,
// /proc/self/mountinfo (proc(5)): which directories are mount points, of
// which filesystem type, with which per-mount options. It is the one
// parser of that file for the command, the daemon and the benchmark. It
// holds no state and reads the file afresh on every call (a few
// microseconds): mounts come and go under it.
package mountinfo

import (
	"os"
	"strconv"
	"strings"
)

// Mount is one line of the table.
type Mount struct {
	Point   string // mount point, unescaped
	Options string // per-mount options: "rw,nosuid,nodev,relatime"
	FSType  string // "fuse.remotefs", "ext4", ...
	Source  string // "remotefs:gpu-box:projects", "/dev/sda1", ...
	Device  string // "MAJOR:MINOR" of the filesystem: "0:39"
}

// Read returns every mount, in the table's order (a mount stacked on
// another comes after it).
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b)), nil
}

// Parse parses the text of a mountinfo file; malformed lines are skipped.
func Parse(text string) []Mount {
	var out []Mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		m := Mount{Point: Unescape(f[4]), Options: f[5], Device: f[2]}
		for i, x := range f[6:] {
			if x == "-" {
				rest := f[6+i+1:]
				if len(rest) > 0 {
					m.FSType = rest[0]
				}
				if len(rest) > 1 {
					m.Source = Unescape(rest[1])
				}
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// Lookup returns the topmost mount on dir (absolute, symlinks resolved).
func Lookup(dir string) (Mount, bool) {
	all, _ := Read()
	var top Mount
	found := false
	for _, m := range all {
		if m.Point == dir {
			top, found = m, true
		}
	}
	return top, found
}

// IsRemotefs reports whether dir is mounted as fuse.remotefs.
func IsRemotefs(dir string) bool {
	m, ok := Lookup(dir)
	return ok && m.FSType == "fuse.remotefs"
}

// Unescape undoes the octal escapes (\040 for a space) of a mountinfo field.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
