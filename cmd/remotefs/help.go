package main

// `remotefs help [COMMAND|TOPIC]`.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
)

// helpTopics: `remotefs help NAME` pages that are not commands.
var helpTopics = map[string]func() string{
	"config":     helpConfig,
	"fstab":      helpFstab,
	"mount.fuse": helpFstab,
	"ssh":        func() string { return helpSSH },
	"cache":      func() string { return helpCache },
	"notify":     func() string { return helpNotify },
	"offline":    func() string { return helpOffline },
}

const helpOffline = `Working without the server

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

const helpNotify = `File watchers and changes made on the server

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

func cmdHelp(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Print(topUsage)
		return nil
	}
	if len(args) > 1 {
		return usagef("help: one command or topic at a time (topics: %s)", strings.Join(topicNames(), ", "))
	}
	switch args[0] {
	case "mount", "unmount", "umount", "flush", "status", "login":
		return run(ctx, []string{args[0], "--help"})
	case "version":
		fmt.Print("Usage: remotefs version\n\nPrints the version of remotefs (also: remotefs --version).\n\nExample:\n  remotefs version\n")
		return nil
	case "help":
		fmt.Print(topUsage)
		return nil
	}
	if page, ok := helpTopics[args[0]]; ok {
		if args[0] == "cache" {
			fmt.Print(cacheUsage + "\n")
		}
		fmt.Print(page())
		return nil
	}
	return usagef("help: no command or topic %q (commands: mount, unmount, flush, status, login, cache, version; topics: %s)", args[0], strings.Join(topicNames(), ", "))
}

func topicNames() []string {
	var n []string
	for k := range helpTopics {
		if k != "mount.fuse" {
			n = append(n, k)
		}
	}
	sort.Strings(n)
	return n
}

func helpConfig() string {
	var keys strings.Builder
	for _, k := range configKeys {
		typ := map[string]string{
			"duration": "duration", "size": "size", "path": "path", "bool": "true/false",
			"patterns": "list", "folders": "list", "idmap": "list", "ssh": `"builtin" or "openssh"`,
		}[k.kind]
		if k.flag == "F" {
			typ += ", flag -F"
		} else if invertedKeys[k.name] {
			typ += ", false is flag --" + k.flag
		} else if k.flag != "" {
			typ += ", flag --" + k.flag
		}
		fmt.Fprintf(&keys, "  %s (%s)\n      %s\n", k.name, typ, k.help)
	}
	return fmt.Sprintf(`The config file

%s
(or the file given with --config FILE, -o config=FILE). It is optional.

It sets defaults for the flags of remotefs mount, for every remote in
[defaults] and for one host in [host."NAME"], where NAME is the host as
written in HOST:PATH, with or without the user ("gpu-box" matches
gpu-box:x and alice@gpu-box:x). A host section overrides [defaults] key by
key; flags and -o options on the command line override both. A mistake
(bad TOML, an unknown key, a value of the wrong kind) stops the mount with
FILE:LINE and what is wrong.

Example:

  [defaults]
  attr_ttl = "2s"
  cache_size = "20G"
  ignore = ["*.pyc", "__pycache__", ".venv", "node_modules"]
  server_folders = ["results", "runs", "wandb", "notebooks"]

  [host."gpu-box"]
  dir_ttl = "30s"
  cache_dir = "~/big-disk/remotefs-gpu-box"
  server_folders = ["results", "checkpoints"]   # replaces the default list

  [host."old-server"]
  offline = true          # retired: only browse what is cached

Keys (each in [defaults] or [host."NAME"]):

%s
Durations are strings such as "500ms", "2s", "1m"; sizes such as "500M",
"20G", "1T" or "unlimited". Paths may start with ~/; relative paths are
relative to the config file's folder. A list in a host section replaces
the one in [defaults] (ignore = [] clears it). --foreground is a command
line flag only.
`, defaultConfigPathDoc(), keys.String())
}

func defaultConfigPathDoc() string {
	if os.Getenv("XDG_CONFIG_HOME") != "" {
		return "  $XDG_CONFIG_HOME/remotefs/config.toml (here: " + defaultConfigPath() + ")"
	}
	return "  $XDG_CONFIG_HOME/remotefs/config.toml, by default ~/.config/remotefs/config.toml"
}

func helpFstab() string {
	return `mount(8) and /etc/fstab

remotefs mounts with the standard tools, as filesystem type fuse.remotefs.

Examples:

  mount -t fuse.remotefs gpu-box:projects /home/alice/remote -o attr_ttl=2s
  umount /home/alice/remote          # or: fusermount3 -u /home/alice/remote

mount(8) runs /sbin/mount.fuse3 (package fuse3), which runs
"remotefs HOST:PATH MOUNTPOINT -o OPTIONS". mount(8) passes no PATH, so
remotefs must be in the default one (/usr/local/sbin, /usr/local/bin,
/usr/sbin, /usr/bin, /sbin, /bin): make install puts it in /usr/local/bin;
after go install, link it: sudo ln -s ~/go/bin/remotefs /usr/local/bin/.
No mount.remotefs link is needed.

mount returns once the mount is live; a background process serves it and
logs to ~/.local/state/remotefs/. umount or fusermount3 -u ends it after
it has delivered what it can of the pending writes (remotefs unmount
MOUNTPOINT waits until all are on the server and says so: use it when that
matters).

/etc/fstab lines (one line each):

  # alice mounts it herself with "mount ~/remote": ~/.ssh/config, her agent
  # and her cache are used (the mount runs as her).
  gpu-box:projects  /home/alice/remote  fuse.remotefs  noauto,user,_netdev,attr_ttl=2s  0 0

  # mounted at boot, as root, with root's ~/.ssh/config and keys.
  gpu-box:/srv/data  /mnt/data  fuse.remotefs  _netdev,nofail,allow_other,ro  0 0

  # mounted on first access (systemd), with a specific ssh config.
  gpu-box:projects  /mnt/projects  fuse.remotefs  noauto,x-systemd.automount,_netdev,ssh_config=/etc/remotefs/ssh_config  0 0

For "user", /etc/fuse.conf needs user_allow_other only when allow_other
is used; mount(8) adds noexec for "user", which remotefs can enforce only
when root mounts. mount(8) and mount.fuse3 do not pass on the user's HOME:
remotefs takes HOME, USER and XDG_RUNTIME_DIR from the password database
and /run/user/UID, so the user's ~/.ssh/config, cache and logs are used.
The ssh key must be usable without a prompt: an agent (SSH_AUTH_SOCK, or
IdentityAgent in ~/.ssh/config) or a key without passphrase. A boot-time
mount as root has no agent. A server that asks for a password or a code
(keyboard-interactive) can be mounted from fstab only by "mount DIR" on a
terminal, which asks; without one the mount fails at once, and a mount
that is up and asked again on a reconnect waits for remotefs login DIR.

` + mountOptionsHelp() + `
Unknown options are refused with an error naming them.
`
}

const helpSSH = `How remotefs uses ssh

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

const helpCache = `
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
