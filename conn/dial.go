package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"os/user"
	"path"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Options tune Dial. The zero value is usable: every field has a default.
type Options struct {
	// Home is the local home directory: where ~/.ssh/config, the default
	// identity files and known_hosts are looked up, and what ~ and %d
	// expand to in the configuration. Default $HOME.
	Home string
	// ConfigFile replaces the user's ~/.ssh/config, like ssh -F; when it is
	// set the system file is not read either.
	ConfigFile string
	// SystemConfigFile is read after the user's file when ConfigFile is
	// empty. Default /etc/ssh/ssh_config; "none" reads no system file.
	SystemConfigFile string

	// ConnectTimeout bounds the TCP connect and the ssh handshake of each
	// hop. Default: ssh_config ConnectTimeout, else 10s.
	ConnectTimeout time.Duration
	// OpTimeout bounds every remote operation; for a transfer it bounds
	// the time without progress. When it passes the connection is
	// considered dead and closed. Default 20s.
	OpTimeout time.Duration
	// KeepaliveInterval and KeepaliveCountMax: a keepalive request is sent
	// every interval; when no reply has come for interval*countMax the
	// connection is closed. Defaults: ssh_config ServerAliveInterval and
	// ServerAliveCountMax when set (and non-zero), else 5s and 3.
	KeepaliveInterval time.Duration
	KeepaliveCountMax int

	// RedialMin and RedialMax bound the Manager's backoff between timed
	// redials (it doubles from min to max). Defaults 1s and 30s.
	RedialMin, RedialMax time.Duration

	// Login answers the server's questions for keyboard-interactive and
	// password authentication (see prompt.go). nil: a server that asks
	// makes Dial fail with ErrLoginNeeded.
	Login LoginFunc

	// SSH picks the ssh implementation: SSHBuiltin ("" too) or SSHOpenSSH,
	// the user's own ssh program (SSHProgram, default "ssh"; openssh.go).
	SSH        string
	SSHProgram string
	// AskpassProgram is run by ssh (as SSH_ASKPASS) to ask questions with
	// --ssh=openssh: a program that calls RunAskpass. Empty: ssh runs in
	// batch mode and cannot ask.
	AskpassProgram string
	// RuntimeDir holds private sockets (ssh ControlPath, askpass).
	// Default $TMPDIR/remotefs-UID.
	RuntimeDir string

	// UploadHelper picks how Put sends files: UploadAuto (the default),
	// UploadEager or UploadSFTP; see upload.go.
	UploadHelper string

	// Agent picks whether helpers share one server-side agent per
	// connection: AgentAuto (the default) or AgentOff; see agent.go.
	Agent string

	// AgentLinger is how long the agent stays on the server after its last
	// connection ended, reachable by later connections over a unix socket
	// without a login shell (agent.go, "The persistent agent"); 0: the
	// agent ends with its connection, and none left by another is used.
	// A mount uses DefaultAgentLinger.
	AgentLinger time.Duration

	// ContentSessions is how many SFTP sessions besides the metadata one
	// carry file content (sessions.go): 0 means the default (4); a
	// negative number opens none, so content and metadata share one
	// session.
	ContentSessions int

	// Forwards opens the host entry's LocalForward, RemoteForward and
	// DynamicForward while a Manager is connected (see forward.go).
	Forwards bool

	// matchExec and lookupHost replace running Match exec commands and
	// resolving names for CanonicalizeHostname (tests).
	matchExec  func(cmd string) (bool, error)
	lookupHost func(name string) bool

	// Logger receives warnings (ignored config settings, unusable keys)
	// and debug detail. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultConnectTimeout    = 10 * time.Second
	defaultOpTimeout         = 20 * time.Second
	defaultKeepaliveInterval = 5 * time.Second
	defaultKeepaliveCountMax = 3

	// sftpConcurrency is the number of requests in flight per file for
	// large reads and writes (32 KiB each, so 2 MiB in flight).
	sftpConcurrency = 64
)

