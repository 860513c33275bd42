package daemon

// Starting a mount: `remotefs mount` re-executes this binary as the
// daemon (Command) in the background, with a socket on which the daemon
// sends warnings and login questions, then "ok" once the mount is live or
// "error: ..." (see login.go). --foreground serves in the command's own
// process instead.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"remotefs/config"
	"remotefs/conn"
	"remotefs/internal/mountinfo"
)

// Command is the hidden subcommand the background process runs, with the
// arguments of `remotefs mount`.
const Command = "__daemon"

// Mount serves the mount m describes: in this process for --foreground
// (until unmounted or ctx ends), else in a background process started
// with args (the arguments of `remotefs mount`), returning once the mount
// is live or with the reason it failed.
func Mount(ctx context.Context, m *config.Mount, args []string) error {
	if err := checkFUSE(); err != nil {
		return err
	}
	if m.Foreground {
		if m.NoExec {
			stop := make(chan struct{})
			defer close(stop)
			go enforceNoExecWhenMounted(m.Mountpoint, stop)
		}
		return serve(ctx, m, nil, nil, func(ctx context.Context, req conn.LoginRequest) ([]string, error) {
			answers, err := askOnTerminal(ctx, req)
			if errors.Is(err, errNoTerminal) {
				return nil, noTerminalError(req)
			}
			return answers, err
		})
	}
	if err := start(ctx, m, args); err != nil {
		return err
	}
	if m.NoExec {
		if err := applyNoExec(m.Mountpoint); err != nil {
			exec.Command("fusermount3", "-u", m.Mountpoint).Run()
			return err
		}
	}
	return nil
}

// checkFUSE reports a clear error when this machine cannot mount FUSE.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return errors.New("/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or, in a container, pass --device /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found: install fuse3 (e.g. apt-get install fuse3)")
	}
	return nil
}

// start re-executes this binary in the background and waits until it
// reports that the mount is live, or why it failed.
func start(ctx context.Context, cfg *config.Mount, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath, err := logFilePath(cfg)
	if err != nil {
		return err
	}
	rotateLog(logPath, maxLogSize)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	// A socket pair, not a pipe: the daemon also asks login questions over
	// it (see login.go).
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	pr, pw := os.NewFile(uintptr(fds[0]), "ready"), os.NewFile(uintptr(fds[1]), "ready")
	cmd := exec.Command(exe, append([]string{Command}, args...)...)
	cmd.Stdin = nil
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Env = append(os.Environ(), "REMOTEFS_READY_FD=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start background process: %w", err)
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The daemon may send warnings and login questions before its verdict.
	stop := context.AfterFunc(ctx, func() { pr.Close() })
	defer stop()
	rd := bufio.NewReader(io.LimitReader(pr, 1<<20))
	var text string
	noTerminal := false // asked to log in, and nobody could answer
	for {
		line, err := rd.ReadString('\n')
		line = strings.TrimSpace(line)
		if payload, ok := strings.CutPrefix(line, "login "); ok {
			a := answerLogin(ctx, payload)
			noTerminal = noTerminal || a.NoTerminal
			b, _ := json.Marshal(a)
			if _, err := fmt.Fprintf(pr, "%s\n", b); err != nil {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "warning: ") {
			fmt.Fprintln(os.Stderr, "remotefs: "+line)
			continue
		}
		if line != "" || err != nil {
			text = line
			break
		}
	}
	pr.Close()
	if text == "ok" {
		go func() { <-exited }()
		return nil
	}
	if text == "" && ctx.Err() != nil {
		// Interrupted (Ctrl-C at a login prompt): the daemon, cut off from
		// its terminal, gives up by itself.
		return fmt.Errorf("mount of %s interrupted", cfg.Spec)
	}
	if text == "" {
		select {
		case err := <-exited:
			text = fmt.Sprintf("background process exited (%v); see %s", err, logPath)
		case <-time.After(2 * time.Second):
			text = "background process did not report; see " + logPath
		}
	}
	if noTerminal {
		return loginNeededError(strings.TrimPrefix(text, "error: "))
	}
	return errors.New(strings.TrimPrefix(text, "error: "))
}

// logFilePath is $XDG_STATE_HOME/remotefs/<cache key>.log.
func logFilePath(cfg *config.Mount) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "state")
	}
	dir := filepath.Join(base, "remotefs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("log directory: %w", err)
	}
	return filepath.Join(dir, config.CacheKey(cfg.Spec)+".log"), nil
}

