package conn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Port forwards (ssh_config LocalForward, RemoteForward, DynamicForward)
// live as long as the Manager, across reconnects:
//
//   - Local and dynamic forwards listen locally from the first connection
//     until Close; the port stays ours while the link is down, and a
//     connection accepted then is closed at once (nothing waits for a
//     redial). Each accepted connection opens a direct-tcpip channel over
//     the current ssh connection. A port that cannot be bound (in use) is
//     a warning and a "failed" forward in Forwards, never a failed mount;
//     binding is tried again at each reconnect.
//   - Remote forwards are asked of the server (tcpip-forward) on every new
//     connection; connections the server sends are connected to the target
//     from here.
//   - A dynamic forward is a SOCKS5 server (no authentication, CONNECT
//     only, the destination resolved by the server), like ssh -D.
//   - Connections being forwarded when the link dies end with it.
//
// Only the host entry's own forwards are opened, never those of ProxyJump
// hops. Unix-socket forwards and a RemoteForward without a target (remote
// SOCKS) are skipped with a warning.

// Forward is one forward from ssh_config.
type Forward struct {
	Kind string `json:"kind"` // "local", "remote" or "dynamic"
	// Listen is the address listened on: locally for local and dynamic
	// forwards, on the server for remote ones.
	Listen string `json:"listen"`
	// Target is where connections go: seen from the server for a local
	// forward, from here for a remote one; "" for dynamic.
	Target string `json:"target,omitempty"`
}

func (f Forward) String() string {
	switch f.Kind {
	case "local":
		return "LocalForward " + f.Listen + " -> " + f.Target
	case "remote":
		return "RemoteForward " + f.Listen + " -> " + f.Target
	}
	return "DynamicForward " + f.Listen + " (SOCKS5)"
}

// ForwardStatus is a forward and how it is doing.
type ForwardStatus struct {
	Forward
	// State: "active", "waiting for connection" (offline), or "failed".
	State string `json:"state"`
	Err   string `json:"error,omitempty"`
}

// resolveForwards fills t's forwards from the configuration.
func (c *sshConfig) resolveForwards(t *Target, get func(string) (string, bool), getAll func(string) []string, tokens map[byte]string) error {
	gateway := false
	if v, ok := get("GatewayPorts"); ok {
		gateway, _ = parseYesNo(v)
	}
	for _, kind := range []string{"local", "remote", "dynamic"} {
		key := map[string]string{"local": "LocalForward", "remote": "RemoteForward", "dynamic": "DynamicForward"}[kind]
		for _, v := range getAll(key) {
			v, err := expandTokens(v, tokens)
			if err != nil {
				return fmt.Errorf("%w: %s for %s: %q: %v", ErrConfig, key, t.Label, v, err)
			}
			f, err := parseForward(kind, splitArgs(v), gateway || kind == "remote")
			if err != nil {
				warnOnce(c.logger, "ssh config: forward skipped", "host", t.Label, "forward", key+" "+v, "reason", err)
				continue
			}
			switch kind {
			case "local":
				t.LocalForwards = append(t.LocalForwards, f)
			case "remote":
				t.RemoteForwards = append(t.RemoteForwards, f)
			default:
				t.DynamicForwards = append(t.DynamicForwards, f)
			}
		}
	}
	return nil
}

// parseForward reads "[bind:]port host:hostport" (or "port" alone for a
// dynamic forward); '/' may stand for ':', IPv6 addresses go in brackets.
// Without a bind address a local listener is on 127.0.0.1 (all addresses
// with GatewayPorts yes); a remote one is left to the server.
func parseForward(kind string, args []string, openBind bool) (Forward, error) {
	want := 2
	if kind == "dynamic" {
		want = 1
	}
	if len(args) != want {
		if kind == "remote" && len(args) == 1 {
			return Forward{}, errors.New("a RemoteForward without a target (remote SOCKS) is not supported")
		}
		return Forward{}, fmt.Errorf("want %d arguments", want)
	}
	for _, a := range args {
		if strings.HasPrefix(a, "/") || strings.HasPrefix(a, "~") {
			return Forward{}, errors.New("unix-socket forwards are not supported")
		}
	}
	bind, port, err := splitForwardAddr(args[0], true)
	if err != nil {
		return Forward{}, err
	}
	switch {
	case bind == "*" || (bind == "" && openBind):
		bind = ""
	case bind == "" || bind == "localhost":
		bind = "127.0.0.1"
	}
	f := Forward{Kind: kind, Listen: net.JoinHostPort(bind, port)}
	if kind != "dynamic" {
		host, tport, err := splitForwardAddr(args[1], false)
		if err != nil {
			return Forward{}, err
		}
		f.Target = net.JoinHostPort(host, tport)
	}
	return f, nil
}

