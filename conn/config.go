package conn

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target is one host resolved the way `ssh HOST` resolves it: every value
// ssh_config decides, with tokens, ~ and environment variables expanded.
type Target struct {
	// Label is the host as the user wrote it ("box", "alice@10.0.0.5"); it
	// names the host in messages.
	Label string
	// Alias is the name matched against Host patterns: the host as written,
	// without user, lower-cased.
	Alias    string
	HostName string
	Port     int
	User     string

	// IdentityFiles are the private key files to try, in order. When the
	// configuration names none they are the defaults (~/.ssh/id_ed25519,
	// id_ecdsa, id_rsa) and IdentityFilesConfigured is false.
	IdentityFiles           []string
	IdentityFilesConfigured bool
	IdentitiesOnly          bool
	// IdentityAgent is the ssh-agent socket to use, "" for none.
	IdentityAgent string

	// KnownHostsFiles (UserKnownHostsFile) and GlobalKnownHostsFiles are
	// the known_hosts files to check, existing or not.
	KnownHostsFiles       []string
	GlobalKnownHostsFiles []string
	// HostKeyAlias, when set, is the name looked up in known_hosts instead
	// of HostName (without the port, as ssh does).
	HostKeyAlias string
	// StrictHostKeyChecking is the configured value, informational only:
	// remotefs always behaves as "yes".
	StrictHostKeyChecking string

	// ProxyCommand is the command whose stdin and stdout carry the
	// connection (tokens expanded; run with $SHELL -c "exec ..."), "" for
	// none. On a ProxyJump chain only the first hop may have one.
	ProxyCommand string
	// CertificateFiles are the certificates (CertificateFile) offered with
	// the matching private keys, from the files or the agent.
	CertificateFiles []string
	// Canonical is set when the configuration was read a second time for
	// the canonical host name (CanonicalizeHostname, Match final).
	Canonical bool
	// LocalForwards, RemoteForwards and DynamicForwards are the forwards
	// the host entry asks for (ssh_config LocalForward ...).
	LocalForwards, RemoteForwards, DynamicForwards []Forward
	// BuiltinGaps: settings the built-in client cannot honour (GSSAPI,
	// PKCS#11, ...), named when authentication fails (unsupported.go).
	BuiltinGaps []string

	// ProxyJump lists the hops to go through, first dialed first; each hop
	// is itself resolved through ssh_config. Empty for a direct connection.
	ProxyJump []*Target

	// sshArgs is what to give `ssh` to reach this host, for messages.
	sshArgs string

	// ConnectTimeout, ServerAliveInterval and ServerAliveCountMax are zero
	// when the configuration does not set them.
	ConnectTimeout      time.Duration
	ServerAliveInterval time.Duration
	ServerAliveCountMax int
}

// Addr is HostName:Port for net.Dial.
func (t *Target) Addr() string {
	return net.JoinHostPort(t.HostName, strconv.Itoa(t.Port))
}

// knownHostsName is the host:port looked up in known_hosts: HostKeyAlias
// stands alone (port 22 means "no port" in known_hosts).
func (t *Target) knownHostsName() string {
	if t.HostKeyAlias != "" {
		return net.JoinHostPort(t.HostKeyAlias, "22")
	}
	return net.JoinHostPort(t.HostName, strconv.Itoa(t.Port))
}

// ErrConfig is wrapped by errors about the ssh configuration.
var ErrConfig = errors.New("ssh configuration")

const (
	defaultSystemConfig = "/etc/ssh/ssh_config"
	maxIncludeDepth     = 16 // OpenSSH's READCONF_MAX_DEPTH
	maxJumpDepth        = 8
)

// Resolve resolves spec.Host through the ssh configuration (see
// Options.ConfigFile and Options.SystemConfigFile) into a Target.
func Resolve(spec Spec, opts Options) (*Target, error) {
	opts = opts.withDefaults()
	cfg, err := loadSSHConfig(opts)
	if err != nil {
		return nil, err
	}
	return cfg.resolve(spec.Host, spec.User(), spec.Hostname(), 0, 0)
}

