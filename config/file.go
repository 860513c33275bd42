package config

// The config file: $XDG_CONFIG_HOME/remotefs/config.toml (default
// ~/.config/remotefs/config.toml), or --config FILE. It sets defaults for
// the flags of `remotefs mount`, for every remote ([defaults]) and per host
// ([host."NAME"]); flags on the command line win. `remotefs help config`
// documents every key.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"remotefs/conn"
)

// Config is a parsed config file.
type Config struct {
	// Path of the file ("" when there is none).
	Path string
	// Defaults apply to every remote.
	Defaults HostConfig
	// Hosts are the [host."NAME"] sections, by NAME: the host as written
	// in HOST:PATH, with or without user@.
	Hosts map[string]HostConfig
}

// HostConfig is one section of the config file. A nil field was not set.
type HostConfig struct {
	CacheDir       *string `toml:"cache_dir"`
	CacheSize      *string `toml:"cache_size"`
	SSHConfig      *string `toml:"ssh_config"`
	AttrTTL        *string `toml:"attr_ttl"`
	DirTTL         *string `toml:"dir_ttl"`
	KernelTTL      *string `toml:"kernel_ttl"`
	OpTimeout      *string `toml:"op_timeout"`
	ConnectTimeout *string `toml:"connect_timeout"`
	Offline        *bool   `toml:"offline"`
	OfflineEdits   *bool   `toml:"offline_edits"`
	ReadOnly       *bool   `toml:"read_only"`
	Debug          *bool   `toml:"debug"`
	AllowOther     *bool   `toml:"allow_other"`
	NoExec         *bool   `toml:"noexec"`
	NoNotify       *bool   `toml:"no_notify"`
	Forwards       *bool   `toml:"forwards"`
	SSH            *string `toml:"ssh"`
	// Ignore: glob patterns (path.Match syntax, matched against each path
	// relative to the remote root and against its base name) of things the
	// mount does not fetch ahead of use: folders matching a base-name
	// pattern are not listed at mount or watched inside, matching files are
	// not prefetched. They are still shown, fetched when opened.
	Ignore *[]string `toml:"ignore"`
	// ServerFolders: folders whose contents the server owns: programs on
	// the server write there. Only their small files are prefetched (64 KiB
	// each, 16 MiB in all) and, without a live change feed, they are
	// re-checked on every open. A name matches a folder of that name at
	// any depth; a name with "/" is a path relative to the remote root.
	ServerFolders *[]string `toml:"server_folders"`
	// UIDMap and GIDMap: "REMOTE:LOCAL" numeric id pairs: files the
	// server says REMOTE owns are shown as LOCAL's.
	UIDMap *[]string `toml:"uid_map"`
	GIDMap *[]string `toml:"gid_map"`
}

// DefaultPath is $XDG_CONFIG_HOME/remotefs/config.toml.
func DefaultPath() string {
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "remotefs", "config.toml")
}

// Load reads the config file at p, or the default one when p is "". A missing default file is an empty config; a missing explicit one
// is an error.
func Load(p string) (*Config, error) {
	explicit := p != ""
	if !explicit {
		p = DefaultPath()
	}
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return &Config{Hosts: map[string]HostConfig{}}, nil
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	return parseConfig(p, data)
}

// parseConfig parses the file's contents; errors name file:line.
func parseConfig(file string, data []byte) (*Config, error) {
	var raw struct {
		Defaults HostConfig            `toml:"defaults"`
		Host     map[string]HostConfig `toml:"host"`
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, configDecodeError(file, err)
	}
	cfg := &Config{Path: file, Defaults: raw.Defaults, Hosts: raw.Host}
	if cfg.Hosts == nil {
		cfg.Hosts = map[string]HostConfig{}
	}
	lines := keyLines(data)
	check := func(section []string, h *HostConfig) error {
		for _, k := range Settings {
			if k.file == nil {
				continue
			}
			if err := checkConfigValue(k, k.file(h)); err != nil {
				key := strings.Join(append(section, k.Key), ".")
				return fmt.Errorf("%s:%d: %s: %v", file, lines[key], k.Key, err)
			}
		}
		return nil
	}
	if cfg.Defaults.CacheDir != nil {
		return nil, fmt.Errorf(`%s:%d: cache_dir belongs in a [host."NAME"] section: each remote needs a cache directory of its own`, file, lines["defaults.cache_dir"])
	}
	if err := check([]string{"defaults"}, &cfg.Defaults); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cfg.Hosts))
	for name := range cfg.Hosts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		h := cfg.Hosts[name]
		if err := check([]string{"host", name}, &h); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// checkConfigValue checks the value of k's field (a **T) in a section.
