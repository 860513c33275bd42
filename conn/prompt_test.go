package conn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// kbdServer is an in-process SSH server that logs in with
// keyboard-interactive only (a password, then a code, as PAM stacks ask)
// and serves SFTP. The real-sshd version of these tests, with PAM, is in
// e2e (it needs root); this one runs everywhere.
type kbdServer struct {
	addr    string
	hostPub ssh.PublicKey
	dir     string

	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

const kbdPassword, kbdCode = "hunter2", "123456"

func startKbdServer(t *testing.T) *kbdServer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		KeyboardInteractiveCallback: func(c ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			a, err := ask("", "", []string{"Password: "}, []bool{false})
			if err != nil || len(a) != 1 || a[0] != kbdPassword {
				return nil, errors.New("wrong password")
			}
			// A message round with no question, then the code, echoed.
			if _, err := ask("", "A code was sent to your phone.", nil, nil); err != nil {
				return nil, err
			}
			a, err = ask("Two-factor", "Enter the code.", []string{"Verification code: "}, []bool{true})
			if err != nil || len(a) != 1 || a[0] != kbdCode {
				return nil, errors.New("wrong code")
			}
			return &ssh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &kbdServer{addr: ln.Addr().String(), hostPub: signer.PublicKey(), dir: t.TempDir()}
	t.Cleanup(func() {
		ln.Close()
		s.dropAll()
	})
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nc)
			s.mu.Unlock()
			go s.serve(nc, cfg)
		}
	}()
	return s
}

func (s *kbdServer) serve(nc net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		nc.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, in, err := nch.Accept()
		if err != nil {
			continue
		}
		go func() {
			for req := range in {
				ok := req.Type == "subsystem" && string(req.Payload[4:]) == "sftp"
				req.Reply(ok, nil)
				if ok {
					go func() {
						srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(s.dir))
						if err == nil {
							srv.Serve()
						}
						ch.Close()
					}()
				}
			}
		}()
	}
}

// dropAll cuts every connection, as a lost link does.
func (s *kbdServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func (s *kbdServer) opts(t *testing.T) Options {
	t.Helper()
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	host, port, _ := net.SplitHostPort(s.addr)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(fmt.Sprintf(
		"Host kbd\n  HostName %s\n  Port %s\n  User alice\n  IdentityAgent none\n  IdentityFile ~/.ssh/none\n  GlobalKnownHostsFile /dev/null\n", host, port)), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(s.hostPub))), 0o600)
	return Options{Home: home, SystemConfigFile: "none", Logger: quietLogger, ConnectTimeout: 2 * time.Second}
}

// answerer answers like a person at a terminal and records what it saw.
type answerer struct {
	mu     sync.Mutex
	rounds []LoginRequest
	pw     string
}

func (a *answerer) login(ctx context.Context, req LoginRequest) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rounds = append(a.rounds, req)
	var out []string
	for _, q := range req.Questions {
		switch q.Prompt {
		case "Password: ":
			out = append(out, a.pw)
		default:
			out = append(out, kbdCode)
		}
	}
	return out, nil
}

func TestKeyboardInteractiveDial(t *testing.T) {
	s := startKbdServer(t)
	opts := s.opts(t)

	// Nobody to ask: ErrLoginNeeded, not offline, naming the prompt.
	_, err := dialSpec(t, "kbd:", opts)
	wantDialError(t, err, ErrLoginNeeded, "alice@kbd", `"Password: "`)
	if errors.Is(err, ErrOffline) {
		t.Errorf("login needed counts as offline: %v", err)
	}

	// The questions arrive exactly as sent, message rounds included.
	a := &answerer{pw: kbdPassword}
	opts.Login = a.login
	c, err := dialSpec(t, "kbd:", opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	want := []LoginRequest{
		{Host: "kbd", User: "alice", Questions: []LoginQuestion{{Prompt: "Password: "}}},
		{Host: "kbd", User: "alice", Instruction: "A code was sent to your phone."},
		{Host: "kbd", User: "alice", Name: "Two-factor", Instruction: "Enter the code.", Questions: []LoginQuestion{{Prompt: "Verification code: ", Echo: true}}},
	}
	if fmt.Sprint(a.rounds) != fmt.Sprint(want) {
		t.Errorf("rounds asked:\n%+v\nwant:\n%+v", a.rounds, want)
	}

	// A wrong answer is an authentication failure.
	opts.Login = (&answerer{pw: "wrong"}).login
	_, err = dialSpec(t, "kbd:", opts)
	wantDialError(t, err, ErrAuth, "keyboard-interactive")
}

// A reconnect that is asked again waits in LoginNeeded (no redial loop
// asks again by itself) until Login, which brings the Manager online.
func TestManagerLoginNeeded(t *testing.T) {
	s := startKbdServer(t)
	opts := s.opts(t)
	var connected atomic.Bool
	a := &answerer{pw: kbdPassword}
	opts.Login = func(ctx context.Context, req LoginRequest) ([]string, error) {
		if connected.Load() {
			// Only the first login has someone at the terminal.
			return nil, &LoginNeededError{Host: req.Host, User: req.User}
		}
		return a.login(ctx, req)
	}
	spec, _ := ParseSpec("kbd:")
	states := make(chan State, 32)
	m := NewManager(spec, opts, func(st State, err error) { states <- st })
	defer m.Close()
	if err := m.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	connected.Store(true)
	if err := m.Login(context.Background(), a.login); err == nil {
		t.Errorf("Login while online succeeded")
	}
	s.dropAll()
	waitState(t, states, LoginNeeded, 10*time.Second)
	_, _, lastErr := m.State()
	if !errors.Is(lastErr, ErrLoginNeeded) {
		t.Errorf("last error %v", lastErr)
	}
	time.Sleep(3 * time.Second) // past the first redial delays: nothing dials by itself
	if st, _, _ := m.State(); st != LoginNeeded {
		t.Fatalf("state %v after 3s, want login needed", st)
	}
	if _, err := m.Lstat(context.Background(), ""); !errors.Is(err, ErrOffline) {
		t.Errorf("call while login needed: %v, want offline", err)
	}
	if err := m.Login(context.Background(), (&answerer{pw: "wrong"}).login); !errors.Is(err, ErrAuth) {
		t.Errorf("Login with a wrong password: %v", err)
	}
	if err := m.Login(context.Background(), a.login); err != nil {
		t.Fatal(err)
	}
	waitState(t, states, Online, 10*time.Second)
	if _, err := m.Lstat(context.Background(), ""); err != nil {
		t.Errorf("call after Login: %v", err)
	}
}
