package conn

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyChecker verifies a server's host key against known_hosts, the way
// ssh does with StrictHostKeyChecking=yes: an unknown or changed key is an
// error, never a prompt and never trusted silently.
type hostKeyChecker struct {
	t        *Target
	name     string   // host:port looked up in known_hosts
	files    []string // every configured file, for messages
	cb       ssh.HostKeyCallback
	known    []string // key types known_hosts has for name, in file order
	hasCA    bool     // some file has @cert-authority lines
	sshHint  string   // the ssh command that would let the user verify the key
	lastAddr string   // address of the server, for messages
}

func newHostKeyChecker(t *Target, configFile string, log *slog.Logger) (*hostKeyChecker, error) {
	h := &hostKeyChecker{t: t, name: t.knownHostsName(), lastAddr: t.Addr()}
	h.sshHint = "ssh " + t.sshArgs
	if configFile != "" {
		h.sshHint = "ssh -F " + configFile + " " + t.sshArgs
	}
	// Messages name the user files, existing or not (that is where a key
	// should be added), and the global files that exist.
	h.files = append(h.files, t.KnownHostsFiles...)
	var existing []string
	for i, f := range append(append([]string(nil), t.KnownHostsFiles...), t.GlobalKnownHostsFiles...) {
		global := i >= len(t.KnownHostsFiles)
		data, err := os.ReadFile(f)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				warnOnce(log, "cannot read known_hosts file", "file", f, "err", err)
			}
			continue
		}
		existing = append(existing, f)
		if global && f != os.DevNull {
			h.files = append(h.files, f)
		}
		if bytes.Contains(data, []byte("@cert-authority")) {
			h.hasCA = true
		}
	}
	cb, err := knownhosts.New(existing...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	h.cb = cb
	h.known = h.knownTypes()
	return h, nil
}

// probeKey is a public key no known_hosts line can hold: checking it makes
// knownhosts list every key it has for the host.
type probeKey struct{}

func (probeKey) Type() string                                 { return "remotefs-probe" }
func (probeKey) Marshal() []byte                              { return []byte("\x00\x00\x00\x0eremotefs-probe") }
func (probeKey) Verify(data []byte, sig *ssh.Signature) error { return errors.New("probe key") }

func (h *hostKeyChecker) knownTypes() []string {
	types := h.knownTypesFor(h.name)
	if len(types) == 0 && h.portlessName() != "" {
		types = h.knownTypesFor(h.portlessName())
	}
	return types
}

func (h *hostKeyChecker) knownTypesFor(name string) []string {
	err := h.cb(name, probeAddr, probeKey{})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil
	}
	var types []string
	for _, k := range ke.Want {
		types = appendUnique(types, k.Key.Type())
	}
	return types
}

// probeAddr is a parseable remote address; knownhosts looks at it only when
// no host name is given.
var probeAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}

// portlessName is the name ssh falls back to when a host on a non-standard
// port has no entry of its own: the bare host name (port 22 in
// knownhosts' terms). Empty when there is no such fallback.
func (h *hostKeyChecker) portlessName() string {
	if h.t.HostKeyAlias != "" || h.t.Port == 22 {
		return ""
	}
	return net.JoinHostPort(h.t.HostName, "22")
}

// algorithms orders the host key algorithms by what known_hosts has for
// the host. Without this the server may present a key of another type than
// the one recorded, which knownhosts reports as a mismatch.
func (h *hostKeyChecker) algorithms() []string {
	if len(h.known) == 0 {
		if h.hasCA {
			return nil // let a host certificate be offered
		}
		// Only plain keys, so the error can show a fingerprint the user can
		// compare with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`.
		return []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	supported := map[string]bool{}
	for _, a := range ssh.SupportedAlgorithms().HostKeys {
		supported[a] = true
	}
	for _, a := range ssh.InsecureAlgorithms().HostKeys {
		supported[a] = true
	}
	var algos []string
	for _, typ := range h.known {
		cands := []string{typ}
		if typ == ssh.KeyAlgoRSA {
			cands = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range cands {
			if supported[a] {
				algos = appendUnique(algos, a)
			}
		}
	}
	if h.hasCA {
		return nil
	}
	return algos
}

func (h *hostKeyChecker) check(_ string, remote net.Addr, key ssh.PublicKey) error {
	if ta, ok := remote.(*net.TCPAddr); ok && ta.IP != nil && !ta.IP.IsUnspecified() {
		h.lastAddr = ta.String()
	}
	err := h.cb(h.name, remote, key)
	if err == nil {
		return nil
	}
	var unknown *knownhosts.KeyError
	if errors.As(err, &unknown) && len(unknown.Want) == 0 && h.portlessName() != "" {
		// Like ssh: a key recorded for the bare host name is accepted
		// when there is no entry for [host]:port (and only if it matches).
		if h.cb(h.portlessName(), remote, key) == nil {
			return nil
		}
	}
	if _, isCert := key.(*ssh.Certificate); isCert && h.portlessName() != "" {
		// A host certificate: knownhosts matches @cert-authority patterns
		// together with the port, so "@cert-authority * KEY" or
		// "*.example.com" would never cover [host]:2222. ssh matches the
		// pattern against the name alone: so do we (the certificate must
		// still name the host as a principal).
		if h.cb(h.portlessName(), remote, key) == nil {
			return nil
		}
	}
	e := &HostKeyError{Host: h.t.Label, Addr: h.lastAddr, Name: knownhosts.Normalize(h.name),
		Files: h.files, Key: key, SSHCommand: h.sshHint}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke):
		e.Known = ke.Want
	case errors.As(err, &re):
		e.Revoked = &re.Revoked
	default:
		e.Other = err
	}
	return e
}

