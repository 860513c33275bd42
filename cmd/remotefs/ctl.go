package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"remotefs/conn"
	"remotefs/internal/control"
)

// mountpointArg resolves the MOUNTPOINT argument of unmount/flush/status.
func mountpointArg(arg string) (string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}

func cmdUnmount(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("unmount", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	force := fl.Bool("force", false, "unmount even if some writes could not be delivered (they stay in the journal and are delivered by the next mount)")
	help := fl.Bool("help", false, "show this help")
	if err := fl.Parse(args); err != nil && !errors.Is(err, flag.ErrHelp) {
		return usagef("unmount: %v", err)
	} else if err != nil {
		*help = true
	}
	if *help {
		fmt.Print("Usage: remotefs unmount [--force] MOUNTPOINT\n\nDelivers every pending write to the server, then unmounts. Exits 0 only\nwhen everything written through the mount is on the server.\n\nExample:\n  remotefs unmount ~/remote\n\nFlags:\n")
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
		return nil
	}
	if fl.NArg() != 1 {
		return usagef("unmount: need exactly one MOUNTPOINT (see remotefs unmount --help)")
	}
	mp, err := mountpointArg(fl.Arg(0))
	if err != nil {
		return err
	}
	progress := newProgress()
	reply, err := control.Call(ctx, mp, control.Request{Cmd: "unmount", Force: *force}, progress.show)
	// A daemon that was just killed may still accept the connection for a
	// moment and then drop it: ask again until it answers or is gone.
	for attempt := 0; attempt < 10 && err != nil && !errors.Is(err, control.ErrNoDaemon) && ctx.Err() == nil; attempt++ {
		time.Sleep(200 * time.Millisecond)
		reply, err = control.Call(ctx, mp, control.Request{Cmd: "unmount", Force: *force}, progress.show)
	}
	progress.done()
	if errors.Is(err, control.ErrNoDaemon) {
		if mounted, fstype := isMountpoint(mp); mounted && strings.Contains(fstype, "remotefs") {
			// The daemon died (killed, crashed): clear the dead mount. Its
			// journal is replayed by the next mount.
			if out, err := exec.Command("fusermount3", "-u", mp).CombinedOutput(); err != nil {
				return fmt.Errorf("unmount %s: %s", mp, strings.TrimSpace(string(out)))
			}
			return fmt.Errorf("%s was not served by a running remotefs (it had stopped); unmounted it. Writes it had not delivered are delivered by the next mount of the same remote", mp)
		}
		return fmt.Errorf("%s is not a remotefs mount", mp)
	}
	if err != nil {
		return err
	}
	// Wait for the daemon to finish so the caller can rely on it being gone
	// (also when it unmounted but reports changes it could not deliver).
	if reply.Status != nil && (reply.Error == "" || reply.Unmounted) {
		waitExit(reply.Status.PID, 15*time.Second)
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

func waitExit(pid int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdFlush(ctx context.Context, args []string) error {
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-h") {
		fmt.Print("Usage: remotefs flush MOUNTPOINT\n\nWaits until every write made through the mount is on the server; exits\nnon-zero with the reason when that cannot happen now (server offline,\nserver refusing the write).\n\nExample:\n  remotefs flush ~/remote && ssh gpu-box 'cd projects/my-model && python train.py'\n")
		return nil
	}
	if len(args) != 1 {
		return usagef("flush: need exactly one MOUNTPOINT (see remotefs flush --help)")
	}
	mp, err := mountpointArg(args[0])
	if err != nil {
		return err
	}
	progress := newProgress()
	reply, err := control.Call(ctx, mp, control.Request{Cmd: "flush"}, progress.show)
	progress.done()
	if errors.Is(err, control.ErrNoDaemon) {
		return fmt.Errorf("%s is not a remotefs mount", mp)
	}
	if err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("status", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	asJSON := fl.Bool("json", false, "print machine-readable JSON")
	help := fl.Bool("help", false, "show this help")
	if err := fl.Parse(reorderFlags(fl, args)); err != nil && !errors.Is(err, flag.ErrHelp) {
		return usagef("status: %v", err)
	} else if err != nil {
		*help = true
	}
	if *help {
		fmt.Print("Usage: remotefs status [--json] [MOUNTPOINT]\n\nShows each remotefs mount of this user (or the one at MOUNTPOINT): online,\noffline or reconnecting and since when, pending writes, conflicts, cache size,\nport forwards.\n\nExamples:\n  remotefs status\n  remotefs status --json ~/remote\n\nFlags:\n")
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
		return nil
	}
	var socks []string
	switch fl.NArg() {
	case 0:
		socks, _ = filepath.Glob(filepath.Join(control.RuntimeDir(), "*.sock"))
		sort.Strings(socks)
	case 1:
		mp, err := mountpointArg(fl.Arg(0))
		if err != nil {
			return err
		}
		socks = []string{control.SocketPath(mp)}
	default:
		return usagef("status: at most one MOUNTPOINT")
	}
	var all []*control.Status
	for _, s := range socks {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := control.CallSocket(cctx, s, control.Request{Cmd: "status"}, nil)
		cancel()
		if err != nil || r.Status == nil {
			if fl.NArg() == 1 {
				return fmt.Errorf("%s is not a remotefs mount", fl.Arg(0))
			}
			continue
		}
		all = append(all, r.Status)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if fl.NArg() == 1 {
			return enc.Encode(all[0])
		}
		if all == nil {
			all = []*control.Status{}
		}
		return enc.Encode(all)
	}
	if len(all) == 0 {
		fmt.Println("no remotefs mounts")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MOUNTPOINT\tREMOTE\tSTATE\tSINCE\tPENDING\tCONFLICTS\tCACHE\tPID")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d (%s)\t%d\t%s\t%d\n", s.Mountpoint, s.Remote, s.State,
			s.Since.Local().Format("15:04:05"), s.Pending, humanBytes(s.PendingBytes), len(s.Conflicts), humanBytes(s.CacheBytes), s.PID)
	}
	tw.Flush()
	for _, s := range all {
		if s.LastError != "" {
			fmt.Printf("%s: connection: %s\n", s.Mountpoint, s.LastError)
		}
		if line := offlineLine(s); line != "" {
			fmt.Printf("%s: %s\n", s.Mountpoint, line)
		}
		if s.State == conn.LoginNeeded.String() {
			fmt.Printf("%s: the server asks for a password or code again: run remotefs login %s\n", s.Mountpoint, s.Mountpoint)
		}
		if s.Watch != "" {
			fmt.Printf("%s: server changes: %s\n", s.Mountpoint, s.Watch)
		}
		if s.Uploads != "" {
			fmt.Printf("%s: uploads: %s\n", s.Mountpoint, s.Uploads)
		}
		if s.Notify != "" {
			fmt.Printf("%s: inotify events for server changes: %s\n", s.Mountpoint, s.Notify)
		}
		for _, f := range s.Forwards {
			line := f.Listen + " -> " + f.Target
			if f.Kind == "dynamic" {
				line = f.Listen + " (SOCKS5)"
			}
			if f.Kind == "remote" {
				line += " (remote)"
			}
			line += ": " + f.State
			if f.Error != "" {
				line += ": " + f.Error
			}
			fmt.Printf("%s: forward %s\n", s.Mountpoint, line)
		}
		if s.UploadError != "" {
			fmt.Printf("%s: upload failing (retrying): %s\n", s.Mountpoint, s.UploadError)
		}
		for _, u := range s.Undelivered {
			kept := "nothing to keep"
			if u.Kept != "" {
				kept = "content kept in " + u.Kept
			}
			fmt.Printf("%s: NOT DELIVERED (the server refused it): %s: %s; %s (remotefs cache rescue %s DEST_FOLDER)\n",
				s.Mountpoint, u.Op, u.Reason, kept, s.Mountpoint)
		}
		for _, c := range s.Conflicts {
			fmt.Printf("%s: conflict at %s: %s changed on the server while you changed it here; both are kept, the other version as %s\n",
				s.Mountpoint, c.At.Local().Format("15:04:05"), c.Path, c.CopyPath)
		}
	}
	return nil
}

// progress prints one updating line on a terminal and nothing otherwise.
type progress struct {
	tty   bool
	shown bool
}

func newProgress() *progress {
	fi, err := os.Stderr.Stat()
	return &progress{tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p *progress) show(msg string) {
	if !p.tty {
		return
	}
	fmt.Fprintf(os.Stderr, "\r\033[Kremotefs: %s", msg)
	p.shown = true
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}

// offlineLine says, for a mount without its server, since when, what waits
// for it and whether changes are accepted meanwhile ("" when online).
func offlineLine(s *control.Status) string {
	if s.State == "online" {
		return ""
	}
	since := s.Since
	if s.OfflineSince != nil {
		since = *s.OfflineSince // "connecting" since the last dial, offline since this
	}
	line := fmt.Sprintf("offline since %s", since.Local().Format("2006-01-02 15:04:05"))
	if s.Pending > 0 {
		line += fmt.Sprintf("; %d change(s) (%s) wait to be delivered", s.Pending, humanBytes(s.PendingBytes))
		if s.OldestPending != nil {
			line += ", the oldest from " + s.OldestPending.Local().Format("2006-01-02 15:04:05")
		}
	}
	switch {
	case s.ReadOnly:
		line += "; read-only"
	case s.OfflineEdits:
		line += "; changes are accepted and delivered when the server is back"
	default:
		line += "; read-only until the server is reached (--offline-edits accepts changes before)"
	}
	return line
}
