package conn

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"remotefs/agent/proto"
)

// BulkFetcher is implemented by remotes that can send many files in one
// streamed round trip.
type BulkFetcher interface {
	// FetchFiles streams the regular files named by paths (root-relative)
	// and calls yield with each one's attributes and content, in the order
	// the server sends them. Files that vanished or cannot be read are
	// skipped. yield must consume r before returning.
	FetchFiles(ctx context.Context, paths []string, yield func(path string, fi FileInfo, r io.Reader) error) error
}

var (
	_ BulkFetcher = (*Client)(nil)
	_ BulkFetcher = (*Manager)(nil)
)

// ErrNoBulkFetch: the server has no usable tar.
var ErrNoBulkFetch = errors.New("server cannot send files in bulk (no tar)")

// ChangedWhileRead is the error FetchFiles returns when tar reported that
// files changed while it read them: what the stream held for them may be
// no version of the file (a mix, or zeros tar padded a shrunk file with).
// Every other file was sent whole.
type ChangedWhileRead struct{ Paths []string }

func (e *ChangedWhileRead) Error() string {
	return fmt.Sprintf("%d files changed on the server while they were read", len(e.Paths))
}

// FetchFiles implements BulkFetcher with the agent's fetch (agent.go), or
// tar over an exec channel: the same tar stream and warnings either way.
func (c *Client) FetchFiles(ctx context.Context, paths []string, yield func(string, FileInfo, io.Reader) error) error {
	var list bytes.Buffer
	for _, p := range paths {
		if _, err := c.abs("fetch", p); err != nil || p == "" || strings.HasPrefix(p, "-") {
			continue
		}
		list.WriteString(p)
		list.WriteByte(0)
	}
	if list.Len() == 0 {
		return nil
	}
	// --ignore-failed-read: a file deleted meanwhile is skipped, not fatal.
	cmd := "LC_ALL=C tar -C " + shellQuote(c.root) + " --null --no-recursion --ignore-failed-read -cf - -T -"
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	const stderrMax = 256 << 10
	done := make(chan error, 1)
	go func() {
		argv := []string{proto.FetchCommand, "--", c.root}
		code, err := c.runHelper(ctx, argv, cmd, &list, pw, &limitedBuffer{buf: &stderr, max: stderrMax})
		if err == nil && code == 127 {
			err = fmt.Errorf("%w: %s", ErrNoBulkFetch, strings.TrimSpace(stderr.String()))
		}
		// Not only on failure: GNU tar exits 0 after padding a file that
		// shrank with zeros.
		if err == nil {
			if changed := tarChanged(stderr.String()); len(changed) > 0 || stderr.Len() >= stderrMax {
				if stderr.Len() >= stderrMax {
					changed = paths // the warnings were cut: trust none
				}
				err = &ChangedWhileRead{Paths: changed}
			}
		}
		pw.CloseWithError(err)
		done <- err
	}()
	perr := readTar(pr, yield)
	if perr == nil {
		io.Copy(io.Discard, pr) // tar pads its output past the end marker
	}
	pr.CloseWithError(errors.New("fetch stopped"))
	err := <-done
	var changed *ChangedWhileRead
	if perr != nil && !errors.Is(perr, io.ErrClosedPipe) && !errors.As(perr, &changed) {
		return perr
	}
	return err
}

// tarChanged returns the files GNU tar's warnings say changed while it
// read them ("file changed as we read it", "File shrank by N bytes").
func tarChanged(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimPrefix(line, "tar: ")
		for _, suffix := range []string{": file changed as we read it", ": File shrank by "} {
			if i := strings.LastIndex(line, suffix); i > 0 {
				out = append(out, line[:i])
				break
			}
		}
	}
	return out
}

// FetchFiles implements BulkFetcher.
func (m *Manager) FetchFiles(ctx context.Context, paths []string, yield func(string, FileInfo, io.Reader) error) error {
	c, err := m.current("fetch", "")
	if err != nil {
		return err
	}
	return c.FetchFiles(ctx, paths, yield)
}

func readTar(r io.Reader, yield func(string, FileInfo, io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			continue
		}
		p := path.Clean(h.Name)
		if p == "." || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
			continue
		}
		fi := FileInfo{Name: path.Base(p), Mode: h.FileInfo().Mode(), Size: h.Size, Mtime: time.Unix(h.ModTime.Unix(), 0)}
		if err := yield(p, fi, tr); err != nil {
			return err
		}
	}
}
