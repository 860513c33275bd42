// Package control is the local protocol between the remotefs CLI and a
// mount's daemon: one unix socket per mount in the user's runtime
// directory (mode 0700 directory, 0600 socket), one JSON request per
// connection, answered by zero or more progress lines and one final reply.
//
// A request may carry open files (SCM_RIGHTS on the request's bytes), and
// the client may keep writing JSON messages after it: "run" (run.go) uses
// both. The handler sees them through Request.Stream.
package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Request is what the CLI asks a daemon.
type Request struct {
	Cmd   string      `json:"cmd"` // status, flush, unmount, run
	Force bool        `json:"force,omitempty"`
	Run   *RunRequest `json:"run,omitempty"` // for run (see run.go)

	// Stream is set by Serve on the daemon side: the files passed with the
	// request and the client's later messages (see run.go).
	Stream *Stream `json:"-"`
}

// Reply is one line from the daemon. Progress lines have Progress set;
// the last line has Done set.
type Reply struct {
	Done     bool            `json:"done,omitempty"`
	Error    string          `json:"error,omitempty"`
	Progress string          `json:"progress,omitempty"`
	Status   *Status         `json:"status,omitempty"`
	Extra    json.RawMessage `json:"extra,omitempty"`

	// Unmounted: an unmount that reports Error but did unmount.
	Unmounted bool `json:"unmounted,omitempty"`
}

// Status describes one mount; the JSON field names are stable.
type Status struct {
	Mountpoint    string     `json:"mountpoint"`
	Remote        string     `json:"remote"`
	State         string     `json:"state"`
	Since         time.Time  `json:"since"`
	LastError     string     `json:"last_error,omitempty"`
	PID           int        `json:"pid"`
	ReadOnly      bool       `json:"read_only"`
	Pending       int        `json:"pending"`
	PendingBytes  int64      `json:"pending_bytes"`
	OldestPending *time.Time `json:"oldest_pending,omitempty"`
	UploadError   string     `json:"upload_error,omitempty"`
	Conflicts     []Conflict `json:"conflicts"`
	Watch         string     `json:"watch"`             // change feed in use: helper, inotifywait, poll, off, or starting
	Uploads       string     `json:"uploads,omitempty"` // how files are sent: helper, sftp, "starting helper"; empty offline
	// Notify: whether server changes are raised as inotify events on the
	// mount ("on", or "off" with the reason).
	Notify        string `json:"notify"`
	CacheDir      string `json:"cache_dir"`
	CacheBytes    int64  `json:"cache_bytes"`
	CachedEntries int    `json:"cached_entries"`

	// Forwards: the ssh_config port forwards and their state (absent when
	// there are none or --no-forwards).
	Forwards []Forward `json:"forwards,omitempty"`

	// Undelivered: changes the server refused for good, set aside with
	// their content (see remotefs cache rescue).
	Undelivered []Undelivered `json:"undelivered,omitempty"`

	// OfflineSince: when the mount lost its server, while it is not
	// online (it may be "connecting" meanwhile); absent when online or
	// when it has never been online.
	OfflineSince *time.Time `json:"offline_since,omitempty"`
	// OfflineEdits: changes are accepted while the server is unreachable
	// (they wait in the journal: Pending, PendingBytes, OldestPending).
	OfflineEdits bool `json:"offline_edits"`
	// Settling: work still to come from what the server reported or a
	// listing found (feed batches being applied, stat data to ask,
	// listings running, kernel invalidations to deliver); 0 when the
	// mount shows all it has learnt.
	Settling int `json:"settling"`
}

// Forward is one port forward of the mount's ssh connection.
type Forward struct {
	Kind   string `json:"kind"`             // local, remote or dynamic
	Listen string `json:"listen"`           // address listened on (on the server for remote)
	Target string `json:"target,omitempty"` // where connections go; "" for dynamic (SOCKS5)
	State  string `json:"state"`            // active, waiting for connection, opening, failed
	Error  string `json:"error,omitempty"`  // why it failed
}

