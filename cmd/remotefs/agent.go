package main

// The server side: when the mount runs this binary on the server it comes
// here, and everything it does there is package agent's.

import (
	"context"
	"errors"
	"os"
	"strings"

	"remotefs/agent"
	"remotefs/agent/proto"
	"remotefs/conn"
	"remotefs/internal/cli"
)

func init() {
	// This binary can be uploaded as the server-side helper; a test binary
	// of this package cannot (it would not understand __watch).
	conn.SetWatchHelper(func() (string, error) {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		if strings.HasSuffix(exe, ".test") {
			return "", errors.New("a test binary cannot serve as the watch helper")
		}
		return exe, nil
	})
}

const (
	watchCommand = proto.WatchCommand
	putCommand   = proto.PutCommand
	agentCommand = proto.AgentCommand
)

func cmdWatch(ctx context.Context, args []string) error {
	return agentUsage(agent.Watch(ctx, args, os.Stdin, os.Stdout))
}

func cmdPut(ctx context.Context, args []string) error {
	return agentUsage(agent.Put(ctx, args, os.Stdin, os.Stdout))
}

func cmdAgent(ctx context.Context, args []string) error {
	return agentUsage(agent.Serve(ctx, args, os.Stdin, os.Stdout))
}

// agentUsage makes agent's usage errors this command's (exit status 2).
func agentUsage(err error) error {
	if errors.Is(err, agent.ErrUsage) {
		return cli.Usagef("%v", err)
	}
	return err
}
