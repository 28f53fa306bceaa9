package core

// Mode is the lock mode: Exclusive or Share. The values match alock.Mode.
type Mode uint8

// The two advisory lock modes.
const (
	Exclusive Mode = iota
	Share
)

// pgLocksMode is the value of pg_locks.mode for a lock held in m.
func (m Mode) pgLocksMode() string {
	if m == Share {
		return "ShareLock"
	}
	return "ExclusiveLock"
}

// suffix is the function name suffix PostgreSQL uses for m.
func (m Mode) suffix() string {
	if m == Share {
		return "_shared"
	}
	return ""
}
