package main

import (
	"context"
	"errors"
	"os"
	"runtime"
	"syscall"

	"remotefs/daemon"
	rfs "remotefs/fs"
	"remotefs/internal/cli"
)

func init() {
	// The mount recognises the echo helper's requests by the calling
	// thread's id, so the helper does all its work on the main thread
	// (whose id is the process id): init runs on it, and a lock taken here
	// keeps main there.
	if len(os.Args) > 1 && os.Args[1] == daemon.EchoCommand {
		runtime.LockOSThread()
	}
}

// cmdEcho is the echo helper the daemon starts (daemon/echo.go).
func cmdEcho(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return cli.Usagef("usage: remotefs %s MOUNTPOINT (internal)", daemon.EchoCommand)
	}
	if syscall.Gettid() != os.Getpid() {
		return errors.New("echo helper: not on the main thread")
	}
	return rfs.RunEchoHelper(args[0], os.Stdin, os.Stdout, syscall.Gettid())
}
