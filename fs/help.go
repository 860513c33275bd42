package fs

// HelpNotify is `remotefs help notify`: the inotify events the mount raises for changes made on the server (echo.go).
const HelpNotify = `File watchers and changes made on the server

Editors, IDEs and test watchers learn that a file changed through inotify,
which Linux raises only for changes made through the local kernel. So the
mount replays each change its change feed reports from the server through
the kernel, and the usual events reach every watcher on the mount:

  file edited on the server       IN_MODIFY, IN_CLOSE_WRITE
  file, folder, symlink created   IN_CREATE (a new folder's files too)
  deleted                         IN_DELETE
  renamed                         IN_MOVED_FROM + IN_MOVED_TO
  mode changed                    IN_ATTRIB

How: a helper process the mount starts (remotefs __echo) performs the
matching operation on the mount - a create, mkdir, unlink, rename, a
truncate of the file to its new size, a chmod to its new mode. The mount
recognises the helper's requests and answers them from its cache: they
change no content, are never sent to the server, never make a conflict
and never come back through the change feed.

Limits:
  - Events follow the change feed: about 0.1 s with the helper watcher,
    longer with polling (see remotefs status, "server changes").
  - A rename is seen as a rename only with the helper watcher; the
    inotifywait and poll watchers report a delete and a create.
  - A file you cannot write (no u+w) gets IN_ATTRIB instead of IN_MODIFY.
  - A folder's files are replayed 0.15 s after the folder, so recursive
    watchers can add their watch first.
  - A name already looked up between the server change and its replay
    (rare: a few milliseconds) gets no IN_CREATE.
  - A read-only or --offline mount raises none.
  - Changes the mount itself made (your saves) raise their events when
    you make them, as on any filesystem, not again when they reach the
    server.

Turn it off with --no-notify (-o no_notify, or no_notify = true in the
config file); remotefs status shows whether it is on.
`