// sshConfig is the parsed user and system configuration.
type sshConfig struct {
	files  []*configFile // user file first, then system file
	home   string
	local  localInfo
	logger *slog.Logger
	// runExec runs a Match exec command and reports whether it exited 0;
	// lookupHost resolves names for CanonicalizeHostname. Options can
	// replace both (tests, the fuzz target).
	runExec    func(cmd string) (bool, error)
	lookupHost func(name string) bool
}

type localInfo struct {
	user, host, uid string
}

// configFile is one parsed ssh_config file: its keyword lines in order.
type configFile struct {
	name  string
	lines []configEntry
}

// configEntry is one "Keyword value" line.
type configEntry struct {
	key      string   // lower-cased keyword
	args     []string // the value split into words, quotes removed
	raw      string   // the value as written, without a trailing comment
	line     int
	includes []*configFile // for Include: the files it names, parsed
}

func loadSSHConfig(opts Options) (*sshConfig, error) {
	c := &sshConfig{home: opts.Home, logger: opts.Logger, local: currentLocal(),
		runExec: opts.matchExec, lookupHost: opts.lookupHost}
	if c.runExec == nil {
		c.runExec = runMatchExec
	}
	if c.lookupHost == nil {
		c.lookupHost = lookupHostName
	}
	var names []string
	switch {
	case opts.ConfigFile != "":
		// Like ssh -F: the given file replaces both the user and the system file.
		if _, err := os.Stat(opts.ConfigFile); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		names = []string{opts.ConfigFile}
	default:
		names = append(names, filepath.Join(opts.Home, ".ssh", "config"))
		if opts.SystemConfigFile != "none" {
			names = append(names, opts.SystemConfigFile)
		}
	}
	for i, name := range names {
		system := i > 0 || isSystemConfig(name)
		f, err := c.parseFile(name, system, 0)
		if errors.Is(err, os.ErrNotExist) && opts.ConfigFile == "" {
			continue
		}
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, f)
	}
	return c, nil
}

func isSystemConfig(name string) bool {
	return strings.HasPrefix(filepath.Clean(name), "/etc/ssh/")
}

var configLine = regexp.MustCompile(`^\s*([A-Za-z][A-Za-z0-9]*)(\s*=\s*|\s+|$)(.*)$`)

// parseFile reads one file into keyword lines. Include is resolved here,
// the way ssh does (~ and relative names against Options.Home, or /etc/ssh
// for the system file; globs expanded and sorted; missing files skipped);
// whether an Include applies is decided when the configuration is
// evaluated for a host.
func (c *sshConfig) parseFile(name string, system bool, depth int) (*configFile, error) {
	if depth > maxIncludeDepth {
		return nil, fmt.Errorf("%w: %s: Include nested too deeply (a loop?)", ErrConfig, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	f := &configFile{name: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		m := configLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%w: %s:%d: cannot parse %q", ErrConfig, name, lineNo, line)
		}
		e := configEntry{key: strings.ToLower(m[1]), raw: stripComment(m[3]), line: lineNo}
		e.args = splitArgs(e.raw)
		if e.key == "include" {
			for _, pat := range e.args {
				pat = c.includePath(pat, system)
				matches, err := filepath.Glob(pat)
				if err != nil {
					return nil, fmt.Errorf("%w: %s:%d: Include %q: %v", ErrConfig, name, lineNo, pat, err)
				}
				sort.Strings(matches)
				for _, inc := range matches {
					sub, err := c.parseFile(inc, system, depth+1)
					if errors.Is(err, os.ErrNotExist) {
						continue
					}
					if err != nil {
						return nil, err
					}
					e.includes = append(e.includes, sub)
				}
			}
		}
		f.lines = append(f.lines, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, name, err)
	}
	return f, nil
}

func (c *sshConfig) includePath(p string, system bool) string {
	switch {
	case p == "~":
		return c.home
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(c.home, p[2:])
	case filepath.IsAbs(p):
		return p
	case system:
		return filepath.Join("/etc/ssh", p)
	default:
		return filepath.Join(c.home, ".ssh", p)
	}
}

// splitArgs splits a config value into words the way ssh does: on blanks,
// with double quotes grouping, stopping at an unquoted '#'.
func splitArgs(s string) []string {
	var args []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (r == ' ' || r == '\t'):
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		case !quoted && r == '#' && !inWord:
			return args
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args
}

// stripComment cuts a value at the first unquoted '#' that starts a word
// (what splitArgs stops at) and trims it.
func stripComment(s string) string {
	quoted, wordStart := false, true
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			wordStart = false
		case !quoted && (r == ' ' || r == '\t'):
			wordStart = true
		case !quoted && r == '#' && wordStart:
			return strings.TrimSpace(s[:i])
		default:
			wordStart = false
		}
	}
	return strings.TrimSpace(s)
}

