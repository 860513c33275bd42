package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	rfs "remotefs/fs"
)

// echoCommand is the hidden subcommand of the helper process that raises
// server changes as inotify events on the mount (fs/echo.go): `remotefs
// __echo MOUNTPOINT`, requests on stdin, answers on stdout.
const echoCommand = "__echo"

func init() {
	// The mount recognises the helper's requests by the calling thread's
	// id, so the helper does all its work on the main thread (whose id is
	// the process id): init runs on it, and a lock taken here keeps main
	// there.
	if len(os.Args) > 1 && os.Args[1] == echoCommand {
		runtime.LockOSThread()
	}
}

func cmdEcho(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("usage: remotefs %s MOUNTPOINT (internal)", echoCommand)
	}
	if syscall.Gettid() != os.Getpid() {
		return errors.New("echo helper: not on the main thread")
	}
	return rfs.RunEchoHelper(args[0], os.Stdin, os.Stdout, syscall.Gettid())
}

// startEchoHelper starts `remotefs __echo MOUNTPOINT` as a child of the
// daemon.
func startEchoHelper(mountpoint string) rfs.EchoHelper {
	return func() (rfs.EchoProcess, error) {
		exe, err := os.Executable()
		if err != nil {
			return rfs.EchoProcess{}, err
		}
		cmd := exec.Command(exe, echoCommand, mountpoint)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return rfs.EchoProcess{}, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return rfs.EchoProcess{}, err
		}
		// Its own process group: a terminal's Ctrl-C goes to the daemon,
		// which stops it. It exits at stdin EOF, so also when the daemon
		// dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return rfs.EchoProcess{}, err
		}
		return rfs.EchoProcess{Stdin: in, Stdout: out,
			Kill: func() { cmd.Process.Kill() }, Wait: cmd.Wait}, nil
	}
}
