// Package sshdtest runs a real OpenSSH sshd on 127.0.0.1 for tests, demos
// and benchmarks: throwaway host and user keys, its own sshd_config, a
// fresh client HOME whose ~/.ssh/config names it "testbox", and a fresh
// directory to serve.
//
// It works as root (logging in as root, with PermitRootLogin
// prohibit-password) and as a normal user (sshd runs unprivileged on a high
// port and only that user can log in). Start skips the test when sshd is
// not installed, unless REMOTEFS_REQUIRE_SSHD=1.
//
// More names for the server go into the generated config with AddHost
// and AddProxyHost (through a latency or dead-link proxy), each a Host
// block like testbox's. What tests need besides the server is in
// internal/testenv.
//
// Stop kills sshd and every process it started (per-connection sshd
// processes, sftp-server, commands), found through /proc: sshd puts them
// in their own sessions, so a process-group kill would miss them.
package sshdtest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Options tune StartServer. The zero value is fine.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// LogLevel for sshd (default DEBUG1, which logs forwarding requests).
	LogLevel string
	// ExtraConfig is appended to sshd_config.
	ExtraConfig string
	// LoginShellDelay, when positive, makes the account's shell take that
	// long to start, as the conda or pyenv set-up in ~/.bashrc does on many
	// GPU boxes and clusters: RemoteHome gets a .bashrc that sleeps and a
	// .profile that sources it (as Debian's does). sshd runs every exec
	// request as `$SHELL -c command`, and bash started by sshd reads
	// ~/.bashrc, so every exec channel pays the delay. The SFTP subsystem
	// is then served by internal-sftp, which runs inside sshd without a
	// shell, so it does not pay it (an external sftp-server is started
	// through the shell too). Needs bash as the user's login shell (checked).
	LoginShellDelay time.Duration
	// UserCA makes a user certificate authority (UserCAFile) that sshd
	// trusts (TrustedUserCAKeys): keys it signs (SignUserKey) log in
	// without being in authorized_keys.
	UserCA bool
	// HostCert makes a host certificate authority (HostCAPub) and has
	// sshd present its host key signed by it (HostCertificate), with the
	// principals 127.0.0.1 and localhost.
	HostCert bool
	// LoginUser, when sshd runs as root, is the account that logs in
	// instead of root (an existing, unlocked account): the served Dir and
	// RemoteHome are given to it, and the server's files made readable
	// to it. Ignored when not root.
	LoginUser string
	// SSHD is the sshd program to run (default: FindSSHD). sshd uses its
	// program name as its PAM service, so a copy under another name has
	// its own /etc/pam.d file.
	SSHD string
	// UsePAM turns on PAM and keyboard-interactive authentication (sshd
	// must run as root for PAM logins).
	UsePAM bool
}

// Server is a running sshd and the client-side files that reach it.
type Server struct {
	Addr string // 127.0.0.1:Port
	Port int
	User string // the local user, who logs in

	HostKey     ssh.PublicKey
	HostKeyPub  string // authorized_keys format: "ssh-ed25519 AAAA..."
	HostKeyFile string // private host key

	UserKey     ssh.Signer
	UserKeyFile string // unencrypted private key (Home/.ssh/id_ed25519)

	// Home is a fresh client home: .ssh/config with "Host testbox"
	// (HostName 127.0.0.1, Port, User, IdentityFile, IdentitiesOnly yes,
	// IdentityAgent none, UserKnownHostsFile, GlobalKnownHostsFile
	// /dev/null), .ssh/known_hosts with the host key, and the user key.
	Home           string
	ConfigFile     string // Home/.ssh/config
	KnownHostsFile string // Home/.ssh/known_hosts
	// AuthorizedKeysFile lists the keys sshd accepts (read at each login).
	AuthorizedKeysFile string
	// Dir is a fresh, empty, absolute directory to use as the remote root.
	Dir string
	// RemoteHome is where the sftp server starts (sftp-server -d): what a
	// relative remote path is relative to. It is a fresh directory, so tests
	// never touch the real home. It is also $HOME of exec'd commands (so the
	// user's shell startup files are not run and helpers are installed
	// there), which still start in the real home of User.
	RemoteHome string

	// UserCAFile is the user CA's private key (Options.UserCA), HostCAPub
	// the host CA's public key in authorized_keys format
	// (Options.HostCert); "" otherwise.
	UserCAFile string
	HostCAPub  string

	LogFile    string
	SSHDConfig string
	sshdPath   string

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu
	exit chan struct{} // guarded by mu; closed when cmd has exited
}

// Alias is the Host name the generated ssh config gives the server.
const Alias = "testbox"

