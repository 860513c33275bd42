package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// How a host's configuration is decided, as ssh does it (readconf.c,
// ssh.c):
//
//   - The files are read top to bottom (user file, then system file), each
//     Include in place. Lines before the first Host or Match apply to
//     every host. A Host line starts a block that applies when one of its
//     patterns matches and none of its negated patterns does; a Match line
//     starts a block that applies when all its criteria hold. An Include
//     inside a block is read only when the block applies, and Host/Match
//     lines inside the included file do not change the including file's
//     block.
//   - The first value obtained for a keyword wins, except for the
//     keywords that add up (IdentityFile, CertificateFile, the forwards,
//     SendEnv). ProxyJump and ProxyCommand share one slot: whichever comes
//     first wins, the other is ignored.
//   - Match criteria see the values obtained so far: "host" is HostName
//     (with %h expanded) or the host as given, "user" the User so far or
//     the local user; exec runs its command (with the % tokens) in the
//     user's shell and holds when it exits 0, and is skipped when an
//     earlier criterion on the line failed.
//   - After that first pass, HostName replaces the host, which is
//     canonicalized when CanonicalizeHostname asks (yes: only for a direct
//     connection; always: also through a proxy) by trying each of
//     CanonicalDomains when the name has at most CanonicalizeMaxDots dots
//     (default 1). When CanonicalizeHostname is on or a "Match final"
//     block exists, the files are read a second time with the new name
//     (Host patterns are matched against it, "Match canonical" and "Match
//     final" hold); values from the first pass are kept, so the second
//     pass only fills what the first left unset.

// configEval is one evaluation of the configuration for a host.
type configEval struct {
	c         *sshConfig
	host      string // what Host patterns and "Match host" see
	original  string // the host as given ("Match originalhost", %n)
	final     bool   // the second pass
	wantFinal bool   // a "Match final" was seen
	vals      map[string][]string
}

// accumulatingKeys are the keywords whose every value counts.
var accumulatingKeys = map[string]bool{
	"identityfile": true, "certificatefile": true, "localforward": true,
	"remoteforward": true, "dynamicforward": true, "sendenv": true,
}

const matchExecTimeout = 30 * time.Second

// evaluate reads every file for the host and fills e.vals.
func (e *configEval) evaluate() error {
	for _, f := range e.c.files {
		if err := e.file(f, true); err != nil {
			return err
		}
	}
	return nil
}

func (e *configEval) file(f *configFile, active bool) error {
	for _, l := range f.lines {
		switch l.key {
		case "host":
			active = hostLineMatches(e.host, l.args)
			continue
		case "match":
			ok, err := e.match(f.name, l)
			if err != nil {
				return err
			}
			active = ok
			continue
		}
		if !active {
			continue
		}
		if l.key == "include" {
			for _, sub := range l.includes {
				if err := e.file(sub, true); err != nil {
					return err
				}
			}
			continue
		}
		e.set(l.key, l.raw)
	}
	return nil
}

func (e *configEval) set(key, raw string) {
	if key == "proxyjump" || key == "proxycommand" {
		if e.has("proxyjump") || e.has("proxycommand") {
			return
		}
	}
	if accumulatingKeys[key] || !e.has(key) {
		e.vals[key] = append(e.vals[key], raw)
	}
}

func (e *configEval) has(key string) bool { return len(e.vals[key]) > 0 }

// value is the first value of key, unquoted when it is one word.
func (e *configEval) value(key string) (string, bool) {
	v := e.vals[key]
	if len(v) == 0 {
		return "", false
	}
	if args := splitArgs(v[0]); len(args) == 1 {
		return args[0], true
	}
	return v[0], true
}

// matchHost is the host "Match host" and the exec tokens see.
func (e *configEval) matchHost() string {
	if e.final {
		return e.host
	}
	if v, ok := e.value("hostname"); ok {
		if h, err := expandTokens(v, map[byte]string{'h': e.original}); err == nil {
			return h
		}
	}
	return e.original
}

// remoteUser is the user "Match user" sees: User so far, or the local one.
func (e *configEval) remoteUser() string {
	if v, ok := e.value("user"); ok {
		return v
	}
	return e.c.local.user
}

