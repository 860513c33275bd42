package conn

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Interactive logins (keyboard-interactive and password authentication).
//
// The server's questions go to Options.Login exactly as the server sent
// them (name, instruction, each prompt and whether its answer may be
// shown); the answers go back to the server and nowhere else: conn keeps
// no copy, logs none, and asks again at the next connection. Without a
// Login function (a mount with no terminal to ask on, or a reconnect that
// nobody is present for) a server that asks a question makes Dial fail
// with an error wrapping ErrLoginNeeded, which is not ErrOffline: retrying
// by itself would only ask again. Manager then waits in the LoginNeeded
// state until Login is called.

// ErrLoginNeeded: the server asks for a password or other answers
// (keyboard-interactive) and there is nobody to ask. It is not ErrOffline.
var ErrLoginNeeded = errors.New("interactive login needed")

// LoginQuestion is one prompt of a login round.
type LoginQuestion struct {
	Prompt string `json:"prompt"` // as the server sent it, e.g. "Password: "
	Echo   bool   `json:"echo"`   // false: a secret, do not show what is typed
}

// LoginRequest is one round of questions from the server.
type LoginRequest struct {
	Host        string          `json:"host"` // the host as the user wrote it
	User        string          `json:"user"`
	Name        string          `json:"name,omitempty"`
	Instruction string          `json:"instruction,omitempty"`
	Questions   []LoginQuestion `json:"questions"`
}

// LoginFunc answers one round of questions: one answer per question, in
// order. An error ends the login (wrap ErrLoginNeeded when nobody can
// answer). It is called on the dialing goroutine, one round at a time,
// while the handshake's ConnectTimeout is suspended: a person is typing.
type LoginFunc func(ctx context.Context, req LoginRequest) ([]string, error)

// LoginNeededError: the server asked questions and there was no one to ask.
type LoginNeededError struct {
	Host, User string
	Prompt     string // the first question, e.g. "Password: "
}

func (e *LoginNeededError) Error() string {
	return fmt.Sprintf("%s@%s asks for an interactive login (%q) and there is no terminal to ask on", e.User, e.Host, e.Prompt)
}

func (e *LoginNeededError) Unwrap() error { return ErrLoginNeeded }

// interactiveAuth makes the keyboard-interactive and password methods for
// one hop. asked is set once the server has asked something (for
// messages); waiting is called with true while a person is answering, so
// the handshake timeout can be suspended.
type interactiveAuth struct {
	ctx     context.Context
	t       *Target
	login   LoginFunc
	asked   bool
	waiting func(bool)
}

func (ia *interactiveAuth) methods() []ssh.AuthMethod {
	return []ssh.AuthMethod{
		ssh.KeyboardInteractive(ia.challenge),
		ssh.PasswordCallback(func() (string, error) {
			_, host := splitUserHost(ia.t.Label)
			answers, err := ia.ask(LoginRequest{Questions: []LoginQuestion{{
				Prompt: fmt.Sprintf("%s@%s's password: ", ia.t.User, host)}}})
			if err != nil {
				return "", err
			}
			return answers[0], nil
		}),
	}
}

func (ia *interactiveAuth) challenge(name, instruction string, questions []string, echos []bool) ([]string, error) {
	if len(questions) == 0 {
		// sshd with PAM often ends with an empty round: nothing to ask,
		// but a message ("Duo push sent to your phone") is shown.
		if ia.login != nil && strings.TrimSpace(name+instruction) != "" {
			_, _ = ia.login(ia.ctx, LoginRequest{Host: ia.t.Label, User: ia.t.User, Name: name, Instruction: instruction})
		}
		return []string{}, nil
	}
	req := LoginRequest{Name: name, Instruction: instruction}
	for i, q := range questions {
		req.Questions = append(req.Questions, LoginQuestion{Prompt: q, Echo: i < len(echos) && echos[i]})
	}
	return ia.ask(req)
}

func (ia *interactiveAuth) ask(req LoginRequest) ([]string, error) {
	ia.asked = true
	_, host := splitUserHost(ia.t.Label)
	req.Host, req.User = ia.t.Label, ia.t.User
	if ia.login == nil {
		return nil, &LoginNeededError{Host: host, User: ia.t.User, Prompt: req.Questions[0].Prompt}
	}
	if ia.waiting != nil {
		ia.waiting(true)
		defer ia.waiting(false)
	}
	answers, err := ia.login(ia.ctx, req)
	if err != nil {
		return nil, err
	}
	if len(answers) != len(req.Questions) {
		return nil, fmt.Errorf("login to %s: %d answers to %d questions", ia.t.Label, len(answers), len(req.Questions))
	}
	return answers, nil
}
