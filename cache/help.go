package cache

// HelpOffline is `remotefs help offline`: how a mount works without its server.
const HelpOffline = `Working without the server

When the link to the server dies (Wi-Fi gone, laptop suspended, server
rebooting), a mount that has been connected keeps working from its cache:

  - Listings, attributes and cached contents are served as they were.
  - Saves keep working: writes, creates, renames, deletes, mkdir, chmod
    and symlinks on cached folders go into the durable local journal, as
    they do online, and are delivered when the server is back. An editor
    never sees a save fail because the link blinked.
  - A file whose content was never fetched can be replaced whole (an
    editor's safe save: write a new file, rename it over; or open with
    O_TRUNC), but not changed in place: that fails with ENETDOWN
    ("Network is down"), as reading it does. A folder never listed
    cannot be listed (ENETDOWN).
  - remotefs status shows "offline since ...", how many changes and
    bytes wait and since when; remotefs flush waits 1 s for a
    reconnect, then says the server is offline. The log says when the
    server became unreachable with changes waiting, and when they have
    all been delivered.

Conflicts: every change remembers the version of the file it started
from. If the server's file changed meanwhile (someone else edited it),
nothing is overwritten: the server's version stays under its name and
yours is put next to it as NAME.conflict-HOST-YYYYmmdd-HHMMSS, on the
server and on the mount; remotefs status lists it.

Coming back: besides its backoff timer (1 s doubling to 30 s), the mount
redials at once when something needs the server (a read of content not
cached, a listing, remotefs flush) and when the machine's network changes
(a new address or route); it is online again within a second or two of
the link returning. Until a folder has been listed again, a name the
cache does not know is asked of the server before the mount answers
"No such file or directory", and names deleted on the server meanwhile
disappear (with inotify events) as the catch-up listing arrives.

Starting without the server: a mount started with --offline, or whose
server cannot be reached at mount time, serves the cache read-only
(EROFS) until it connects - unless it is started with --offline-edits
(-o offline_edits, offline_edits = true in the config file). Then it
accepts changes from the start, as above, and delivers them on the first
connection: by this mount when the server becomes reachable, or, for an
--offline mount, by the next mount of the same remote (changes stay in
the cache's journal across unmounts and reboots). remotefs unmount of a
mount with undelivered changes needs --force.

Examples:
  remotefs mount --offline-edits gpu-box:projects ~/remote   # on a plane
  remotefs status ~/remote                                   # what waits
`
