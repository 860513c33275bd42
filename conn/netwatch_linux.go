//go:build linux

package conn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenNetwork subscribes to the kernel's network change notifications
// (rtnetlink: an address, route or link added, removed or changed, any of
// which may bring a lost server back or leave a live connection dead).
// The subscription is made before it returns, so a change right after it
// is not missed; watch delivers them.
func listenNetwork() (watch func(ctx context.Context, changed func()) error, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
		unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Through the runtime poller, so closing the file ends a blocked read.
	f := os.NewFile(uintptr(fd), "rtnetlink")
	return func(ctx context.Context, changed func()) error { return readNetwork(ctx, f, changed) }, nil
}

// readNetwork calls changed for every change f reports, until ctx ends
// (nil) or the notifications cannot be had. It closes f.
func readNetwork(ctx context.Context, f *os.File, changed func()) error {
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if errors.Is(err, syscall.ENOBUFS) {
				changed() // notifications were lost: something changed
				continue
			}
			return fmt.Errorf("netlink read: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_NEWROUTE, unix.RTM_DELROUTE, unix.RTM_NEWLINK, unix.RTM_DELLINK:
				changed()
			}
		}
	}
}