// resolve resolves one host. label is the host as written (with user),
// userOverride the user written before '@', port an override from a
// ProxyJump entry (0 if none). depth counts ProxyJump recursion.
func (c *sshConfig) resolve(label, userOverride, host string, port, depth int) (*Target, error) {
	if depth > maxJumpDepth {
		return nil, fmt.Errorf("%w: ProxyJump chain for %s is too long (a loop?)", ErrConfig, label)
	}
	alias := strings.ToLower(host)
	t := &Target{Label: label, Alias: alias, Port: 22, sshArgs: label}
	if port != 0 {
		// A ProxyJump entry "user@host:port": ssh wants -p.
		t.sshArgs = fmt.Sprintf("-p %d %s", port, host)
		if userOverride != "" {
			t.sshArgs = fmt.Sprintf("-p %d %s@%s", port, userOverride, host)
		}
	}
	bad := func(key, val string, err error) error {
		return fmt.Errorf("%w: %s for %s: %q: %v", ErrConfig, key, label, val, err)
	}

	e, err := c.evaluateFor(alias, userOverride, port)
	if err != nil {
		return nil, err
	}
	t.HostName, _ = e.value("hostname")
	t.Canonical = e.final
	get := func(key string) (string, bool) { return e.value(strings.ToLower(key)) }
	getAll := func(key string) []string { return e.vals[strings.ToLower(key)] }

	if v, ok := get("Port"); ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return nil, bad("Port", v, errors.New("not a port number"))
		}
		t.Port = p
	}
	if port != 0 {
		t.Port = port
	}
	t.User = c.local.user
	if v, ok := get("User"); ok {
		u, err := expandTokens(v, c.tokens(t, alias))
		if err != nil {
			return nil, bad("User", v, err)
		}
		t.User = u
	}
	if userOverride != "" {
		t.User = userOverride
	}
	tokens := c.tokens(t, alias)

	if v, ok := get("HostKeyAlias"); ok {
		t.HostKeyAlias = v
	}
	if v, ok := get("IdentitiesOnly"); ok {
		b, err := parseYesNo(v)
		if err != nil {
			return nil, bad("IdentitiesOnly", v, err)
		}
		t.IdentitiesOnly = b
	}
	for _, v := range getAll("IdentityFile") {
		for _, arg := range splitArgs(v) {
			p, err := c.expandPath(arg, tokens)
			if err != nil {
				return nil, bad("IdentityFile", arg, err)
			}
			t.IdentityFiles = appendUnique(t.IdentityFiles, p)
		}
	}
	if len(t.IdentityFiles) > 0 {
		t.IdentityFilesConfigured = true
	} else {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			t.IdentityFiles = append(t.IdentityFiles, filepath.Join(c.home, ".ssh", n))
		}
	}

	t.IdentityAgent = os.Getenv("SSH_AUTH_SOCK")
	if v, ok := get("IdentityAgent"); ok {
		switch v {
		case "none":
			t.IdentityAgent = ""
		case "SSH_AUTH_SOCK":
		default:
			p, err := c.expandPath(v, tokens)
			if err != nil {
				return nil, bad("IdentityAgent", v, err)
			}
			t.IdentityAgent = p
		}
	}

	userKnown := []string{filepath.Join(c.home, ".ssh", "known_hosts"), filepath.Join(c.home, ".ssh", "known_hosts2")}
	if v, ok := get("UserKnownHostsFile"); ok {
		userKnown = nil
		for _, arg := range splitArgs(v) {
			if arg == "none" {
				continue
			}
			p, err := c.expandPath(arg, tokens)
			if err != nil {
				return nil, bad("UserKnownHostsFile", arg, err)
			}
			userKnown = append(userKnown, p)
		}
	}
	globalKnown := []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}
	if v, ok := get("GlobalKnownHostsFile"); ok {
		globalKnown = nil
		for _, arg := range splitArgs(v) {
			if arg == "none" {
				continue
			}
			p, err := c.expandPath(arg, tokens)
			if err != nil {
				return nil, bad("GlobalKnownHostsFile", arg, err)
			}
			globalKnown = append(globalKnown, p)
		}
	}
	t.KnownHostsFiles, t.GlobalKnownHostsFiles = userKnown, globalKnown

	if v, ok := get("StrictHostKeyChecking"); ok {
		t.StrictHostKeyChecking = v
		switch strings.ToLower(v) {
		case "no", "off", "false", "accept-new":
			warnOnce(c.logger, "ssh config asks to relax host key checking; remotefs ignores it and never trusts an unknown or changed host key",
				"host", label, "StrictHostKeyChecking", v)
		}
	}

	for _, d := range []struct {
		key string
		to  *time.Duration
	}{{"ConnectTimeout", &t.ConnectTimeout}, {"ServerAliveInterval", &t.ServerAliveInterval}} {
		if v, ok := get(d.key); ok {
			dur, err := parseConfigDuration(v)
			if err != nil {
				return nil, bad(d.key, v, err)
			}
			*d.to = dur
		}
	}
	if v, ok := get("ServerAliveCountMax"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, bad("ServerAliveCountMax", v, errors.New("not a count"))
		}
		t.ServerAliveCountMax = n
	}

	t.BuiltinGaps = builtinGaps(get)

	jump, hasJump := get("ProxyJump")
	if pc, ok := get("ProxyCommand"); ok && pc != "none" {
		// ssh expands %h %n %p %r and %% here; the shell does the rest.
		cmd, err := expandTokens(getAll("ProxyCommand")[0], map[byte]string{
			'h': t.HostName, 'n': alias, 'p': strconv.Itoa(t.Port), 'r': t.User})
		if err != nil {
			return nil, bad("ProxyCommand", pc, err)
		}
		t.ProxyCommand = cmd
		if v, ok := get("ProxyUseFdpass"); ok {
			if b, _ := parseYesNo(v); b {
				return nil, fmt.Errorf("%w: %s sets ProxyUseFdpass, which the built-in ssh client does not support; use --ssh=openssh", ErrConfig, label)
			}
		}
	}
	for _, v := range getAll("CertificateFile") {
		for _, arg := range splitArgs(v) {
			p, err := c.expandPath(arg, tokens)
			if err != nil {
				return nil, bad("CertificateFile", arg, err)
			}
			t.CertificateFiles = appendUnique(t.CertificateFiles, p)
		}
	}
	if err := c.resolveForwards(t, get, getAll, tokens); err != nil {
		return nil, err
	}
	if hasJump && jump != "none" {
		hops, err := c.resolveJumps(label, jump, depth)
		if err != nil {
			return nil, err
		}
		t.ProxyJump = hops
	}
	return t, nil
}

