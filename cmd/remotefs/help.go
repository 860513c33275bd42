package main

// `remotefs help [COMMAND|TOPIC]`: each page lives next to what it
// documents.

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"remotefs/cache"
	"remotefs/cacheadmin"
	"remotefs/config"
	"remotefs/conn"
	rfs "remotefs/fs"
	"remotefs/internal/cli"
)

// helpTopics: `remotefs help NAME` pages that are not commands.
var helpTopics = map[string]func() string{
	"config":     config.HelpConfig,
	"fstab":      config.HelpFstab,
	"mount.fuse": config.HelpFstab,
	"ssh":        func() string { return conn.HelpSSH },
	"cache":      func() string { return cacheadmin.Usage + "\n" + cacheadmin.HelpTopic },
	"notify":     func() string { return rfs.HelpNotify },
	"offline":    func() string { return cache.HelpOffline },
}

func cmdHelp(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Print(topUsage)
		return nil
	}
	if len(args) > 1 {
		return cli.Usagef("help: one command or topic at a time (topics: %s)", strings.Join(topicNames(), ", "))
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
		fmt.Print(page())
		return nil
	}
	return cli.Usagef("help: no command or topic %q (commands: mount, unmount, flush, status, login, cache, version; topics: %s)", args[0], strings.Join(topicNames(), ", "))
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
