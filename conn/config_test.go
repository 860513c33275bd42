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

// configHome makes a home directory with the given files (relative to it)
// and returns Options reading only that home (no system file).
func configHome(t *testing.T, files map[string]string) Options {
	t.Helper()
	home := t.TempDir()
	for name, content := range files {
		p := filepath.Join(home, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Options{Home: home, SystemConfigFile: "none", Logger: quietLogger}
}

func resolve(t *testing.T, opts Options, spec string) *Target {
	t.Helper()
	s, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := Resolve(s, opts)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", spec, err)
	}
	return tg
}

func TestResolveBasics(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
	t.Setenv("KEYDIR", "/keys")
	opts := configHome(t, map[string]string{".ssh/config": `
# comment
Host box  # trailing comment
  HostName box.example.com
  Port 2222
  User alice
  IdentityFile ~/.ssh/box_%r_%h
  IdentityFile ${KEYDIR}/extra
  IdentityFile "~/.ssh/with space"
  IdentitiesOnly yes
  UserKnownHostsFile ~/.ssh/kh1 %d/kh2
  ConnectTimeout 1m30s
  ServerAliveInterval 7
  ServerAliveCountMax 4
  HostKeyAlias boxkey

Host *.corp
  HostName %h.example.net
  User = corpuser

Host *
  User fallback
  Port 22
  IdentityFile ~/.ssh/id_all
`})
	home := opts.Home
	tg := resolve(t, opts, "box:x")
	want := &Target{
		Label: "box", Alias: "box", HostName: "box.example.com", Port: 2222, User: "alice",
		IdentityFiles: []string{home + "/.ssh/box_alice_box.example.com", "/keys/extra", home + "/.ssh/with space", home + "/.ssh/id_all"},
	}
	if tg.HostName != want.HostName || tg.Port != want.Port || tg.User != want.User || tg.Label != want.Label {
		t.Errorf("got %+v", tg)
	}
	if strings.Join(tg.IdentityFiles, "|") != strings.Join(want.IdentityFiles, "|") || !tg.IdentityFilesConfigured {
		t.Errorf("IdentityFiles %q", tg.IdentityFiles)
	}
	if !tg.IdentitiesOnly || tg.IdentityAgent != "/tmp/agent.sock" {
		t.Errorf("IdentitiesOnly %v agent %q", tg.IdentitiesOnly, tg.IdentityAgent)
	}
	if got := strings.Join(append(tg.KnownHostsFiles, tg.GlobalKnownHostsFiles...), " "); got != home+"/.ssh/kh1 "+home+"/kh2 /etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2" {
		t.Errorf("KnownHostsFiles %s", got)
	}
	if tg.ConnectTimeout != 90*time.Second || tg.ServerAliveInterval != 7*time.Second || tg.ServerAliveCountMax != 4 {
		t.Errorf("timeouts %v %v %d", tg.ConnectTimeout, tg.ServerAliveInterval, tg.ServerAliveCountMax)
	}
	if tg.HostKeyAlias != "boxkey" || tg.knownHostsName() != "boxkey:22" {
		t.Errorf("HostKeyAlias %q", tg.HostKeyAlias)
	}

	// %h in HostName, "=" syntax, first value wins over Host *.
	tg = resolve(t, opts, "db1.corp:")
	if tg.HostName != "db1.corp.example.net" || tg.User != "corpuser" || tg.Port != 22 {
		t.Errorf("corp: %+v", tg)
	}
	// The user in the spec wins; names are matched lower-cased.
	tg = resolve(t, opts, "bob@BOX:")
	if tg.User != "bob" || tg.HostName != "box.example.com" || tg.Label != "bob@BOX" {
		t.Errorf("bob@BOX: %+v", tg)
	}
}

func TestResolveDefaults(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	opts := configHome(t, map[string]string{})
	tg := resolve(t, opts, "plain.example.org:")
	l := currentLocal()
	if tg.HostName != "plain.example.org" || tg.Port != 22 || tg.User != l.user || tg.User == "" {
		t.Errorf("got %+v", tg)
	}
	h := opts.Home + "/.ssh/"
	if got := strings.Join(tg.IdentityFiles, " "); got != h+"id_ed25519 "+h+"id_ecdsa "+h+"id_rsa" || tg.IdentityFilesConfigured {
		t.Errorf("IdentityFiles %s", got)
	}
	if got := strings.Join(tg.KnownHostsFiles, " "); got != h+"known_hosts "+h+"known_hosts2" {
		t.Errorf("KnownHostsFiles %s", got)
	}
	if tg.IdentityAgent != "" || len(tg.ProxyJump) != 0 || tg.ConnectTimeout != 0 {
		t.Errorf("got %+v", tg)
	}
	// IPv6 literal.
	tg = resolve(t, opts, "u@[::1]:")
	if tg.HostName != "::1" || tg.Addr() != "[::1]:22" || tg.User != "u" {
		t.Errorf("ipv6: %+v", tg)
	}
}

// Include is resolved against Options.Home (not the passwd home the
// library would use), relative names under ~/.ssh, globbed in order,
// nested, and conditional inside a Host block.
func TestResolveInclude(t *testing.T) {
	opts := configHome(t, map[string]string{
		".ssh/config": `
Include conf.d/*.conf
Host special
  Include ~/other/special.conf
Host *
  User fromMain
`,
		".ssh/conf.d/10-a.conf": `
Host a
  HostName a.example.com
  Include nested.conf
`,
		".ssh/conf.d/20-b.conf": `
Host a b
  Port 2022
  User fromB
`,
		".ssh/nested.conf": `
Host a
  IdentityFile ~/.ssh/nested_key
`,
		"other/special.conf": `
HostName special.example.com
Host *
  Port 3000
`,
	})
	tg := resolve(t, opts, "a:")
	if tg.HostName != "a.example.com" || tg.Port != 2022 || tg.User != "fromB" {
		t.Errorf("a: %+v", tg)
	}
	if len(tg.IdentityFiles) != 1 || tg.IdentityFiles[0] != opts.Home+"/.ssh/nested_key" {
		t.Errorf("a identity %q", tg.IdentityFiles)
	}
	tg = resolve(t, opts, "special:")
	if tg.HostName != "special.example.com" || tg.Port != 3000 || tg.User != "fromMain" {
		t.Errorf("special: %+v", tg)
	}
	// The conditional include does not apply to other hosts.
	tg = resolve(t, opts, "other:")
	if tg.HostName != "other" || tg.Port != 22 {
		t.Errorf("other: %+v", tg)
	}
}

func TestResolveStrictHostKeyCheckingNoIsIgnored(t *testing.T) {
	var logBuf bytes.Buffer
	opts := configHome(t, map[string]string{".ssh/config": "Host *\n  StrictHostKeyChecking no\n"})
	opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	tg := resolve(t, opts, "x:")
	if tg.StrictHostKeyChecking != "no" || !strings.Contains(logBuf.String(), "never trusts") {
		t.Errorf("got %+v, log %s", tg, logBuf.String())
	}
}

func TestResolveProxyJump(t *testing.T) {
	opts := configHome(t, map[string]string{".ssh/config": `
Host inner
  HostName 10.0.0.5
  ProxyJump bastion,carol@mid:2201
Host bastion
  HostName bastion.example.com
  User jumper
  ProxyJump outer
Host outer
  HostName outer.example.com
  Port 443
Host mid
  HostName mid.example.com
  IdentityFile ~/.ssh/mid_key
Host direct
  ProxyJump none
Host uri
  ProxyJump ssh://dave@[2001:db8::7]:2222
Host cmd
  ProxyCommand nc %h %p
Host loop
  ProxyJump loop
`})
	tg := resolve(t, opts, "inner:")
	var hops []string
	for _, h := range tg.ProxyJump {
		hops = append(hops, h.User+"@"+h.Addr())
		if len(h.ProxyJump) != 0 {
			t.Errorf("hop %s has its own hops", h.Label)
		}
	}
	l := currentLocal().user
	want := l + "@outer.example.com:443 jumper@bastion.example.com:22 carol@mid.example.com:2201"
	if strings.Join(hops, " ") != want {
		t.Errorf("hops %q\nwant %q", hops, want)
	}
	if tg.ProxyJump[2].IdentityFiles[0] != opts.Home+"/.ssh/mid_key" || tg.ProxyJump[2].Label != "carol@mid:2201" ||
		tg.ProxyJump[2].sshArgs != "-p 2201 carol@mid" {
		t.Errorf("mid hop %+v", tg.ProxyJump[2])
	}
	if tg := resolve(t, opts, "direct:"); len(tg.ProxyJump) != 0 {
		t.Errorf("ProxyJump none: %+v", tg.ProxyJump)
	}
	tg = resolve(t, opts, "uri:")
	if len(tg.ProxyJump) != 1 || tg.ProxyJump[0].Addr() != "[2001:db8::7]:2222" || tg.ProxyJump[0].User != "dave" {
		t.Errorf("uri: %+v", tg.ProxyJump)
	}
	tg = resolve(t, opts, "bob@cmd:")
	if tg.ProxyCommand != "nc cmd 22" || len(tg.ProxyJump) != 0 {
		t.Errorf("cmd: %+v", tg)
	}
	for _, h := range []string{"loop"} {
		s, _ := ParseSpec(h + ":")
		if _, err := Resolve(s, opts); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", h, err)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{"Host x\n  Port abc\n", "Port for x"},
		{"Host x\n  ConnectTimeout soon\n", "ConnectTimeout for x"},
		{"Host x\n  IdentityFile ${REMOTEFS_SURELY_UNSET}/k\n", "REMOTEFS_SURELY_UNSET is not set"},
		{"Host x\n  IdentityFile ~/%z\n", "unknown token %z"},
		{"Host x\n  IdentitiesOnly maybe\n", "IdentitiesOnly"},
	} {
		opts := configHome(t, map[string]string{".ssh/config": tc.config})
		s, _ := ParseSpec("x:")
		_, err := Resolve(s, opts)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.config, err)
		}
	}
}