// Background is the daemon (`remotefs __daemon ARGS`): it serves the
// mount the arguments of `remotefs mount` describe, reporting to the
// command that started it over the socket REMOTEFS_READY_FD names.
func Background(ctx context.Context, args []string) error {
	cfg, err := config.ParseMount(args)
	var ready *os.File
	if fd, perr := strconv.Atoi(os.Getenv("REMOTEFS_READY_FD")); perr == nil {
		// Not inherited by what the daemon runs (a ProxyCommand, Match
		// exec): a child holding it would keep `remotefs mount` waiting.
		syscall.CloseOnExec(fd)
		ready = os.NewFile(uintptr(fd), "ready")
		os.Unsetenv("REMOTEFS_READY_FD")
	}
	var relay *loginRelay
	if ready != nil {
		relay = newLoginRelay(ready)
	}
	report := func(err error) {
		if relay == nil {
			return
		}
		if err == nil {
			relay.finish("ok")
		} else {
			relay.finish("error: " + err.Error())
		}
	}
	if err != nil || cfg == nil {
		if err == nil {
			err = errors.New("bad daemon arguments")
		}
		report(err)
		return err
	}
	warn := func(msg string) {
		if relay != nil {
			relay.line("warning: " + strings.ReplaceAll(msg, "\n", " "))
		}
		fmt.Fprintln(os.Stderr, "warning: "+msg)
	}
	var login conn.LoginFunc
	if relay != nil {
		login = relay.ask
	}
	err = serve(ctx, cfg, report, warn, login)
	report(err)
	return err
}

// applyNoExec makes the mount at mp noexec, keeping its other per-mount
// flags. FUSE mounts are made by fusermount3, which bazil.org/fuse gives no
// way to pass noexec to, so this is a bind remount afterwards: it needs
// root (CAP_SYS_ADMIN); for anyone else it is a no-op.
func applyNoExec(mp string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	var flags uintptr = syscall.MS_REMOUNT | syscall.MS_BIND | syscall.MS_NOEXEC
	for _, o := range strings.Split(mountOptions(mp), ",") {
		switch o {
		case "ro":
			flags |= syscall.MS_RDONLY
		case "nosuid":
			flags |= syscall.MS_NOSUID
		case "nodev":
			flags |= syscall.MS_NODEV
		case "noatime":
			flags |= syscall.MS_NOATIME
		case "nodiratime":
			flags |= syscall.MS_NODIRATIME
		case "relatime":
			flags |= syscall.MS_RELATIME
		case "strictatime":
			flags |= syscall.MS_STRICTATIME
		}
	}
	if err := syscall.Mount("", mp, "", flags, ""); err != nil {
		return fmt.Errorf("noexec: remount %s: %w", mp, err)
	}
	return nil
}

// enforceNoExecWhenMounted waits (in --foreground) until mp is mounted,
// then applies noexec.
func enforceNoExecWhenMounted(mp string, stop <-chan struct{}) {
	for {
		if mi, mounted := mountinfo.Lookup(mp); mounted && strings.Contains(mi.FSType, "remotefs") {
			if err := applyNoExec(mp); err != nil {
				fmt.Fprintf(os.Stderr, "remotefs: warning: %v\n", err)
			}
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// maxLogSize: a mount's log file is rotated when a mount starts and finds
// it larger than this; one older generation (.1) is kept.
const maxLogSize = 10 << 20

// rotateLog renames p to p.1 (replacing an older p.1) when p is larger
// than max.
func rotateLog(p string, max int64) {
	if fi, err := os.Stat(p); err == nil && fi.Size() > max {
		os.Rename(p, p+".1")
	}
}

// mountOptions returns the per-mount options of mp ("rw,nosuid,...").
func mountOptions(mp string) string {
	mi, _ := mountinfo.Lookup(mp)
	return mi.Options
}
