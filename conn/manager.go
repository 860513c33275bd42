package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// State is the connection state a Manager reports.
type State int

const (
	Offline State = iota
	Connecting
	Online
	// LoginNeeded: the server asks for a password or other answers
	// (keyboard-interactive) and nobody is there to answer. The Manager
	// does not redial by itself; Login does, with someone to ask.
	LoginNeeded
)

func (s State) String() string {
	switch s {
	case Offline:
		return "offline"
	case Connecting:
		return "connecting"
	case Online:
		return "online"
	case LoginNeeded:
		return "login needed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

const (
	minRedialDelay = time.Second
	maxRedialDelay = 30 * time.Second
	// stableAfter: a connection that lived this long resets the backoff.
	stableAfter = 30 * time.Second
	// redialEvery: the least time between two dials started by Redial (an
	// access that needs the server, a network change), so a storm of
	// accesses makes one dial, not a storm of them.
	redialEvery = 250 * time.Millisecond
	// dialStuckAfter: a dial that has received nothing for this long may
	// be stuck on a link that was dead when it started (its packets
	// lost); Redial then starts another beside it.
	dialStuckAfter = time.Second
	// maxDials: dials in flight at once; starting one more abandons the
	// oldest stuck one (nothing received for dialStuckAfter), else the
	// oldest once it has run abandonDialAfter: a slow handshake (a long
	// link, a jump host, a ProxyCommand) that is receiving must be able to
	// finish while accesses keep asking for the server.
	maxDials         = 3
	abandonDialAfter = 10 * time.Second
	// probeTimeout: after a network change, a live connection that does
	// not answer a keepalive within this (and receives nothing else) is
	// taken for dead.
	probeTimeout = 5 * time.Second
)

// Manager keeps a Client connected: after the first Connect (or
// StartOffline) it redials in the background whenever the connection dies,
// with exponential backoff (1s to 30s, jittered), and at once when Redial
// is called (an access that needs the server) or the machine's network
// changes (a new address or route, see netwatch_linux.go). It implements
// Remote by delegating to the current Client; while there is none every
// call fails at once with an error wrapping ErrOffline (the caller decides
// whether that call was worth a Redial: background work should not dial).
//
// Lock order: notifyMu before mu. mu is never held across network I/O or
// the onState callback.
type Manager struct {
	// Set at construction.
	spec    Spec
	opts    Options
	onState func(State, error)
	ctx     context.Context // canceled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background goroutines
	// kick asks the loop for a redial now (Redial); netChange says the
	// machine's network changed. Both hold at most one signal.
	kick, netChange chan struct{}

	// notifyMu serialises state changes with their onState call, so the
	// callback sees them in order.
	notifyMu sync.Mutex

	mu       sync.Mutex
	client   *Client   // guarded by mu; nil unless Online
	state    State     // guarded by mu
	since    time.Time // guarded by mu
	lastErr  error     // guarded by mu
	downAt   time.Time // guarded by mu: when it was last Online (zero while Online)
	redialer bool      // guarded by mu: the redial loop is running
	// relogin hands the loop a client connected by Login while it waits in
	// LoginNeeded.
	relogin chan *Client
	loginMu sync.Mutex // held by Login: one at a time
	closed  bool       // guarded by mu

	forwards *forwarder // set at construction when Options.Forwards; nil otherwise
}

var _ Remote = (*Manager)(nil)

// NewManager makes a Manager for spec; nothing is dialed until Connect or
// StartOffline. onState (may be nil) is called after every state change,
// one call at a time, from the goroutine that made the change; it must
// not block for long and must not call Connect, StartOffline or Close.
func NewManager(spec Spec, opts Options, onState func(State, error)) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{spec: spec, opts: opts.withDefaults(), onState: onState,
		ctx: ctx, cancel: cancel, state: Offline, since: time.Now(),
		kick: make(chan struct{}, 1), netChange: make(chan struct{}, 1), relogin: make(chan *Client)}
	if m.opts.Forwards && m.opts.SSH != SSHOpenSSH {
		// (With the user's ssh, ssh opens the forwards itself.)
		m.forwards = newForwarder(m.opts.Logger.With("host", spec.Host))
	}
	return m
}

// Connect dials synchronously and returns Dial's error. On success the
// Manager is Online and redials by itself when the connection dies; on
// failure it stays Offline (call StartOffline to keep trying).
func (m *Manager) Connect(ctx context.Context) error {
	m.mu.Lock()
	running := m.redialer
	m.mu.Unlock()
	if running {
		return errors.New("conn: Manager.Connect called after the Manager was started")
	}
	if err := m.setState(Connecting, nil, nil); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-m.ctx.Done(): // Close aborts a pending Connect
			stop()
		case <-ctx.Done():
		}
	}()
	c, err := Dial(ctx, m.spec, m.opts)
	if err != nil {
		m.setState(Offline, nil, err)
		return err
	}
	if err := m.setState(Online, c, nil); err != nil {
		c.Close()
		return err
	}
	m.startLoop(c)
	return nil
}