// resolveJumps resolves a ProxyJump value: comma-separated
// [user@]host[:port] or ssh://[user@]host[:port]. Like ssh, the first hop's
// own ProxyJump is honoured (it is reached the way `ssh hop` would reach
// it); the later hops are reached through the previous ones.
func (c *sshConfig) resolveJumps(label, value string, depth int) ([]*Target, error) {
	var hops []*Target
	for i, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		u, h, p, err := parseJumpHost(item)
		if err != nil {
			return nil, fmt.Errorf("%w: ProxyJump for %s: %q: %v", ErrConfig, label, item, err)
		}
		hop, err := c.resolve(strings.TrimPrefix(item, "ssh://"), u, h, p, depth+1)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			hops = append(hops, hop.ProxyJump...)
		} else {
			hop.ProxyCommand = "" // reached through the previous hop
		}
		hop.LocalForwards, hop.RemoteForwards, hop.DynamicForwards = nil, nil, nil
		hop.ProxyJump = nil
		hops = append(hops, hop)
	}
	return hops, nil
}

func parseJumpHost(s string) (user, host string, port int, err error) {
	s = strings.TrimPrefix(s, "ssh://")
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return "", "", 0, errors.New("empty host")
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, s = s[:i], s[i+1:]
		if err := checkUser(user); err != nil {
			return "", "", 0, err
		}
	}
	host = s
	if h, p, e := net.SplitHostPort(s); e == nil {
		n, e := strconv.Atoi(p)
		if e != nil || n < 1 || n > 65535 {
			return "", "", 0, fmt.Errorf("bad port %q", p)
		}
		host, port = h, n
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	check := host
	if strings.Contains(host, ":") {
		check = "[" + host + "]"
	}
	if err := checkHost(check); err != nil {
		return "", "", 0, err
	}
	return user, host, port, nil
}

