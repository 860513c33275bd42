// Command remotefs mounts a directory of an SSH server locally, with a
// persistent cache and write-back journal. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", err)
			os.Exit(2)
		}
		if !errors.Is(err, errSilent) {
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", err)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// errSilent: the failure was already reported.
var errSilent = errors.New("")

const topUsage = `remotefs mounts a directory of an SSH server on this machine, with a
persistent local cache and a write-back journal: browsing, search and git
run at local speed, saves return at once and reach the server within about
a second, and the cached tree stays browsable when the server is offline.

Usage:
  remotefs mount [flags] HOST:PATH MOUNTPOINT   mount (returns once the mount is live)
  remotefs unmount [--force] MOUNTPOINT         deliver pending writes, then unmount
  remotefs flush MOUNTPOINT                     wait until every write is on the server
  remotefs status [--json] [MOUNTPOINT]         show mounts, pending writes, conflicts
  remotefs version                              print the version

HOST is an ssh_config alias or [user@]host; PATH is relative to the remote
home directory unless absolute ("HOST:" alone is the home directory).

Examples:
  remotefs mount gpu-box:projects ~/remote
  remotefs status
  remotefs unmount ~/remote

Run "remotefs COMMAND --help" for the flags of a command.
`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, topUsage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "mount":
		return cmdMount(ctx, rest)
	case "unmount", "umount":
		return cmdUnmount(ctx, rest)
	case "flush":
		return cmdFlush(ctx, rest)
	case "status":
		return cmdStatus(ctx, rest)
	case "version", "--version", "-V":
		fmt.Println("remotefs", version())
		return nil
	case "help", "--help", "-h":
		fmt.Print(topUsage)
		return nil
	case daemonCommand:
		return cmdDaemon(ctx, rest)
	}
	fmt.Fprint(os.Stderr, topUsage)
	return usagef("unknown command %q", cmd)
}
