package sshdtest

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Host is one more Host block for the client config: another name for the
// server, reached directly, through a latency proxy, a jump host or a
// proxy command, or with other keys or known_hosts files than testbox's.
type Host struct {
	// Alias is the Host pattern ("proxybox", "gpu-*").
	Alias string
	// Port to connect to: 0 is the server's own port, another is where a
	// proxy in front of it listens.
	Port int
	// IdentityFile and KnownHostsFile default to the server's UserKeyFile
	// and KnownHostsFile.
	IdentityFile   string
	KnownHostsFile string
	// Lines are further ssh_config lines for the block
	// ("ProxyJump bastion", "ServerAliveInterval 1"), written first so
	// that they win; blank ones are dropped.
	Lines []string
}

// HostBlock is h as ssh_config text: h.Lines, then HostName 127.0.0.1,
// Port, User, IdentityFile with IdentitiesOnly, no agent, the known_hosts
// file with GlobalKnownHostsFile /dev/null. ssh_config keeps an option's
// first value, so h.Lines win over these (IdentityFile aside, which adds
// up). It starts with a newline, so blocks can be appended to any config.
func (s *Server) HostBlock(h Host) string {
	port := h.Port
	if port == 0 {
		port = s.Port
	}
	key := h.IdentityFile
	if key == "" {
		key = s.UserKeyFile
	}
	known := h.KnownHostsFile
	if known == "" {
		known = s.KnownHostsFile
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nHost %s\n", h.Alias)
	for _, l := range h.Lines {
		if l = strings.TrimSpace(l); l != "" {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	fmt.Fprintf(&b, "  HostName 127.0.0.1\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n",
		port, s.User, key, known)
	return b.String()
}

// AddHost appends h's block to ConfigFile. When h.Port is another port
// than the server's and h uses the server's known_hosts, the server's host
// key is recorded there for [127.0.0.1]:Port too, so a proxy in front of
// the server is trusted as the server itself.
func (s *Server) AddHost(h Host) error {
	if err := appendFile(s.ConfigFile, s.HostBlock(h)); err != nil {
		return err
	}
	if h.Port != 0 && h.Port != s.Port && h.KnownHostsFile == "" {
		return s.AddKnownHost("[127.0.0.1]:" + strconv.Itoa(h.Port))
	}
	return nil
}

// AddProxyHost adds Host alias reaching the server through a proxy that
// listens on addr (host:port on 127.0.0.1, e.g. an internal/netproxy),
// with lines as further ssh_config lines. The server's host key is trusted
// on the proxy's port.
func (s *Server) AddProxyHost(alias, addr string, lines ...string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("proxy address %s: %v", addr, err)
	}
	return s.AddHost(Host{Alias: alias, Port: port, Lines: lines})
}

// AddKnownHost records the server's host key under name in KnownHostsFile
// (a HostKeyAlias, or "[127.0.0.1]:port" for a proxy's port).
func (s *Server) AddKnownHost(name string) error {
	return appendFile(s.KnownHostsFile, name+" "+s.HostKeyPub+"\n")
}

func appendFile(p, text string) error {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
