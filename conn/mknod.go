package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

var (
	_ Mknoder = (*Client)(nil)
	_ Mknoder = (*Manager)(nil)
)

// mknodSocket binds a Unix socket at $1 and sets its mode to $2 (octal):
// no standard command makes a socket node, so this needs python3. It
// binds from the socket's folder: a socket address holds 108 bytes, less
// than many paths. A name longer than that exits 3 (unsupported).
const mknodSocket = `import os, socket, sys
d, n = os.path.split(sys.argv[1])
os.chdir(d or "/")
if len(n.encode()) > 100:
    sys.exit(3)
s = socket.socket(socket.AF_UNIX)
s.bind(n)
os.chmod(n, int(sys.argv[2], 8))`

// mknodCommand is the shell command that makes the node on the server:
// mknod(1) for FIFOs and devices, python3 for sockets.
func mknodCommand(abs string, mode fs.FileMode, dev uint32) (string, error) {
	perm := fmt.Sprintf("%o", chmodBits(mode)&0o7777)
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "mknod -m " + perm + " -- " + shellQuote(abs) + " p", nil
	case mode&fs.ModeSocket != 0:
		return "python3 -c " + shellQuote(mknodSocket) + " " + shellQuote(abs) + " " + perm, nil
	case mode&fs.ModeDevice != 0:
		kind := "b"
		if mode&fs.ModeCharDevice != 0 {
			kind = "c"
		}
		// Linux's 32-bit device number: 12 bits of major, 20 of minor.
		major := (dev & 0xfff00) >> 8
		minor := (dev & 0xff) | ((dev >> 12) & 0xfff00)
		return fmt.Sprintf("mknod -m %s -- %s %s %d %d", perm, shellQuote(abs), kind, major, minor), nil
	}
	return "", fmt.Errorf("mknod of mode %v: %w", mode, fs.ErrInvalid)
}

// Mknod implements Mknoder with a command over an exec channel (bounded by
// the operation deadline, since Exec has none of its own).
func (c *Client) Mknod(ctx context.Context, rel string, mode fs.FileMode, dev uint32) error {
	abs, err := c.abs("mknod", rel)
	if err != nil {
		return err
	}
	cmd, err := mknodCommand(abs, mode, dev)
	if err != nil {
		return &fs.PathError{Op: "mknod", Path: rel, Err: err}
	}
	timeout := c.opTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stderr bytes.Buffer
	code, err := c.Exec(ctx, "LC_ALL=C "+cmd, nil, nil, &limitedBuffer{buf: &stderr, max: 1024})
	if err != nil {
		return &fs.PathError{Op: "mknod", Path: rel, Err: err}
	}
	if code == 0 {
		return nil
	}
	msg := strings.TrimSpace(stderr.String())
	var kind error
	switch {
	case code == 127, code == 126, code == 3 && mode&fs.ModeSocket != 0:
		kind = ErrUnsupported // no mknod or python3 on the server
	case strings.Contains(msg, "File exists"), strings.Contains(msg, "Address already in use"):
		kind = fs.ErrExist
	case strings.Contains(msg, "No such file"):
		kind = fs.ErrNotExist
	case strings.Contains(msg, "Permission denied"), strings.Contains(msg, "Operation not permitted"):
		kind = fs.ErrPermission
	default:
		kind = errors.New("mknod failed")
	}
	return &fs.PathError{Op: "mknod", Path: rel, Err: withKind(kind, fmt.Errorf("exit %d: %s", code, msg))}
}

// Mknod implements Mknoder.
func (m *Manager) Mknod(ctx context.Context, path string, mode fs.FileMode, dev uint32) error {
	c, err := m.current("mknod", path)
	if err != nil {
		return err
	}
	return c.Mknod(ctx, path, mode, dev)
}
