// Package conntest gives tests of the layers above conn a real *conn.Client
// without ssh: pkg/sftp's server runs in-process over pipes and serves a
// local directory. Everything but Exec works as over ssh (the server
// offers posix-rename, hardlink and statvfs; not fsync).
package conntest

import (
	"context"
	"io"
	"testing"

	"github.com/pkg/sftp"

	"remotefs/conn"
)

// NewPipe serves dir (must be absolute) in-process and returns a Client rooted at
// it, closed at test cleanup.
func NewPipe(t testing.TB, dir string, opts conn.Options) *conn.Client {
	t.Helper()
	c, err := Serve(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Serve is NewPipe without testing.TB. Closing the client stops the
// server.
func Serve(ctx context.Context, dir string, opts conn.Options) (*conn.Client, error) {
	clientRead, serverWrite := io.Pipe()
	serverRead, clientWrite := io.Pipe()
	// No WithServerWorkingDirectory: with it pkg/sftp's server makes
	// relative symlink targets absolute. The client uses absolute paths.
	srv, err := sftp.NewServer(pipe{serverRead, serverWrite})
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	return conn.NewClientPipe(ctx, clientRead, clientWrite, "in-process", dir, opts, serverRead, serverWrite)
}

type pipe struct {
	*io.PipeReader
	*io.PipeWriter
}

func (p pipe) Close() error {
	p.PipeReader.Close()
	return p.PipeWriter.Close()
}
