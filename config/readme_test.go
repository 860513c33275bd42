package config

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

var update = os.Getenv("REMOTEFS_UPDATE_README") == "1"

const (
	readmeStart = "<!-- settings: made from config.Settings; REMOTEFS_UPDATE_README=1 go test ./config -run TestREADMESettings rewrites it -->\n"
	readmeEnd   = "<!-- end of settings -->\n"
)

// settingsMarkdown is the README's table of settings.
func settingsMarkdown() string {
	var b strings.Builder
	b.WriteString("| config key | flag | `-o` | default | what it does |\n| --- | --- | --- | --- | --- |\n")
	code := func(prefix, s string) string {
		if s == "" {
			return ""
		}
		return "`" + prefix + s + "`"
	}
	for _, s := range Settings {
		flagName := code("--", s.Flag)
		if len(s.Flag) == 1 {
			flagName = code("-", s.Flag)
		}
		help := s.Help
		if s.Inverted {
			help += " (" + s.Key + " = false)"
		}
		b.WriteString("| " + code("", s.Key) + " | " + flagName + " | " + code("", s.Option) + " | " +
			code("", strings.ReplaceAll(s.Default, ",", ", ")) + " | " + strings.ReplaceAll(help, "|", `\|`) + " |\n")
	}
	return b.String()
}

// The README's table of settings is the table in Settings.
func TestREADMESettings(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, readmeStart), strings.Index(text, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no settings table between %q and %q", readmeStart, readmeEnd)
	}
	want := settingsMarkdown()
	if got := text[i+len(readmeStart) : j]; got != want {
		if update {
			os.WriteFile("../README.md", []byte(text[:i+len(readmeStart)]+want+text[j:]), 0o644)
			return
		}
		t.Errorf("README.md's settings table differs from config.Settings (REMOTEFS_UPDATE_README=1 go test ./config -run TestREADMESettings rewrites it):\n got:\n%s\nwant:\n%s", got, want)
	}
}

// The flags of remotefs mount, remotefs help config and remotefs help
// fstab show the defaults of Settings, and every setting is reachable
// where the table says.
func TestHelpShowsTheTable(t *testing.T) {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	m := &Mount{}
	registerFlags(fl, m)
	config, fstab := HelpConfig(), HelpFstab()
	for _, s := range Settings {
		if s.Flag != "" {
			f := fl.Lookup(s.Flag)
			if f == nil {
				t.Errorf("%s: no flag --%s", s.Key, s.Flag)
				continue
			}
			want := s.Default
			switch s.Kind {
			case Bool:
				if want == "" {
					want = "false"
				}
			case Duration:
				d, _ := time.ParseDuration(s.Default)
				want = d.String()
			}
			if f.DefValue != want || f.Usage != s.Help {
				t.Errorf("--%s: default %q, help %q; the table says %q, %q", s.Flag, f.DefValue, f.Usage, want, s.Help)
			}
		}
		if s.Key != "" {
			if !strings.Contains(config, "  "+s.Key+" (") {
				t.Errorf("remotefs help config does not list %s", s.Key)
			}
			if d := s.DefaultText(); d != "" && !strings.Contains(config, "(default "+d+")") {
				t.Errorf("remotefs help config does not give %s's default %s", s.Key, d)
			}
		}
		if s.Option != "" {
			if !strings.Contains(fstab, "\n  "+s.Option+" ") && !strings.Contains(fstab, "\n  "+s.Option+"=VALUE") {
				t.Errorf("remotefs help fstab does not list -o %s", s.Option)
			}
			o, ok := mountOptions[s.Option]
			if !ok || o.flag != s.Flag {
				t.Errorf("-o %s sets %q, the table says --%s", s.Option, o.flag, s.Flag)
			}
		}
	}
	// The defaults are what a mount gets.
	mnt := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	got, err := ParseMount([]string{"box:p", mnt})
	if err != nil {
		t.Fatal(err)
	}
	if got.AttrTTL != time.Second || got.DirTTL != 10*time.Second || got.CacheSize != 10<<30 || got.Watch != "auto" ||
		got.SSH != "builtin" || strings.Join(got.ServerFolders, ",") != "results,runs,wandb,notebooks,outputs,checkpoints" {
		t.Errorf("defaults: %+v", got)
	}
}
