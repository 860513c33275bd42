package cacheadmin

// The help of `remotefs cache` and its subcommands.

// Usage is `remotefs cache --help`.
const Usage = `Usage:
  remotefs cache list [--json]              every cache: remote, size, pending writes, last use
  remotefs cache clear REMOTE|DIR|NAME...   delete a cache (refused while mounted or
                                            while it holds writes not yet on the server)
  remotefs cache pin PATH...                fetch a folder or file of a mount into the
                                            cache and keep it there (for offline work)
  remotefs cache unpin PATH...              stop keeping it
  remotefs cache rescue MOUNT|REMOTE [DEST] changes the server refused for good: list
                                            them, or copy their content into DEST

Each remote has its own cache directory under $XDG_CACHE_HOME/remotefs/
(default ~/.cache/remotefs/), or the --cache-dir it was mounted with. See
remotefs help cache.

Examples:
  remotefs cache list
  remotefs cache clear gpu-box:projects
  remotefs cache pin ~/remote/my-model/data
`

// ListUsage is `remotefs cache list --help`.
const ListUsage = `Usage: remotefs cache list [--json]

Lists every cache of this user: the remote it mirrors, where it is mounted
now, its size on disk, how many files and folders it knows, how many
writes it holds that are not on the server yet, pinned folders, when it
was last used, and its directory.

Examples:
  remotefs cache list
  remotefs cache list --json

Flags:
`

// ClearUsage is `remotefs cache clear --help`.
const ClearUsage = `Usage: remotefs cache clear REMOTE|DIR|NAME...

Deletes the cache of a remote: given as HOST:PATH (as mounted), as its
directory, or as the directory's name under ~/.cache/remotefs/ (see
remotefs cache list). The next mount of that remote starts empty and lists
folders from the server again.

Refused while the remote is mounted (unmount it first), and while the
cache holds writes that are not on the server yet: mount the remote again
so that they are delivered (remotefs unmount waits for them), then clear.

Examples:
  remotefs cache clear gpu-box:projects
  remotefs cache clear ~/.cache/remotefs/gpu-box-projects-1a2b3c4d

Flags:
`

// PinUsage is `remotefs cache pin --help`.
const PinUsage = `Usage: remotefs cache pin PATH...
       remotefs cache unpin PATH...

pin fetches every file under PATH (a folder or file on a remotefs mount)
into the cache, and records PATH in the cache's pinned list so that it is
never dropped to make room: it stays readable when the server is offline.
unpin removes PATH from the list (the files stay until room is needed).

Examples:
  remotefs cache pin ~/remote/my-model/data
  remotefs cache pin .            # the folder you are in, on the mount
  remotefs cache unpin ~/remote/my-model/data

Flags:
`

// RescueUsage is `remotefs cache rescue --help`.
const RescueUsage = `Usage: remotefs cache rescue [--keep] MOUNTPOINT|HOST:PATH|DIR|NAME [DEST_FOLDER]

Changes the server refused for good (permission denied, a name its disk
will not take, a read-only filesystem) are not retried forever: they are
set aside, and the content of each file is kept in the cache directory
(undelivered/). remotefs status and flush name them.

Without DEST_FOLDER: lists them (file, operation, the server's reason, when,
where the content is). With DEST_FOLDER: copies each kept file to
DEST_FOLDER/PATH (PATH as on the remote, folders made as needed; an existing
file is never overwritten: the copy gets a .rescued-N suffix), then forgets
what was set aside (--keep: keep it too). Works mounted or not.

Examples:
  remotefs cache rescue ~/remote
  remotefs cache rescue ~/remote ~/rescued
  remotefs cache rescue gpu-box:projects /tmp/rescued

Flags:
`

// HelpTopic is `remotefs help cache` (after Usage).
const HelpTopic = `
The cache

Each remote (HOST:PATH) has its own cache directory,
$XDG_CACHE_HOME/remotefs/HOST-PATH-HASH/ (by default under ~/.cache), or
the one given with --cache-dir or cache_dir in the config file. It holds:

  meta.db      the known tree (names, sizes, times, modes) and the journal
               of changes not yet on the server
  content/     contents of the files that were read or written
  remote.json  which remote it mirrors, when it was created and last used
  pinned       folders kept for offline work (remotefs cache pin)
  undelivered/ changes the server refused for good, set aside: each as
               SEQ-NAME (the file's content) and SEQ-NAME.json (its path,
               the operation, the server's reason, when)

It survives unmounts and reboots: a later mount, or an offline one
(--offline), starts from it. File contents are dropped, least recently
used first, when they exceed --cache-size (default 10G); changes not yet
on the server and pinned folders never are. Only one mount at a time can
use a cache directory.

A change written through the mount stays in the journal until the server
has it, across unmounts, crashes and reboots; remotefs cache clear refuses
to delete a cache that still holds such changes.

A change the server refuses for good (permission denied, a name too long
or invalid for its disk, a read-only filesystem, a folder gone from under
an upload) is not retried forever: it is set aside in undelivered/, the
mount shows the server's version again, remotefs status prints NOT
DELIVERED with the file, the reason and where its content is, and flush
and unmount exit non-zero saying so. A full disk or quota is retried.

  remotefs cache rescue MOUNTPOINT|HOST:PATH|DIR          list them
  remotefs cache rescue MOUNTPOINT|HOST:PATH|DIR DEST     copy each kept file to
                                                          DEST/PATH, then forget it
  remotefs cache rescue --keep ... DEST                   copy, and keep it too

rescue never overwrites a file in DEST (it adds .rescued-N) and works
mounted or not.
`
