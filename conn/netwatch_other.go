//go:build !linux

package conn

import (
	"context"
	"errors"
)

// watchNetwork is Linux only (rtnetlink); elsewhere the Manager redials
// on its timer and on Redial.
func watchNetwork(ctx context.Context, changed func()) error {
	return errors.New("network change notifications are not supported on this system")
}