// splitForwardAddr splits [host:]port, host/port or [v6]:port.
func splitForwardAddr(s string, hostOptional bool) (host, port string, err error) {
	s = strings.ReplaceAll(s, "/", ":")
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	} else if hostOptional {
		port = s
	} else {
		return "", "", fmt.Errorf("%q: want host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !hostOptional) {
		return "", "", fmt.Errorf("%q: bad port", s)
	}
	if !hostOptional && host == "" {
		return "", "", fmt.Errorf("%q: no host", s)
	}
	return host, port, nil
}

// forwardDialTimeout bounds opening one forwarded connection (the
// direct-tcpip channel, or the local connect of a remote forward).
const forwardDialTimeout = 20 * time.Second

// forwardLink is what a connection offers for forwards: a channel to an
// address seen from the server (direct-tcpip), and a listener on the
// server (tcpip-forward). *ssh.Client is one.
type forwardLink interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Listen(network, addr string) (net.Listener, error)
}

var _ forwardLink = (*ssh.Client)(nil)

// forwarder runs a Manager's forwards.
type forwarder struct {
	log *slog.Logger

	mu      sync.Mutex
	client  forwardLink     // guarded by mu; nil while offline
	entries []*forwardEntry // guarded by mu; set at the first connection
	started bool            // guarded by mu
	// unsupported: the current connection cannot carry forwards (an ssh
	// implementation without them). Guarded by mu.
	unsupported bool
	closed      bool // guarded by mu
}

type forwardEntry struct {
	Forward
	ln     net.Listener // guarded by forwarder.mu: local listener, or the server's for remote
	err    error        // guarded by forwarder.mu: why it is not active
	client forwardLink  // guarded by forwarder.mu: for remote, the connection ln belongs to
}

func newForwarder(log *slog.Logger) *forwarder { return &forwarder{log: log} }

// setClient is called at every state change: c is the new connection, or
// nil when offline. It never waits on the network.
func (f *forwarder) setClient(c *Client) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.unsupported = c != nil && c.links == nil
	if c == nil || c.links == nil {
		f.client = nil
		return
	}
	f.client = c.links
	if c.target != nil {
		f.startLocked(c.target)
	}
	for _, e := range f.entries {
		if e.Kind == "remote" {
			go f.listenRemote(e, c.links)
		} else if e.ln == nil {
			f.listenLocal(e)
		}
	}
}

// start takes the forwards from t and binds the local ones, without a
// connection yet (a Manager that starts offline): the ports are ours and
// status lists them. Only the first call (or first connection) counts.
func (f *forwarder) start(t *Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.started {
		return
	}
	f.startLocked(t)
	for _, e := range f.entries {
		if e.Kind != "remote" {
			f.listenLocal(e)
		}
	}
}

func (f *forwarder) startLocked(t *Target) {
	if f.started {
		return
	}
	f.started = true
	for _, list := range [][]Forward{t.LocalForwards, t.DynamicForwards, t.RemoteForwards} {
		for _, fw := range list {
			f.entries = append(f.entries, &forwardEntry{Forward: fw})
		}
	}
}

// listenLocal binds a local or dynamic forward; f.mu is held (a local
// bind does not touch the network).
func (f *forwarder) listenLocal(e *forwardEntry) {
	ln, err := net.Listen("tcp", e.Listen)
	if err != nil {
		if e.err == nil || e.err.Error() != err.Error() {
			f.log.Warn("port forward not opened", "forward", e.Forward.String(), "err", err)
		}
		e.err = err
		return
	}
	e.ln, e.err = ln, nil
	f.log.Info("port forward open", "forward", e.Forward.String())
	go f.acceptLoop(e, ln)
}

func (f *forwarder) acceptLoop(e *forwardEntry, ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return // closed
		}
		go f.serveLocal(e, nc)
	}
}

func (f *forwarder) current() forwardLink {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.client
}

