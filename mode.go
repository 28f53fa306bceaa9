package alock

import "strconv"

// Mode is an advisory lock mode.
type Mode uint8

const (
	// Exclusive conflicts with every other session's hold of the same id,
	// exclusive or share (pg_advisory_lock).
	Exclusive Mode = iota
	// Share coexists with other sessions' share holds and conflicts with
	// exclusive ones (pg_advisory_lock_shared).
	Share
)

// String returns "exclusive" or "share".
func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case Share:
		return "share"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}
