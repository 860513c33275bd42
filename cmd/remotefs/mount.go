package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"remotefs/conn"
)

// mountConfig is everything `remotefs mount` was asked to do.
type mountConfig struct {
	Spec         conn.Spec
	Mountpoint   string // absolute, symlinks resolved
	Foreground   bool
	Offline      bool
	OfflineEdits bool // --offline-edits: accept changes even when started without the server
	Debug        bool
	CacheDir     string
	SSHConfig    string
	AttrTTL      time.Duration
	DirTTL       time.Duration
	KernelTTL    time.Duration
	OpTimeout    time.Duration
	ConnTimeout  time.Duration
	AllowOther   bool
	ReadOnly     bool   // --read-only, -o ro: online, but refuses changes
	NoExec       bool   // --noexec, -o noexec (applied by a root bind remount)
	CacheSize    int64  // --cache-size; 0: the cache's default, <0: no limit
	Watch        string // --watch: auto, helper, inotifywait, poll, off
	NoNotify     bool   // --no-notify: do not raise inotify events for server changes
	NoForwards   bool   // --no-forwards: do not open the ssh_config entry's port forwards
	PollInterval time.Duration
	ConfigFile   string // --config, or "" for the default file
	SSH          string // --ssh: conn.SSHBuiltin or conn.SSHOpenSSH
	// From the config file only (see config.go); the mount wires them.
	Ignore        []string // glob patterns the mount leaves out
	ServerFolders []string // folders the server's programs write to

	UIDMap map[uint32]uint32 // server uid -> local uid (config uid_map)
	GIDMap map[uint32]uint32 // server gid -> local gid (config gid_map)
}

const mountUsage = `Usage: remotefs mount [flags] HOST:PATH MOUNTPOINT

Mounts PATH of the SSH server HOST on MOUNTPOINT and returns once the mount
is live; a background process keeps serving it (--foreground keeps it
attached). HOST is resolved like "ssh HOST" does: ~/.ssh/config, ssh-agent,
identity files, known_hosts (an unknown host key is refused: connect once
with ssh to verify and record it). A server that asks for a password or a
one-time code is answered on this terminal before mount returns
(remotefs help ssh); --ssh=openssh uses your own ssh program instead of
the built-in client.

Examples:
  remotefs mount gpu-box:projects ~/remote        # ~/projects on gpu-box
  remotefs mount alice@10.0.0.5:/srv/code ~/code   # absolute remote path
  remotefs mount --offline gpu-box:projects ~/remote   # from the cache only
  remotefs mount --offline-edits gpu-box:projects ~/remote  # edit even if it starts offline
  remotefs gpu-box:projects ~/remote -o ro,attr_ttl=5s  # mount(8) form

Every flag also has an -o form (-o cache_dir=/x,offline), as used by
mount -t fuse.remotefs and /etc/fstab: see remotefs help fstab. Defaults
for every flag can be set in ~/.config/remotefs/config.toml: see
remotefs help config. Flags on the command line win over the file.

Flags:
`

