package conn

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Match criteria see the values obtained so far, in file order; exec runs
// a real command through the shell with the tokens expanded, and is not
// run once an earlier criterion on its line failed.
func TestResolveMatchCriteria(t *testing.T) {
	t.Setenv("SHELL", "/bin/sh")
	opts := configHome(t, map[string]string{".ssh/config": `
Host short
  HostName long.example.com
Match originalhost short exec "test -f %d/flag-%n-%h-%p-%r"
  Port 2201
Match originalhost nomatch exec "touch %d/must-not-run"
  Port 2202
Match host long.example.com user bob
  IdentityFile ~/.ssh/bob
Match host long.example.com !user bob
  IdentityFile ~/.ssh/notbob
Match localuser ` + currentLocal().user + ` originalhost short
  ServerAliveCountMax 9
Match !localuser ` + currentLocal().user + `
  ConnectTimeout 99
Match host *.example.com,!bad.example.com
  User fromMatch
Match all
  IdentityFile ~/.ssh/all
`})
	// No flag: the exec fails, Port stays the default.
	tg := resolve(t, opts, "bob@short:")
	if tg.Port != 22 || tg.HostName != "long.example.com" {
		t.Errorf("without flag: %+v", tg)
	}
	if got := strings.Join(tg.IdentityFiles, " "); got != opts.Home+"/.ssh/bob "+opts.Home+"/.ssh/all" {
		t.Errorf("identity files %s", got)
	}
	if tg.ServerAliveCountMax != 9 || tg.ConnectTimeout != 0 || tg.User != "bob" {
		t.Errorf("localuser: %+v", tg)
	}
	if _, err := os.Stat(filepath.Join(opts.Home, "must-not-run")); err == nil {
		t.Error("exec ran although originalhost did not match")
	}
	// The flag the exec tests for (tokens: %n alias, %h HostName, %p, %r).
	if err := os.WriteFile(filepath.Join(opts.Home, "flag-short-long.example.com-22-bob"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tg = resolve(t, opts, "bob@short:")
	if tg.Port != 2201 {
		t.Errorf("with flag: %+v", tg)
	}
	// Without user@, Match user sees the User set so far (fromMatch comes
	// later, so "!user bob" holds with the local user).
	tg = resolve(t, opts, "short:")
	if tg.User != "fromMatch" || tg.IdentityFiles[0] != opts.Home+"/.ssh/notbob" {
		t.Errorf("local user: %+v", tg)
	}
	if tg := resolve(t, opts, "bad.example.com:"); tg.User == "fromMatch" {
		t.Errorf("negated pattern matched: %+v", tg)
	}
}

func TestResolveMatchErrors(t *testing.T) {
	var logBuf bytes.Buffer
	for _, tc := range []struct{ config, want string }{
		{"Match\n", "no criteria"},
		{"Match host\n", "host needs an argument"},
		{"Match all host x\n", "cannot be combined"},
		{"Match bogus x\n", "unsupported criterion"},
		{"Match exec \"%z\"\n", "unknown token"},
		{"Host x\n  CanonicalizeHostname maybe\n", "CanonicalizeHostname"},
	} {
		opts := configHome(t, map[string]string{".ssh/config": tc.config})
		s, _ := ParseSpec("x:")
		_, err := Resolve(s, opts)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.config, err)
		}
	}
	// Match version is about ssh's own version: the block never applies,
	// with a warning.
	opts := configHome(t, map[string]string{".ssh/config": "Match version OpenSSH*\n  Port 1\nMatch !version foo\n  Port 3\n"})
	opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	if tg := resolve(t, opts, "x:"); tg.Port != 22 || !strings.Contains(logBuf.String(), "not supported") {
		t.Errorf("version: %+v %s", tg, logBuf.String())
	}
}

// Match tagged (the Tag keyword so far), command and sessiontype (an sftp
// subsystem, as for sshfs) and localnetwork (this machine's interfaces).
func TestResolveMatchSessionCriteria(t *testing.T) {
	opts := configHome(t, map[string]string{".ssh/config": `
Host work
  Tag corp
Match tagged corp
  User tagged
Match !tagged ?*
  User untagged
Match command sftp sessiontype subsystem
  Port 2222
Match sessiontype shell
  Port 1
Match localnetwork 127.0.0.0/8,::1/128
  ConnectTimeout 3
Match localnetwork 240.0.0.0/8
  ServerAliveInterval 99
`})
	if tg := resolve(t, opts, "work:"); tg.User != "tagged" || tg.Port != 2222 || tg.ConnectTimeout != 3*time.Second || tg.ServerAliveInterval != 0 {
		t.Errorf("work: %+v", tg)
	}
	if tg := resolve(t, opts, "other:"); tg.User != "untagged" {
		t.Errorf("other: %+v", tg)
	}
}

