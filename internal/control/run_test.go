package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// serveTest serves handle on a fresh socket and returns its path.
func serveTest(t *testing.T, handle func(ctx context.Context, req Request, progress func(string)) Reply) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, handle)
	return sock
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// readAll reads r to EOF, failing after a few seconds (a descriptor some
// process still holds open).
func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	select {
	case s := <-done:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no end of file: a copy of the write end is still open")
		return ""
	}
}

func TestRunStream(t *testing.T) {
	events := make(chan RunEvent, 4)
	sock := serveTest(t, func(ctx context.Context, req Request, progress func(string)) Reply {
		if req.Cmd != "run" || req.Run == nil || req.Stream == nil {
			return Reply{Error: fmt.Sprintf("bad request %+v", req)}
		}
		files := req.Stream.Files()
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		if len(files) != 3 {
			return Reply{Error: fmt.Sprintf("%d files", len(files))}
		}
		progress("flushing")
		in, _ := io.ReadAll(files[0]) // until the client's stdin ends
		fmt.Fprintf(files[1], "out:%s:%s", req.Run.Args[0], in)
		fmt.Fprint(files[2], "err")
		req.Stream.Send(RunReply(RunStatus{Started: true}))
		var ev RunEvent
		if err := req.Stream.Receive(&ev); err != nil {
			return Reply{Error: err.Error()}
		}
		events <- ev
		return RunReply(RunStatus{Started: true, Exited: true, ExitCode: 42})
	})

	inR, inW := pipe(t)
	outR, outW := pipe(t)
	errR, errW := pipe(t)
	c, err := Open(context.Background(), sock, Request{Cmd: "run", Run: &RunRequest{Args: []string{"cat"}, Dir: "a/b"}}, inR, outW, errW)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The daemon holds its own copies now.
	inR.Close()
	outW.Close()
	errW.Close()
	inW.Write([]byte("typed"))
	inW.Close()

	var sawProgress, sawStarted bool
	for {
		r, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		st, ok := r.Run()
		switch {
		case r.Progress == "flushing":
			sawProgress = true
		case !r.Done && ok && st.Started:
			sawStarted = true
			if err := c.Send(RunEvent{Resize: &Terminal{Rows: 10, Cols: 20}}); err != nil {
				t.Fatal(err)
			}
		case r.Done:
			if r.Error != "" || !ok || !st.Exited || st.ExitCode != 42 {
				t.Fatalf("final reply %+v (%+v)", r, st)
			}
			if !sawProgress || !sawStarted {
				t.Errorf("progress %v, started %v", sawProgress, sawStarted)
			}
			if ev := <-events; ev.Resize == nil || ev.Resize.Rows != 10 || ev.Resize.Cols != 20 {
				t.Errorf("event %+v", ev)
			}
			if got := readAll(t, outR); got != "out:cat:typed" {
				t.Errorf("stdout %q", got)
			}
			if got := readAll(t, errR); got != "err" {
				t.Errorf("stderr %q", got)
			}
			return
		default:
			t.Fatalf("unexpected reply %+v", r)
		}
	}
}

// TestUnclaimedFilesClosed: files sent with a request whose handler does
// not take them are closed, and plain requests work as before.
func TestUnclaimedFilesClosed(t *testing.T) {
	sock := serveTest(t, func(ctx context.Context, req Request, progress func(string)) Reply {
		return Reply{Status: &Status{Mountpoint: "/m"}}
	})
	r, w := pipe(t)
	c, err := Open(context.Background(), sock, Request{Cmd: "status"}, w)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Next()
	c.Close()
	if err != nil || !reply.Done || reply.Status == nil || reply.Status.Mountpoint != "/m" {
		t.Fatalf("reply %+v, %v", reply, err)
	}
	w.Close()
	if got := readAll(t, r); got != "" {
		t.Errorf("read %q", got)
	}

	reply, err = CallSocket(context.Background(), sock, Request{Cmd: "status"}, nil)
	if err != nil || reply.Status == nil {
		t.Fatalf("Call: %+v, %v", reply, err)
	}
}

// TestReceiveEndsWhenClientLeaves: a handler waiting for the client's
// messages learns that it went away.
func TestReceiveEndsWhenClientLeaves(t *testing.T) {
	gotErr := make(chan error, 1)
	sock := serveTest(t, func(ctx context.Context, req Request, progress func(string)) Reply {
		var ev RunEvent
		gotErr <- req.Stream.Receive(&ev)
		return Reply{}
	})
	c, err := Open(context.Background(), sock, Request{Cmd: "run"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-gotErr:
		if err == nil {
			t.Fatal("Receive returned no error after the client closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still blocked after the client closed")
	}
}

func TestOpenNoDaemon(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Cmd: "run"})
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Open without a daemon: %v", err)
	}
}

func TestRunStatusJSON(t *testing.T) {
	r := RunReply(RunStatus{Started: true, Exited: true, ExitCode: 130, Signal: "INT"})
	b, _ := json.Marshal(r)
	var back Reply
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	st, ok := back.Run()
	if !ok || st != (RunStatus{Started: true, Exited: true, ExitCode: 130, Signal: "INT"}) {
		t.Fatalf("round trip: %+v %v (%s)", st, ok, b)
	}
	if _, ok := (&Reply{Progress: "x"}).Run(); ok {
		t.Error("a progress line decoded as a run status")
	}
}
