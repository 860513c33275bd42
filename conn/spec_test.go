package conn

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in               string
		host, path       string
		user, hostname   string
		wantErrSubstring string
	}{
		{in: "box:", host: "box", path: "", hostname: "box"},
		{in: "box:src/proj", host: "box", path: "src/proj", hostname: "box"},
		{in: "alice@build.example.com:/srv/data", host: "alice@build.example.com", path: "/srv/data", user: "alice", hostname: "build.example.com"},
		{in: "a@b@host:x", host: "a@b@host", path: "x", user: "a@b", hostname: "host"},
		{in: "[::1]:p", host: "[::1]", path: "p", hostname: "::1"},
		{in: "bob@[2001:db8::1]:/x:y", host: "bob@[2001:db8::1]", path: "/x:y", user: "bob", hostname: "2001:db8::1"},
		{in: "[fe80::1%eth0]:", host: "[fe80::1%eth0]", hostname: "fe80::1%eth0"},
		{in: "box:~", host: "box", path: "~", hostname: "box"},
		{in: "box:~/x", host: "box", path: "~/x", hostname: "box"},
		{in: "box:/path with spaces/[x]", host: "box", path: "/path with spaces/[x]", hostname: "box"},
		{in: "my_host-1.lan:a@b", host: "my_host-1.lan", path: "a@b", hostname: "my_host-1.lan"},

		{in: "", wantErrSubstring: "empty"},
		{in: "box", wantErrSubstring: "missing ':'"},
		{in: "/local/path", wantErrSubstring: "missing ':'"},
		{in: ":path", wantErrSubstring: "empty host"},
		{in: "alice@:path", wantErrSubstring: "empty host"},
		{in: "@box:path", wantErrSubstring: "empty user"},
		{in: "-oProxyCommand=x:y", wantErrSubstring: "starts with '-'"},
		{in: "bad host:x", wantErrSubstring: "not allowed in host"},
		{in: "ho$t:x", wantErrSubstring: "not allowed in host"},
		{in: "-u@box:x", wantErrSubstring: "user name"},
		{in: "us er@box:x", wantErrSubstring: "not allowed in user"},
		{in: "[::1:x", wantErrSubstring: "without a closing"},
		{in: "[::1]x:y", wantErrSubstring: "missing ':' after"},
		{in: "[]:x", wantErrSubstring: "empty address"},
		{in: "[host]:x", wantErrSubstring: "not an IPv6"},
		{in: "a[::1]:x", wantErrSubstring: "before '['"},
		{in: "box]:x", wantErrSubstring: "']' without"},
		{in: "box:a\x00b", wantErrSubstring: "NUL"},
		{in: "box:a\nb", wantErrSubstring: "line break"},
		{in: "box:~bob/x", wantErrSubstring: "~user"},
	} {
		s, err := ParseSpec(tc.in)
		if tc.wantErrSubstring != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) || !errors.Is(err, ErrSpec) {
				t.Errorf("ParseSpec(%q) = %+v, %v; want error containing %q", tc.in, s, err, tc.wantErrSubstring)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.in, err)
			continue
		}
		if s.Host != tc.host || s.Path != tc.path || s.User() != tc.user || s.Hostname() != tc.hostname {
			t.Errorf("ParseSpec(%q) = %+v (user %q, hostname %q)", tc.in, s, s.User(), s.Hostname())
		}
		if s.String() != tc.in {
			t.Errorf("String() = %q, want %q", s.String(), tc.in)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"box:", "alice@host:/x", "[::1]:p", "u@[fe80::1%eth0]:~/a", "a:b:c", "@:", "[", "x]:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSpec(in)
		if err != nil {
			if !errors.Is(err, ErrSpec) || strings.ContainsAny(err.Error(), "\n") && !strings.ContainsAny(in, "\n") {
				t.Fatalf("bad error for %q: %v", in, err)
			}
			return
		}
		if s.Host == "" || s.Hostname() == "" {
			t.Fatalf("%q: empty host in %+v", in, s)
		}
		if strings.HasPrefix(s.Hostname(), "-") || strings.HasPrefix(s.User(), "-") {
			t.Fatalf("%q: option-like host or user in %+v", in, s)
		}
		if strings.ContainsAny(s.Host, " \t\n/\x00") || strings.ContainsAny(s.Path, "\x00\n") {
			t.Fatalf("%q: bad characters in %+v", in, s)
		}
		again, err := ParseSpec(s.String())
		if err != nil || again != s {
			t.Fatalf("%q: round trip %q gave %+v, %v", in, s.String(), again, err)
		}
	})
}
