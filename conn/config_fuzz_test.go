package conn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzResolve feeds arbitrary ssh_config text to the resolver: it must
// never panic or hang, and what it resolves must be usable (a host, a port
// in range, hops that are themselves resolved).
func FuzzResolve(f *testing.F) {
	f.Add("Host box\n  HostName 10.0.0.5\n  Port 2222\n  User alice\n  IdentityFile ~/.ssh/k\n", "box:proj")
	f.Add("Include conf.d/*.conf\nHost *\n  ProxyJump bastion,carol@mid:2201\n", "alice@h:")
	f.Add("Match host x\n  Port 1\nHost x\n  HostName %h.example\n  ProxyJump x\n", "x:/srv")
	f.Add("Host a\n ProxyJump b\nHost b\n ProxyJump a\n", "a:")
	f.Add("Match exec \"test -f %d/x\" user !root,bob\n  Port 2\nCanonicalizeHostname yes\nCanonicalDomains a.example b.example\nMatch canonical final host *.b.example\n  User c\n", "bob@h:")
	f.Add("Host x\n  ProxyCommand nc %h %p\n  LocalForward 8080 localhost:80\n  DynamicForward [::1]:1080\n  CertificateFile %d/c\n", "x:")
	f.Fuzz(func(t *testing.T, config, specText string) {
		if len(config) > 4096 {
			return
		}
		spec, err := ParseSpec(specText)
		if err != nil {
			return
		}
		home := t.TempDir()
		os.MkdirAll(filepath.Join(home, ".ssh", "conf.d"), 0o700)
		cfg := filepath.Join(home, ".ssh", "config")
		if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		// Match exec and CanonicalizeHostname must neither run fuzzed
		// commands nor ask DNS: both are decided here.
		opts := Options{Home: home, SystemConfigFile: "none", Logger: quietLogger,
			matchExec:  func(cmd string) (bool, error) { return len(cmd)%2 == 0, nil },
			lookupHost: func(name string) bool { return len(name)%3 == 0 }}
		tg, err := Resolve(spec, opts)
		if err != nil {
			return
		}
		var check func(tg *Target, depth int)
		check = func(tg *Target, depth int) {
			if depth > 20 {
				t.Fatalf("ProxyJump chain deeper than 20")
			}
			if tg.HostName == "" || tg.Port <= 0 || tg.Port > 65535 || strings.ContainsAny(tg.HostName, "\x00\n") {
				t.Fatalf("unusable target %+v from config %q", tg, config)
			}
			for _, h := range tg.ProxyJump {
				check(h, depth+1)
			}
		}
		check(tg, 0)
	})
}
