package config

import (
	"flag"
	"path"
	"strings"
	"time"

	"remotefs/conn"
)

// Kind is what a setting's value is.
type Kind string

const (
	Bool     Kind = "bool"
	Duration Kind = "duration"
	Size     Kind = "size"     // 20G, 500M, unlimited
	Path     Kind = "path"     // ~/ and relative to the config file
	Text     Kind = "string"   // free text (the flag checks it)
	SSH      Kind = "ssh"      // builtin or openssh
	Patterns Kind = "patterns" // list of path.Match globs
	Folders  Kind = "folders"  // list of folders relative to the remote root
	IDMap    Kind = "idmap"    // list of "REMOTE:LOCAL" id pairs
)

// Setting is one thing a mount can be told: as a flag of `remotefs
// mount`, a key of the config file, an -o option of the mount(8) form, or
// several of these. Settings is the one table of them: the flags, the
// config file's keys, the -o options, `remotefs mount --help`, `remotefs
// help config`, `remotefs help fstab` and the README's table are all made
// from it (config_test checks the README).
type Setting struct {
	Flag   string // flag of remotefs mount ("" = none)
	Key    string // key of the config file ("" = none)
	Option string // -o option ("" = none)
	Kind   Kind
	// Default as written on the command line ("" = off, empty, or
	// computed: then Help says what it is). A list's items are separated
	// by commas.
	Default string
	Help    string
	// Inverted: the key is the opposite of the flag (forwards = false is
	// --no-forwards), and KeyHelp says what the key does.
	Inverted bool
	KeyHelp  string
	// HostOnly: the key belongs in a [host."NAME"] section only.
	HostOnly bool

	field func(*Mount) any      // the Mount field the setting fills
	file  func(*HostConfig) any // the config file field (a **T), nil = none
}