// StartOffline puts the Manager in the background-redial mode without
// waiting: it reports Offline (or Connecting) until a dial succeeds.
func (m *Manager) StartOffline() {
	if m.forwards != nil {
		// The forwards' local ports are held from now on, so they are
		// there (and listed) while the server is out of reach. Resolving
		// the configuration may run commands (Match exec): not here, so
		// a mount starting offline starts at once.
		m.mu.Lock()
		closed := m.closed
		if !closed {
			m.wg.Add(1)
		}
		m.mu.Unlock()
		if !closed {
			go func() {
				defer m.wg.Done()
				if t, err := Resolve(m.spec, m.opts); err == nil {
					m.forwards.start(t) // nothing once closed
				}
			}()
		}
	}
	m.startLoop(nil)
}

// Redial asks for a dial now, when there is no connection: something
// needs the server. It never blocks. Calls closer together than
// redialEvery make one dial, and a dial already in flight is not doubled
// unless it has been waiting for more than dialStuckAfter.
func (m *Manager) Redial() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// startLoop starts the background loop unless it runs already. c is the
// client just connected, or nil to begin by dialing.
func (m *Manager) startLoop(c *Client) {
	m.mu.Lock()
	if m.redialer || m.closed {
		m.mu.Unlock()
		return
	}
	m.redialer = true
	m.wg.Add(2)
	m.mu.Unlock()
	// Subscribed before the loop starts, so that a network change right
	// after connecting is not missed.
	watch, err := listenNetwork()
	go m.loop(c)
	go func() {
		defer m.wg.Done()
		if err == nil {
			err = watch(m.ctx, func() {
				select {
				case m.netChange <- struct{}{}:
				default:
				}
			})
		}
		if err != nil && m.ctx.Err() == nil {
			m.opts.Logger.Debug("not watching the network for changes", "err", err)
		}
	}()
}

// dialing is one dial in flight.
type dialing struct {
	start  time.Time
	cancel context.CancelFunc
	last   atomic.Int64 // UnixNano: start, or when bytes last came (dialProgressKey)
}

// stuck reports whether the dial has received nothing for dialStuckAfter:
// its packets went into a link that was dead when they were sent.
func (d *dialing) stuck() bool {
	return time.Since(time.Unix(0, d.last.Load())) >= dialStuckAfter
}

type dialResult struct {
	c   *Client
	err error
	d   *dialing
}

