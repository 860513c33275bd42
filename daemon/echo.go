package daemon

import (
	"os"
	"os/exec"
	"syscall"

	rfs "remotefs/fs"
)

// EchoCommand is the hidden subcommand of the helper process that raises
// server changes as inotify events on the mount (fs/echo.go): `remotefs
// __echo MOUNTPOINT`, requests on stdin, answers on stdout. The command
// runs it on its main thread (rfs.RunEchoHelper).
const EchoCommand = "__echo"

// startEchoHelper starts `remotefs __echo MOUNTPOINT` as a child of the
// daemon.
func startEchoHelper(mountpoint string) rfs.EchoHelper {
	return func() (rfs.EchoProcess, error) {
		exe, err := os.Executable()
		if err != nil {
			return rfs.EchoProcess{}, err
		}
		cmd := exec.Command(exe, EchoCommand, mountpoint)
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
