//go:build !linux

package alock

import (
	"net"
	"time"
)

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's.
func setUserTimeout(*net.TCPConn, time.Duration) {}

// sinceHeard is not available: the link watch does nothing.
func sinceHeard(*net.TCPConn) (time.Duration, bool, bool) { return 0, false, false }
