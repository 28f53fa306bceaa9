package alock

import (
	"errors"
	"time"

	"github.com/pgalock/alock/internal/core"
)

// Errors returned by this package and by alocksql. Match them with
// errors.Is: the errors returned wrap them with detail (which ids, which
// server error).
var (
	// ErrNotHeld: Release was called on a Lock that is not held.
	ErrNotHeld = core.ErrNotHeld

	// ErrLost: a lock that was held is not held any more although it was not
	// released: its session ended (closed, terminated by an administrator,
	// server restart, network failure) or the server reported it not held
	// when it was unlocked. Every lock of that session is gone.
	ErrLost = core.ErrLost

	// ErrDeadlock: the server chose this acquisition as the victim of a
	// deadlock (SQLSTATE 40P01), or, for a Session's Lock that polls because
	// another Lock of its session waits on the server, alock found it in a
	// cycle twice in a row (see Session). The Lock is not held; the session's other
	// locks are still held, and one of them is probably what the other
	// party waits for.
	ErrDeadlock = core.ErrDeadlock

	// ErrClosed: the Session was closed by Session.Close. Its locks ended
	// with it; this is not a loss, and errors wrapping ErrClosed do not
	// wrap ErrLost.
	ErrClosed = core.ErrClosed

	// ErrLockTimeout: an acquisition was ended by the lock_timeout the
	// session set (SQLSTATE 55P03). Nothing of it stays held.
	ErrLockTimeout = core.ErrLockTimeout

	// ErrStatementTimeout: an acquisition was ended by the statement_timeout
	// the session set (SQLSTATE 57014, "canceling statement due to statement
	// timeout"). Nothing of it stays held.
	ErrStatementTimeout = core.ErrStatementTimeout

	// ErrTooManyIDs: a Lock has more than MaxIDs distinct ids.
	ErrTooManyIDs = core.ErrTooManyIDs
)

// MaxIDs is the most distinct ids one Lock may have; Acquire and TryAcquire
// of a Lock with more return ErrTooManyIDs without contacting the server.
// Every held id takes an entry in the server's shared lock table, sized for
// max_locks_per_transaction × (max_connections + other backends) entries for
// the whole cluster (7,808 with PostgreSQL 15's defaults, and it can borrow
// spare shared memory beyond that); once it is full, no session can take any
// lock, nor can new sessions connect.
const MaxIDs = 64

// CleanupTimeout bounds the clean-up done after a caller's context has ended
// or an acquisition has failed: delivering a cancel request, waiting for the
// cancelled statement, and giving back what a failed acquisition took. A
// Release whose ctx has ended, or ends while it unlocks, is bounded by it
// too, as is the Release of Do; a Release under a context that can never end
// waits as long as the network does, like any pgx call. A session that
// cannot be brought to a known state within it is closed.
const CleanupTimeout = 5 * time.Second

// LostError is the error of an operation that found a Lock's hold lost: its
// session ended, or the server no longer held it. It wraps ErrLost and the
// cause, so errors.Is(err, ErrLost) holds; errors.As gives the ids.
type LostError struct {
	IDs []ID  // the Lock's ids
	Err error // what the operation saw, wrapping ErrLost and the cause
}

func (e *LostError) Error() string { return e.Err.Error() }

// Unwrap returns the error it wraps, which wraps ErrLost.
func (e *LostError) Unwrap() error { return e.Err }

// orLost is err, the cause a session ended with, or ErrLost when there is
// none (the server no longer held the lock).
func orLost(err error) error {
	if err != nil {
		return err
	}
	return ErrLost
}

// lostError wraps err in a *LostError for ids if it is a loss.
func lostError(ids []ID, err error) error {
	if err == nil || !errors.Is(err, ErrLost) {
		return err
	}
	var already *LostError
	if errors.As(err, &already) {
		return err
	}
	return &LostError{IDs: ids, Err: err}
}
