package conn

import (
	"errors"
	"fmt"
	"strings"
)

// Spec is what the user typed to name a remote directory: HOST:PATH, as
// with scp.
//
// Host is kept exactly as written before the separating colon, so it can be
// shown back to the user and used as the ssh_config alias: "myserver",
// "alice@build.example.com", "alice@[2001:db8::1]". Path is kept exactly as
// written after it: empty means the remote home directory, a relative path
// is relative to the remote home, "~" and "~/x" are accepted as spelled-out
// forms of the same, and an absolute path is used as given.
type Spec struct {
	Host, Path string
}

// ErrSpec is wrapped by every ParseSpec error.
var ErrSpec = errors.New("invalid remote spec")

// ParseSpec parses HOST:PATH where HOST is an ssh_config alias or
// [user@]host, with an IPv6 address in brackets: [user@][2001:db8::1]:path.
func ParseSpec(s string) (Spec, error) {
	bad := func(format string, args ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("%w %q: %s (expected HOST:PATH, e.g. myserver:src/project or alice@host:/srv/data)",
			ErrSpec, s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty")
	}
	var hostPart, pathPart string
	if i := strings.IndexByte(s, '['); i >= 0 && i < strings.IndexByte(s+":", ':') {
		// [user@][ipv6]:path. Everything before '[' is "user@" (or empty).
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return bad("'[' without a closing ']'")
		}
		end := i + j + 1
		if end == len(s) || s[end] != ':' {
			return bad("missing ':' after %q", s[:end])
		}
		hostPart, pathPart = s[:end], s[end+1:]
	} else {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return bad("missing ':' between host and path (use HOST: for the remote home directory)")
		}
		hostPart, pathPart = s[:i], s[i+1:]
	}
	if hostPart == "" {
		return bad("empty host before ':'")
	}
	hb := hostWithBrackets(hostPart)
	if len(hb) < len(hostPart) {
		if hostPart[len(hostPart)-len(hb)-1] != '@' {
			return bad("unexpected %q before '['", hostPart[:len(hostPart)-len(hb)])
		}
		if len(hb)+1 == len(hostPart) {
			return bad("empty user name before '@'")
		}
	}
	user, _ := splitUserHost(hostPart)
	if err := checkUser(user); err != nil {
		return bad("%v", err)
	}
	if err := checkHost(hb); err != nil {
		return bad("%v", err)
	}
	if err := checkPath(pathPart); err != nil {
		return bad("%v", err)
	}
	return Spec{Host: hostPart, Path: pathPart}, nil
}

// String returns the spec as the user would write it; ParseSpec(s.String())
// returns s.
func (s Spec) String() string { return s.Host + ":" + s.Path }

// User returns the user name written before '@', or "".
func (s Spec) User() string {
	u, _ := splitUserHost(s.Host)
	return u
}

// Hostname returns the host or alias without user and brackets: the name
// ssh_config Host patterns are matched against.
func (s Spec) Hostname() string {
	_, h := splitUserHost(s.Host)
	return h
}

// splitUserHost splits "user@host" at the last '@' (user names may
// contain '@' in some directory services) and strips IPv6 brackets.
func splitUserHost(hostPart string) (user, host string) {
	h := hostWithBrackets(hostPart)
	if len(h) < len(hostPart) {
		user = hostPart[:len(hostPart)-len(h)-1]
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return user, h
}

// hostWithBrackets returns the host part after the user name, with IPv6
// brackets kept.
func hostWithBrackets(hostPart string) string {
	if i := strings.IndexByte(hostPart, '['); i >= 0 {
		return hostPart[i:]
	}
	if i := strings.LastIndexByte(hostPart, '@'); i >= 0 {
		return hostPart[i+1:]
	}
	return hostPart
}

func checkUser(u string) error {
	if u == "" {
		return nil
	}
	if u[0] == '-' {
		return fmt.Errorf("user name %q starts with '-'", u)
	}
	for _, r := range u {
		switch {
		case isAlnum(r), strings.ContainsRune("._-@\\$+", r):
		default:
			return fmt.Errorf("character %q not allowed in user name %q", r, u)
		}
	}
	return nil
}

// checkHost validates a host name, ssh_config alias or bracketed IPv6
// address. Aliases are limited to characters that are safe on a command
// line and in a Host pattern.
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if strings.HasPrefix(h, "[") {
		inner := strings.TrimSuffix(h[1:], "]")
		if inner == "" {
			return errors.New("empty address in []")
		}
		if !strings.Contains(inner, ":") {
			return fmt.Errorf("[%s] is not an IPv6 address", inner)
		}
		for _, r := range inner {
			switch {
			case r >= '0' && r <= '9', r >= 'a' && r <= 'f', r >= 'A' && r <= 'F', r == ':', r == '.':
			case r == '%': // zone index, e.g. fe80::1%eth0
			case isAlnum(r) && strings.Contains(inner, "%"):
			default:
				return fmt.Errorf("character %q not allowed in IPv6 address %q", r, inner)
			}
		}
		return nil
	}
	if h[0] == '-' {
		return fmt.Errorf("host %q starts with '-'", h)
	}
	for _, r := range h {
		switch {
		case isAlnum(r), r == '.', r == '-', r == '_':
		case r == ']':
			return errors.New("']' without '['")
		default:
			return fmt.Errorf("character %q not allowed in host %q", r, h)
		}
	}
	return nil
}

func checkPath(p string) error {
	for _, r := range p {
		switch r {
		case 0:
			return errors.New("NUL byte in path")
		case '\n', '\r':
			return errors.New("line break in path")
		}
	}
	if strings.HasPrefix(p, "~") && p != "~" && !strings.HasPrefix(p, "~/") {
		return fmt.Errorf("path %q: ~user is not supported; write the path relative to your home or absolute", p)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