func parseMountFlags(args []string) (*mountConfig, error) {
	cfg := &mountConfig{}
	args, err := expandMountOptions(args)
	if err != nil {
		return nil, err
	}
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.BoolVar(&cfg.Foreground, "foreground", false, "stay attached and log to stderr")
	fl.BoolVar(&cfg.Foreground, "f", false, "short for --foreground")
	fl.BoolVar(&cfg.Offline, "offline", false, "serve the cache only, without contacting the server (read-only unless --offline-edits)")
	fl.BoolVar(&cfg.OfflineEdits, "offline-edits", false, "accept changes also when the mount starts without its server (--offline, or unreachable): they wait in the journal and are delivered on the first connection, by this mount or a later one (see remotefs help offline)")
	fl.BoolVar(&cfg.Debug, "debug", false, "log every operation")
	fl.StringVar(&cfg.CacheDir, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/remotefs/REMOTE)")
	fl.StringVar(&cfg.SSHConfig, "F", "", "ssh_config file (default ~/.ssh/config)")
	fl.DurationVar(&cfg.AttrTTL, "attr-ttl", time.Second, "without a live change feed: re-check a file with the server on open when its attributes are older than this")
	fl.DurationVar(&cfg.DirTTL, "dir-ttl", 10*time.Second, "without a live change feed: refresh a directory listing in the background when older than this")
	fl.DurationVar(&cfg.KernelTTL, "kernel-ttl", time.Second, "how long the kernel caches names and attributes (a minute while the change feed is live)")
	fl.DurationVar(&cfg.OpTimeout, "op-timeout", 10*time.Second, "longest a single server operation may take before the link counts as dead")
	fl.DurationVar(&cfg.ConnTimeout, "connect-timeout", 10*time.Second, "dial timeout (ssh_config ConnectTimeout wins)")
	fl.StringVar(&cfg.Watch, "watch", "auto", "how to learn about changes made on the server: auto (a helper on the server when its OS and CPU match this binary's, else inotifywait, else polling), helper, inotifywait, poll, or off")
	fl.BoolVar(&cfg.NoNotify, "no-notify", false, "do not raise inotify events on the mount for changes made on the server (see remotefs help notify)")
	fl.BoolVar(&cfg.NoForwards, "no-forwards", false, "do not open the LocalForward, RemoteForward and DynamicForward of the host's ssh_config entry (see remotefs help ssh)")
	fl.DurationVar(&cfg.PollInterval, "poll-interval", 2*time.Second, "how often the poll watcher looks for server changes")
	fl.Var(sizeFlag{&cfg.CacheSize}, "cache-size", "most file content to keep cached, e.g. 10G, 500M (least recently used clean files are evicted; unsent changes never are) (default 10G)")
	fl.BoolVar(&cfg.AllowOther, "allow-other", false, "let other users access the mount (needs user_allow_other in /etc/fuse.conf)")
	fl.BoolVar(&cfg.ReadOnly, "read-only", false, "mount read-only: online, but refuse every change (-o ro)")
	fl.BoolVar(&cfg.NoExec, "noexec", false, "programs on the mount cannot be executed (enforced when mounted by root)")
	cfg.SSH = conn.SSHBuiltin
	fl.Var(sshFlag{&cfg.SSH}, "ssh", `which ssh makes the connection: builtin (remotefs's own client) or openssh (your ssh program, as sshfs does: for ProxyCommand, GSSAPI, PKCS#11 and FIDO keys; see remotefs help ssh)`)
	fl.StringVar(&cfg.ConfigFile, "config", "", "config file (default $XDG_CONFIG_HOME/remotefs/config.toml)")
	help := fl.Bool("help", false, "show this help")
	if err := fl.Parse(reorderFlags(fl, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			*help = true
		} else {
			return nil, usagef("mount: %v (see remotefs mount --help)", err)
		}
	}
	if *help {
		fmt.Print(mountUsage)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
		return nil, nil
	}
	if fl.NArg() != 2 {
		return nil, usagef("mount: need HOST:PATH and MOUNTPOINT, got %d argument(s) (see remotefs mount --help)", fl.NArg())
	}
	spec, err := conn.ParseSpec(fl.Arg(0))
	if err != nil {
		return nil, err
	}
	cfg.Spec = spec
	fileCfg, err := loadConfig(cfg.ConfigFile)
	if err != nil {
		return nil, err
	}
	if err := applyConfig(fileCfg, fl, spec, cfg); err != nil {
		return nil, err
	}
	mp, err := checkMountpoint(fl.Arg(1))
	if err != nil {
		return nil, err
	}
	cfg.Mountpoint = mp
	if cfg.CacheDir == "" {
		cfg.CacheDir = defaultCacheDir(spec)
	}
	if cfg.CacheDir, err = filepath.Abs(cfg.CacheDir); err != nil {
		return nil, err
	}
	return cfg, nil
}