// serveLocal carries one accepted connection over the current link.
func (f *forwarder) serveLocal(e *forwardEntry, nc net.Conn) {
	defer nc.Close()
	client := f.current()
	if client == nil {
		f.log.Debug("forwarded connection refused: offline", "forward", e.Forward.String())
		if e.Kind == "dynamic" {
			socksRefuse(nc)
		}
		return
	}
	target := e.Target
	if e.Kind == "dynamic" {
		var err error
		if target, err = socksHandshake(nc); err != nil {
			f.log.Debug("SOCKS request refused", "forward", e.Forward.String(), "err", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	ch, err := client.DialContext(ctx, "tcp", target)
	cancel()
	if e.Kind == "dynamic" {
		if err != nil {
			socksReply(nc, 5) // connection refused
		} else {
			socksReply(nc, 0)
		}
	}
	if err != nil {
		f.log.Info("forwarded connection failed", "forward", e.Forward.String(), "target", target, "err", err)
		return
	}
	pipeBoth(nc, ch)
}

// listenRemote asks the server for a remote forward on client and serves
// it until that connection ends.
func (f *forwarder) listenRemote(e *forwardEntry, client forwardLink) {
	ln, err := client.Listen("tcp", e.Listen)
	f.mu.Lock()
	if f.closed || f.client != client {
		f.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		return
	}
	if err != nil {
		if e.err == nil || e.err.Error() != err.Error() {
			f.log.Warn("remote port forward not opened", "forward", e.Forward.String(), "err", err)
		}
		e.err, e.ln = err, nil
		f.mu.Unlock()
		return
	}
	e.ln, e.client, e.err = ln, client, nil
	f.mu.Unlock()
	f.log.Info("port forward open", "forward", e.Forward.String())
	for {
		nc, err := ln.Accept()
		if err != nil {
			f.mu.Lock()
			if e.ln == ln {
				e.ln, e.client = nil, nil
			}
			f.mu.Unlock()
			return
		}
		go func() {
			defer nc.Close()
			lc, err := net.DialTimeout("tcp", e.Target, forwardDialTimeout)
			if err != nil {
				f.log.Info("forwarded connection failed", "forward", e.Forward.String(), "err", err)
				return
			}
			pipeBoth(nc, lc)
		}()
	}
}

// Status lists the forwards and their state.
func (f *forwarder) status() []ForwardStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ForwardStatus
	for _, e := range f.entries {
		s := ForwardStatus{Forward: e.Forward}
		switch {
		case f.unsupported:
			s.State = "not available over this connection"
		case e.err != nil:
			s.State, s.Err = "failed", e.err.Error()
		case f.client == nil:
			s.State = "waiting for connection"
		case e.Kind == "remote" && (e.ln == nil || e.client != f.client):
			s.State = "opening"
		default:
			s.State = "active"
		}
		out = append(out, s)
	}
	return out
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed, f.client = true, nil
	for _, e := range f.entries {
		if e.ln != nil && e.Kind != "remote" {
			e.ln.Close() // a local close; the remote ones end with their connection
		}
	}
}

// pipeBoth copies both ways until either side ends, then closes both.
func pipeBoth(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	cp := func(dst io.WriteCloser, src io.Reader) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// socksHandshake reads a SOCKS5 greeting and CONNECT request (RFC 1928,
// no authentication) and returns the destination host:port.
func socksHandshake(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(forwardDialTimeout))
	defer c.SetDeadline(time.Time{})
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	if hdr[0] != 5 {
		return "", fmt.Errorf("SOCKS version %d (only 5 is supported)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", err
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		c.Write([]byte{5, 0xff})
		return "", errors.New("the client wants authentication")
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return "", err
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", err
	}
	if req[0] != 5 || req[1] != 1 {
		socksReply(c, 7) // command not supported
		return "", fmt.Errorf("SOCKS command %d (only CONNECT is supported)", req[1])
	}
	var host string
	switch req[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[req[3]])
		if _, err := io.ReadFull(c, ip); err != nil {
			return "", err
		}
		host = net.IP(ip).String()
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", err
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", err
		}
		host = string(name)
	default:
		socksReply(c, 8) // address type not supported
		return "", fmt.Errorf("SOCKS address type %d", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), nil
}

// socksReply sends a SOCKS5 reply with the given code and a zero address.
func socksReply(c net.Conn, code byte) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
	c.SetWriteDeadline(time.Time{})
}

// socksRefuse answers a SOCKS client while offline: greeting, then
// "network unreachable".
func socksRefuse(c net.Conn) {
	if _, err := socksHandshake(c); err == nil {
		socksReply(c, 3)
	}
}