// tokens returns the values of the % tokens ssh expands in file names.
func (c *sshConfig) tokens(t *Target, alias string) map[byte]string {
	p := strconv.Itoa(t.Port)
	sum := sha1.Sum([]byte(c.local.host + t.HostName + p + t.User))
	return map[byte]string{
		'C': hex.EncodeToString(sum[:]),
		'd': c.home,
		'h': t.HostName,
		'i': c.local.uid,
		'k': firstNonEmpty(t.HostKeyAlias, t.HostName),
		'L': strings.SplitN(c.local.host, ".", 2)[0],
		'l': c.local.host,
		'n': alias,
		'p': p,
		'r': t.User,
		'u': c.local.user,
	}
}

// expandTokens replaces %x tokens; %% is a literal %.
func expandTokens(s string, tokens map[byte]string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", errors.New("'%' at the end")
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := tokens[s[i]]
		if !ok {
			return "", fmt.Errorf("unknown token %%%c", s[i])
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandPath expands ~, ${VAR} and % tokens in a file name; relative names
// are taken relative to the home directory, as ssh does.
func (c *sshConfig) expandPath(p string, tokens map[byte]string) (string, error) {
	var envErr error
	p = envRef.ReplaceAllStringFunc(p, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := os.LookupEnv(name)
		if !ok && envErr == nil {
			envErr = fmt.Errorf("environment variable %s is not set", name)
		}
		return v
	})
	if envErr != nil {
		return "", envErr
	}
	if p == "~" {
		p = c.home
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(c.home, p[2:])
	} else if strings.HasPrefix(p, "~") {
		return "", errors.New("~user is not supported")
	}
	p, err := expandTokens(p, tokens)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.home, p)
	}
	return p, nil
}

// parseConfigDuration parses ssh's time format: seconds, or a sequence of
// numbers with s, m, h, d, w suffixes ("90", "1m30s").
func parseConfigDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, errors.New("negative")
		}
		return time.Duration(n) * time.Second, nil
	}
	var total time.Duration
	num := ""
	for _, r := range strings.ToLower(s) {
		if r >= '0' && r <= '9' {
			num += string(r)
			continue
		}
		unit := map[rune]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}[r]
		if unit == 0 || num == "" {
			return 0, errors.New("not a time (use seconds or e.g. 1m30s)")
		}
		n, _ := strconv.Atoi(num)
		total += time.Duration(n) * unit
		num = ""
	}
	if num != "" {
		n, _ := strconv.Atoi(num)
		total += time.Duration(n) * time.Second
	}
	return total, nil
}

func parseYesNo(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "true":
		return true, nil
	case "no", "false":
		return false, nil
	}
	return false, errors.New("want yes or no")
}

func currentLocal() localInfo {
	var l localInfo
	if u, err := user.Current(); err == nil {
		l.user, l.uid = u.Username, u.Uid
	}
	if l.user == "" {
		l.user = firstNonEmpty(os.Getenv("USER"), os.Getenv("LOGNAME"))
	}
	if l.uid == "" {
		l.uid = strconv.Itoa(os.Getuid())
	}
	l.host, _ = os.Hostname()
	return l
}

// warned remembers the warnings already logged: a Manager resolves the
// configuration again at every redial, which must not repeat them.
var warned sync.Map

// warnOnce logs a warning the first time log sees it.
func warnOnce(log *slog.Logger, msg string, args ...any) {
	key := fmt.Sprintf("%p %s %v", log, msg, args)
	if _, seen := warned.LoadOrStore(key, true); !seen {
		log.Warn(msg, args...)
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func appendUnique(list []string, s string) []string {
	for _, v := range list {
		if v == s {
			return list
		}
	}
	return append(list, s)
}
