// Package cli holds what the command's subcommands share with the packages
// that do their work (config, daemon, cacheadmin): the usage error that
// makes the command exit 2, the already-reported error, flag parsing that
// lets flags follow the arguments, a progress line for terminals, and the
// way sizes are printed. It holds no state, takes no locks and makes no
// network calls.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// UsageError is a mistake in the command line (exit status 2).
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }

// ErrSilent: the failure was already reported.
var ErrSilent = errors.New("")

// ReorderFlags lets flags follow the positional arguments, as most
// mount tools allow (remotefs mount HOST:PATH DIR --offline).
func ReorderFlags(fl *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fl.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

// ParseFlags parses a subcommand's flags (they may follow its arguments);
// for --help it prints usage and the flags and returns done=true.
func ParseFlags(name, usage string, fl *flag.FlagSet, args []string) (done bool, err error) {
	fl.SetOutput(io.Discard)
	help := fl.Bool("help", false, "show this help")
	if err := fl.Parse(ReorderFlags(fl, args)); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			return false, Usagef("%s: %v (see remotefs %s --help)", name, err, name)
		}
		*help = true
	}
	if *help {
		fmt.Print(usage)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
		return true, nil
	}
	return false, nil
}

// IsHelp reports whether args is a lone --help or -h.
func IsHelp(args []string) bool {
	return len(args) == 1 && (args[0] == "--help" || args[0] == "-h")
}

// Progress prints one updating line on a terminal and nothing otherwise.
type Progress struct {
	tty   bool
	shown bool
}

// NewProgress returns a Progress on stderr.
func NewProgress() *Progress {
	fi, err := os.Stderr.Stat()
	return &Progress{tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

// Show replaces the line with msg.
func (p *Progress) Show(msg string) {
	if !p.tty {
		return
	}
	fmt.Fprintf(os.Stderr, "\r\033[Kremotefs: %s", msg)
	p.shown = true
}

// Done clears the line.
func (p *Progress) Done() {
	if p.shown {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}

// HumanBytes prints n as "512 B", "1.5 KiB", "20.0 GiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Mountpoint resolves a MOUNTPOINT argument: absolute, symlinks resolved,
// as the daemons register their mountpoints.
func Mountpoint(arg string) (string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}
