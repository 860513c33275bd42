package conn

import (
	"fmt"
	"strings"
)

// What the built-in client cannot do that a host's configuration asks for:
// GSSAPI (Kerberos) authentication, keys in a PKCS#11 token, FIDO (sk-*)
// keys that are not in ssh-agent. None of them fails a mount by itself
// (GSSAPIAuthentication yes is in many distributions' global ssh_config,
// and the server may take another key); when authentication fails, the
// error names each of them with the host and points to --ssh=openssh, which
// makes the user's own ssh log in.

// builtinGaps lists the settings of a host the built-in client ignores,
// as "Option value" strings for messages.
func builtinGaps(get func(string) (string, bool)) []string {
	var gaps []string
	if v, ok := get("GSSAPIAuthentication"); ok && strings.EqualFold(v, "yes") {
		gaps = append(gaps, "GSSAPIAuthentication yes (Kerberos)")
	}
	if v, ok := get("PKCS11Provider"); ok && v != "none" {
		gaps = append(gaps, "PKCS11Provider "+v)
	}
	if v, ok := get("SecurityKeyProvider"); ok && v != "internal" {
		gaps = append(gaps, "SecurityKeyProvider "+v)
	}
	return gaps
}

// isSecurityKeyType: a FIDO key type (sk-ssh-ed25519@openssh.com,
// sk-ecdsa-sha2-nistp256@openssh.com), usable here only through an agent.
func isSecurityKeyType(t string) bool { return strings.HasPrefix(t, "sk-") }

// gapsHint is the sentence an authentication error ends with when the
// configuration asked for something the built-in client cannot do.
func gapsHint(host string, gaps []string) string {
	if len(gaps) == 0 {
		return ""
	}
	return fmt.Sprintf("the ssh configuration of %s asks for %s, which remotefs's built-in ssh client cannot do: mount with --ssh=openssh (or ssh = \"openssh\" in the config file) to log in with your ssh program",
		host, strings.Join(gaps, ", "))
}
