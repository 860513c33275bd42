package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"remotefs/conn"
	"remotefs/internal/cli"
	"remotefs/internal/mountinfo"
)

// Mount is everything `remotefs mount` was asked to do: the command
// line, over the config file, over the defaults of Settings.
type Mount struct {
	Spec         conn.Spec
	Mountpoint   string // absolute, symlinks resolved
	Foreground   bool
	Offline      bool
	OfflineEdits bool // --offline-edits: accept changes even when started without the server
	Debug        bool
	CacheDir     string // absolute
	SSHConfig    string
	AttrTTL      time.Duration
	DirTTL       time.Duration
	KernelTTL    time.Duration
	OpTimeout    time.Duration
	ConnTimeout  time.Duration
	AllowOther   bool
	ReadOnly     bool   // --read-only, -o ro: online, but refuses changes
	NoExec       bool   // --noexec, -o noexec (applied by a root bind remount)
	CacheSize    int64  // --cache-size; <0: no limit
	Watch        string // --watch: auto, helper, inotifywait, poll, off
	NoNotify     bool   // --no-notify: do not raise inotify events for server changes
	NoForwards   bool   // --no-forwards: do not open the ssh_config entry's port forwards
	PollInterval time.Duration
	ConfigFile   string // --config, or "" for the default file
	SSH          string // --ssh: conn.SSHBuiltin or conn.SSHOpenSSH
	// From the config file only.
	Ignore        []string // glob patterns the mount leaves out
	ServerFolders []string // folders the server's programs write to

	UIDMap map[uint32]uint32 // server uid -> local uid (config uid_map)
	GIDMap map[uint32]uint32 // server gid -> local gid (config gid_map)
}

// RefusesChanges: the mount refuses every change (--read-only, and
// --offline without --offline-edits).
func (m *Mount) RefusesChanges() bool {
	return m.ReadOnly || (m.Offline && !m.OfflineEdits)
}

// MountUsage is the head of `remotefs mount --help`; the flags follow.
const MountUsage = `Usage: remotefs mount [flags] HOST:PATH MOUNTPOINT

Mounts PATH of the SSH server HOST on MOUNTPOINT and returns once the mount
is live; a background process keeps serving it (--foreground keeps it
attached). HOST is resolved like "ssh HOST" does: ~/.ssh/config, ssh-agent,
identity files, known_hosts (an unknown host key is refused: connect once
with ssh to verify and record it). A server that asks for a password or a
one-time code is answered on this terminal before mount returns
(remotefs help ssh); --ssh=openssh uses your own ssh program instead of
the built-in client.

Examples:
  remotefs mount gpu-box:projects ~/remote        # ~/projects on gpu-box
  remotefs mount alice@10.0.0.5:/srv/code ~/code   # absolute remote path
  remotefs mount --offline gpu-box:projects ~/remote   # from the cache only
  remotefs mount --offline-edits gpu-box:projects ~/remote  # edit even if it starts offline
  remotefs gpu-box:projects ~/remote -o ro,attr_ttl=5s  # mount(8) form

Every flag also has an -o form (-o cache_dir=/x,offline), as used by
mount -t fuse.remotefs and /etc/fstab: see remotefs help fstab. Defaults
for every flag can be set in ~/.config/remotefs/config.toml: see
remotefs help config. Flags on the command line win over the file.

Flags:
`

// ParseMount parses the arguments of `remotefs mount` (flags and -o
// options, in any order with HOST:PATH MOUNTPOINT), applies the config
// file and checks the mountpoint. For --help it prints the help and
// returns nil, nil.
func ParseMount(args []string) (*Mount, error) {
	m := &Mount{}
	args, err := ExpandOptions(args)
	if err != nil {
		return nil, err
	}
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	registerFlags(fl, m)
	help := fl.Bool("help", false, "show this help")
	if err := fl.Parse(cli.ReorderFlags(fl, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			*help = true
		} else {
			return nil, cli.Usagef("mount: %v (see remotefs mount --help)", err)
		}
	}
	if *help {
		fmt.Print(MountUsage)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
		return nil, nil
	}
	if fl.NArg() != 2 {
		return nil, cli.Usagef("mount: need HOST:PATH and MOUNTPOINT, got %d argument(s) (see remotefs mount --help)", fl.NArg())
	}
	spec, err := conn.ParseSpec(fl.Arg(0))
	if err != nil {
		return nil, err
	}
	m.Spec = spec
	file, err := Load(m.ConfigFile)
	if err != nil {
		return nil, err
	}
	if err := file.apply(fl, spec, m); err != nil {
		return nil, err
	}
	if m.Mountpoint, err = checkMountpoint(fl.Arg(1)); err != nil {
		return nil, err
	}
	if m.CacheDir == "" {
		m.CacheDir = DefaultCacheDir(spec)
	}
	if m.CacheDir, err = filepath.Abs(m.CacheDir); err != nil {
		return nil, err
	}
	return m, nil
}

// checkMountpoint resolves dir and checks it can be mounted on.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("mountpoint %s does not exist (create it with: mkdir -p %s)", abs, abs)
	}
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.ENOTCONN {
			return "", fmt.Errorf("mountpoint %s is a dead mount (Transport endpoint is not connected); clear it with: fusermount3 -u %s", abs, abs)
		}
		return "", fmt.Errorf("mountpoint %s: %v", abs, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if mi, mounted := mountinfo.Lookup(abs); mounted {
		return "", fmt.Errorf("mountpoint %s is already mounted (%s); unmount it first", abs, mi.FSType)
	}
	return abs, nil
}

// CacheRoot is $XDG_CACHE_HOME/remotefs, where caches live by default.
func CacheRoot() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "remotefs")
}

// DefaultCacheDir is $XDG_CACHE_HOME/remotefs/<host>-<path>-<hash>.
func DefaultCacheDir(spec conn.Spec) string {
	return filepath.Join(CacheRoot(), CacheKey(spec))
}

// CacheKey names a remote's cache directory and log file.
func CacheKey(spec conn.Spec) string {
	h := sha256.Sum256([]byte(spec.Host + "\x00" + spec.Path))
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if r == '-' || r == '_' || r == '.' || r == '@' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
				return r
			}
			return '_'
		}, s)
		if len(s) > 40 {
			s = s[:40]
		}
		return strings.Trim(s, "_")
	}
	name := clean(spec.Host)
	if p := clean(spec.Path); p != "" {
		name += "-" + p
	}
	return name + "-" + hex.EncodeToString(h[:4])
}

// sshFlag is --ssh: builtin or openssh.
type sshFlag struct{ p *string }

func (f sshFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}

func (f sshFlag) Set(s string) error {
	switch s {
	case conn.SSHBuiltin, conn.SSHOpenSSH:
		*f.p = s
		return nil
	}
	return fmt.Errorf("invalid ssh %q: want builtin or openssh", s)
}

// sizeFlag parses sizes like 10G, 500M, 1.5GiB, 4096.
type sizeFlag struct{ p *int64 }

func (f sizeFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return cli.HumanBytes(*f.p)
}

func (f sizeFlag) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*f.p = n
	return nil
}