// match evaluates a Match line's criteria (all must hold; '!' negates).
func (e *configEval) match(file string, l configEntry) (bool, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s:%d: Match: %s", ErrConfig, file, l.line, fmt.Sprintf(format, a...))
	}
	args := l.args
	if len(args) == 0 {
		return false, bad("no criteria")
	}
	result := true
	for i := 0; i < len(args); i++ {
		crit := strings.ToLower(args[i])
		negate := strings.HasPrefix(crit, "!")
		crit = strings.TrimPrefix(crit, "!")
		switch crit {
		case "all":
			if i+1 < len(args) {
				return false, bad("'all' cannot be combined with other criteria")
			}
			return result != negate, nil
		case "canonical", "final":
			if crit == "final" && !negate {
				e.wantFinal = true
			}
			if e.final == negate {
				result = false
			}
			continue
		}
		if i+1 >= len(args) {
			return false, bad("%s needs an argument", crit)
		}
		i++
		arg := args[i]
		var ok bool
		switch crit {
		case "host":
			ok = matchPatternList(strings.ToLower(e.matchHost()), strings.ToLower(arg))
		case "originalhost":
			ok = matchPatternList(strings.ToLower(e.original), strings.ToLower(arg))
		case "user":
			ok = matchPatternList(e.remoteUser(), arg)
		case "localuser":
			ok = matchPatternList(e.c.local.user, arg)
		case "exec":
			if !result {
				continue // ssh skips the command once the line cannot match
			}
			cmd, err := expandTokens(arg, e.execTokens())
			if err != nil {
				return false, bad("exec %q: %v", arg, err)
			}
			ok, err = e.c.runExec(cmd)
			if err != nil {
				return false, bad("exec %q: %v", cmd, err)
			}
		case "tagged":
			// The Tag keyword so far; remotefs has no -P, so "" without one.
			tag, _ := e.value("tag")
			ok = matchPatternList(tag, arg)
		case "command":
			// What `ssh -s HOST sftp` (sshfs) would match: the session is
			// the sftp subsystem.
			ok = matchPatternList("sftp", arg)
		case "sessiontype":
			ok = matchPatternList("subsystem", arg)
		case "localnetwork":
			ok = onLocalNetwork(arg)
		case "version":
			// Matched against ssh's own version, which remotefs has not:
			// the block never applies.
			warnOnce(e.c.logger, "ssh config: Match version not supported by remotefs; the block is ignored",
				"file", file, "line", l.line)
			ok = negate // so that the result below is false
		default:
			return false, bad("unsupported criterion %q", crit)
		}
		if ok == negate {
			result = false
		}
	}
	return result, nil
}

// execTokens are the tokens of a Match exec command, from the values so far.
func (e *configEval) execTokens() map[byte]string {
	t := &Target{HostName: e.matchHost(), Port: 22, User: e.remoteUser()}
	if v, ok := e.value("port"); ok {
		if p, err := strconv.Atoi(v); err == nil {
			t.Port = p
		}
	}
	if v, ok := e.value("hostkeyalias"); ok {
		t.HostKeyAlias = v
	}
	return e.c.tokens(t, e.original)
}

// runMatchExec runs a Match exec command as ssh does: through $SHELL (or
// /bin/sh) -c, stdin and stdout on /dev/null, stderr passed on. It is
// bounded by matchExecTimeout, which ssh is not: a mount must not hang on
// a command that never ends.
func runMatchExec(command string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), matchExecTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, userShell(), "-c", command)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return false, fmt.Errorf("did not finish within %v", matchExecTimeout)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee):
		return false, nil
	}
	return false, err
}

// userShell is the shell ssh runs commands with: $SHELL, else /bin/sh.
func userShell() string {
	if sh := os.Getenv("SHELL"); sh != "" {
		return sh
	}
	return "/bin/sh"
}