// Start starts a server for a test and stops it at cleanup. It skips the
// test when sshd is missing, unless REMOTEFS_REQUIRE_SSHD=1.
func Start(t testing.TB) *Server {
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "sshdtest-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartServer(dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("sshdtest: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (%s):\n%s", s.LogFile, tail(s.Log(), 4000))
		}
		os.RemoveAll(dir)
	})
	return s
}

// Require skips t when sshd is not installed, unless
// REMOTEFS_REQUIRE_SSHD=1 (CI, make test), where it fails t.
func Require(t testing.TB) {
	t.Helper()
	if _, err := FindSSHD(); err != nil {
		if os.Getenv("REMOTEFS_REQUIRE_SSHD") == "1" {
			t.Fatalf("sshdtest: %v (REMOTEFS_REQUIRE_SSHD=1)", err)
		}
		t.Skipf("sshdtest: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// FindSSHD returns the path of sshd.
func FindSSHD() (string, error) {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		return filepath.Abs(p) // sshd must be started by absolute path to re-exec itself
	}
	return "", errors.New("OpenSSH sshd is not installed (apt-get install openssh-server)")
}

// findSFTPServer returns the sftp-server binary, or "internal-sftp".
func findSFTPServer(sshd string) string {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
		"/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/local/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	out, _ := exec.Command(sshd, "-T", "-f", "/etc/ssh/sshd_config").Output()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == "subsystem" && f[1] == "sftp" {
			return f[2]
		}
	}
	return "internal-sftp"
}

// StartServer starts sshd with all its files under dir (created if
// needed): keys, sshd_config, log, the client Home and the served Dir. Call
// Stop when done; dir is left for the caller to remove.
func StartServer(dir string, opts Options) (*Server, error) {
	sshd, err := FindSSHD()
	if err != nil {
		return nil, err
	}
	if opts.SSHD != "" {
		sshd = opts.SSHD
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	if opts.LoginUser != "" && os.Geteuid() == 0 {
		if u, err = user.Lookup(opts.LoginUser); err != nil {
			return nil, err
		}
	}
	s := &Server{
		User:               u.Username,
		sshdPath:           sshd,
		HostKeyFile:        filepath.Join(dir, "ssh_host_ed25519_key"),
		AuthorizedKeysFile: filepath.Join(dir, "authorized_keys"),
		SSHDConfig:         filepath.Join(dir, "sshd_config"),
		LogFile:            filepath.Join(dir, "sshd.log"),
		Home:               filepath.Join(dir, "home"),
		Dir:                filepath.Join(dir, "remote"),
		RemoteHome:         filepath.Join(dir, "remotehome"),
	}
	s.ConfigFile = filepath.Join(s.Home, ".ssh", "config")
	s.KnownHostsFile = filepath.Join(s.Home, ".ssh", "known_hosts")
	s.UserKeyFile = filepath.Join(s.Home, ".ssh", "id_ed25519")
	for _, d := range []string{dir, filepath.Join(s.Home, ".ssh"), s.Dir, s.RemoteHome} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{s.Dir, s.RemoteHome} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if opts.LoginShellDelay > 0 {
		if err := writeSlowShellFiles(u, s.RemoteHome, opts.LoginShellDelay); err != nil {
			return nil, err
		}
	}

	hostPub, err := writeKey(s.HostKeyFile, "sshdtest host key")
	if err != nil {
		return nil, err
	}
	s.HostKey = hostPub
	s.HostKeyPub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostPub)))
	userPub, err := writeKey(s.UserKeyFile, "sshdtest user key")
	if err != nil {
		return nil, err
	}
	keyData, err := os.ReadFile(s.UserKeyFile)
	if err != nil {
		return nil, err
	}
	if s.UserKey, err = ssh.ParsePrivateKey(keyData); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.AuthorizedKeysFile, ssh.MarshalAuthorizedKey(userPub), 0o600); err != nil {
		return nil, err
	}

	if err := s.makeAuthorities(dir, &opts); err != nil {
		return nil, err
	}

	if u.Uid != "0" && os.Geteuid() == 0 {
		// Another account logs in: it reads its authorized keys, owns the
		// served folder and the remote home.
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(s.AuthorizedKeysFile, 0o644); err != nil {
			return nil, err
		}
		for _, d := range []string{s.Dir, s.RemoteHome} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}

	port := opts.Port
	for attempt := 0; ; attempt++ {
		if opts.Port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := s.writeConfigs(sshd, opts); err != nil {
			return nil, err
		}
		err = s.start()
		if err == nil {
			return s, nil
		}
		if opts.Port != 0 || attempt >= 4 || !strings.Contains(s.Log(), "Address already in use") {
			return nil, err
		}
	}
}

