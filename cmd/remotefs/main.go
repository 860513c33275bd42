// Command remotefs mounts a directory of an SSH server locally, with a
// persistent cache and write-back journal. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"remotefs/config"
	"remotefs/conn"
	"remotefs/daemon"
	"remotefs/internal/cli"
)

func main() {
	if os.Getenv(conn.AskpassEnv) != "" {
		// ssh runs this binary as SSH_ASKPASS (--ssh=openssh; daemon/login.go).
		prompt := ""
		if len(os.Args) > 1 {
			prompt = os.Args[1]
		}
		os.Exit(conn.RunAskpass(prompt, os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var es daemon.ExitStatus // remotefs run: the remote command's status
		if errors.As(err, &es) {
			if es.Err != nil {
				fmt.Fprintf(os.Stderr, "remotefs: %v\n", es.Err)
			}
			os.Exit(es.Code)
		}
		var ue cli.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", err)
			os.Exit(2)
		}
		if !errors.Is(err, cli.ErrSilent) {
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", err)
		}
		if errors.Is(err, conn.ErrLoginNeeded) {
			// The server asks for a password and there is no terminal:
			// retrying will not help (the systemd unit does not).
			os.Exit(exitLoginNeeded)
		}
		os.Exit(1)
	}
}

// exitLoginNeeded: a mount failed because the server asks for a password
// or code and there was no terminal to ask on.
const exitLoginNeeded = 3

const topUsage = `remotefs mounts a directory of an SSH server on this machine, with a
persistent local cache and a write-back journal: browsing, search and git
run at local speed, saves return at once and reach the server within about
a second, and the cached tree stays browsable when the server is offline.

Usage:
  remotefs mount [flags] HOST:PATH MOUNTPOINT   mount (returns once the mount is live)
  remotefs unmount [--force] MOUNTPOINT         deliver pending writes, then unmount
  remotefs flush MOUNTPOINT                     wait until every write is on the server
  remotefs status [--json] [MOUNTPOINT]         show mounts, pending writes, conflicts
  remotefs login MOUNTPOINT                     answer the server's password/code prompts
                                                again when status says "login needed"
  remotefs run [--] COMMAND [ARGS...]           run COMMAND on the server, in the folder
                                                matching the current one (after a flush)
  remotefs cache list|clear|pin ...             manage the local caches
  remotefs help [COMMAND|TOPIC]                 help on a command, or on a topic:
                                                config, fstab, ssh, cache, notify,
                                                offline
  remotefs version                              print the version
  remotefs HOST:PATH MOUNTPOINT [-o OPTS]       mount(8) form (remotefs help fstab)

HOST is an ssh_config alias or [user@]host; PATH is relative to the remote
home directory unless absolute ("HOST:" alone is the home directory).

Examples:
  remotefs mount gpu-box:projects ~/remote
  remotefs status
  remotefs unmount ~/remote

Run "remotefs COMMAND --help" for the flags of a command, and
"remotefs help TOPIC" for the config file (config), mount(8) and
/etc/fstab (fstab), what is read from ~/.ssh/config (ssh) and the cache
(cache).
`

func run(ctx context.Context, args []string) error {
	config.FixUserEnv(config.IsHelperForm(args))
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, topUsage)
		return cli.Usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	if config.IsHelperForm(args) {
		// mount -t fuse.remotefs / fstab: remotefs HOST:PATH MOUNTPOINT -o OPTS
		args[0] = strings.TrimPrefix(args[0], "remotefs#")
		return cmdMount(ctx, args)
	}
	switch cmd {
	case "mount":
		return cmdMount(ctx, rest)
	case "unmount", "umount":
		return cmdUnmount(ctx, rest)
	case "flush":
		return cmdFlush(ctx, rest)
	case "status":
		return cmdStatus(ctx, rest)
	case "run":
		return cmdRun(ctx, rest)
	case "login":
		return cmdLogin(ctx, rest)
	case "cache":
		return cmdCache(ctx, rest)
	case "version", "--version", "-V":
		fmt.Println("remotefs", version())
		return nil
	case "help", "--help", "-h":
		return cmdHelp(ctx, rest)
	case daemon.Command:
		return daemon.Background(ctx, rest)
	case watchCommand:
		return cmdWatch(ctx, rest)
	case daemon.EchoCommand:
		return cmdEcho(ctx, rest)
	case putCommand:
		return cmdPut(ctx, rest)
	case agentCommand:
		return cmdAgent(ctx, rest)
	}
	fmt.Fprint(os.Stderr, topUsage)
	return cli.Usagef("unknown command %q", cmd)
}
