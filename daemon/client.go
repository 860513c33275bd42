package daemon

// The client side of status, flush and unmount: calls on a mount's
// control socket, and how their answers are shown.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"remotefs/conn"
	"remotefs/internal/cli"
	"remotefs/internal/control"
	"remotefs/internal/mountinfo"
)

// Unmount asks the daemon of mp to deliver every pending write (unless
// force) and unmount, and waits for it to exit. A mount whose daemon died
// is cleared with fusermount3.
func Unmount(ctx context.Context, mp string, force bool) error {
	progress := cli.NewProgress()
	reply, err := control.Call(ctx, mp, control.Request{Cmd: "unmount", Force: force}, progress.Show)
	// A daemon that was just killed may still accept the connection for a
	// moment and then drop it: ask again until it answers or is gone.
	for attempt := 0; attempt < 10 && err != nil && !errors.Is(err, control.ErrNoDaemon) && ctx.Err() == nil; attempt++ {
		time.Sleep(200 * time.Millisecond)
		reply, err = control.Call(ctx, mp, control.Request{Cmd: "unmount", Force: force}, progress.Show)
	}
	progress.Done()
	if errors.Is(err, control.ErrNoDaemon) {
		if mi, mounted := mountinfo.Lookup(mp); mounted && strings.Contains(mi.FSType, "remotefs") {
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

// Flush waits until every write made through the mount at mp is on the
// server, or says why that cannot happen now.
func Flush(ctx context.Context, mp string) error {
	progress := cli.NewProgress()
	reply, err := control.Call(ctx, mp, control.Request{Cmd: "flush"}, progress.Show)
	progress.Done()
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

// PrintStatus writes the table of `remotefs status`, then a line for each
// thing about a mount that needs the user's attention.
func PrintStatus(w io.Writer, all []*control.Status) {
	if len(all) == 0 {
		fmt.Fprintln(w, "no remotefs mounts")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MOUNTPOINT\tREMOTE\tSTATE\tSINCE\tPENDING\tCONFLICTS\tCACHE\tPID")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d (%s)\t%d\t%s\t%d\n", s.Mountpoint, s.Remote, s.State,
			s.Since.Local().Format("15:04:05"), s.Pending, cli.HumanBytes(s.PendingBytes), len(s.Conflicts), cli.HumanBytes(s.CacheBytes), s.PID)
	}
	tw.Flush()
	for _, s := range all {
		say := func(format string, args ...any) {
			fmt.Fprintf(w, "%s: "+format+"\n", append([]any{s.Mountpoint}, args...)...)
		}
		if s.LastError != "" {
			say("connection: %s", s.LastError)
		}
		if line := offlineLine(s); line != "" {
			say("%s", line)
		}
		if s.State == conn.LoginNeeded.String() {
			say("the server asks for a password or code again: run remotefs login %s", s.Mountpoint)
		}
		if s.Watch != "" {
			say("server changes: %s", s.Watch)
		}
		if s.Uploads != "" {
			say("uploads: %s", s.Uploads)
		}
		if s.Notify != "" {
			say("inotify events for server changes: %s", s.Notify)
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
			say("forward %s", line)
		}
		if s.UploadError != "" {
			say("upload failing (retrying): %s", s.UploadError)
		}
		for _, u := range s.Undelivered {
			kept := "nothing to keep"
			if u.Kept != "" {
				kept = "content kept in " + u.Kept
			}
			say("NOT DELIVERED (the server refused it): %s: %s; %s (remotefs cache rescue %s DEST_FOLDER)", u.Op, u.Reason, kept, s.Mountpoint)
		}
		for _, c := range s.Conflicts {
			say("conflict at %s: %s changed on the server while you changed it here; both are kept, the other version as %s",
				c.At.Local().Format("15:04:05"), c.Path, c.CopyPath)
		}
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
		line += fmt.Sprintf("; %d change(s) (%s) wait to be delivered", s.Pending, cli.HumanBytes(s.PendingBytes))
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
