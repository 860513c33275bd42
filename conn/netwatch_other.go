//go:build !linux

package conn

import (
	"context"
	"errors"
)

// listenNetwork is Linux only (rtnetlink); elsewhere the Manager redials
// on its timer and on Redial.
func listenNetwork() (func(ctx context.Context, changed func()) error, error) {
	return nil, errors.New("network change notifications are not supported on this system")
}