// Settings: every setting, in the order the help lists the config keys.
var Settings = []Setting{
	{Flag: "cache-dir", Key: "cache_dir", Option: "cache_dir", Kind: Path, HostOnly: true,
		Help:  "cache directory of this remote (default $XDG_CACHE_HOME/remotefs/HOST-PATH-HASH)",
		field: func(m *Mount) any { return &m.CacheDir }, file: func(h *HostConfig) any { return &h.CacheDir }},
	{Flag: "cache-size", Key: "cache_size", Option: "cache_size", Kind: Size, Default: "10G",
		Help:  "most file content to keep cached, e.g. 20G, 500M, unlimited (least recently used clean files are evicted; unsent changes never are)",
		field: func(m *Mount) any { return &m.CacheSize }, file: func(h *HostConfig) any { return &h.CacheSize }},
	{Flag: "F", Key: "ssh_config", Option: "ssh_config", Kind: Path,
		Help:  "ssh_config file to read instead of ~/.ssh/config (like ssh -F)",
		field: func(m *Mount) any { return &m.SSHConfig }, file: func(h *HostConfig) any { return &h.SSHConfig }},
	{Flag: "attr-ttl", Key: "attr_ttl", Option: "attr_ttl", Kind: Duration, Default: "1s",
		Help:  "without a live change feed: re-check a file with the server on open when its attributes are older than this",
		field: func(m *Mount) any { return &m.AttrTTL }, file: func(h *HostConfig) any { return &h.AttrTTL }},
	{Flag: "dir-ttl", Key: "dir_ttl", Option: "dir_ttl", Kind: Duration, Default: "10s",
		Help:  "without a live change feed: refresh a folder listing in the background when older than this",
		field: func(m *Mount) any { return &m.DirTTL }, file: func(h *HostConfig) any { return &h.DirTTL }},
	{Flag: "kernel-ttl", Key: "kernel_ttl", Option: "kernel_ttl", Kind: Duration, Default: "1s",
		Help:  "how long the kernel caches names and attributes (ten minutes while the change feed is live)",
		field: func(m *Mount) any { return &m.KernelTTL }, file: func(h *HostConfig) any { return &h.KernelTTL }},
	{Flag: "op-timeout", Key: "op_timeout", Option: "op_timeout", Kind: Duration, Default: "10s",
		Help:  "longest a single server operation may take before the link counts as dead",
		field: func(m *Mount) any { return &m.OpTimeout }, file: func(h *HostConfig) any { return &h.OpTimeout }},
	{Flag: "connect-timeout", Key: "connect_timeout", Option: "connect_timeout", Kind: Duration, Default: "10s",
		Help:  "dial timeout (ssh_config ConnectTimeout wins)",
		field: func(m *Mount) any { return &m.ConnTimeout }, file: func(h *HostConfig) any { return &h.ConnectTimeout }},
	{Flag: "offline", Key: "offline", Option: "offline", Kind: Bool,
		Help:  "serve the cache only, without contacting the server (read-only unless offline edits are on)",
		field: func(m *Mount) any { return &m.Offline }, file: func(h *HostConfig) any { return &h.Offline }},
	{Flag: "offline-edits", Key: "offline_edits", Option: "offline_edits", Kind: Bool,
		Help:  "accept changes also when the mount starts without its server (--offline, or unreachable): they wait in the journal and are delivered on the first connection, by this mount or a later one (see remotefs help offline)",
		field: func(m *Mount) any { return &m.OfflineEdits }, file: func(h *HostConfig) any { return &h.OfflineEdits }},
	{Flag: "read-only", Key: "read_only", Option: "read_only", Kind: Bool,
		Help:  "mount read-only: online, but refuse every change (-o ro)",
		field: func(m *Mount) any { return &m.ReadOnly }, file: func(h *HostConfig) any { return &h.ReadOnly }},
	{Flag: "debug", Key: "debug", Option: "debug", Kind: Bool,
		Help:  "log every operation",
		field: func(m *Mount) any { return &m.Debug }, file: func(h *HostConfig) any { return &h.Debug }},
	{Flag: "allow-other", Key: "allow_other", Option: "allow_other", Kind: Bool,
		Help:  "let other users access the mount (needs user_allow_other in /etc/fuse.conf)",
		field: func(m *Mount) any { return &m.AllowOther }, file: func(h *HostConfig) any { return &h.AllowOther }},
	{Flag: "noexec", Key: "noexec", Option: "noexec", Kind: Bool,
		Help:  "programs on the mount cannot be executed (enforced when mounted by root)",
		field: func(m *Mount) any { return &m.NoExec }, file: func(h *HostConfig) any { return &h.NoExec }},
	{Flag: "no-notify", Key: "no_notify", Option: "no_notify", Kind: Bool,
		Help:  "do not raise inotify events on the mount for changes made on the server (see remotefs help notify)",
		field: func(m *Mount) any { return &m.NoNotify }, file: func(h *HostConfig) any { return &h.NoNotify }},
	{Flag: "no-forwards", Key: "forwards", Option: "no_forwards", Kind: Bool, Inverted: true,
		Help:    "do not open the LocalForward, RemoteForward and DynamicForward of the host's ssh_config entry (see remotefs help ssh)",
		KeyHelp: "open the LocalForward, RemoteForward and DynamicForward of the host's ssh_config entry while mounted",
		field:   func(m *Mount) any { return &m.NoForwards }, file: func(h *HostConfig) any { return &h.Forwards }},
	{Flag: "ssh", Key: "ssh", Option: "ssh", Kind: SSH, Default: conn.SSHBuiltin,
		Help:  `which ssh makes the connection: builtin (remotefs's own client) or openssh (your ssh program, as sshfs does: for ProxyCommand, GSSAPI, PKCS#11 and FIDO keys; see remotefs help ssh)`,
		field: func(m *Mount) any { return &m.SSH }, file: func(h *HostConfig) any { return &h.SSH }},
	{Key: "ignore", Kind: Patterns,
		Help:  `glob patterns (path.Match syntax) of things not fetched ahead of use: matching folders are not listed at mount or watched inside, matching files not prefetched; all stay visible, e.g. ["*.pyc", "__pycache__", ".venv"]`,
		field: func(m *Mount) any { return &m.Ignore }, file: func(h *HostConfig) any { return &h.Ignore }},
	{Key: "server_folders", Kind: Folders, Default: "results,runs,wandb,notebooks,outputs,checkpoints",
		Help:  `folders that programs on the server write to: only small files prefetched (64 KiB each, 16 MiB in all), re-checked on every open when no watcher is live; a name matches at any depth, a name with "/" is relative to the remote root`,
		field: func(m *Mount) any { return &m.ServerFolders }, file: func(h *HostConfig) any { return &h.ServerFolders }},
	{Key: "uid_map", Kind: IDMap,
		Help:  `server user ids shown as other local ones, as "REMOTE:LOCAL" pairs, e.g. ["1001:1000"]; without it the login user's files show as the mounting user's, root's as root's, and any other owner as the same number`,
		field: func(m *Mount) any { return &m.UIDMap }, file: func(h *HostConfig) any { return &h.UIDMap }},
	{Key: "gid_map", Kind: IDMap,
		Help:  `server group ids shown as other local ones, as "REMOTE:LOCAL" pairs (like uid_map)`,
		field: func(m *Mount) any { return &m.GIDMap }, file: func(h *HostConfig) any { return &h.GIDMap }},
	{Flag: "foreground", Option: "foreground", Kind: Bool,
		Help:  "stay attached and log to stderr (mount(8) then does not return)",
		field: func(m *Mount) any { return &m.Foreground }},
	{Flag: "watch", Kind: Text, Default: "auto",
		Help:  "how to learn about changes made on the server: auto (a helper on the server when its OS and CPU match this binary's, else inotifywait, else polling), helper, inotifywait, poll, or off",
		field: func(m *Mount) any { return &m.Watch }},
	{Flag: "poll-interval", Kind: Duration, Default: "2s",
		Help:  "how often the poll watcher looks for server changes",
		field: func(m *Mount) any { return &m.PollInterval }},
	{Flag: "config", Option: "config", Kind: Path,
		Help:  "config file (default $XDG_CONFIG_HOME/remotefs/config.toml)",
		field: func(m *Mount) any { return &m.ConfigFile }},
}

