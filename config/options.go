package config

// The mount(8) / fstab form of remotefs.
//
// `mount -t fuse.remotefs HOST:PATH MOUNTPOINT -o OPTS` (and an fstab line
// of type fuse.remotefs) runs /sbin/mount.fuse3, which runs
//
//	/bin/sh -c 'remotefs HOST:PATH MOUNTPOINT -o OPTS'
//
// with remotefs found in PATH. On the way, mount.fuse3 drops user, users,
// nouser, auto, noauto, nofail and _netdev, adds dev and suid unless nodev
// or nosuid was given, and unsets HOME; mount(8) may add rw, and for a
// `user` mount it runs the helper as that user (with a sanitized
// environment) and adds noexec,nosuid,nodev (mount(8) does that for
// "user" in fstab even when root mounts). mount(8) passes no PATH, so
// remotefs must be in the standard one (/usr/local/bin). ExpandOptions turns each
// -o option into the equivalent flag of `remotefs mount`.

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"remotefs/internal/cli"
)

// IsHelperForm reports whether args look like the mount.fuse3 call
// `remotefs HOST:PATH MOUNTPOINT [-o OPTS]` rather than a subcommand.
func IsHelperForm(args []string) bool {
	if len(args) == 0 {
		return false
	}
	a := strings.TrimPrefix(args[0], "remotefs#")
	return !strings.HasPrefix(a, "-") && strings.Contains(a, ":")
}

// mountOption is one -o option remotefs understands.
type mountOption struct {
	flag string // the `remotefs mount` flag it sets ("" = accepted, no effect)
	// value: the option takes =VALUE (otherwise it is a switch; a switch
	// that maps to a boolean flag also accepts =true/=false).
	value bool
	// set: for switches, the value given to flag.
	set  string
	help string
}

// mountOptions: every -o option, by name (with '_'; '-' is accepted too):
// one per Setting with an Option, and the standard ones.
var mountOptions = func() map[string]mountOption {
	m := map[string]mountOption{}
	for _, s := range Settings {
		if s.Option != "" {
			help := s.Help
			if d := s.DefaultText(); d != "" {
				help += " (default " + s.Default + ")"
			}
			m[s.Option] = mountOption{flag: s.Flag, value: s.Kind != Bool, help: help}
		}
	}
	m["F"] = mountOption{flag: "F", value: true, help: "same as ssh_config"}
	for name, o := range standardOptions {
		m[name] = o
	}
	return m
}()

// standardOptions are the options of mount(8) and FUSE remotefs accepts.
var standardOptions = map[string]mountOption{
	"ro":                  {flag: "read-only", set: "true", help: "read-only mount (online)"},
	"rw":                  {flag: "read-only", set: "false", help: "read-write (the default)"},
	"exec":                {flag: "noexec", set: "false", help: "allow executing programs (the default)"},
	"default_permissions": {help: "always on: the kernel checks permission bits"},
	"nosuid":              {help: "always in effect for remotefs"},
	"nodev":               {help: "always in effect for remotefs"},
	"suid":                {help: "ignored: remotefs mounts are always nosuid"},
	"dev":                 {help: "ignored: remotefs mounts are always nodev"},
	"auto":                {help: "for fstab: mount -a mounts it"},
	"noauto":              {help: "for fstab: mount -a skips it"},
	"_netdev":             {help: "for fstab: mount after the network is up"},
	"nofail":              {help: "for fstab: do not fail the boot"},
	"user":                {help: "for fstab: a user may mount it"},
	"users":               {help: "for fstab: any user may mount and unmount it"},
	"nouser":              {help: "for fstab"},
	"owner":               {help: "for fstab"},
	"group":               {help: "for fstab"},
	"defaults":            {help: "for fstab"},
	"async":               {help: "always: writes reach the server in the background"},
	"atime":               {help: "ignored: access times are not kept"},
	"noatime":             {help: "ignored: access times are not kept"},
	"relatime":            {help: "ignored: access times are not kept"},
	"norelatime":          {help: "ignored: access times are not kept"},
	"strictatime":         {help: "ignored: access times are not kept"},
	"nostrictatime":       {help: "ignored: access times are not kept"},
	"diratime":            {help: "ignored: access times are not kept"},
	"nodiratime":          {help: "ignored: access times are not kept"},
	"lazytime":            {help: "ignored: access times are not kept"},
	"nolazytime":          {help: "ignored: access times are not kept"},
}

// unsupportedOptions are FUSE or mount options users may try, with why
// remotefs refuses them.
var unsupportedOptions = map[string]string{
	"sync":                "remotefs writes back in the background; use `remotefs flush MOUNTPOINT` to wait for the server",
	"dirsync":             "remotefs writes back in the background; use `remotefs flush MOUNTPOINT` to wait for the server",
	"uid":                 "files always appear owned by the user who mounts",
	"gid":                 "files always appear owned by the user who mounts",
	"umask":               "permission bits are the server's",
	"allow_root":          "use allow_other",
	"idmap":               "files always appear owned by the user who mounts",
	"IdentityFile":        "put ssh options in ~/.ssh/config (or a file given with -o ssh_config=FILE)",
	"Port":                "put ssh options in ~/.ssh/config (or a file given with -o ssh_config=FILE)",
	"ServerAliveInterval": "put ssh options in ~/.ssh/config (or a file given with -o ssh_config=FILE)",
	"reconnect":           "remotefs always reconnects by itself",
	"fsname":              "the source is always remotefs:HOST:PATH",
	"subtype":             "the type is always fuse.remotefs",
}