// loop keeps the connection: it waits for the current client to die, then
// redials with backoff, or at once on Redial and network changes, with up
// to maxDials dials in flight (one stuck on a dead link must not hold the
// next back), until Close.
func (m *Manager) loop(c *Client) {
	defer m.wg.Done()
	minDelay, maxDelay := m.opts.RedialMin, m.opts.RedialMax
	delay := minDelay
	connectedAt := time.Now()
	results := make(chan dialResult)
	var dials []*dialing // in flight, oldest first
	var lastKick time.Time
	netPending := false // a network change waits for the timer
	var timer *time.Timer
	var timerC <-chan time.Time
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
		}
		timer, timerC = nil, nil
	}
	// backoff schedules the next timed dial and lengthens the delay.
	backoff := func() {
		stopTimer()
		timer = time.NewTimer(jitter(delay))
		timerC = timer.C
		delay = min(delay*2, maxDelay)
	}
	defer func() {
		stopTimer()
		for _, d := range dials {
			d.cancel()
		}
	}()
	startDial := func() bool {
		if len(dials) >= maxDials {
			// Abandon the oldest dial that has heard nothing for a while
			// (stuck on a link that was dead), else the oldest once it has
			// run abandonDialAfter; a slow handshake that is receiving
			// goes on.
			i := slices.IndexFunc(dials, (*dialing).stuck)
			if i < 0 && time.Since(dials[0].start) >= abandonDialAfter {
				i = 0
			}
			if i < 0 {
				return true // enough dials in flight, all moving
			}
			dials[i].cancel() // its result is ignored
			dials = slices.Delete(dials, i, i+1)
		}
		ctx, cancel := context.WithCancel(m.ctx)
		d := &dialing{start: time.Now(), cancel: cancel}
		d.last.Store(d.start.UnixNano())
		ctx = context.WithValue(ctx, dialProgressKey{}, &d.last)
		dials = append(dials, d)
		if m.setState(Connecting, nil, nil) != nil {
			return false
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			nc, err := Dial(ctx, m.spec, m.opts)
			select {
			case results <- dialResult{nc, err, d}:
			case <-m.ctx.Done():
				if nc != nil {
					nc.Close()
				}
			}
		}()
		return true
	}
	// loginWait: a dial was asked for answers nobody could give; no dial
	// starts by itself until Login hands over a connection (relogin).
	loginWait := false
	var done <-chan struct{}
	if c != nil {
		done = c.Done()
	} else {
		backoff()
	}
	for {
		select {
		case <-m.ctx.Done():
			return
		case nc := <-m.relogin:
			if c != nil {
				nc.Close()
				continue
			}
			if m.setState(Online, nc, nil) != nil {
				nc.Close()
				return
			}
			c, done, connectedAt = nc, nc.Done(), time.Now()
			loginWait, delay = false, minDelay
			stopTimer()
			for _, d := range dials {
				d.cancel()
			}
			dials = nil
		case <-done:
			if m.setState(Offline, nil, c.Err()) != nil {
				return
			}
			if time.Since(connectedAt) >= stableAfter {
				delay = minDelay
			}
			c, done = nil, nil
			backoff()
		case <-timerC:
			timer, timerC = nil, nil
			if c == nil && (len(dials) == 0 || netPending) {
				netPending = false
				lastKick = time.Now()
				if !startDial() {
					return
				}
			}
		case <-m.kick:
			if c != nil || loginWait || time.Since(lastKick) < redialEvery {
				continue
			}
			if slices.ContainsFunc(dials, func(d *dialing) bool { return !d.stuck() }) {
				continue // a dial is young or hearing from the server
			}
			lastKick = time.Now()
			if !startDial() {
				return
			}
		case <-m.netChange:
			if loginWait {
				continue
			}
			if c != nil {
				// The connection may have died with the old network:
				// check it now rather than after the keepalive bound.
				m.opts.Logger.Info("network changed; checking the connection", "host", m.spec.Host)
				c.probeAfterChange(probeTimeout)
				continue
			}
			if wait := redialEvery - time.Since(lastKick); wait > 0 {
				// Changes come in bursts (address, then routes): dial
				// once the burst has settled a little.
				netPending = true
				stopTimer()
				timer = time.NewTimer(wait)
				timerC = timer.C
				continue
			}
			m.opts.Logger.Info("network changed; reconnecting now", "host", m.spec.Host)
			lastKick = time.Now()
			if !startDial() {
				return
			}
		case r := <-results:
			current := false
			for i, d := range dials {
				if d == r.d {
					dials = append(dials[:i], dials[i+1:]...)
					current = true
					break
				}
			}
			r.d.cancel()
			if r.err == nil {
				if c != nil || !current {
					r.c.Close()
					continue
				}
				if m.setState(Online, r.c, nil) != nil {
					r.c.Close()
					return
				}
				c, done, connectedAt = r.c, r.c.Done(), time.Now()
				stopTimer()
				for _, d := range dials {
					d.cancel()
				}
				dials = nil
				continue
			}
			if c != nil || !current || len(dials) > 0 {
				continue // another dial may still succeed
			}
			if errors.Is(r.err, ErrLoginNeeded) {
				// Redialing would only be asked again: wait for Login.
				if m.setState(LoginNeeded, nil, r.err) != nil {
					return
				}
				loginWait = true
				stopTimer()
				continue
			}
			if m.setState(Offline, nil, r.err) != nil {
				return
			}
			backoff()
		}
	}
}