func (o Options) withDefaults() Options {
	if o.Home == "" {
		o.Home = os.Getenv("HOME")
	}
	if o.Home == "" {
		if u, err := user.Current(); err == nil {
			o.Home = u.HomeDir
		}
	}
	if o.SystemConfigFile == "" {
		o.SystemConfigFile = defaultSystemConfig
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = defaultOpTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ContentSessions == 0 {
		o.ContentSessions = defaultContentSessions
	}
	if o.RedialMin <= 0 {
		o.RedialMin = minRedialDelay
	}
	if o.RedialMax < o.RedialMin {
		o.RedialMax = max(maxRedialDelay, o.RedialMin)
	}
	return o
}

// forTarget fills the values ssh_config may set.
func (o Options) forTarget(t *Target) Options {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = t.ConnectTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = defaultConnectTimeout
	}
	if o.KeepaliveInterval <= 0 {
		o.KeepaliveInterval = t.ServerAliveInterval
	}
	if o.KeepaliveInterval <= 0 {
		o.KeepaliveInterval = defaultKeepaliveInterval
	}
	if o.KeepaliveCountMax <= 0 {
		o.KeepaliveCountMax = t.ServerAliveCountMax
	}
	if o.KeepaliveCountMax <= 0 {
		o.KeepaliveCountMax = defaultKeepaliveCountMax
	}
	return o
}

var (
	// ErrHostKeyUnknown: known_hosts has no key for the server (of the
	// types the server offers). Nothing is trusted silently.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyChanged: known_hosts has a different key for the server,
	// or the server's key is revoked.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrAuth: the server accepted none of the keys tried.
	ErrAuth = errors.New("authentication failed")
	// ErrKeyPassphrase: authentication failed and an identity file could not
	// be used because it is encrypted and not in the agent. Errors that wrap
	// it also wrap ErrAuth.
	ErrKeyPassphrase = errors.New("key protected by a passphrase")
	// ErrRemotePath: the remote root does not exist or is not a directory.
	ErrRemotePath = errors.New("remote path unusable")
)

// Dial connects to spec.Host the way `ssh HOST` would (ssh_config,
// ProxyJump, agent and identity files, known_hosts), opens SFTP and checks
// that spec.Path is a directory. Network failures wrap ErrOffline; host key,
// authentication and path problems wrap ErrHostKeyUnknown,
// ErrHostKeyChanged, ErrAuth or ErrRemotePath. Every error is one line
// naming the host and what to do.
func Dial(ctx context.Context, spec Spec, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	if opts.SSH == SSHOpenSSH {
		return dialOpenSSH(ctx, spec, opts)
	}
	target, err := Resolve(spec, opts)
	if err != nil {
		return nil, err
	}
	base := opts // each hop gets its own ssh_config values
	opts = opts.forTarget(target)
	log := opts.Logger.With("host", spec.Host)

	// Dial the chain: each hop through the previous one.
	hops := append(append([]*Target(nil), target.ProxyJump...), target)
	var chain []*ssh.Client
	closeChain := func() {
		for _, c := range chain {
			c.Close()
		}
	}
	for i, hop := range hops {
		hopOpts := base.forTarget(hop)
		var via *ssh.Client
		viaLabel := ""
		if i > 0 {
			via, viaLabel = chain[i-1], hops[i-1].Label
		}
		c, err := dialHop(ctx, hop, via, viaLabel, hopOpts, log)
		if err != nil {
			closeChain()
			return nil, err
		}
		chain = append(chain, c)
	}
	final := chain[len(chain)-1]

	transport := make([]io.Closer, len(chain))
	for i, c := range chain {
		transport[i] = c
	}
	c := newClientShell(spec.Host, opts, transport)
	c.ssh = sshTransport{final}
	c.content = newContentPool(c, c.sshSFTPOpener(final), opts.ContentSessions)
	c.agent.start() // beside the sftp start: both wait for the server
	if err := c.startSFTPSession(ctx, final, target.Label); err != nil {
		closeChain()
		return nil, err
	}
	for _, sshc := range chain {
		go func() {
			err := sshc.Wait()
			c.die(fmt.Errorf("ssh connection ended: %w", orEOF(err)))
		}()
	}
	c.ping = sshTransport{final}.keepalive
	go c.keepalive(c.ping, opts.KeepaliveInterval, opts.KeepaliveCountMax)

	if err := c.setRoot(ctx, spec.Path); err != nil {
		c.Close()
		return nil, err
	}
	c.target, c.links = target, final
	c.content.openSoon()
	log.Debug("connected", "root", c.root, "via", len(hops)-1)
	if opts.UploadHelper == UploadEager {
		c.uploads.start()
	}
	return c, nil
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// startSFTPSession opens the sftp subsystem on sc within OpTimeout.
func (c *Client) startSFTPSession(ctx context.Context, sc *ssh.Client, label string) error {
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			sftpc, _, err := c.sshSFTPOpener(sc)()
			if err != nil {
				return err
			}
			c.useMetadataSFTP(sftpc)
			return nil
		}()
	}()
	timer := time.NewTimer(c.opTimeout)
	defer timer.Stop()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("cannot start sftp on %s: %v (is the sftp subsystem enabled in its sshd_config?)", label, err)
		}
		return nil
	case <-timer.C:
		return &offlineError{host: label, cause: fmt.Errorf("sftp did not start within %v", c.opTimeout)}
	case <-ctx.Done():
		return fmt.Errorf("starting sftp on %s: %w", label, ctx.Err())
	}
}

