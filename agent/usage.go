package agent

import "errors"

// ErrUsage: a server-side command was run with a malformed command line
// (the mount never does that; a person typing it might).
var ErrUsage = errors.New("usage")

type usageError string

func (e usageError) Error() string        { return string(e) }
func (e usageError) Is(target error) bool { return target == ErrUsage }

func usageErr(msg string) error { return usageError(msg) }
