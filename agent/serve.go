package agent

// The per-connection agent: `remotefs __agent` serves every helper request
// of one mount over one exec channel (proto/mux.go), so the server's login
// shell starts once per connection instead of once per helper.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"remotefs/agent/proto"
)

// IdleTimeout ends the agent when nothing came from the client for that
// long (conn pings it every 5s at most): a link that died without the
// server noticing leaves nothing running, as the watcher's heartbeat
// timeout does.
const IdleTimeout = 30 * time.Second

// Serve runs the agent (`remotefs __agent`) on stdin and stdout until
// stdin ends (nil) or breaks the format. Each stream runs its command on
// its own goroutine; when Serve returns, every command was told to stop
// (their contexts ended) and nothing is written any more.
//
// With --listen SOCKET and --linger D (D > 0) it also serves later
// connections of the same build on a unix socket (persist.go), and stays
// until no connection used it for D.
func Serve(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fl := flag.NewFlagSet(proto.AgentCommand, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	listen := fl.String("listen", "", "unix socket later connections reach this agent on")
	linger := fl.Duration("linger", 0, "how long the agent stays after its last connection ended (with --listen)")
	if err := fl.Parse(args); err != nil || fl.NArg() != 0 || *linger < 0 {
		return usageErr("usage: remotefs __agent [--listen SOCKET --linger DURATION]\n\nInternal: the per-connection agent a mount runs on the server.")
	}
	if *listen == "" || *linger == 0 {
		return serveSession(ctx, stdin, stdout)
	}
	return servePersistent(ctx, *listen, *linger, stdin, stdout)
}

// serveSession serves one connection's streams on r and w until r ends.
func serveSession(ctx context.Context, r io.Reader, w io.Writer) error {
	return proto.ServeMux(r, w, uint32(os.Getuid()), uint32(os.Getgid()), IdleTimeout, func(s *proto.Stream, argv []string) {
		s.Exit(runCommand(ctx, s, argv))
	})
}

// runCommand runs one stream's command and returns its exit code: 0, 1
// (some entries could not be read: the rest is right), 2 (usage), 127
// (no such command), with a message on stderr for anything but 0.
func runCommand(parent context.Context, s *proto.Stream, argv []string) int {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	go func() {
		select {
		case <-s.Context().Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	stderr := s.StderrWriter()
	var err error
	switch argv[0] {
	case proto.WatchCommand:
		err = Watch(ctx, argv[1:], s, s)
	case proto.PutCommand:
		err = Put(ctx, argv[1:], s, s)
	case proto.WalkCommand:
		err = Walk(ctx, argv[1:], s, stderr)
	case proto.StatCommand:
		err = Stat(ctx, argv[1:], s, s, stderr)
	case proto.WalkEachCommand:
		err = WalkEach(ctx, argv[1:], s, s, stderr)
	case proto.PreadCommand:
		err = Pread(ctx, argv[1:], s, stderr)
	case proto.FetchCommand:
		err = Fetch(ctx, argv[1:], s, s, stderr)
	default:
		fmt.Fprintf(stderr, "remotefs agent: unknown command %q\n", argv[0])
		return 127
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errSomeUnreadable):
		return 1
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "remotefs agent: %s: %v\n", argv[0], err)
	return 1
}