func checkConfigValue(k Setting, field any) error {
	var v any
	switch f := field.(type) {
	case **string:
		v = *f
	case **[]string:
		v = *f
	}
	switch v := v.(type) {
	case *string:
		if v == nil {
			return nil
		}
		switch k.Kind {
		case Duration:
			d, err := time.ParseDuration(*v)
			if err != nil || d < 0 {
				return fmt.Errorf("invalid duration %q (want e.g. \"500ms\", \"2s\", \"1m\")", *v)
			}
		case Size:
			if _, err := ParseSize(*v); err != nil {
				return err
			}
		case Path:
			if *v == "" {
				return errors.New("empty path")
			}
		case SSH:
			return sshFlag{new(string)}.Set(*v)
		}
	case *[]string:
		if v == nil {
			return nil
		}
		for _, p := range *v {
			switch k.Kind {
			case Patterns:
				if _, err := path.Match(p, ""); err != nil || p == "" {
					return fmt.Errorf("invalid pattern %q", p)
				}
			case IDMap:
				if _, _, err := parseIDPair(p); err != nil {
					return err
				}
			case Folders:
				c := path.Clean(p)
				if p == "" || path.IsAbs(p) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
					return fmt.Errorf("%q: want a folder relative to the remote root, e.g. \"results\"", p)
				}
			}
		}
	}
	return nil
}

// configDecodeError turns a go-toml error into "file:line: message".
func configDecodeError(file string, err error) error {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("%s: %v", file, err)
	}
	line, _ := de.Position()
	key := strings.Join(de.Key(), ".")
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	switch {
	case strings.Contains(msg, "unknown field"):
		return fmt.Errorf("%s:%d: unknown key %q (known keys: %s; sections: [defaults], [host.\"NAME\"]; see remotefs help config)",
			file, line, key, knownKeyNames())
	case strings.Contains(msg, "missing table"):
		return fmt.Errorf("%s:%d: unknown section [%s] (sections: [defaults], [host.\"NAME\"]; see remotefs help config)", file, line, key)
	case strings.Contains(msg, "cannot decode") && len(de.Key()) == 2 && de.Key()[0] == "host":
		return fmt.Errorf("%s:%d: %s: the settings of a host go in a [host.\"NAME\"] section", file, line, key)
	case strings.Contains(msg, "cannot decode"):
		last := de.Key()[len(de.Key())-1]
		want := "a table"
		if k, ok := settingOfKey(last); ok {
			switch k.Kind {
			case Bool:
				want = "true or false"
			case Patterns, Folders, IDMap:
				want = `a list of strings, e.g. ["a", "b"]`
			case Duration:
				want = `a string such as "2s"`
			case Size:
				want = `a string such as "20G"`
			default:
				want = "a string"
			}
		}
		return fmt.Errorf("%s:%d: %s must be %s", file, line, key, want)
	}
	return fmt.Errorf("%s:%d: %s", file, line, msg)
}

func knownKeyNames() string {
	var names []string
	for _, k := range Settings {
		if k.Key != "" {
			names = append(names, k.Key)
		}
	}
	return strings.Join(names, ", ")
}