// hostLineMatches applies a Host line: some pattern matches and no negated
// pattern does.
func hostLineMatches(host string, patterns []string) bool {
	host = strings.ToLower(host)
	matched := false
	for _, p := range patterns {
		p = strings.ToLower(p)
		neg := strings.HasPrefix(p, "!")
		if wildcardMatch(strings.TrimPrefix(p, "!"), host) {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}

// matchPatternList is ssh's match_pattern_list: comma-separated patterns,
// some negated with '!'; true when one matches and no negated one does.
func matchPatternList(s, list string) bool {
	return hostLineMatches(s, strings.Split(list, ","))
}

// wildcardMatch matches s against a pattern with * (any run) and ? (any
// one character), nothing else special.
func wildcardMatch(pat, s string) bool {
	// Iterative with backtracking to the last '*': linear-ish, no recursion.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && (pat[p] == '?' || pat[p] == s[i]):
			p++
			i++
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// canonicalize applies CanonicalDomains to host the way ssh does. It
// returns the host unchanged when no rule applies.
func (c *sshConfig) canonicalize(e *configEval, host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	if strings.HasSuffix(host, ".") {
		return strings.TrimSuffix(host, "."), nil
	}
	maxDots := 1
	if v, ok := e.value("canonicalizemaxdots"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return "", fmt.Errorf("%w: CanonicalizeMaxDots %q: not a count", ErrConfig, v)
		}
		maxDots = n
	}
	if strings.Count(host, ".") > maxDots {
		return host, nil
	}
	var domains []string
	if v, ok := e.vals["canonicaldomains"]; ok {
		domains = splitArgs(v[0])
	}
	for _, d := range domains {
		if strings.EqualFold(d, "none") {
			break
		}
		full := host + "." + strings.TrimSuffix(d, ".")
		if c.lookupHost(full + ".") {
			return full, nil
		}
	}
	if v, ok := e.value("canonicalizefallbacklocal"); ok {
		if b, err := parseYesNo(v); err == nil && !b {
			return "", fmt.Errorf("%w: cannot resolve host %q in any of CanonicalDomains (%s), and CanonicalizeFallbackLocal is no",
				ErrConfig, host, strings.Join(domains, " "))
		}
	}
	return host, nil
}

// lookupHostName reports whether name resolves (within 5s).
func lookupHostName(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	return err == nil && len(addrs) > 0
}

// evaluateFor decides the configuration of one host: the first pass, then
// canonicalization and the final pass when asked for. user and port are
// what the command line fixed (user@host, a ProxyJump entry's :port):
// they come first, as in ssh.
func (c *sshConfig) evaluateFor(alias, user string, port int) (*configEval, error) {
	e := &configEval{c: c, host: alias, original: alias, vals: map[string][]string{}}
	if user != "" {
		e.vals["user"] = []string{user}
	}
	if port != 0 {
		e.vals["port"] = []string{strconv.Itoa(port)}
	}
	if err := e.evaluate(); err != nil {
		return nil, err
	}
	host := alias
	if v, ok := e.value("hostname"); ok {
		h, err := expandTokens(v, map[byte]string{'h': alias})
		if err != nil {
			return nil, fmt.Errorf("%w: HostName for %s: %q: %v", ErrConfig, alias, v, err)
		}
		host = h
	}
	if net.ParseIP(host) == nil {
		host = strings.ToLower(host)
	}
	mode := "no"
	if v, ok := e.value("canonicalizehostname"); ok {
		mode = strings.ToLower(v)
	}
	switch mode {
	case "no", "false", "yes", "true", "always":
	default:
		return nil, fmt.Errorf("%w: CanonicalizeHostname for %s: %q: want yes, no or always", ErrConfig, alias, mode)
	}
	canon := mode != "no" && mode != "false"
	direct := true
	for _, k := range []string{"proxycommand", "proxyjump"} {
		if v, ok := e.value(k); ok && v != "none" {
			direct = false
		}
	}
	if mode == "always" || (canon && direct) {
		h, err := c.canonicalize(e, host)
		if err != nil {
			return nil, err
		}
		host = h
	}
	e.vals["hostname"] = []string{host}
	if canon || e.wantFinal {
		e.host, e.final = host, true
		if err := e.evaluate(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// onLocalNetwork is Match localnetwork: some address of a local interface
// is in one of the comma-separated CIDR blocks.
func onLocalNetwork(list string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	var nets []*net.IPNet
	for _, c := range strings.Split(list, ",") {
		if _, n, err := net.ParseCIDR(strings.TrimSpace(c)); err == nil {
			nets = append(nets, n)
		}
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		for _, n := range nets {
			if n.Contains(ipn.IP) {
				return true
			}
		}
	}
	return false
}
