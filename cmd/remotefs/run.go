package main

import (
	"context"

	"remotefs/daemon"
)

// cmdRun is `remotefs run`: the command runs on the server over the
// mount's connection (daemon/runclient.go).
func cmdRun(ctx context.Context, args []string) error { return daemon.Run(ctx, args) }
