package conn

// HelpSSH is `remotefs help ssh`: what remotefs reads from ssh_config, how it logs in, and --ssh=openssh.
const HelpSSH = `How remotefs uses ssh

remotefs speaks SSH and SFTP itself (nothing is installed on the server)
and reads the same configuration as the ssh command: ~/.ssh/config (or the
file given with -F FILE / -o ssh_config=FILE, like ssh -F), then
/etc/ssh/ssh_config. HOST in HOST:PATH is an alias from those files or
[user@]hostname; [user@][IPv6]:path for IPv6 addresses.

Honoured ssh_config keywords (evaluated in ssh's order: first value wins,
Match criteria see the values obtained so far):
  Host, Include, Match all / host / originalhost / user / localuser /
    exec / canonical / final / tagged (Tag) / localnetwork / command and
    sessiontype (seen as "sftp" and "subsystem", like sshfs); exec runs
    in $SHELL with the % tokens
  CanonicalizeHostname (yes, always), CanonicalDomains,
    CanonicalizeMaxDots, CanonicalizeFallbackLocal
  HostName, User, Port
  IdentityFile, IdentitiesOnly, IdentityAgent (a path, SSH_AUTH_SOCK, none)
  CertificateFile, and KEY-cert.pub beside each identity file
  UserKnownHostsFile, GlobalKnownHostsFile, HostKeyAlias, and
    @cert-authority lines for host certificates
  ProxyJump (any number of hops), ProxyCommand (run as ssh runs it:
    $SHELL -c "exec COMMAND", tokens %h %p %r %n %%, its stderr in the
    mount's log; ProxyJump and ProxyCommand: the first one set wins)
  LocalForward, RemoteForward, DynamicForward (see Forwards below)
  ConnectTimeout, ServerAliveInterval, ServerAliveCountMax, GatewayPorts
  Tokens (%h %p %r %u %d %% ...), ~ and ${ENV} in paths

Authentication: public keys and certificates, from ssh-agent
(SSH_AUTH_SOCK) and the identity files (~/.ssh/id_ed25519, id_ecdsa,
id_rsa by default); certificates are offered with their key, whether
the key is in a file or in the agent. A key with a passphrase must be
loaded in the agent (ssh-add).

Passwords and one-time codes (keyboard-interactive and password logins,
e.g. a university cluster asking "Password:" then a Duo or TOTP code):
remotefs mount asks the server's prompts, exactly as sent, on the terminal
(answers to secret prompts are not shown) before it goes to the
background. The answers go to the server and nowhere else: not to disk,
logs, arguments or the environment, and they are not kept. When a later
reconnect is asked again, the mount stays up and works as offline (the
cache is served, saves wait in the journal), remotefs status says
"login needed", and
  remotefs login MOUNTPOINT
asks on the terminal again and resumes. A mount without a terminal
(/etc/fstab at boot, systemd) that is asked fails at once and says so.

Host keys are checked against known_hosts (~/.ssh/known_hosts,
/etc/ssh/ssh_known_hosts), host certificates against its
@cert-authority lines (a pattern there also covers the host on another
port). An unknown or changed host key is refused: connect once with
"ssh HOST" to verify and record it. StrictHostKeyChecking no/accept-new is
ignored (with a warning).

A ProxyCommand that exits is a lost link like any other: the mount goes
offline and the reconnect runs the command again. The command (and what
it started) gets SIGHUP when the connection closes.

Forwards: the LocalForward, RemoteForward and DynamicForward (SOCKS5) of
the host's entry are opened over the mount's connection while it is
mounted, and reopened after every reconnect. Local ports stay bound while
offline (a connection then is closed at once). A port already in use is a
warning, not a failed mount (ExitOnForwardFailure is not followed).
"remotefs status" lists them. --no-forwards
(-o no_forwards, or forwards = false in the config file) leaves them off.
Unix-socket forwards and remote SOCKS (RemoteForward with one argument)
are skipped with a warning.

Not supported by the built-in client: GSSAPI/Kerberos, PKCS11Provider, a
FIDO key without an agent, ProxyUseFdpass (when a login fails, the error
names such settings of the host and points to --ssh=openssh). Not at
all: writing to known_hosts, CheckHostIP, CanonicalizePermittedCNAMEs
(CNAMEs are not followed), Match version (the block never applies, with a
warning). Relative IdentityFile and UserKnownHostsFile names are relative
to the home directory.

--ssh=openssh (-o ssh=openssh, or ssh = "openssh" in the config file) makes
remotefs use your own ssh program for the connection, as sshfs does:
everything ssh does works (ProxyCommand, Kerberos, PKCS#11 and FIDO keys,
certificates, every Match), with the same features on top. The SFTP
stream is "ssh -s HOST sftp" and every helper command (listing, change
feed, uploads, prefetch, remotefs run) is an "ssh HOST COMMAND" process
sharing one login: the SFTP process is a ControlMaster on a private socket
in the runtime directory, unless your configuration sets a ControlPath
(then yours is used, ControlPersist included). ServerAliveInterval and
ServerAliveCountMax (default 5s x 3) are passed to ssh, which ends a dead
link the same way (behind a master of yours, started with your settings,
remotefs also pings through SFTP at that rate). Prompts (passwords,
codes, host key confirmations) come to your terminal through SSH_ASKPASS,
as above. Forwards are ssh's own then: the master opens the host's
LocalForward, RemoteForward and DynamicForward as "ssh HOST" would
(--no-forwards passes ClearAllForwardings), and remotefs status does not
list them. ssh reads ~/.ssh/config itself (remotefs passes
-F $HOME/.ssh/config when HOME is not your home in the password
database). A command that remotefs run starts is reported killed by a
signal as 128+N through a wrapping shell on the server (ssh itself
reports no signals).

Examples:
  # ~/.ssh/config
  Host gpu-box
    HostName gpu.example.org
    User alice
    ProxyJump bastion.example.org
    IdentityFile ~/.ssh/id_ed25519
    LocalForward 9999 localhost:8888
  Host i-*
    ProxyCommand sh -c "aws ssm start-session --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p"

  remotefs mount gpu-box:projects ~/remote
  remotefs mount -F ~/.ssh/work_config gpu-box:projects ~/remote
`
