package config

// The help pages of the config file and of the mount(8) form, made from
// Settings.

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// HelpConfig is ` + "`remotefs help config`" + `: the file and every key of Settings.
func HelpConfig() string {
	var keys strings.Builder
	for _, k := range Settings {
		if k.Key == "" {
			continue
		}
		typ := map[Kind]string{
			Duration: "duration", Size: "size", Path: "path", Bool: "true/false",
			Patterns: "list", Folders: "list", IDMap: "list", SSH: `"builtin" or "openssh"`,
		}[k.Kind]
		if k.Flag == "F" {
			typ += ", flag -F"
		} else if k.Inverted {
			typ += ", false is flag --" + k.Flag
		} else if k.Flag != "" {
			typ += ", flag --" + k.Flag
		}
		help := k.Help
		if k.KeyHelp != "" {
			help = k.KeyHelp
		}
		if k.HostOnly {
			help += ` (only in a [host."NAME"] section)`
		}
		if d := k.DefaultText(); d != "" {
			help += " (default " + d + ")"
		} else if k.Inverted {
			help += " (default true)"
		}
		fmt.Fprintf(&keys, "  %s (%s)\n      %s\n", k.Key, typ, help)
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
`, defaultPathDoc(), keys.String())
}

func defaultPathDoc() string {
	if os.Getenv("XDG_CONFIG_HOME") != "" {
		return "  $XDG_CONFIG_HOME/remotefs/config.toml (here: " + DefaultPath() + ")"
	}
	return "  $XDG_CONFIG_HOME/remotefs/config.toml, by default ~/.config/remotefs/config.toml"
}

// HelpFstab is ` + "`remotefs help fstab`" + `: mount(8), /etc/fstab and every -o option.
func HelpFstab() string {
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

// mountOptionsHelp lists the -o options for `remotefs help fstab`.
func mountOptionsHelp() string {
	var own, std []string
	for name, o := range mountOptions {
		line := name
		if o.value {
			line += "=VALUE"
		}
		line = fmt.Sprintf("  %-22s %s", line, wrap(o.help, 78-25, "\n"+strings.Repeat(" ", 25)))
		if o.flag != "" && o.set == "" {
			own = append(own, line)
		} else {
			std = append(std, line)
		}
	}
	sort.Strings(own)
	sort.Strings(std)
	return "remotefs options (each is also a flag of remotefs mount, '_' for '-'):\n" +
		strings.Join(own, "\n") + "\n\nStandard options:\n" + strings.Join(std, "\n") +
		"\n  x-*, comment=...       ignored (for mount(8) and systemd, e.g. x-systemd.automount)\n"
}

// wrap breaks text into lines of at most width, joined by sep.
func wrap(text string, width int, sep string) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), sep)
}