// ConfigFile replaces ~/.ssh/config (like ssh -F) and must exist; the
// system file is read after the user file, which wins.
func TestResolveConfigFiles(t *testing.T) {
	opts := configHome(t, map[string]string{
		".ssh/config": "Host x\n  Port 1001\n",
		"alt.conf":    "Host x\n  Port 1002\n",
		"system.conf": "Host x\n  Port 1003\n  User sysuser\n",
	})
	s, _ := ParseSpec("x:")
	opts.SystemConfigFile = filepath.Join(opts.Home, "system.conf")
	tg, err := Resolve(s, opts)
	if err != nil || tg.Port != 1001 || tg.User != "sysuser" {
		t.Fatalf("user+system: %+v %v", tg, err)
	}
	opts.ConfigFile = filepath.Join(opts.Home, "alt.conf")
	tg, err = Resolve(s, opts)
	if err != nil || tg.Port != 1002 || tg.User == "sysuser" {
		t.Fatalf("ConfigFile: %+v %v", tg, err)
	}
	opts.ConfigFile = filepath.Join(opts.Home, "missing.conf")
	if _, err := Resolve(s, opts); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing ConfigFile: %v", err)
	}
}

func TestSplitArgs(t *testing.T) {
	for in, want := range map[string]string{
		`a b`:            "a|b",
		`"a b" c`:        "a b|c",
		`a  # comment`:   "a",
		`x"y z"`:         "xy z",
		`  `:             "",
		`a#b`:            "a#b",
		`"#not comment"`: "#not comment",
	} {
		if got := strings.Join(splitArgs(in), "|"); got != want {
			t.Errorf("splitArgs(%q) = %q, want %q", in, got, want)
		}
	}
}