// setRoot resolves the remote root: relative to the remote home unless
// absolute, and checks that it is a directory.
func (c *Client) setRoot(ctx context.Context, p string) error {
	var home string
	var gotHome atomic.Pointer[string] // the closure may outlive run on a deadline
	defer func() {
		c.home = home
		close(c.homeKnown)
	}()
	rel := p
	switch {
	case p == "~":
		rel = ""
	case strings.HasPrefix(p, "~/"):
		rel = p[2:]
	}
	abs := rel
	if !path.IsAbs(rel) {
		err := c.run(ctx, func(*progress) error {
			h, err := c.sftp.Getwd()
			if err == nil {
				gotHome.Store(&h)
			}
			return err
		})
		if err != nil {
			return c.rootError("cannot find the remote home directory", "", err)
		}
		home = *gotHome.Load()
		abs = path.Join(home, rel)
	}
	abs = path.Clean(abs)
	var info os.FileInfo
	var found atomic.Pointer[string] // fn may outlive run on a deadline
	knownHome := home                // fn reads its own copy: home is set below
	err := c.run(ctx, func(*progress) error {
		// The start folder's owner is taken as the login user (Owner):
		// asked alongside the root, so it costs no extra round trip.
		// The home folder's path (for the persistent agent's socket,
		// agent.go) too, when the root did not need it.
		start := make(chan os.FileInfo, 1)
		wd := make(chan string, 1)
		go func() {
			fi, err := c.sftp.Stat(".")
			if err != nil {
				fi = nil
			}
			start <- fi
		}()
		if knownHome == "" {
			go func() {
				h, err := c.sftp.Getwd()
				if err != nil {
					h = ""
				}
				wd <- h
			}()
		} else {
			wd <- knownHome
		}
		var err error
		info, err = c.sftp.Stat(abs)
		if h := <-wd; h != "" {
			found.Store(&h)
		}
		if fi := <-start; fi != nil {
			if st, ok := fi.Sys().(*sftp.FileStat); ok {
				c.setOwner(st.UID, st.GID)
			}
		}
		return err
	})
	if h := found.Load(); h != nil {
		home = *h
	}
	if err != nil {
		return c.rootError("", abs, err)
	}
	if !info.IsDir() {
		return &RemotePathError{Host: c.label, Path: abs, Err: syscall.ENOTDIR}
	}
	c.root = abs
	return nil
}

func (c *Client) rootError(what, abs string, err error) error {
	if errors.Is(err, ErrOffline) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if what != "" {
		return fmt.Errorf("%s on %s: %w", what, c.label, err)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = fs.ErrNotExist
	case errors.Is(err, fs.ErrPermission):
		err = fs.ErrPermission
	}
	return &RemotePathError{Host: c.label, Path: abs, Err: err}
}

