package conn

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authenticator gathers the keys to offer for one hop, like ssh: the
// agent's keys first (only those matching an IdentityFile when
// IdentitiesOnly is set), then the identity files the agent does not hold.
type authenticator struct {
	t    *Target
	home string

	agentConn net.Conn
	agentErr  error
	signers   []ssh.Signer
	tried     []string // what is offered, for messages
	locked    []string // encrypted identity files we could not use
	gaps      []string // what the configuration asks that we cannot do
}

func newAuthenticator(t *Target, home string, log *slog.Logger) (*authenticator, error) {
	a := &authenticator{t: t, home: home, gaps: append([]string(nil), t.BuiltinGaps...)}

	var agentSigners []ssh.Signer
	if t.IdentityAgent != "" {
		c, err := net.DialTimeout("unix", t.IdentityAgent, 2*time.Second)
		if err == nil {
			a.agentConn = c
			agentSigners, err = agent.NewClient(c).Signers()
		}
		if err != nil {
			a.agentErr = err
			warnOnce(log, "ssh-agent not usable", "socket", t.IdentityAgent, "err", err)
		}
	}

	type identity struct {
		file   string
		pub    ssh.PublicKey
		signer ssh.Signer
		locked bool
		sk     bool // a FIDO key: usable only through the agent
	}
	var ids []identity
	for _, f := range t.IdentityFiles {
		id := identity{file: f}
		if data, err := os.ReadFile(f + ".pub"); err == nil {
			if pub, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
				id.pub = pub
			}
		}
		data, err := os.ReadFile(f)
		switch {
		case err == nil:
			signer, err := ssh.ParsePrivateKey(data)
			var pme *ssh.PassphraseMissingError
			switch {
			case err == nil:
				id.signer = signer
				id.pub = signer.PublicKey()
			case errors.As(err, &pme):
				id.locked = true
				if id.pub == nil {
					id.pub = pme.PublicKey
				}
			default:
				warnOnce(log, "identity file not usable", "file", f, "err", err)
			}
			if id.pub != nil && isSecurityKeyType(id.pub.Type()) {
				id.sk = true
			}
		case errors.Is(err, os.ErrNotExist):
			if t.IdentityFilesConfigured && id.pub == nil {
				warnOnce(log, "identity file does not exist", "host", t.Label, "file", f)
			}
		default:
			warnOnce(log, "identity file not readable", "file", f, "err", err)
		}
		if id.signer != nil || id.locked || id.pub != nil {
			ids = append(ids, id)
		}
	}

	inAgent := func(pub ssh.PublicKey) ssh.Signer {
		if pub == nil {
			return nil
		}
		for _, s := range agentSigners {
			if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
				return s
			}
		}
		return nil
	}

	// Certificates first (as ssh offers them with their key): <key>-cert.pub
	// beside each identity file, and every CertificateFile, each paired
	// with its private key from the file or the agent.
	certFiles := append([]string(nil), t.CertificateFiles...)
	for _, id := range ids {
		certFiles = appendUnique(certFiles, id.file+"-cert.pub")
	}
	for _, f := range certFiles {
		cert, err := readCertificate(f)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) || slices.Contains(t.CertificateFiles, f) {
				warnOnce(log, "certificate file not usable", "host", t.Label, "file", f, "err", err)
			}
			continue
		}
		var key ssh.Signer
		for _, id := range ids {
			if id.pub != nil && bytes.Equal(id.pub.Marshal(), cert.Key.Marshal()) {
				key = id.signer
				if s := inAgent(id.pub); s != nil {
					key = s
				}
			}
		}
		if key == nil && !t.IdentitiesOnly {
			key = inAgent(cert.Key)
		}
		if key == nil {
			warnOnce(log, "certificate skipped: its private key is neither in an identity file nor in the agent", "host", t.Label, "file", f)
			continue
		}
		cs, err := ssh.NewCertSigner(cert, key)
		if err != nil {
			warnOnce(log, "certificate not usable", "file", f, "err", err)
			continue
		}
		a.signers = append(a.signers, cs)
		a.tried = append(a.tried, "certificate "+a.short(f))
	}

	fromAgent := map[string]bool{}
	if t.IdentitiesOnly {
		for _, id := range ids {
			if s := inAgent(id.pub); s != nil {
				a.signers = append(a.signers, s)
				a.tried = append(a.tried, "agent key for "+a.short(id.file))
				fromAgent[id.file] = true
			}
			// Certificates the agent holds for this key.
			for _, s := range agentSigners {
				if c := asCertificate(s.PublicKey()); c != nil && id.pub != nil && bytes.Equal(c.Key.Marshal(), id.pub.Marshal()) {
					a.signers = append(a.signers, s)
					a.tried = append(a.tried, "agent certificate for "+a.short(id.file))
				}
			}
		}
	} else if len(agentSigners) > 0 {
		a.signers = append(a.signers, agentSigners...)
		a.tried = append(a.tried, fmt.Sprintf("agent keys (%d)", len(agentSigners)))
		for _, id := range ids {
			if inAgent(id.pub) != nil {
				fromAgent[id.file] = true
			}
		}
	}
	for _, id := range ids {
		switch {
		case fromAgent[id.file]:
		case id.sk:
			a.gaps = append(a.gaps, "the FIDO key "+a.short(id.file)+" (not in ssh-agent)")
		case id.signer != nil:
			a.signers = append(a.signers, id.signer)
			a.tried = append(a.tried, a.short(id.file))
		case id.locked:
			a.locked = append(a.locked, id.file)
		}
	}
	return a, nil
}