// Conflict is one file whose local version was kept as a copy.
type Conflict struct {
	Path     string    `json:"path"`
	CopyPath string    `json:"copy"`
	At       time.Time `json:"at"`
}

// Undelivered is one change the server refused for good.
type Undelivered struct {
	Path   string    `json:"path"`
	Op     string    `json:"op"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Kept   string    `json:"kept,omitempty"` // the file holding its content
}

// RuntimeDir is where sockets live: $XDG_RUNTIME_DIR/remotefs, or
// /tmp/remotefs-UID when XDG_RUNTIME_DIR is not set.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "remotefs")
	}
	return filepath.Join(os.TempDir(), "remotefs-"+strconv.Itoa(os.Getuid()))
}

// SocketPath is the control socket of the mount at mountpoint (absolute).
func SocketPath(mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(RuntimeDir(), hex.EncodeToString(h[:8])+".sock")
}

// Listen creates the socket for mountpoint, replacing a stale one.
func Listen(mountpoint string) (net.Listener, error) {
	dir := RuntimeDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("runtime directory %s: %w", dir, err)
		}
	}
	p := SocketPath(mountpoint)
	if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is already served by a running remotefs", mountpoint)
	}
	os.Remove(p)
	old := syscallUmask(0o177)
	l, err := net.Listen("unix", p)
	syscallUmask(old)
	if err != nil {
		return nil, err
	}
	os.Chmod(p, 0o600)
	return l, nil
}

// ErrNoDaemon: no daemon answers for that mountpoint.
var ErrNoDaemon = errors.New("no remotefs daemon serves this mountpoint")

// Call sends req to the daemon of mountpoint and returns its final reply;
// progress lines go to onProgress (may be nil).
func Call(ctx context.Context, mountpoint string, req Request, onProgress func(string)) (*Reply, error) {
	return CallSocket(ctx, SocketPath(mountpoint), req, onProgress)
}

// CallSocket is Call for a known socket path.
func CallSocket(ctx context.Context, sock string, req Request, onProgress func(string)) (*Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, ErrNoDaemon
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("bad reply from daemon: %w", err)
		}
		if r.Done {
			return &r, nil
		}
		if r.Progress != "" && onProgress != nil {
			onProgress(r.Progress)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the daemon closed the connection without answering")
}

// Serve answers requests on l with handle until l is closed.
//
// After l is closed, Serve waits for the requests in progress to be
// answered before it returns, so a daemon that waits for Serve never exits
// with a reply unsent (an unmount's reply is written after the unmount).
func Serve(l net.Listener, handle func(ctx context.Context, req Request, progress func(string)) Reply) {
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer c.Close()
			// Read through recvmsg so files passed with the request
			// (SCM_RIGHTS) are received, not dropped.
			in := &fileReader{c: c}
			defer in.closeUnclaimed()
			dec := json.NewDecoder(in)
			var req Request
			if err := dec.Decode(&req); err != nil {
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req.Stream = &Stream{in: in, dec: dec, enc: json.NewEncoder(c)}
			r := handle(ctx, req, func(p string) { req.Stream.Send(Reply{Progress: p}) })
			r.Done = true
			req.Stream.Send(r)
		}()
	}
}

// Statuses asks the daemon of mp, or of every mount of this user when mp
// is "", for its status; a socket that does not answer within timeout is
// left out (for mp: an error).
func Statuses(ctx context.Context, mp string, timeout time.Duration) ([]*Status, error) {
	socks := []string{SocketPath(mp)}
	if mp == "" {
		socks, _ = filepath.Glob(filepath.Join(RuntimeDir(), "*.sock"))
		sort.Strings(socks)
	}
	var all []*Status
	for _, s := range socks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		r, err := CallSocket(cctx, s, Request{Cmd: "status"}, nil)
		cancel()
		if err != nil || r.Status == nil {
			if mp != "" {
				return nil, fmt.Errorf("%s is not a remotefs mount", mp)
			}
			continue
		}
		all = append(all, r.Status)
	}
	return all, nil
}
