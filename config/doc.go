// Package config is what a mount is told: the flags of `remotefs mount`,
// the -o options of its mount(8)/fstab form (options.go), and the config
// file (file.go, $XDG_CONFIG_HOME/remotefs/config.toml) with its
// [defaults] and [host."NAME"] sections.
//
// One table, Settings (settings.go), lists every setting with its flag,
// config key, -o option, kind, default and help. The flags and their
// defaults, the config file's keys and their checks, the -o options,
// `remotefs mount --help`, `remotefs help config`, `remotefs help fstab`
// and the README's table of settings are all made from it, and
// readme_test.go fails when the README or a help page disagrees with it.
// Precedence: a flag or -o option on the command line (later ones win),
// then the host's section, then [defaults], then the table's default.
//
// ParseMount returns a checked Mount: the mountpoint exists, is a
// directory and is not mounted on (internal/mountinfo); the cache
// directory is absolute. Errors in the command line are cli.UsageError
// (exit status 2); errors in the file name FILE:LINE.
//
// The package holds no state after parsing, takes no locks and makes no
// network calls; it reads the config file and /proc/self/mountinfo once
// per call.
package config