func (a *authenticator) methods() []ssh.AuthMethod {
	if len(a.signers) == 0 {
		return nil
	}
	return []ssh.AuthMethod{ssh.PublicKeys(a.signers...)}
}

func (a *authenticator) close() {
	if a.agentConn != nil {
		a.agentConn.Close()
	}
}

// short writes a path under the home directory as ~/...
func (a *authenticator) short(p string) string {
	if a.home != "" && strings.HasPrefix(p, a.home+"/") {
		return "~/" + p[len(a.home)+1:]
	}
	return p
}

func (a *authenticator) failure(t *Target, err error) error {
	_, host := splitUserHost(t.Label)
	e := &AuthError{User: t.User, Host: host, Tried: a.tried, Locked: a.locked, Err: err}
	if len(a.tried) == 0 && len(a.locked) == 0 {
		var files []string
		for _, f := range t.IdentityFiles {
			files = append(files, a.short(f))
		}
		e.NoKeys = "no ssh-agent key, and none of " + strings.Join(files, ", ") + " is a usable key"
	}
	e.Unsupported = gapsHint(t.Label, a.gaps)
	if a.agentErr != nil {
		e.AgentProblem = fmt.Sprintf("ssh-agent at %s not usable: %v", t.IdentityAgent, a.agentErr)
	}
	return e
}

// AuthError: the server accepted none of the keys offered. It wraps
// ErrAuth, and ErrKeyPassphrase when an encrypted identity file could not
// be offered.
type AuthError struct {
	User, Host   string
	Tried        []string // keys offered: "agent keys (2)", "~/.ssh/id_ed25519"
	Locked       []string // identity files skipped: encrypted and not in the agent
	NoKeys       string   // why nothing was offered, when nothing was
	AgentProblem string
	Unsupported  string // what the configuration asks that the built-in client cannot do
	Err          error  // the ssh library's error
}

func (e *AuthError) Error() string {
	var b strings.Builder
	if len(e.Locked) > 0 {
		f := e.Locked[0]
		fmt.Fprintf(&b, "key %s is protected by a passphrase; add it to ssh-agent (ssh-add %s) and retry (authentication to %s@%s failed", f, f, e.User, e.Host)
		if len(e.Tried) > 0 {
			fmt.Fprintf(&b, "; also tried: %s", strings.Join(e.Tried, ", "))
		}
		b.WriteString(")")
	} else {
		fmt.Fprintf(&b, "authentication to %s@%s failed", e.User, e.Host)
		if e.NoKeys != "" {
			fmt.Fprintf(&b, ": no key to offer (%s)", e.NoKeys)
		} else {
			fmt.Fprintf(&b, " (tried: %s)", strings.Join(e.Tried, ", "))
		}
	}
	if e.AgentProblem != "" {
		b.WriteString("; " + e.AgentProblem)
	}
	if e.Unsupported != "" {
		b.WriteString("; " + e.Unsupported)
	}
	return b.String()
}

func (e *AuthError) Unwrap() []error {
	errs := []error{ErrAuth}
	if len(e.Locked) > 0 {
		errs = append(errs, ErrKeyPassphrase)
	}
	return errs
}

// readCertificate reads an OpenSSH certificate (a -cert.pub file).
func readCertificate(file string) (*ssh.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, err
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s is a %s public key, not a certificate", file, pub.Type())
	}
	return cert, nil
}

// asCertificate returns pub as a certificate, or nil. The agent's keys
// come as *agent.Key: their wire form says what they are.
func asCertificate(pub ssh.PublicKey) *ssh.Certificate {
	if c, ok := pub.(*ssh.Certificate); ok {
		return c
	}
	if !strings.Contains(pub.Type(), "-cert-") {
		return nil
	}
	parsed, err := ssh.ParsePublicKey(pub.Marshal())
	if err != nil {
		return nil
	}
	c, _ := parsed.(*ssh.Certificate)
	return c
}