// noCommonAlgorithm explains a handshake that failed because the server
// offers none of the key types known_hosts has for it.
func (h *hostKeyChecker) noCommonAlgorithm(detail string) error {
	return &HostKeyError{Host: h.t.Label, Addr: h.lastAddr, Name: knownhosts.Normalize(h.name),
		Files: h.files, KnownTypes: h.known, SSHCommand: h.sshHint, Other: errors.New(detail)}
}

// HostKeyError: the server's host key is not known, does not match, or is
// revoked. It wraps ErrHostKeyUnknown or ErrHostKeyChanged.
type HostKeyError struct {
	Host string // as the user wrote it
	Addr string // address of the server
	// Name is the host as looked up in known_hosts ("[127.0.0.1]:2222").
	Name  string
	Files []string      // the known_hosts files consulted
	Key   ssh.PublicKey // the key the server offered; nil if none was
	// Known lists the keys known_hosts has for Name when Key does not match
	// any of them (empty: the host is unknown).
	Known []knownhosts.KnownKey
	// KnownTypes: known_hosts has keys of these types only, and the server
	// offers none of them.
	KnownTypes []string
	Revoked    *knownhosts.KnownKey
	Other      error // any other verification failure
	// SSHCommand is the ssh command that would show the key for checking.
	SSHCommand string
}

func (e *HostKeyError) changed() bool { return len(e.Known) > 0 || e.Revoked != nil }

func (e *HostKeyError) Is(target error) bool {
	if e.changed() {
		return target == ErrHostKeyChanged
	}
	return target == ErrHostKeyUnknown
}

func (e *HostKeyError) Unwrap() error { return e.Other }

func (e *HostKeyError) offered() string {
	if e.Key == nil {
		return ""
	}
	return fmt.Sprintf("the server offered %s key %s", e.Key.Type(), ssh.FingerprintSHA256(e.Key))
}

func (e *HostKeyError) Error() string {
	files := strings.Join(e.Files, ", ")
	if files == "" {
		files = "none configured"
	}
	switch {
	case e.Revoked != nil:
		return fmt.Sprintf("host key for %s (%s) is revoked in %s:%d; refusing to connect (%s)",
			e.Host, e.Addr, e.Revoked.Filename, e.Revoked.Line, e.offered())
	case len(e.Known) > 0:
		k := e.Known[0]
		for _, w := range e.Known {
			if e.Key != nil && w.Key.Type() == e.Key.Type() {
				k = w
				break
			}
		}
		return fmt.Sprintf("host key for %s does not match %s:%d — possible man-in-the-middle; %s, known_hosts has %s key %s; "+
			"if the server's key was changed on purpose, remove the old entry (ssh-keygen -R '%s' -f %s) and verify the new one with: %s",
			e.Host, k.Filename, k.Line, e.offered(), k.Key.Type(), ssh.FingerprintSHA256(k.Key), e.Name, k.Filename, e.SSHCommand)
	case len(e.KnownTypes) > 0:
		return fmt.Sprintf("host key for %s (%s) is not in known_hosts (%s): it has only %s keys for %s and the server offers none of those types; "+
			"verify the server's key and add it, e.g. by running: %s",
			e.Host, e.Addr, files, strings.Join(e.KnownTypes, ", "), e.Name, e.SSHCommand)
	case e.Other != nil:
		return fmt.Sprintf("host key for %s (%s) cannot be verified against known_hosts (%s): %v; verify it and add it, e.g. by running: %s",
			e.Host, e.Addr, files, e.Other, e.SSHCommand)
	}
	return fmt.Sprintf("host key for %s (%s) is not in known_hosts (%s); verify it and add it, e.g. by running: %s (%s)",
		e.Host, e.Addr, files, e.SSHCommand, e.offered())
}