// ExpandOptions replaces every `-o OPTS` (also `-oOPTS`, `--options
// OPTS`) in args by the equivalent `--flag[=value]` arguments, in order, so
// that later options and flags win over earlier ones.
func ExpandOptions(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		var opts string
		switch {
		case a == "--":
			return append(out, args[i:]...), nil
		case a == "-o" || a == "--options" || a == "-options":
			if i+1 >= len(args) {
				return nil, cli.Usagef("mount: -o needs a value, e.g. -o offline,cache_dir=/path (see remotefs help fstab)")
			}
			opts = args[i+1]
			i++
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "-op") && !strings.HasPrefix(a, "-offline"):
			opts = a[2:]
		case strings.HasPrefix(a, "--options="):
			opts = strings.TrimPrefix(a, "--options=")
		default:
			out = append(out, a)
			continue
		}
		flags, err := translateOptions(opts)
		if err != nil {
			return nil, err
		}
		out = append(out, flags...)
	}
	return out, nil
}

// translateOptions turns "a,b=c" into flags.
func translateOptions(opts string) ([]string, error) {
	var out []string
	for _, o := range splitOptions(opts) {
		if o == "" {
			continue
		}
		name, val, hasVal := strings.Cut(o, "=")
		key := name
		if _, ok := mountOptions[key]; !ok {
			key = strings.ReplaceAll(name, "-", "_")
		}
		if strings.HasPrefix(name, "x-") || name == "comment" {
			continue // userspace options for mount(8) and systemd (x-systemd.automount, ...)
		}
		def, ok := mountOptions[key]
		if !ok {
			if why, bad := unsupportedOptions[name]; bad {
				return nil, cli.Usagef("mount option %q is not supported: %s", name, why)
			}
			return nil, cli.Usagef("unknown mount option %q (remotefs help fstab lists the options)", name)
		}
		switch {
		case def.flag == "":
			if hasVal {
				return nil, cli.Usagef("mount option %q takes no value", name)
			}
		case def.value:
			if !hasVal || val == "" {
				return nil, cli.Usagef("mount option %q needs a value: %s=VALUE", name, name)
			}
			out = append(out, "--"+def.flag+"="+unescapeOption(val))
		case def.set != "":
			if hasVal {
				return nil, cli.Usagef("mount option %q takes no value", name)
			}
			out = append(out, "--"+def.flag+"="+def.set)
		default: // a switch for a boolean flag
			if !hasVal {
				val = "true"
			}
			b, err := strconv.ParseBool(val)
			if err != nil {
				return nil, cli.Usagef("mount option %s=%s: want %s, %s=true or %s=false", name, val, name, name, name)
			}
			out = append(out, "--"+def.flag+"="+strconv.FormatBool(b))
		}
	}
	return out, nil
}

// splitOptions splits at commas that are not escaped with a backslash.
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteString(`\,`)
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

func unescapeOption(s string) string { return strings.ReplaceAll(s, `\,`, ",") }

// FixUserEnv fills in what mount(8) and mount.fuse3 take out of the
// environment: mount(8) runs the helper without PATH, mount.fuse3 unsets
// HOME, and a `user` mount from fstab runs with a sanitized environment.
// HOME, USER and LOGNAME then come from the password database, PATH is the
// standard one, and XDG_RUNTIME_DIR is /run/user/UID when that exists, so that the mount uses the same ~/.ssh/config, cache, logs
// and control socket as the user's own shell.
//
// In the helper form (helper is true), a HOME that belongs to someone else
// is replaced too: mount(8) hands a `user` mount root's HOME.
func FixUserEnv(helper bool) {
	home := os.Getenv("HOME")
	if helper && home != "" && os.Getuid() != 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(home, &st); err != nil || int(st.Uid) != os.Getuid() {
			home = ""
		}
	}
	if home == "" || (os.Getenv("USER") == "" && os.Getenv("LOGNAME") == "") {
		if u, err := user.Current(); err == nil {
			if home == "" && u.HomeDir != "" {
				os.Setenv("HOME", u.HomeDir)
			}
			if os.Getenv("USER") == "" && os.Getenv("LOGNAME") == "" && u.Username != "" {
				os.Setenv("USER", u.Username)
				os.Setenv("LOGNAME", u.Username)
			}
		}
	}
	if os.Getenv("PATH") == "" {
		// mount(8) runs helpers without PATH; fusermount3 is looked up in it.
		os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if os.Getenv("XDG_RUNTIME_DIR") == "" {
		dir := filepath.Join("/run/user", strconv.Itoa(os.Getuid()))
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR && int(st.Uid) == os.Getuid() {
			os.Setenv("XDG_RUNTIME_DIR", dir)
		}
	}
}

// ParseSize reads a size such as 20G, 512M, 1.5T, 10GiB or a plain number
// of bytes; "unlimited", "none" and 0 mean no limit (returned as -1).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	switch t {
	case "unlimited", "none", "0", "off":
		return -1, nil
	case "":
		return 0, errors.New("empty size")
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 20G, 512M, 1T, or unlimited)", s)
	}
	return int64(f * float64(mult)), nil
}
