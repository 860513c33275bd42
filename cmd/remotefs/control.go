package main

// The commands that talk to a running mount over its control socket.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"remotefs/daemon"
	"remotefs/internal/cli"
	"remotefs/internal/control"
)

const unmountUsage = `Usage: remotefs unmount [--force] MOUNTPOINT

Delivers every pending write to the server, then unmounts. Exits 0 only
when everything written through the mount is on the server.

Example:
  remotefs unmount ~/remote

Flags:
`

func cmdUnmount(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("unmount", flag.ContinueOnError)
	force := fl.Bool("force", false, "unmount even if some writes could not be delivered (they stay in the journal and are delivered by the next mount)")
	if done, err := cli.ParseFlags("unmount", unmountUsage, fl, args); done || err != nil {
		return err
	}
	mp, err := oneMountpoint("unmount", fl.Args())
	if err != nil {
		return err
	}
	return daemon.Unmount(ctx, mp, *force)
}

const flushUsage = `Usage: remotefs flush MOUNTPOINT

Waits until every write made through the mount is on the server; exits
non-zero with the reason when that cannot happen now (server offline,
server refusing the write).

Example:
  remotefs flush ~/remote && ssh gpu-box 'cd projects/my-model && python train.py'
`

func cmdFlush(ctx context.Context, args []string) error {
	if cli.IsHelp(args) {
		fmt.Print(flushUsage)
		return nil
	}
	mp, err := oneMountpoint("flush", args)
	if err != nil {
		return err
	}
	return daemon.Flush(ctx, mp)
}

const statusUsage = `Usage: remotefs status [--json] [MOUNTPOINT]

Shows each remotefs mount of this user (or the one at MOUNTPOINT): online,
offline or reconnecting and since when, pending writes, conflicts, cache size,
port forwards.

Examples:
  remotefs status
  remotefs status --json ~/remote

Flags:
`

func cmdStatus(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fl.Bool("json", false, "print machine-readable JSON")
	if done, err := cli.ParseFlags("status", statusUsage, fl, args); done || err != nil {
		return err
	}
	mp := ""
	switch fl.NArg() {
	case 0:
	case 1:
		var err error
		if mp, err = cli.Mountpoint(fl.Arg(0)); err != nil {
			return err
		}
	default:
		return cli.Usagef("status: at most one MOUNTPOINT")
	}
	all, err := control.Statuses(ctx, mp, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%s is not a remotefs mount", fl.Arg(0))
	}
	if !*asJSON {
		daemon.PrintStatus(os.Stdout, all)
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if mp != "" {
		return enc.Encode(all[0])
	}
	if all == nil {
		all = []*control.Status{}
	}
	return enc.Encode(all)
}

func cmdLogin(ctx context.Context, args []string) error {
	if cli.IsHelp(args) {
		fmt.Print(daemon.LoginUsage)
		return nil
	}
	mp, err := oneMountpoint("login", args)
	if err != nil {
		return err
	}
	return daemon.Login(ctx, mp)
}

// oneMountpoint is the single MOUNTPOINT argument of cmd.
func oneMountpoint(cmd string, args []string) (string, error) {
	if len(args) != 1 {
		return "", cli.Usagef("%s: need exactly one MOUNTPOINT (see remotefs %s --help)", cmd, cmd)
	}
	return cli.Mountpoint(args[0])
}
