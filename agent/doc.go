// Package agent is everything the remotefs binary does when it runs ON THE
// SERVER. A mount installs nothing by hand: it copies its own binary to
// the server and runs it there over ssh exec channels. This package is
// what that copy does; package proto (agent/proto) is every byte it sends
// back, and package conn is the other end of each stream.
//
// # How it gets there and how it is started
//
// conn uploads the running remotefs binary over SFTP to
// $HOME/.cache/remotefs/remotefs-helper-<first 16 hex digits of its
// sha256> (folder 0700, file 0700, a temporary name then a rename;
// skipped when a file of that name and size is there; helpers of other
// versions are removed). The name holds the hash, so both ends are always
// the same build: the formats have no version negotiation, only a
// greeting that a mismatched peer would fail to produce. Then conn runs
// `HELPER SUBCOMMAND ARGS` over an ssh exec channel (through the user's
// login shell, like any ssh command).
//
// Only when `uname -sm` on the server says the same OS and architecture as
// the local binary, and both are Linux (the watcher needs inotify). On any
// other server, or when the binary cannot be uploaded or run (no
// writable $HOME, noexec, exec refused, a test binary that is not the
// command), nothing of this package runs and conn falls back: the change
// feed to inotifywait or polling with find, uploads to plain SFTP. The
// fallbacks are conn's (conn/watch.go, conn/upload.go).
//
// # What runs, and what it sends back
//
//   - `remotefs __watch [--heartbeat-timeout D] [--ignore GLOB]... -- ROOT`
//     (Watch, watch.go): the change feed. Recursive inotify on ROOT (not
//     inside folders whose base name matches an ignore glob); a new
//     folder's contents are reported as they are walked, so nothing made
//     before its watch was in place is missed. Stdout: proto's watch
//     records, KIND NUL PATH NUL, flushed after each batch of inotify
//     events: S once the watches are in place; C (file changed or
//     created), D (folder created or its attributes changed; "" is the
//     root), G and H (file or folder gone), R (renamed here from the G/H
//     record just before it), X (events lost: rescan), and on a fatal
//     error E or L (watch limit hit) before it exits. Temporary upload
//     files (proto.TempPrefix) are never reported. Stdin is only a
//     heartbeat (conn writes a byte every 5s).
//   - `remotefs __put` (Put, put.go): the upload helper. Stdin: a stream
//     of upload requests (proto's put format: destination, temporary name,
//     mode, mtime, what the destination may hold, a conflict name, then the
//     data in chunks). For each it writes the temporary file, fsyncs,
//     sets mode and mtime, checks what the destination holds against what
//     the request accepts (proto.Accepts, the same rule the SFTP fallback
//     applies), and renames it onto the destination or the conflict name.
//     Stdout: first proto.Hello with the uid and gid it runs as, then one
//     reply per request, in order: landed (size, mtime, what was at the
//     destination before), landed as a conflict copy, or failed (errno
//     and message; nothing changed and the temporary file removed).
//
// # How it could hang, and why it does not
//
// Nothing here outlives its mount's connection, and no request can wait
// forever:
//
//   - Both programs end at stdin EOF: sshd closes the channel's stdin when
//     the connection drops or conn closes it. The watcher also exits when
//     stdin was silent for its heartbeat timeout (default 30s), which is
//     what ends it when the link died without a FIN and sshd has not
//     noticed yet.
//   - The watcher's inotify fd is non-blocking and read through the
//     runtime poller; ending the context sets a read deadline, so a
//     stopped watcher never sits in read(2).
//   - A write to stdout that fails (the channel is gone) ends either
//     program with that error; a malformed request stream ends the upload
//     helper (the stream cannot be resynchronised), and every request
//     still unanswered fails on the client, which then uses SFTP for a
//     while.
//   - The upload helper reads each request's data to its end whatever
//     happened to the write (Drain), so one failed upload does not leave
//     the stream between two requests.
//   - Stdout is the only channel back; stderr carries only messages for
//     the client's error text. Nothing is written to the server outside
//     the destination folders (temporary names there) and the helper
//     folder.
//
// The package imports only proto and the standard library (and x/sys for
// inotify): never conn, cache or fs.
package agent
