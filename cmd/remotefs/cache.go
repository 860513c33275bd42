package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"remotefs/cacheadmin"
	"remotefs/internal/cli"
)

// cmdCache is `remotefs cache SUBCOMMAND` (the work is in cacheadmin).
func cmdCache(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, cacheadmin.Usage)
		return cli.Usagef("cache: need a subcommand: list, clear, pin, unpin or rescue")
	}
	name, usage := "cache "+args[0], ""
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	var asJSON, keep *bool
	switch args[0] {
	case "list", "ls":
		usage, asJSON = cacheadmin.ListUsage, fl.Bool("json", false, "print machine-readable JSON")
	case "clear", "rm":
		usage = cacheadmin.ClearUsage
	case "pin", "unpin":
		usage = cacheadmin.PinUsage
	case "rescue":
		usage, keep = cacheadmin.RescueUsage, fl.Bool("keep", false, "keep the set-aside changes after copying them")
	case "help", "--help", "-h":
		fmt.Print(cacheadmin.Usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, cacheadmin.Usage)
		return cli.Usagef("cache: unknown subcommand %q", args[0])
	}
	if done, err := cli.ParseFlags(name, usage, fl, args[1:]); done || err != nil {
		return err
	}
	switch args[0] {
	case "list", "ls":
		if fl.NArg() != 0 {
			return cli.Usagef("cache list: takes no arguments (see remotefs cache list --help)")
		}
		rows := cacheadmin.List(ctx)
		if !*asJSON {
			cacheadmin.PrintList(os.Stdout, rows)
			return nil
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "rescue":
		if fl.NArg() < 1 || fl.NArg() > 2 {
			return cli.Usagef("cache rescue: need a mount or cache, and optionally a DEST_FOLDER (see remotefs cache rescue --help)")
		}
		return cacheadmin.Rescue(ctx, fl.Arg(0), fl.Arg(1), *keep)
	case "clear", "rm":
		if fl.NArg() == 0 {
			return cli.Usagef("cache clear: name a cache: HOST:PATH, its directory or its name (see remotefs cache list)")
		}
		return eachArg(fl.Args(), func(arg string) error { return cacheadmin.Clear(ctx, arg) })
	}
	if fl.NArg() == 0 {
		return cli.Usagef("%s: name a folder or file on a remotefs mount (see remotefs %s --help)", name, name)
	}
	return eachArg(fl.Args(), func(arg string) error { return cacheadmin.Pin(ctx, arg, args[0] == "pin") })
}

// eachArg runs do for each argument; with several, a failure is reported
// and the rest still done.
func eachArg(args []string, do func(string) error) error {
	var failed error
	for _, arg := range args {
		if err := do(arg); err != nil {
			if len(args) == 1 {
				return err
			}
			fmt.Fprintf(os.Stderr, "remotefs: %v\n", err)
			failed = cli.ErrSilent
		}
	}
	return failed
}
