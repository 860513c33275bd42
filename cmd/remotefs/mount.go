package main

import (
	"context"

	"remotefs/config"
	"remotefs/daemon"
)

// cmdMount is `remotefs mount` and the mount(8) form.
func cmdMount(ctx context.Context, args []string) error {
	m, err := config.ParseMount(args)
	if err != nil || m == nil {
		return err
	}
	return daemon.Mount(ctx, m, args)
}