// Login dials with login answering the server's questions, when the
// Manager waits in LoginNeeded, and on success hands the connection to the
// background loop (the Manager goes Online as after any reconnect). It
// returns Dial's error; on failure the Manager stays in LoginNeeded.
func (m *Manager) Login(ctx context.Context, login LoginFunc) error {
	if !m.loginMu.TryLock() {
		return fmt.Errorf("a login to %s is already in progress", m.spec.Host)
	}
	defer m.loginMu.Unlock()
	if st, _, _ := m.State(); st != LoginNeeded {
		return fmt.Errorf("%s needs no login now (%s)", m.spec.Host, st)
	}
	opts := m.opts
	opts.Login = login
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-m.ctx.Done():
			stop()
		case <-ctx.Done():
		}
	}()
	c, err := Dial(ctx, m.spec, opts)
	if err != nil {
		return err
	}
	select {
	case m.relogin <- c:
		return nil
	case <-m.ctx.Done():
		c.Close()
		return errManagerClosed
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

var errManagerClosed = fmt.Errorf("connection manager closed: %w", ErrOffline)

// setState records a state change and reports it. It fails once the
// Manager is closed.
func (m *Manager) setState(s State, c *Client, err error) error {
	m.notifyMu.Lock()
	defer m.notifyMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errManagerClosed
	}
	changed := m.state != s
	if changed && m.state == Online {
		m.downAt = time.Now()
	} else if s == Online {
		m.downAt = time.Time{}
	}
	m.state, m.client = s, c
	if changed {
		m.since = time.Now()
	}
	if err != nil || s == Online {
		m.lastErr = err
	}
	m.mu.Unlock()
	if m.forwards != nil {
		m.forwards.setClient(c)
	}
	if m.onState != nil && (changed || err != nil) {
		m.onState(s, err)
	}
	return nil
}

// State returns the current state, since when, and the last error (the
// last dial failure or why the connection died; nil once Online).
func (m *Manager) State() (State, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.since, m.lastErr
}

// OfflineSince is when the Manager was last Online, while it is not
// (offline and connecting alike); zero while Online or when it never was.
func (m *Manager) OfflineSince() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.downAt
}

// Client returns the current client, or nil when not Online.
func (m *Manager) Client() *Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.client
}

// Forwards lists the port forwards and their state (nil when
// Options.Forwards is off or the host has none).
func (m *Manager) Forwards() []ForwardStatus {
	if m.forwards == nil {
		return nil
	}
	return m.forwards.status()
}

// Spec is what the Manager connects to.
func (m *Manager) Spec() Spec { return m.spec }

// Close stops the background loop and closes the connection. It waits for
// the loop to end (a dial in progress is aborted).
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	c := m.client
	m.client = nil
	m.state, m.since = Offline, time.Now()
	m.mu.Unlock()
	m.cancel()
	if m.forwards != nil {
		m.forwards.close()
	}
	if c != nil {
		c.Close()
	}
	m.wg.Wait()
	return nil
}

// current returns the client to use, or an error wrapping ErrOffline.
func (m *Manager) current(op, path string) (*Client, error) {
	m.mu.Lock()
	c, lastErr, closed := m.client, m.lastErr, m.closed
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	var err error
	switch {
	case closed:
		err = errManagerClosed
	case lastErr != nil:
		err = &offlineError{host: m.spec.Host, cause: lastErr}
	default:
		err = &offlineError{host: m.spec.Host, cause: fmt.Errorf("not connected")}
	}
	return nil, &fs.PathError{Op: op, Path: path, Err: err}
}

// Lstat implements Remote.
func (m *Manager) Lstat(ctx context.Context, path string) (FileInfo, error) {
	c, err := m.current("lstat", path)
	if err != nil {
		return FileInfo{}, err
	}
	return c.Lstat(ctx, path)
}

// ReadDir implements Remote.
func (m *Manager) ReadDir(ctx context.Context, path string) ([]FileInfo, error) {
	c, err := m.current("readdir", path)
	if err != nil {
		return nil, err
	}
	return c.ReadDir(ctx, path)
}

// ReadLink implements Remote.
func (m *Manager) ReadLink(ctx context.Context, path string) (string, error) {
	c, err := m.current("readlink", path)
	if err != nil {
		return "", err
	}
	return c.ReadLink(ctx, path)
}

// ReadAt implements Remote.
func (m *Manager) ReadAt(ctx context.Context, path string, p []byte, off int64) (int, FileInfo, error) {
	c, err := m.current("read", path)
	if err != nil {
		return 0, FileInfo{}, err
	}
	return c.ReadAt(ctx, path, p, off)
}

// Fetch implements Remote.
func (m *Manager) Fetch(ctx context.Context, path string, w io.Writer) (FileInfo, error) {
	c, err := m.current("fetch", path)
	if err != nil {
		return FileInfo{}, err
	}
	return c.Fetch(ctx, path, w)
}

