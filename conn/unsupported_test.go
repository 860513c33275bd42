package conn

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"remotefs/internal/sshdtest"
)

// When the built-in client cannot log in, the error names what the host's
// configuration asks for that it cannot do (a PKCS#11 token, GSSAPI, a
// FIDO key outside the agent) and points to --ssh=openssh.
func TestAuthFailureNamesWhatOnlyOpenSSHCanDo(t *testing.T) {
	srv := sshdtest.Start(t)
	opts := clientHome(t, srv, `
Host testbox
  HostName 127.0.0.1
  Port {{PORT}}
  User {{USER}}
  IdentityFile ~/.ssh/id_ed25519_sk
  IdentitiesOnly yes
  IdentityAgent none
  PKCS11Provider /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
  GSSAPIAuthentication yes
  GlobalKnownHostsFile /dev/null
`, "[127.0.0.1]:{{PORT}} {{HOSTKEY}}")
	// A FIDO key: only its public half is a file (the private half is a
	// handle for the token, which x/crypto cannot use).
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	blob := ssh.Marshal(struct {
		Type, Key, App string
	}{"sk-ssh-ed25519@openssh.com", string(pub), "ssh:"})
	line := "sk-ssh-ed25519@openssh.com " + base64.StdEncoding.EncodeToString(blob) + " test\n"
	os.WriteFile(filepath.Join(opts.Home, ".ssh/id_ed25519_sk.pub"), []byte(line), 0o644)
	os.WriteFile(filepath.Join(opts.Home, ".ssh/id_ed25519_sk"), []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot for x/crypto\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	_, err := dialSpec(t, "testbox:", opts)
	wantDialError(t, err, ErrAuth, "GSSAPIAuthentication yes", "PKCS11Provider /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		"the FIDO key ~/.ssh/id_ed25519_sk (not in ssh-agent)", "ssh configuration of testbox", "--ssh=openssh")
}
