// Package daemon is the process that serves one mount, and the calls the
// command makes on it.
//
// What it owns:
//
//   - Starting a mount (start.go): Mount serves in the foreground or
//     re-executes the binary as Command in a new session, with a socket
//     pair on which the background process sends warnings, login
//     questions and finally "ok" or "error: ..."; Background is that
//     process. Log files ($XDG_STATE_HOME/remotefs/KEY.log, rotated at
//     10 MiB), the noexec bind remount, the FUSE preflight checks.
//   - Serving (serve.go): it wires conn.Manager -> cache.Store -> fs.FS ->
//     the kernel, starts the change feed (watchServer), the mount-time
//     listing and prefetch, and the confirmation of the pruned folders'
//     listings while the mount is in use (pruned.go), and answers the
//     control socket
//     (internal/control): status, flush, unmount, login, run. It owns the
//     order of shutdown: flush with a deadline, unmount, flush again while
//     the link is up, then close the store and the connection.
//   - Logins (login.go): the relay of the server's password/code prompts
//     to the terminal of `remotefs mount` or `remotefs login`; answers live
//     in memory for one handshake only.
//   - `remotefs run` (run.go, the daemon half; runclient.go, the command
//     half): the command's stdin/stdout/stderr are passed over the socket
//     and wired straight to an ssh session of the mount's connection.
//   - The echo helper (echo.go): the child process that replays server
//     changes through the kernel so inotify watchers see them (fs/echo.go).
//   - The clients of status, flush and unmount (client.go), and how a
//     status is printed.
//   - The mount's READ size (readahead.go): 256 pages a request, and the
//     mount's read_ahead_kb raised to 1 MiB when the daemon may (root).
//
// The configuration comes parsed and checked (config.Mount); the daemon
// reads no flags and no config file of its own. Environment variables
// that bear on its memory: GOGC (the daemon sets 50 otherwise: its heap
// is mostly the metadata mirror, which lives as long as the mount),
// GOMEMLIMIT (otherwise a soft limit that follows the live heap,
// memlimit.go) and REMOTEFS_HEAP_PROFILE=PREFIX (profile.go: a heap
// profile on each SIGUSR1).
//
// Locking: daemon.mu guards only the closed flag and the change-feed state
// shown by status; it is never held across a call into the store, the
// connection or the kernel (setWatch releases it before telling the
// store). loginRelay.mu serialises the lines on the readiness socket and
// is held while one round of questions waits for the user's answer: that
// is a wait on the terminal, not on the server, and it ends when the
// login's context does (the socket is closed then). stopReader.mu is held
// only across a read(2) that poll(2) said would not block. Each control
// request runs on its own goroutine (control.Serve), so a slow flush does
// not hold up status.
//
// How it could hang, and why it does not:
//
//   - `remotefs mount` waits for the background process's verdict. The
//     process reports within the connection's deadlines (connect timeout,
//     login prompts answered or refused at once without a terminal), its
//     exit closes the socket (EOF), and Ctrl-C closes the socket from this
//     side. The socket is close-on-exec in the daemon, so a ProxyCommand it
//     starts cannot hold it open.
//   - A flush waits for the journal, which can wait for a server that is
//     gone: every flush runs under the request's context (the client going
//     away cancels it), the shutdown flushes under 30 s deadlines, and
//     answering the last control requests at exit is bounded by 10 s.
//   - Unmounting from a control request stops the echo helper first (a
//     helper holding a file open on the mount would make the unmount
//     fail), and starts it again when the unmount fails.
//   - The echo helper is in its own process group and exits at stdin EOF,
//     so also when the daemon dies; a terminal's Ctrl-C reaches only the
//     daemon.
//   - run: see run.go (reads of the user's terminal only after poll(2),
//     stopped before the reply; the command is killed when the client goes
//     away).
package daemon