// writeSlowShellFiles gives home a .bashrc that sleeps for delay, in the
// way of a slow conda/pyenv init, and a .profile that sources it.
func writeSlowShellFiles(u *user.User, home string, delay time.Duration) error {
	shell, err := loginShell(u.Username)
	if err != nil {
		return err
	}
	if filepath.Base(shell) != "bash" {
		return fmt.Errorf("LoginShellDelay needs bash as the login shell of %s (it reads ~/.bashrc when sshd runs a command); the shell is %s", u.Username, shell)
	}
	rc := fmt.Sprintf("# written by remotefs internal/sshdtest: a shell start-up as slow as a\n# conda/pyenv init. Runs for every command sshd starts (bash -c).\nsleep %.3f\n", delay.Seconds())
	profile := "# written by remotefs internal/sshdtest\nif [ -n \"$BASH_VERSION\" ] && [ -f \"$HOME/.bashrc\" ]; then . \"$HOME/.bashrc\"; fi\n"
	if err := os.WriteFile(filepath.Join(home, ".bashrc"), []byte(rc), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(home, ".profile"), []byte(profile), 0o644)
}

// loginShell reads the user's shell from /etc/passwd.
func loginShell(name string) (string, error) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 7 && f[0] == name {
			return f[6], nil
		}
	}
	return "", fmt.Errorf("user %s not in /etc/passwd", name)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeKey writes a new ed25519 private key (mode 0600) and its .pub.
func writeKey(file, comment string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment + "\n"
	if err := os.WriteFile(file+".pub", []byte(line), 0o644); err != nil {
		return nil, err
	}
	return sshPub, nil
}

func (s *Server) writeConfigs(sshd string, opts Options) error {
	level := opts.LogLevel
	if level == "" {
		level = "DEBUG1"
	}
	sftp := findSFTPServer(sshd)
	if opts.LoginShellDelay > 0 {
		sftp = "internal-sftp"
	}
	pam := "no"
	if opts.UsePAM {
		pam = "yes"
	}
	cfg := fmt.Sprintf(`# written by remotefs internal/sshdtest
UsePAM %s
KbdInteractiveAuthentication %s
Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
PasswordAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
PermitUserRC no
PermitUserEnvironment no
AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions 100
MaxAuthTries 10
ClientAliveInterval 0
PrintMotd no
PrintLastLog no
Subsystem sftp %s -d %s
SetEnv HOME=%s
LogLevel %s
%s
`, pam, pam, s.Port, s.HostKeyFile, filepath.Join(filepath.Dir(s.SSHDConfig), "sshd.pid"), s.AuthorizedKeysFile,
		sftp, s.RemoteHome, s.RemoteHome, level, opts.ExtraConfig)
	if err := os.WriteFile(s.SSHDConfig, []byte(cfg), 0o600); err != nil {
		return err
	}
	client := fmt.Sprintf(`# written by remotefs internal/sshdtest
Host %s
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
`, Alias, s.Port, s.User, s.UserKeyFile, s.KnownHostsFile)
	if err := os.WriteFile(s.ConfigFile, []byte(client), 0o600); err != nil {
		return err
	}
	known := fmt.Sprintf("[127.0.0.1]:%d %s\n", s.Port, s.HostKeyPub)
	return os.WriteFile(s.KnownHostsFile, []byte(known), 0o600)
}

// start runs sshd and waits until it answers with an SSH banner.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// sshd logs to the file itself (-E); this catches anything on stdout/stderr.
	// -E, not -e: with -e a session process logs to its stderr, which is
	// by then the client's stderr channel.
	cmd := exec.Command(s.sshdPath, "-D", "-E", s.LogFile, "-f", s.SSHDConfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", s.sshdPath, err)
	}
	exit := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return fmt.Errorf("sshd exited at start: %s", lastLines(s.Log(), 5))
		default:
		}
		if bannerOK(s.Addr) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("sshd did not answer on %s within 15s: %s", s.Addr, lastLines(s.Log(), 5))
}

func bannerOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// Stop kills sshd and everything it started, and waits for sshd to exit.
// Safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exit:
		return // already gone; its pid may belong to someone else now
	default:
	}
	pid := cmd.Process.Pid
	// Stop the listener so it forks no more, then kill its descendants
	// while they are still its descendants, then the listener.
	syscall.Kill(pid, syscall.SIGSTOP)
	kids := descendants(pid)
	for _, p := range kids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	cmd.Process.Kill()
	<-exit
	// An agent a mount left for the next connection (conn's
	// Options.AgentLinger) is sshd's descendant no longer once its
	// connection ended; its binary is under RemoteHome.
	for _, p := range runningFrom(s.RemoteHome) {
		syscall.Kill(p, syscall.SIGKILL)
		kids = append(kids, p)
	}
	// SIGKILL is delivered asynchronously; wait until they are gone (or
	// zombies: once reparented, nobody may reap them in a container).
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range kids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z"))
}