// ProxyJump and ProxyCommand share one slot: the first obtained wins.
func TestResolveProxyFirstWins(t *testing.T) {
	opts := configHome(t, map[string]string{".ssh/config": `
Host a
  ProxyCommand ssh -W %h:%p bastion # comment
Host b
  ProxyJump bastion
Host c
  ProxyCommand none
Host bastion jumper
  ProxyJump none
Host *
  ProxyJump jumper
  ProxyCommand nc %h %p %%
`})
	if tg := resolve(t, opts, "carol@a:"); tg.ProxyCommand != "ssh -W a:22 bastion" || len(tg.ProxyJump) != 0 {
		t.Errorf("a: %q %d", tg.ProxyCommand, len(tg.ProxyJump))
	}
	if tg := resolve(t, opts, "b:"); tg.ProxyCommand != "" || len(tg.ProxyJump) != 1 || tg.ProxyJump[0].HostName != "bastion" {
		t.Errorf("b: %+v", tg)
	}
	if tg := resolve(t, opts, "c:"); tg.ProxyCommand != "" || len(tg.ProxyJump) != 0 {
		t.Errorf("c: %+v", tg)
	}
	// The first hop's own ProxyCommand is kept; later hops go through it.
	opts = configHome(t, map[string]string{".ssh/config": `
Host target
  ProxyJump first,second
Host first second
  ProxyCommand nc %h %p
`})
	tg := resolve(t, opts, "target:")
	if len(tg.ProxyJump) != 2 || tg.ProxyJump[0].ProxyCommand != "nc first 22" || tg.ProxyJump[1].ProxyCommand != "" || tg.ProxyCommand != "" {
		t.Errorf("chain: %+v %+v", tg.ProxyJump[0], tg.ProxyJump[1])
	}
}

// CanonicalizeHostname: the name is tried in each CanonicalDomains, the
// configuration is read again for the canonical name (Host patterns and
// Match canonical/final see it; first values stay).
func TestResolveCanonicalize(t *testing.T) {
	opts := configHome(t, map[string]string{".ssh/config": `
Host prox
  ProxyJump j
Host far
  CanonicalizeHostname always
  ProxyJump j
Host strict
  CanonicalizeFallbackLocal no
Host *.corp.example
  Port 2222
Match canonical host *.corp.example
  User canon
Match !canonical
  IdentityFile ~/.ssh/first-pass
Match final
  ServerAliveCountMax 7
Host *
  CanonicalizeHostname yes
  CanonicalDomains nothere.example corp.example
`})
	var asked []string
	opts.lookupHost = func(name string) bool {
		asked = append(asked, name)
		return name == "box.corp.example." || name == "far.corp.example." || name == "j.corp.example."
	}
	tg := resolve(t, opts, "box:")
	if tg.HostName != "box.corp.example" || tg.Port != 2222 || tg.User != "canon" || !tg.Canonical || tg.ServerAliveCountMax != 7 {
		t.Errorf("box: %+v (asked %q)", tg, asked)
	}
	if strings.Join(asked, " ") != "box.nothere.example. box.corp.example." {
		t.Errorf("asked %q", asked)
	}
	if len(tg.IdentityFiles) != 1 || !strings.HasSuffix(tg.IdentityFiles[0], "first-pass") {
		t.Errorf("first pass values must stay: %q", tg.IdentityFiles)
	}
	// More dots than CanonicalizeMaxDots (1): left alone.
	asked = nil
	if tg := resolve(t, opts, "a.b.c:"); tg.HostName != "a.b.c" || len(asked) != 0 {
		t.Errorf("a.b.c: %+v asked %q", tg, asked)
	}
	// yes: not through a proxy; always: also through one.
	if tg := resolve(t, opts, "prox:"); tg.HostName != "prox" {
		t.Errorf("prox: %+v", tg)
	}
	if tg := resolve(t, opts, "far:"); tg.HostName != "far.corp.example" {
		t.Errorf("far: %+v", tg)
	}
	// Unresolvable with CanonicalizeFallbackLocal no: an error naming it.
	s, _ := ParseSpec("strict:")
	if _, err := Resolve(s, opts); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "CanonicalizeFallbackLocal") {
		t.Errorf("strict: %v", err)
	}
}

func TestResolveForwards(t *testing.T) {
	opts := configHome(t, map[string]string{".ssh/config": `
Host box
  LocalForward 9999 localhost:8888
  LocalForward *:9998 [::1]:22
  LocalForward 127.0.0.2/9997 db/5432
  LocalForward /tmp/sock localhost:1
  RemoteForward 8080 localhost:80
  RemoteForward 1080
  DynamicForward 1081
Host *
  LocalForward 7000 other:%p
`})
	var logBuf bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	tg := resolve(t, opts, "box:")
	var got []string
	for _, l := range [][]Forward{tg.LocalForwards, tg.RemoteForwards, tg.DynamicForwards} {
		for _, f := range l {
			got = append(got, f.String())
		}
	}
	want := "LocalForward 127.0.0.1:9999 -> localhost:8888|LocalForward :9998 -> [::1]:22|LocalForward 127.0.0.2:9997 -> db:5432|" +
		"LocalForward 127.0.0.1:7000 -> other:22|RemoteForward :8080 -> localhost:80|DynamicForward 127.0.0.1:1081 (SOCKS5)"
	if strings.Join(got, "|") != want {
		t.Errorf("forwards\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	if !strings.Contains(logBuf.String(), "unix-socket") || !strings.Contains(logBuf.String(), "remote SOCKS") {
		t.Errorf("no warnings for skipped forwards: %s", logBuf.String())
	}
}

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abcd", false},
		{"?", "a", true}, {"?", "", false}, {"*.example.com", "x.example.com", true},
		{"*.example.com", "example.com", false}, {"a*b*c", "aXbYbZc", true}, {"10.0.0.?", "10.0.0.12", false},
	} {
		if got := wildcardMatch(tc.pat, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}