// keyLines maps each dotted key ("defaults.attr_ttl", "host.gpu-box.ignore")
// to the line it is set on.
func keyLines(data []byte) map[string]int {
	out := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	keyOf := func(it unstable.Iterator) []string {
		var parts []string
		for it.Next() {
			parts = append(parts, string(it.Node().Data))
		}
		return parts
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyOf(e.Key())
			if k := e.Key(); k.Next() {
				out[strings.Join(table, ".")] = p.Shape(k.Node().Raw).Start.Line
			}
		case unstable.KeyValue:
			full := append(append([]string(nil), table...), keyOf(e.Key())...)
			if k := e.Key(); k.Next() {
				out[strings.Join(full, ".")] = p.Shape(k.Node().Raw).Start.Line
			}
		}
	}
	return out
}

// Section returns the settings for spec: [defaults] overridden key by key
// by the [host."NAME"] section whose NAME is the host as written
// ("alice@gpu-box") or without the user ("gpu-box"), and that NAME.
func (c *Config) Section(spec conn.Spec) (HostConfig, string) {
	merged := c.Defaults
	name := ""
	h, ok := c.Hosts[spec.Host]
	if ok {
		name = spec.Host
	} else if h, ok = c.Hosts[spec.Hostname()]; ok {
		name = spec.Hostname()
	} else {
		for n, hc := range c.Hosts {
			if strings.EqualFold(n, spec.Hostname()) {
				h, ok, name = hc, true, n
				break
			}
		}
	}
	if !ok {
		return merged, ""
	}
	for _, k := range Settings {
		if k.file == nil {
			continue
		}
		switch d := k.file(&merged).(type) {
		case **string:
			if s := *k.file(&h).(**string); s != nil {
				*d = s
			}
		case **bool:
			if s := *k.file(&h).(**bool); s != nil {
				*d = s
			}
		case **[]string:
			if s := *k.file(&h).(**[]string); s != nil {
				*d = s
			}
		}
	}
	return merged, name
}

// ExpandPath resolves ~ and paths relative to the config file.
func (c *Config) ExpandPath(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, p[1:])
	}
	if !filepath.IsAbs(p) && c.Path != "" {
		return filepath.Join(filepath.Dir(c.Path), p)
	}
	return p
}

// apply sets every flag of fl that the command line did not set from the
// config's section for spec, and fills the config-only fields of m.
func (c *Config) apply(fl *flag.FlagSet, spec conn.Spec, m *Mount) error {
	sec, _ := c.Section(spec)
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["f"] {
		set["foreground"] = true
	}
	for _, k := range Settings {
		if k.Flag == "" || k.file == nil || set[k.Flag] {
			continue
		}
		var val string
		switch v := k.file(&sec).(type) {
		case **string:
			if *v == nil {
				continue
			}
			val = **v
			if k.Kind == Path {
				val = c.ExpandPath(val)
			}
		case **bool:
			if *v == nil {
				continue
			}
			val = fmt.Sprint(**v != k.Inverted)
		default:
			continue
		}
		if err := fl.Set(k.Flag, val); err != nil {
			return fmt.Errorf("%s: %s: %v", c.Path, k.Key, err)
		}
	}
	fillConfigOnly(m, &sec)
	return nil
}

// parseIDPair parses "REMOTE:LOCAL" (numeric ids).
func parseIDPair(s string) (remote, local uint32, err error) {
	r, l, ok := strings.Cut(s, ":")
	rv, rerr := strconv.ParseUint(r, 10, 32)
	lv, lerr := strconv.ParseUint(l, 10, 32)
	if !ok || rerr != nil || lerr != nil {
		return 0, 0, fmt.Errorf("%q: want \"REMOTE:LOCAL\" numeric ids, e.g. \"1001:1000\"", s)
	}
	return uint32(rv), uint32(lv), nil
}

// idMap turns checked "REMOTE:LOCAL" pairs into a map.
func idMap(pairs []string) map[uint32]uint32 {
	m := map[uint32]uint32{}
	for _, p := range pairs {
		if r, l, err := parseIDPair(p); err == nil {
			m[r] = l
		}
	}
	return m
}
