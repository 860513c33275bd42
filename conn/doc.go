// Package conn is remotefs's link to one server: SSH + SFTP over plain
// OpenSSH, nothing installed remotely.
//
// # What it owns
//
//   - Naming: ParseSpec reads HOST:PATH (scp syntax).
//   - Resolving a host the way `ssh HOST` does (Resolve, Target): the
//     user's ~/.ssh/config (or Options.ConfigFile, like ssh -F) and
//     /etc/ssh/ssh_config, parsed and evaluated here in ssh's order (see
//     match.go): Host patterns, Include, Match all/host/originalhost/user/
//     localuser/exec/canonical/final/tagged/localnetwork/command/
//     sessiontype, CanonicalizeHostname with
//     CanonicalDomains/CanonicalizeMaxDots/CanonicalizeFallbackLocal and
//     the final pass, tokens (%h %p %r %u %d ...), ~ and ${ENV}; HostName,
//     User, Port, IdentityFile, CertificateFile, IdentitiesOnly,
//     IdentityAgent, UserKnownHostsFile, GlobalKnownHostsFile,
//     HostKeyAlias, ProxyJump, ProxyCommand, the forwards, GatewayPorts,
//     ConnectTimeout, ServerAliveInterval/CountMax.
//   - Dialing (Dial): TCP, a ProxyCommand (proxycommand.go), or through
//     each ProxyJump hop in turn (the first hop may itself use a
//     ProxyCommand); the ssh handshake with the host key verified against
//     known_hosts, host certificates against its @cert-authority lines
//     (never trusted silently: StrictHostKeyChecking no/accept-new is
//     ignored with a warning), host key algorithms ordered by what
//     known_hosts holds for the host; public key authentication with the
//     agent's keys and certificates, the identity files, and the
//     certificates of CertificateFile and <key>-cert.pub, each paired with
//     its key from a file or the agent; the SFTP session; the remote root
//     (relative to the remote home unless absolute) checked to be a
//     directory.
//   - Port forwards (forward.go): a Manager made with Options.Forwards
//     opens the host entry's LocalForward/RemoteForward/DynamicForward over
//     each connection it makes, and lists them (Manager.Forwards).
//   - The Remote implementation (Client): root-relative paths that cannot
//     escape the root, errors mapped to io/fs sentinels, ErrNotEmpty,
//     ErrUnsupported and syscall errnos (OpenSSH answers a bare "Failure"
//     for EEXIST, ENOTEMPTY and friends; a look at the path tells them
//     apart), atomic uploads (PutAtomic, and Put with a check of what it
//     replaces made where the file lands), OpenSSH extensions
//     (posix-rename, hardlink, statvfs, fsync), and Exec / Start for
//     server-side commands. FileInfo carries the numeric owner and group;
//     Chown sets them; Owner (OwnerReporter) is the login user's uid and
//     gid (the upload helper's, or the owner of the folder SFTP starts in,
//     read with the root at dial). An upload never replaces a file the login user may not write
//     (EACCES): the helper checks with access(2), SFTP by owner and mode
//     or by opening the file for writing.
//   - The per-connection agent (agent.go): one `remotefs __agent` on the
//     server, started over one exec channel at dial, that serves WalkTree,
//     FetchFiles, StatMany, Watch's helper mode and Put's upload helper as
//     multiplexed streams, so the login shell starts once per connection;
//     each helper below falls back to its own exec when it cannot run.
//     With Options.AgentLinger (a mount: DefaultAgentLinger, 15 minutes)
//     the agent stays on the server after the connection, and the next
//     connection of the same build reaches it over a
//     direct-streamlocal@openssh.com channel to its socket, which runs
//     no login shell; the exec is started beside it and cut short when
//     the socket's agent greets first (agent.go, "The persistent agent").
//   - Server-side helpers over exec, each with a plain-SFTP fallback in the
//     caller: WalkTree and WalkSubtree (the whole tree's or a folder's
//     metadata in one streamed GNU find, with inode numbers, ctime and
//     nanosecond times; the first record is always the mount root's own,
//     and inode numbers are reported only for files on its filesystem,
//     tree.go; StatMany, the same for many given paths, and WalkSubtrees,
//     several folders' subtrees in one request: agent only),
//     FetchFiles (many small files in one tar stream, tar.go),
//     Watch (the change feed, watch.go), Put through the upload helper
//     (one round trip per upload instead of four, with its own fallback
//     to SFTP inside Put; its reply carries the landed file's inode
//     number, ctime and nanosecond mtime; upload.go), Mknod (FIFOs, sockets and device
//     nodes with mknod(1) or python3; mknod.go), and the remote end of
//     `remotefs run` (exec.go).
//   - Metadata and content on separate SFTP sessions (sessions.go): the
//     session opened at dial carries lstat, readdir, readlink and the
//     other small requests; ReadAt, Fetch and SFTP uploads use a pool of
//     further sessions on the same connection (Options.ContentSessions,
//     default 5), opened in the background once the connection is up,
//     the least busy one per call. A lookup never queues behind a large read, and
//     several channel windows stream one file at once. A read of up to 1 MiB
//     (the block a reader waits for) goes to the running agent instead
//     (pread: one round trip where SFTP takes three: open, read, fstat).
//   - Liveness: keepalive, operation deadlines, and reconnection
//     (Manager).
//   - Interactive logins (prompt.go): keyboard-interactive and password
//     authentication answered by Options.Login, exactly the server's
//     prompts; without it Dial fails with ErrLoginNeeded and Manager waits
//     in LoginNeeded for Manager.Login instead of redialing.
//   - Two ssh implementations behind one small transport interface
//     (transport.go: sessions that run commands): the built-in
//     x/crypto/ssh client, and the user's own ssh program (Options.SSH =
//     SSHOpenSSH, openssh.go): SFTP over `ssh -s HOST sftp`, commands as
//     multiplexed `ssh HOST CMD` processes, liveness from ssh's
//     ServerAlive options, prompts through SSH_ASKPASS (RunAskpass).
//
// It holds no cache and no policy about offline writes: that is cache's.
//
// # Errors
//
// Every Dial error is one line that names the host and says what to do.
// errors.Is tells the kinds apart: ErrOffline (DNS, refused, timeout, link
// lost: may work later), ErrHostKeyUnknown, ErrHostKeyChanged, ErrAuth
// (and ErrKeyPassphrase), ErrLoginNeeded (the server asks questions and
// Options.Login cannot answer), ErrRemotePath, ErrConfig, ErrSpec. With
// SSHOpenSSH the kinds come from what ssh says (its last line is the
// message). Remote
// methods return *fs.PathError with the root-relative path; the server's
// own text stays in the message.
//
// # Timeouts
//
//   - ConnectTimeout (ssh_config ConnectTimeout, default 10s) bounds the
//     TCP connect plus the ssh handshake of each hop; it is suspended while
//     Options.Login waits for a person to answer.
//   - OpTimeout (default 20s) bounds each remote operation: it fails when
//     the server has sent nothing for that long while the operation waits
//     (time spent in the caller's reader or writer does not count), so a
//     long transfer that keeps moving is never cut, and a hung server or
//     dead link is noticed. When it passes, the connection is declared dead
//     and closed, and the call returns an error wrapping ErrOffline.
//   - The caller's ctx ends only the call (its error is ctx.Err()); the
//     connection stays up, since a short caller deadline says nothing about
//     the link.
//   - Keepalive (ssh_config ServerAliveInterval/CountMax, default 5s x 3):
//     a keepalive@openssh.com request is kept outstanding; when no reply
//     has come for interval*count the connection is closed. This is what
//     notices an idle link whose packets vanish without a TCP reset.
//   - Manager redials 1s, 2s, 4s ... 30s apart (±20%; Options.RedialMin
//     and RedialMax), the delay reset after a connection that lasted 30s;
//     and at once on Redial (the caller's access needed the server: at
//     most one dial per 250ms, a second one beside a dial stuck for over
//     1s, at most 3 in flight) and on a network change (Linux rtnetlink:
//     an address, route or link added or removed, netwatch_linux.go),
//     which also makes a live connection answer a keepalive within 5s
//     (or receive something else meanwhile) or be taken for dead.
//   - Exec has no operation deadline (helpers such as watchers run long);
//     only ctx ends it (the command gets SIGKILL).
//   - An upload through the helper keeps OpTimeout like an SFTP call: data
//     accepted by the channel and the helper's reply count as progress.
//     The helper session itself lives as long as the connection (the
//     helper exits at stdin EOF, like sftp-server); when it dies, uploads
//     in flight fail with an error wrapping ErrOffline and later ones use
//     SFTP for 30s before the helper is started again.
//
// # Concurrency, and how it could hang (and why it does not)
//
// Client and Manager are safe for concurrent use. Manager's mutex is never
// held across network I/O; its lock order is notifyMu, then mu.
//
//   - pkg/sftp calls take no context and block until the server answers.
//     Each call therefore runs on its own goroutine while the caller waits
//     on ctx, the operation deadline and the connection's death. On the
//     deadline the transport is closed: every read and write blocked on it
//     fails, pkg/sftp fails every pending request with "connection lost",
//     and the goroutine ends. Nobody waits for it meanwhile.
//   - pkg/sftp holds a mutex while writing a request; on a blackholed link
//     with a full TCP window that write blocks, and so does every other
//     sender. Closing the TCP connection (the first hop's, for ProxyJump)
//     fails the write and releases the mutex. Closing the other hops may
//     try to send through a dead link, so it happens in the background.
//   - ssh.NewClientConn takes no context: the handshake runs on its own
//     goroutine and the connection is closed when ConnectTimeout or ctx
//     ends it.
//   - The keepalive request blocks until a reply that may never come; it
//     runs on its own goroutine and the deadline is kept by a ticker.
//   - After a call returns early (ctx ended, deadline), the operation never
//     touches the caller's buffer, reader or writer again: reads go through
//     a buffer of the Client's own, and the caller's reader/writer are
//     guarded. Abandoning waits for a Read or Write already inside the
//     caller's reader/writer to return, so a caller reader/writer that
//     blocks forever would block that call: the one hang left in the
//     caller's hands.
//   - Manager calls onState one at a time, holding notifyMu but not mu;
//     State, Client and the Remote methods stay usable from the callback,
//     but Connect, StartOffline and Close must not be called from it (they
//     would wait for the callback to return).
//   - While a Manager has no live connection every Remote call fails at
//     once with ErrOffline: nothing waits for a redial.
//
// # Not supported
//
// GSSAPI, PKCS11Provider, FIDO keys without an agent (an authentication
// failure names them with the host and points to SSHOpenSSH, which leaves
// them to ssh: unsupported.go), ProxyUseFdpass (Resolve says so), Match
// version (the block never applies, with a warning; Match command and
// sessiontype see the sftp subsystem, "sftp" and "subsystem", as for
// sshfs), CanonicalizePermittedCNAMEs (CNAMEs are not
// followed), Unix-socket forwards and remote SOCKS forwards (skipped with
// a warning), writing to known_hosts, CheckHostIP. Match exec commands
// get 30s (ssh waits forever). A @cert-authority pattern is matched
// against the host name alone as well as [host]:port (the knownhosts
// package would match "*" only on port 22). Relative IdentityFile and
// UserKnownHostsFile names are taken relative to the home directory, and
// Options.Home (default $HOME, unlike ssh, which reads the password
// database) is what ~ means everywhere, Include included.
package conn
