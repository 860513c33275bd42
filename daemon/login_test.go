package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"remotefs/conn"
)

// The readiness socket between the daemon and `remotefs mount`: each round
// of the server's questions goes to the command as one "login" line and
// the answers come back; a command without a terminal makes the login fail
// as "login needed"; after the verdict nobody is asked any more.
func TestLoginRelay(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	daemonEnd, cliEnd := os.NewFile(uintptr(fds[0]), "d"), os.NewFile(uintptr(fds[1]), "c")
	defer cliEnd.Close()
	relay := newLoginRelay(daemonEnd)

	// The command's side, as start() plays it: answer the first round,
	// report no terminal for the second, then read the verdict.
	lines := make(chan string, 8)
	go func() {
		rd := bufio.NewReader(cliEnd)
		round := 0
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- strings.TrimSpace(line)
			payload, ok := strings.CutPrefix(line, "login ")
			if !ok {
				continue
			}
			var req conn.LoginRequest
			json.Unmarshal([]byte(payload), &req)
			a := loginAnswer{NoTerminal: true}
			if round++; round == 1 {
				a = loginAnswer{Answers: []string{"pw-" + req.User, "123456"}}
			}
			b, _ := json.Marshal(a)
			cliEnd.Write(append(b, '\n'))
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := conn.LoginRequest{Host: "alice@box", User: "alice", Questions: []conn.LoginQuestion{{Prompt: "Password: "}, {Prompt: "Code: ", Echo: true}}}
	relay.line("warning: forward 9999 not opened")
	got, err := relay.ask(ctx, req)
	if err != nil || strings.Join(got, ",") != "pw-alice,123456" {
		t.Fatalf("first round: %q, %v", got, err)
	}
	_, err = relay.ask(ctx, req)
	if !errors.Is(err, conn.ErrLoginNeeded) || !strings.Contains(err.Error(), "no terminal") {
		t.Fatalf("no terminal: %v", err)
	}
	relay.finish("ok")
	var le *conn.LoginNeededError
	if _, err := relay.ask(ctx, req); !errors.As(err, &le) || le.Host != "box" || le.Prompt != "Password:" {
		t.Fatalf("after the verdict: %v", err)
	}
	var seen []string
	for l := range lines {
		if !strings.HasPrefix(l, "login ") {
			seen = append(seen, l)
		}
	}
	if strings.Join(seen, "|") != "warning: forward 9999 not opened|ok" {
		t.Errorf("the command saw %q", seen)
	}
}
