package main

import (
	"context"
	"strings"
	"testing"

	"remotefs/internal/cli"
	"remotefs/internal/clitest"
)

func TestCacheUsageErrors(t *testing.T) {
	clitest.IsolateEnv(t)
	ctx := context.Background()
	for _, args := range [][]string{nil, {"bogus"}, {"clear"}, {"pin"}, {"list", "extra"}, {"list", "--nope"}} {
		err := cmdCache(ctx, args)
		if _, ok := err.(cli.UsageError); !ok {
			t.Errorf("cache %q: %v, want a usage error", args, err)
		}
	}
	if err := cmdCache(ctx, []string{"pin", t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not on a remotefs mount") {
		t.Errorf("pin outside a mount: %v", err)
	}
}