// DefaultText is the default as the config file writes it ("" = none).
func (s Setting) DefaultText() string {
	switch {
	case s.Default == "":
		return ""
	case s.Kind == Folders || s.Kind == Patterns || s.Kind == IDMap:
		return `["` + strings.Join(strings.Split(s.Default, ","), `", "`) + `"]`
	case s.Kind == Bool:
		return s.Default
	}
	return `"` + s.Default + `"`
}

// registerFlags defines the flags of `remotefs mount` on fl, filling m.
func registerFlags(fl *flag.FlagSet, m *Mount) {
	for _, s := range Settings {
		if s.Flag == "" {
			continue
		}
		switch p := s.field(m).(type) {
		case *bool:
			fl.BoolVar(p, s.Flag, s.Default == "true", s.Help)
		case *time.Duration:
			d, err := time.ParseDuration(s.Default)
			if err != nil && s.Default != "" {
				panic("config: bad default of " + s.Flag)
			}
			fl.DurationVar(p, s.Flag, d, s.Help)
		case *int64:
			if s.Default != "" {
				*p, _ = ParseSize(s.Default)
			}
			fl.Var(sizeFlag{p}, s.Flag, s.Help)
			fl.Lookup(s.Flag).DefValue = s.Default
		case *string:
			if s.Kind == SSH {
				*p = s.Default
				fl.Var(sshFlag{p}, s.Flag, s.Help)
			} else {
				fl.StringVar(p, s.Flag, s.Default, s.Help)
			}
		}
	}
	fl.BoolVar(&m.Foreground, "f", false, "short for --foreground")
}

// fillConfigOnly sets m's fields that only the config file sets (lists),
// from the section sec, or from their defaults.
func fillConfigOnly(m *Mount, sec *HostConfig) {
	for _, s := range Settings {
		if s.Flag != "" || s.file == nil {
			continue
		}
		var list []string
		if v := *(s.file(sec).(**[]string)); v != nil {
			list = *v
		}
		if len(list) == 0 && s.Default != "" {
			list = strings.Split(s.Default, ",")
		}
		switch p := s.field(m).(type) {
		case *[]string:
			*p = nil
			for _, v := range list {
				if s.Kind == Folders {
					v = path.Clean(v)
				}
				*p = append(*p, v)
			}
		case *map[uint32]uint32:
			if list != nil {
				*p = idMap(list)
			}
		}
	}
}

// settingOfKey returns the setting of a config key.
func settingOfKey(key string) (Setting, bool) {
	for _, s := range Settings {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}
