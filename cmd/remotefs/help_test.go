package main

import (
	"context"
	"strings"
	"testing"

	"remotefs/internal/cli"
	"remotefs/internal/clitest"
)

func TestEveryCommandHelpHasExamples(t *testing.T) {
	clitest.IsolateEnv(t)
	ctx := context.Background()
	for _, args := range [][]string{
		{"mount", "--help"}, {"mount", "-h"}, {"unmount", "--help"}, {"flush", "--help"},
		{"status", "--help"}, {"login", "--help"}, {"help", "login"}, {"cache", "--help"}, {"cache", "list", "--help"},
		{"cache", "clear", "--help"}, {"cache", "pin", "--help"}, {"cache", "unpin", "--help"},
		{"help"}, {"--help"}, {"help", "mount"}, {"help", "version"},
		{"help", "config"}, {"help", "fstab"}, {"help", "ssh"}, {"help", "cache"}, {"help", "offline"},
	} {
		out, err := clitest.CaptureStdout(t, func() error { return run(ctx, args) })
		if err != nil {
			t.Errorf("remotefs %s: %v", strings.Join(args, " "), err)
			continue
		}
		if !strings.Contains(out, "Example") {
			t.Errorf("remotefs %s shows no example:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestHelpTopics(t *testing.T) {
	clitest.IsolateEnv(t)
	ctx := context.Background()
	want := map[string][]string{
		"fstab":   {"mount -t fuse.remotefs", "fuse.remotefs", "_netdev", "allow_other", "cache_dir=VALUE", "make install", "ssh=VALUE", "remotefs login"},
		"ssh":     {"ProxyJump", "IdentityFile", "known_hosts", "ProxyCommand", "CertificateFile", "Match", "LocalForward", "--no-forwards", "remotefs login MOUNTPOINT", "--ssh=openssh", "ControlMaster", "SSH_ASKPASS"},
		"cache":   {"remotefs cache clear", "meta.db", "pinned", "remote.json"},
		"config":  {"[defaults]", `[host."gpu-box"]`, "server_folders", "ignore", "no_notify", `"openssh"`},
		"notify":  {"IN_MODIFY", "IN_MOVED_FROM", "--no-notify", "never sent to the server"},
		"offline": {"--offline-edits", "offline_edits", "ENETDOWN", "conflict", "remotefs status", "read-only"},
	}
	for topic, subs := range want {
		out, err := clitest.CaptureStdout(t, func() error { return run(ctx, []string{"help", topic}) })
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			if !strings.Contains(out, s) {
				t.Errorf("remotefs help %s does not mention %q", topic, s)
			}
		}
	}
	err := run(ctx, []string{"help", "nosuch"})
	if _, ok := err.(cli.UsageError); !ok || !strings.Contains(err.Error(), "config, fstab, notify, offline, ssh") {
		t.Errorf("help nosuch: %v", err)
	}
}

func TestTopUsageMentionsCommands(t *testing.T) {
	for _, s := range []string{"remotefs cache", "remotefs help", "HOST:PATH MOUNTPOINT [-o OPTS]"} {
		if !strings.Contains(topUsage, s) {
			t.Errorf("top usage does not mention %q", s)
		}
	}
}