// RemotePathError: the remote root cannot be used. Err is fs.ErrNotExist,
// syscall.ENOTDIR, fs.ErrPermission or the server's error.
type RemotePathError struct {
	Host, Path string
	Err        error
}

func (e *RemotePathError) Error() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("remote path %s does not exist on %s", e.Path, e.Host)
	case errors.Is(e.Err, syscall.ENOTDIR):
		return fmt.Sprintf("remote path %s on %s is not a directory", e.Path, e.Host)
	case errors.Is(e.Err, fs.ErrPermission):
		return fmt.Sprintf("remote path %s on %s is not accessible: permission denied", e.Path, e.Host)
	}
	return fmt.Sprintf("remote path %s on %s is not usable: %v", e.Path, e.Host, e.Err)
}

func (e *RemotePathError) Unwrap() []error { return []error{ErrRemotePath, e.Err} }

// dialHop makes one authenticated ssh connection, directly or through via.
// dialProgressKey is the context key of a dial's progress: an
// *atomic.Int64 that dialHop sets to the time (UnixNano) bytes last came
// from the server, so the Manager can tell a dial stuck on a link that was
// dead when it started from a slow one.
type dialProgressKey struct{}

// progressConn notes when bytes arrive.
type progressConn struct {
	net.Conn
	last *atomic.Int64
}

func (c progressConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func dialHop(ctx context.Context, t *Target, via *ssh.Client, viaLabel string, opts Options, log *slog.Logger) (*ssh.Client, error) {
	outer := ctx
	// The connect timeout bounds the network, not a person typing an
	// answer: it is suspended while Options.Login runs.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	deadline := time.AfterFunc(opts.ConnectTimeout, func() { cancel(context.DeadlineExceeded) })
	defer deadline.Stop()

	var nc net.Conn
	var err error
	proxy, err := startHopProxy(t, via, opts.Logger)
	if err != nil {
		return nil, err
	}
	tcpCtx, tcpCancel := context.WithTimeout(outer, opts.ConnectTimeout)
	if proxy != nil {
		nc, viaLabel = proxy, proxy.viaLabel()
	} else if via == nil {
		d := net.Dialer{KeepAlive: 30 * time.Second}
		nc, err = d.DialContext(tcpCtx, "tcp", t.Addr())
	} else {
		nc, err = via.DialContext(tcpCtx, "tcp", t.Addr())
	}
	tcpCancel()
	if err != nil {
		return nil, &DialError{Host: t.Label, Addr: t.Addr(), Via: viaLabel, Timeout: opts.ConnectTimeout, Err: err}
	}
	progress, _ := outer.Value(dialProgressKey{}).(*atomic.Int64)
	if progress != nil {
		nc = progressConn{nc, progress}
	}

	hk, err := newHostKeyChecker(t, opts.ConfigFile, opts.Logger)
	if err != nil {
		nc.Close()
		return nil, err
	}
	auth, err := newAuthenticator(t, opts.Home, opts.Logger)
	if err != nil {
		nc.Close()
		return nil, err
	}
	defer auth.close()
	ia := &interactiveAuth{ctx: outer, t: t, login: opts.Login, waiting: func(on bool) {
		if on {
			deadline.Stop()
			if progress != nil {
				progress.Store(math.MaxInt64) // a person answering: not stuck
			}
		} else {
			deadline.Reset(opts.ConnectTimeout)
			if progress != nil {
				progress.Store(time.Now().UnixNano())
			}
		}
	}}

	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              append(auth.methods(), ia.methods()...),
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: hk.algorithms(),
		ClientVersion:     "SSH-2.0-remotefs",
		BannerCallback: func(msg string) error {
			log.Debug("server banner", "hop", t.Label, "banner", strings.TrimSpace(msg))
			return nil
		},
	}

	type result struct {
		c     ssh.Conn
		chans <-chan ssh.NewChannel
		reqs  <-chan *ssh.Request
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		c, chans, reqs, err := ssh.NewClientConn(nc, t.Addr(), cfg)
		ch <- result{c, chans, reqs, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		nc.Close() // unblocks the handshake
		<-ch
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, &DialError{Host: t.Label, Addr: t.Addr(), Via: viaLabel, Timeout: opts.ConnectTimeout,
				Handshake: true, Err: context.DeadlineExceeded}
		}
		return nil, fmt.Errorf("connecting to %s: %w", t.Label, outer.Err())
	}
	if r.err != nil {
		if errors.Is(r.err, ErrLoginNeeded) {
			return nil, errors.Unwrap(r.err) // the message names the host
		}
		if errors.Is(r.err, context.Canceled) {
			return nil, fmt.Errorf("login to %s: %w", t.Label, errors.Unwrap(r.err))
		}
		if ia.asked {
			auth.tried = append(auth.tried, "keyboard-interactive/password")
		}
		if proxy != nil {
			r.err = proxy.explain(r.err)
		}
		return nil, classifyHandshakeError(t, viaLabel, r.err, hk, auth, opts.ConnectTimeout)
	}
	return ssh.NewClient(r.c, r.chans, r.reqs), nil
}