// reorderFlags lets flags follow the positional arguments, as most
// mount tools allow (remotefs mount HOST:PATH DIR --offline).
func reorderFlags(fl *flag.FlagSet, args []string) []string {
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

// checkMountpoint resolves dir and checks it can be mounted on.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("mountpoint %s does not exist (create it with: mkdir -p %s)", abs, abs)
	}
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.ENOTCONN {
			return "", fmt.Errorf("mountpoint %s is a dead mount (Transport endpoint is not connected); clear it with: fusermount3 -u %s", abs, abs)
		}
		return "", fmt.Errorf("mountpoint %s: %v", abs, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if mounted, fstype := isMountpoint(abs); mounted {
		return "", fmt.Errorf("mountpoint %s is already mounted (%s); unmount it first", abs, fstype)
	}
	return abs, nil
}

// isMountpoint reports whether dir is a mount point, from /proc/self/mountinfo.
func isMountpoint(dir string) (bool, string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if unescapeMount(fields[4]) == dir {
			fstype := ""
			for i, fld := range fields {
				if fld == "-" && i+1 < len(fields) {
					fstype = fields[i+1]
				}
			}
			return true, fstype
		}
	}
	return false, ""
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkFUSE reports a clear error when this machine cannot mount FUSE.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return errors.New("/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or, in a container, pass --device /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found: install fuse3 (e.g. apt-get install fuse3)")
	}
	return nil
}

// defaultCacheDir is $XDG_CACHE_HOME/remotefs/<host>-<path>-<hash>.
func defaultCacheDir(spec conn.Spec) string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "remotefs", cacheKey(spec))
}

func cacheKey(spec conn.Spec) string {
	h := sha256.Sum256([]byte(spec.Host + "\x00" + spec.Path))
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if r == '-' || r == '_' || r == '.' || r == '@' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
				return r
			}
			return '_'
		}, s)
		if len(s) > 40 {
			s = s[:40]
		}
		return strings.Trim(s, "_")
	}
	name := clean(spec.Host)
	if p := clean(spec.Path); p != "" {
		name += "-" + p
	}
	return name + "-" + hex.EncodeToString(h[:4])
}

func cmdMount(ctx context.Context, args []string) error {
	cfg, err := parseMountFlags(args)
	if err != nil || cfg == nil {
		return err
	}
	if err := checkFUSE(); err != nil {
		return err
	}
	if cfg.Foreground {
		if cfg.NoExec {
			stop := make(chan struct{})
			defer close(stop)
			go enforceNoExecWhenMounted(cfg.Mountpoint, stop)
		}
		return serveMount(ctx, cfg, nil, nil, func(ctx context.Context, req conn.LoginRequest) ([]string, error) {
			answers, err := askOnTerminal(ctx, req)
			if errors.Is(err, errNoTerminal) {
				return nil, noTerminalError(req)
			}
			return answers, err
		})
	}
	if err := startDaemon(ctx, cfg, args); err != nil {
		return err
	}
	if cfg.NoExec {
		if err := applyNoExec(cfg.Mountpoint); err != nil {
			exec.Command("fusermount3", "-u", cfg.Mountpoint).Run()
			return err
		}
	}
	return nil
}

// daemonCommand is the hidden subcommand the background process runs.
const daemonCommand = "__daemon"