// PutAtomic implements Remote.
func (m *Manager) PutAtomic(ctx context.Context, path string, r io.Reader, mode fs.FileMode, mtime time.Time) (FileInfo, error) {
	c, err := m.current("put", path)
	if err != nil {
		return FileInfo{}, err
	}
	return c.PutAtomic(ctx, path, r, mode, mtime)
}

// Put implements Remote.
func (m *Manager) Put(ctx context.Context, path string, r io.Reader, o PutOptions) (PutResult, error) {
	c, err := m.current("put", path)
	if err != nil {
		return PutResult{}, err
	}
	return c.Put(ctx, path, r, o)
}

// Mkdir implements Remote.
func (m *Manager) Mkdir(ctx context.Context, path string, mode fs.FileMode) error {
	c, err := m.current("mkdir", path)
	if err != nil {
		return err
	}
	return c.Mkdir(ctx, path, mode)
}

// Remove implements Remote.
func (m *Manager) Remove(ctx context.Context, path string) error {
	c, err := m.current("remove", path)
	if err != nil {
		return err
	}
	return c.Remove(ctx, path)
}

// Rmdir implements Remote.
func (m *Manager) Rmdir(ctx context.Context, path string) error {
	c, err := m.current("rmdir", path)
	if err != nil {
		return err
	}
	return c.Rmdir(ctx, path)
}

// Rename implements Remote.
func (m *Manager) Rename(ctx context.Context, oldpath, newpath string) error {
	c, err := m.current("rename", oldpath)
	if err != nil {
		return err
	}
	return c.Rename(ctx, oldpath, newpath)
}

// Symlink implements Remote.
func (m *Manager) Symlink(ctx context.Context, target, path string) error {
	c, err := m.current("symlink", path)
	if err != nil {
		return err
	}
	return c.Symlink(ctx, target, path)
}

// Link implements Remote.
func (m *Manager) Link(ctx context.Context, oldpath, newpath string) error {
	c, err := m.current("link", newpath)
	if err != nil {
		return err
	}
	return c.Link(ctx, oldpath, newpath)
}

// Chmod implements Remote.
func (m *Manager) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	c, err := m.current("chmod", path)
	if err != nil {
		return err
	}
	return c.Chmod(ctx, path, mode)
}

// Chown implements Remote.
func (m *Manager) Chown(ctx context.Context, path string, uid, gid uint32) error {
	c, err := m.current("chown", path)
	if err != nil {
		return err
	}
	return c.Chown(ctx, path, uid, gid)
}

// HasLinkAttrs implements LinkAttrSetter for the current connection.
func (m *Manager) HasLinkAttrs() bool {
	m.mu.Lock()
	c := m.client
	m.mu.Unlock()
	return c != nil && c.HasLinkAttrs()
}

// Lchown implements LinkAttrSetter.
func (m *Manager) Lchown(ctx context.Context, path string, uid, gid uint32) error {
	c, err := m.current("lchown", path)
	if err != nil {
		return err
	}
	return c.Lchown(ctx, path, uid, gid)
}

// Lchtimes implements LinkAttrSetter.
func (m *Manager) Lchtimes(ctx context.Context, path string, atime, mtime time.Time) error {
	c, err := m.current("lchtimes", path)
	if err != nil {
		return err
	}
	return c.Lchtimes(ctx, path, atime, mtime)
}

// Owner implements OwnerReporter for the current connection.
func (m *Manager) Owner() (uid, gid uint32, ok bool) {
	m.mu.Lock()
	c := m.client
	m.mu.Unlock()
	if c == nil {
		return 0, 0, false
	}
	return c.Owner()
}

// Chtimes implements Remote.
func (m *Manager) Chtimes(ctx context.Context, path string, atime, mtime time.Time) error {
	c, err := m.current("chtimes", path)
	if err != nil {
		return err
	}
	return c.Chtimes(ctx, path, atime, mtime)
}

// Truncate implements Remote.
func (m *Manager) Truncate(ctx context.Context, path string, size int64) error {
	c, err := m.current("truncate", path)
	if err != nil {
		return err
	}
	return c.Truncate(ctx, path, size)
}

// StatFS implements Remote.
func (m *Manager) StatFS(ctx context.Context, path string) (StatFS, error) {
	c, err := m.current("statfs", path)
	if err != nil {
		return StatFS{}, err
	}
	return c.StatFS(ctx, path)
}

// Exec runs cmd on the current connection (see Client.Exec).
func (m *Manager) Exec(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c, err := m.current("exec", cmd)
	if err != nil {
		return -1, err
	}
	return c.Exec(ctx, cmd, stdin, stdout, stderr)
}