func classifyHandshakeError(t *Target, viaLabel string, err error, hk *hostKeyChecker, auth *authenticator, timeout time.Duration) error {
	var hkErr *HostKeyError
	if errors.As(err, &hkErr) {
		return hkErr
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no common algorithm for host key"):
		return hk.noCommonAlgorithm(msg)
	case strings.Contains(msg, "unable to authenticate"),
		strings.Contains(msg, "Too many authentication failures"),
		strings.Contains(msg, "no supported methods remain"):
		return auth.failure(t, err)
	case strings.Contains(msg, "no common algorithm"):
		// Not a network problem: retrying will not help.
		return fmt.Errorf("ssh handshake with %s at %s failed: %s", t.Label, t.Addr(), trimSSHPrefix(err))
	}
	return &DialError{Host: t.Label, Addr: t.Addr(), Via: viaLabel, Timeout: timeout, Handshake: true, Err: err}
}

// DialError: the server could not be reached or the ssh handshake broke
// off. It wraps ErrOffline: trying again later may work.
type DialError struct {
	Host, Addr string
	Via        string // the ProxyJump hop it was dialed through, if any
	Timeout    time.Duration
	Handshake  bool // the TCP connection was made; the ssh handshake failed
	Err        error
}

func (e *DialError) Error() string {
	where := e.Addr
	if e.Via != "" {
		where += " through " + e.Via
	}
	if e.Handshake {
		if errors.Is(e.Err, context.DeadlineExceeded) {
			return fmt.Sprintf("ssh handshake with %s at %s timed out after %v", e.Host, where, e.Timeout)
		}
		return fmt.Sprintf("ssh handshake with %s at %s failed: %v", e.Host, where, trimSSHPrefix(e.Err))
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(e.Err, &dnsErr):
		if dnsErr.IsNotFound {
			return fmt.Sprintf("cannot resolve host name %s (for %s): no such host", dnsErr.Name, e.Host)
		}
		return fmt.Sprintf("cannot resolve host name %s (for %s): %s", dnsErr.Name, e.Host, dnsErr.Err)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot connect to %s at %s: connection refused (no ssh server listening on that port?)", e.Host, where)
	case errors.Is(e.Err, context.DeadlineExceeded), isTimeout(e.Err):
		return fmt.Sprintf("cannot connect to %s at %s: no answer within %v", e.Host, where, e.Timeout)
	case errors.Is(e.Err, syscall.ENETUNREACH), errors.Is(e.Err, syscall.EHOSTUNREACH):
		return fmt.Sprintf("cannot connect to %s at %s: network unreachable", e.Host, where)
	}
	var oce *ssh.OpenChannelError
	if errors.As(e.Err, &oce) {
		return fmt.Sprintf("cannot connect to %s at %s: the jump host refused: %s", e.Host, where, oce.Message)
	}
	return fmt.Sprintf("cannot connect to %s at %s: %v", e.Host, where, e.Err)
}

func (e *DialError) Unwrap() []error { return []error{ErrOffline, e.Err} }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func trimSSHPrefix(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "ssh: handshake failed: ")
	return s
}