// startDaemon re-executes this binary in the background and waits until it
// reports that the mount is live, or why it failed.
func startDaemon(ctx context.Context, cfg *mountConfig, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath, err := logFilePath(cfg)
	if err != nil {
		return err
	}
	rotateLog(logPath, maxLogSize)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	// A socket pair, not a pipe: the daemon also asks login questions over
	// it (see login.go).
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	pr, pw := os.NewFile(uintptr(fds[0]), "ready"), os.NewFile(uintptr(fds[1]), "ready")
	cmd := exec.Command(exe, append([]string{daemonCommand}, args...)...)
	cmd.Stdin = nil
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Env = append(os.Environ(), "REMOTEFS_READY_FD=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start background process: %w", err)
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The daemon may send warnings and login questions before its verdict.
	stop := context.AfterFunc(ctx, func() { pr.Close() })
	defer stop()
	rd := bufio.NewReader(io.LimitReader(pr, 1<<20))
	var text string
	noTerminal := false // asked to log in, and nobody could answer
	for {
		line, err := rd.ReadString('\n')
		line = strings.TrimSpace(line)
		if payload, ok := strings.CutPrefix(line, "login "); ok {
			a := answerLogin(ctx, payload)
			noTerminal = noTerminal || a.NoTerminal
			b, _ := json.Marshal(a)
			if _, err := fmt.Fprintf(pr, "%s\n", b); err != nil {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "warning: ") {
			fmt.Fprintln(os.Stderr, "remotefs: "+line)
			continue
		}
		if line != "" || err != nil {
			text = line
			break
		}
	}
	pr.Close()
	if text == "ok" {
		go func() { <-exited }()
		return nil
	}
	if text == "" && ctx.Err() != nil {
		// Interrupted (Ctrl-C at a login prompt): the daemon, cut off from
		// its terminal, gives up by itself.
		return fmt.Errorf("mount of %s interrupted", cfg.Spec)
	}
	if text == "" {
		select {
		case err := <-exited:
			text = fmt.Sprintf("background process exited (%v); see %s", err, logPath)
		case <-time.After(2 * time.Second):
			text = "background process did not report; see " + logPath
		}
	}
	if noTerminal {
		return loginNeededError(strings.TrimPrefix(text, "error: "))
	}
	return errors.New(strings.TrimPrefix(text, "error: "))
}

// logFilePath is $XDG_STATE_HOME/remotefs/<cache key>.log.
func logFilePath(cfg *mountConfig) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "state")
	}
	dir := filepath.Join(base, "remotefs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("log directory: %w", err)
	}
	return filepath.Join(dir, cacheKey(cfg.Spec)+".log"), nil
}

func cmdDaemon(ctx context.Context, args []string) error {
	cfg, err := parseMountFlags(args)
	var ready *os.File
	if fd, perr := strconv.Atoi(os.Getenv("REMOTEFS_READY_FD")); perr == nil {
		// Not inherited by what the daemon runs (a ProxyCommand, Match
		// exec): a child holding it would keep `remotefs mount` waiting.
		syscall.CloseOnExec(fd)
		ready = os.NewFile(uintptr(fd), "ready")
		os.Unsetenv("REMOTEFS_READY_FD")
	}
	var relay *loginRelay
	if ready != nil {
		relay = newLoginRelay(ready)
	}
	report := func(err error) {
		if relay == nil {
			return
		}
		if err == nil {
			relay.finish("ok")
		} else {
			relay.finish("error: " + err.Error())
		}
	}
	if err != nil || cfg == nil {
		if err == nil {
			err = errors.New("bad daemon arguments")
		}
		report(err)
		return err
	}
	warn := func(msg string) {
		if relay != nil {
			relay.line("warning: " + strings.ReplaceAll(msg, "\n", " "))
		}
		fmt.Fprintln(os.Stderr, "warning: "+msg)
	}
	var login conn.LoginFunc
	if relay != nil {
		login = relay.ask
	}
	err = serveMount(ctx, cfg, report, warn, login)
	report(err)
	return err
}

// sshFlag is --ssh: builtin or openssh.
type sshFlag struct{ p *string }

func (f sshFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}

func (f sshFlag) Set(s string) error {
	switch s {
	case conn.SSHBuiltin, conn.SSHOpenSSH:
		*f.p = s
		return nil
	}
	return fmt.Errorf("invalid ssh %q: want builtin or openssh", s)
}

// sizeFlag parses sizes like 10G, 500M, 1.5GiB, 4096.
type sizeFlag struct{ p *int64 }

func (f sizeFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return humanBytes(*f.p)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.p = n
	return nil
}
