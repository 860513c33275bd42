// Package agent is everything the remotefs binary does when it runs ON THE
// SERVER. A mount installs nothing by hand: it copies its own binary to
// the server and runs it there over ssh exec channels. This package is
// what that copy does; package proto (agent/proto) is every byte it sends
// back; package conn (conn/agent.go, watch.go, upload.go, tree.go, tar.go)
// is the other end of each stream.
//
// # What runs on the server
//
// Normally exactly one process per mount connection: `remotefs __agent`
// (Serve, serve.go). It is started once, when conn makes the connection,
// over one exec channel, and serves every helper request of that
// connection as a stream multiplexed over its stdin and stdout. The
// server's login shell (which on real servers can take a second: conda,
// pyenv, module init in ~/.bashrc) is thus paid once per connection, not
// once per helper; the SFTP subsystem is the only other channel.
//
// A mount's agent also outlives its connection (persist.go): started
// with --listen SOCKET --linger D, it listens on a unix socket in the
// helper folder (agent-<hash>.sock, 0600, the folder the user's own and
// closed to others; peers of another uid refused by SO_PEERCRED), and
// later connections of the same build are served there, each as one mux
// session as on the exec channel, reached over an ssh
// direct-streamlocal@openssh.com channel: no login shell. It exits, and
// removes its socket if it is still its own, once no connection used it
// for D (a mount's: 15 minutes). An agent started while another answers
// on the socket serves its own connection only; a socket left by a dead
// agent is replaced (made under a temporary name, renamed into place).
// It ignores SIGHUP and SIGPIPE: the exec channel that started it closes
// long before it ends.
//
// Each stream is like a small exec: the client opens it with a command
// line (argv, never shell syntax), sends its stdin, reads its stdout and
// stderr, and gets an exit code (0; 1 when some entries could not be
// read but the rest is right; 2 usage; 127 unknown command). The commands:
//
//   - walk [--prune GLOB]... [--top DIR] -- ROOT (Walk, walk.go): the
//     whole tree's metadata. Stdout: one record per entry under ROOT, in
//     pre-order, in the NUL-separated record format of the GNU find
//     command conn runs without an agent (conn/tree.go findFormat): type,
//     permission bits, size, mtime, path, symlink target, uid, gid, link
//     count, inode, atime, ctime (times with nanoseconds), device. Before
//     them, the record of DIR (the mount root, when ROOT is a folder
//     under it; default ROOT) with an empty path: conn reports the inode
//     numbers of entries on its device only. Folders matching a prune
//     glob are listed but not entered; symlinks are not followed.
//   - stat -- ROOT (Stat, walk.go): batch lstat. Stdin: root-relative
//     paths, each ended by NUL. Stdout: ROOT's record (empty path), then a
//     record as above for each that exists, in the order asked.
//   - walkeach -- ROOT (WalkEach, walk.go): several folders' subtrees in
//     one request. Stdin: root-relative folder paths, each ended by NUL.
//     Stdout: ROOT's record (empty path), then the records of every entry
//     below each folder in turn, as walk writes them (nothing pruned).
//     The mount lists the folders its tree listing pruned this way, in
//     the background right after it.
//   - pread -- ROOT PATH OFF LEN (Pread, pread.go): one range of one file
//     (what conn's ReadAt does over SFTP in three round trips: open,
//     read, fstat). Stdout: the count read, NUL, the bytes, then ROOT's
//     record and PATH's record from an fstat of the open file after the
//     read.
//   - fetch -- ROOT (Fetch, fetch.go): content of many small files. Stdin:
//     root-relative paths, each ended by NUL. Stdout: a tar stream of
//     those that are regular files, as `tar -cf - -T -` would send; stderr:
//     GNU tar's warnings for a file that could not be opened, shrank
//     (padded with zeros) or changed while it was read, which conn turns
//     into ChangedWhileRead so such content is never served.
//   - __watch [--heartbeat-timeout D] [--ignore GLOB]... -- ROOT (Watch,
//     watch.go): the change feed. Recursive inotify on ROOT (not inside
//     folders whose base name matches an ignore glob); a new folder's
//     contents are reported as they are walked, so nothing made before its
//     watch was in place is missed. Stdout: proto's watch records, KIND
//     NUL PATH NUL, flushed after each batch of inotify events: S once
//     the watches are in place; C (file changed or created), D (folder
//     created or its attributes changed; "" is the root), G and H (file or
//     folder gone), R (renamed here from the G/H record just before it), X
//     (events lost: rescan), and on a fatal error E or L (watch limit hit)
//     before it exits. Temporary upload files (proto.TempPrefix) are never
//     reported. Stdin is only a heartbeat (conn writes a byte every 5s).
//   - __put (Put, put.go): the upload helper. Stdin: a stream of upload
//     requests (proto's put format: destination, temporary name, mode,
//     mtime, what the destination may hold, a conflict name, then the data
//     in chunks). For each it writes the temporary file, fsyncs, sets mode
//     and mtime, checks what the destination holds against what the
//     request accepts (proto.Accepts, the same rule the SFTP fallback
//     applies), and renames it onto the destination or the conflict name.
//     Stdout: first proto.Hello with the uid and gid it runs as, then one
//     reply per request, in order: landed (size, mtime, the landed file's
//     stat data as lstat saw it once in place: mtime nanoseconds, inode,
//     device, ctime; what was at the destination before), landed as a
//     conflict copy, or failed (errno and message; nothing changed and the
//     temporary file removed). The mtime is set to the nanosecond.
//
// The agent greets with proto.AgentHello and the uid and gid it runs as
// (the login user's ids, which the mount uses for ownership). The stream
// format (frames with a type, a stream id and a length; per-stream flow
// control windows; ping and pong; kill) is in proto/mux.go.
//
// `remotefs __watch` and `remotefs __put` also run on their own, each over
// an exec channel of its own, with the same stdin and stdout: that is how
// conn runs them when the agent cannot run but the binary can.
//
// # How it gets there and how it is started
//
// One exec of a short sh script (conn/agent.go agentScript) with the
// helper's folder ($HOME/.cache/remotefs, 0700), file name
// (remotefs-helper-<first 16 hex digits of the binary's sha256>) and size:
// it prints a marker line, `uname -sm`, and then either starts the agent
// at once (the binary is there and uname names this binary's OS and
// architecture: no round trip), or says whether the binary is there and
// reads the client's answer: "run", "send" (the binary follows on the same
// stdin: written under a temporary name, checked for its size, renamed
// into place, helpers of other builds removed, then started), or anything
// else (exit). The name holds the hash, so both ends are always the same
// build: the formats have no version negotiation, only greetings a
// mismatched peer would fail to produce.
//
// # Other servers, and the fallbacks
//
// The agent runs only where `uname -sm` says the same OS and architecture
// as the local binary, and both are Linux (the watcher needs inotify). On
// any other server, or when the binary cannot be written or run (no
// writable $HOME, noexec, exec refused, no greeting within OpTimeout, a
// test binary that is not the command), nothing of this package runs and
// conn runs each helper the old way, over an exec channel of its own: the
// walk with GNU find, fetches with tar, the change feed with inotifywait
// or by polling with find, uploads over SFTP; all read by the same
// parsers. The first connection of a build to a server sends the binary
// (some megabytes); meanwhile the walk and fetches do not wait for it but
// run their own execs, while the change feed and uploads wait (and a
// pruned folder's subtree is listed over SFTP).
//
// # How it could hang, and why it does not
//
// Nothing here outlives its mount's connection, except a persistent
// agent for its linger time, and no request can wait forever:
//
//   - The agent, like the helpers run alone, ends at stdin EOF: sshd closes
//     the channel's stdin when the connection drops or conn closes it.
//     Every stream's command is then told to stop (its context ends, its
//     stdin fails). A persistent agent's session ends the same way (its
//     socket connection closes with the channel), and the agent itself
//     once no session was served for its linger time. The agent also exits when nothing came from the client
//     for IdleTimeout (30s; conn pings it every 5s at most), and a watcher
//     run alone when its stdin was silent for its heartbeat timeout
//     (default 30s): that ends them when the link died without a FIN and
//     sshd has not noticed yet.
//   - On each side one goroutine reads frames and only buffers them (at
//     most a window per stream) and wakes waiters: it never writes, so it
//     cannot be held up by the other side not reading. A stream whose
//     reader is slow holds back only itself (flow control), never the
//     others: the walk does not wait behind a large fetch.
//   - A client that gives up on a request (its context ended, its output
//     no longer read) sends a kill: the command's context ends and its
//     stdin fails, and the stream is forgotten; frames that still arrive
//     for it are dropped.
//   - conn pings the agent while it has open streams; an agent silent for
//     OpTimeout after a ping (stopped, swapping, wedged) is closed, its
//     requests fail, and conn runs helpers the old way for 30s.
//   - The watcher's inotify fd is non-blocking and read through the
//     runtime poller; ending the context sets a read deadline, so a
//     stopped watcher never sits in read(2).
//   - A malformed stream ends the agent (or the upload helper): it cannot
//     be resynchronised. A write to stdout that fails (the channel is
//     gone) ends the command, or the agent.
//   - The upload helper reads each request's data to its end whatever
//     happened to the write (Drain), so one failed upload does not leave
//     the stream between two requests.
//   - Nothing is written to the server outside the destination folders
//     (temporary names there) and the helper folder.
//
// The package imports only proto and the standard library (and x/sys for
// inotify and lstat): never conn, cache or fs.
package agent