// Restart stops sshd and starts it again on the same port with the same
// keys: existing connections die (as on a server reboot).
func (s *Server) Restart() error {
	s.Stop()
	var err error
	for i := 0; i < 20; i++ {
		if err = s.start(); err == nil || !strings.Contains(s.Log(), "Address already in use") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// runningFrom lists the processes whose program is a file under dir.
func runningFrom(dir string) []int {
	if dir == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if prog, _, _ := strings.Cut(string(b), "\x00"); strings.HasPrefix(prog, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// descendants lists the processes under pid, found through /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// Authorize adds a public key to the keys sshd accepts.
func (s *Server) Authorize(pub ssh.PublicKey) error {
	return appendFile(s.AuthorizedKeysFile, string(ssh.MarshalAuthorizedKey(pub)))
}

// Env is the environment for a client process: HOME set to Home and no
// SSH_AUTH_SOCK, so the user's own agent and config stay out.
func (s *Server) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "SSH_AUTH_SOCK=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+s.Home)
}

// Command returns the OpenSSH client command `ssh -F config testbox
// args...` in batch mode, with Env.
func (s *Server) Command(args ...string) *exec.Cmd {
	cmd := exec.Command("ssh", append([]string{"-F", s.ConfigFile, "-o", "BatchMode=yes", Alias}, args...)...)
	cmd.Env = s.Env()
	return cmd
}

// StartTimes measures, on one fresh SSH connection made directly to the
// server, how long an exec channel takes to run `true` (the login shell's
// start-up included) and how long the SFTP subsystem takes to answer its
// init. They show what LoginShellDelay costs each kind of channel.
func (s *Server) StartTimes() (execTime, sftpTime time.Duration, err error) {
	cfg := &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.UserKey)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         10 * time.Second,
	}
	c, err := ssh.Dial("tcp", s.Addr, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	// Bound the whole measurement: a hung server closes the connection.
	timer := time.AfterFunc(time.Minute, func() { c.Close() })
	defer timer.Stop()

	sess, err := c.NewSession()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	err = sess.Run("true")
	execTime = time.Since(t0)
	sess.Close()
	if err != nil {
		return execTime, 0, fmt.Errorf("exec true: %w", err)
	}

	t0 = time.Now()
	sc, err := sftp.NewClient(c)
	sftpTime = time.Since(t0)
	if err != nil {
		return execTime, sftpTime, fmt.Errorf("sftp: %w", err)
	}
	sc.Close()
	return execTime, sftpTime, nil
}

// makeAuthorities makes the certificate authorities opts asks for (with
// ssh-keygen, as a real CA would) and adds their sshd_config lines to
// opts.ExtraConfig.
func (s *Server) makeAuthorities(dir string, opts *Options) error {
	if opts.UserCA {
		s.UserCAFile = filepath.Join(dir, "user_ca")
		if _, err := writeKey(s.UserCAFile, "sshdtest user CA"); err != nil {
			return err
		}
		opts.ExtraConfig += "\nTrustedUserCAKeys " + s.UserCAFile + ".pub\n"
	}
	if opts.HostCert {
		ca := filepath.Join(dir, "host_ca")
		pub, err := writeKey(ca, "sshdtest host CA")
		if err != nil {
			return err
		}
		s.HostCAPub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		if err := sshKeygen("-s", ca, "-h", "-I", "sshdtest-host", "-n", "127.0.0.1,localhost", s.HostKeyFile+".pub"); err != nil {
			return err
		}
		opts.ExtraConfig += "\nHostCertificate " + s.HostKeyFile + "-cert.pub\n"
	}
	return nil
}

// SignUserKey signs the public key pubFile (a .pub file) with the user CA
// for the principal User, writing the certificate beside it as
// <key>-cert.pub (ssh-keygen's name), and returns that file.
func (s *Server) SignUserKey(pubFile string) (string, error) {
	if s.UserCAFile == "" {
		return "", errors.New("sshdtest: no user CA (Options.UserCA)")
	}
	if err := sshKeygen("-s", s.UserCAFile, "-I", "sshdtest-user", "-n", s.User, "-V", "-5m:+1h", pubFile); err != nil {
		return "", err
	}
	return strings.TrimSuffix(pubFile, ".pub") + "-cert.pub", nil
}

// NewUserKey writes a fresh ed25519 key pair (file, file.pub) that sshd
// does not accept by itself.
func NewUserKey(file string) (ssh.PublicKey, error) {
	return writeKey(file, "sshdtest extra key")
}

func sshKeygen(args ...string) error {
	out, err := exec.Command("ssh-keygen", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
