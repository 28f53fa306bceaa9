// Package locktest is one behaviour suite for every Lock backend: the pgx
// core (package alock) and database/sql (package alocksql) over pgx's stdlib
// driver and lib/pq. Each backend's tests call Run, so the backends cannot
// drift apart. Every check asks the server (pg_locks for the backend pid),
// not only the library.
package locktest

import (
	"context"
	"testing"

	"github.com/pgalock/alock"
)

// Lock is what every backend's Lock offers.
type Lock interface {
	Acquire(ctx context.Context) error
	TryAcquire(ctx context.Context) (bool, error)
	Release(ctx context.Context) error
	Locked() bool
	Lost() <-chan struct{}
	Do(ctx context.Context, fn func(ctx context.Context) error) error
	IDs() []alock.ID
}

// Session is one database session of the backend under test.
type Session interface {
	// NewLock makes a Lock on the session.
	NewLock(mode alock.Mode, ids ...alock.ID) Lock
	// PID is the session's backend pid.
	PID() uint32
	// Exec runs SQL on the session itself (while no Lock uses it).
	Exec(ctx context.Context, sql string, args ...any) error
	// Closed reports whether the session is known to be closed.
	Closed() bool
	// Close ends the session (for database/sql: discards the connection).
	Close()
}

// Backend opens sessions of one kind.
type Backend struct {
	Name string
	// Open returns a session to the database of dsn, closed at the end of t.
	Open func(t *testing.T, dsn string) Session
}

// Run runs the whole suite against b, each test in parallel on a database
// of its own.
func Run(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"IDsTakenInOrderAndFailureLeavesNone", idsTakenInOrder},
		{"ReentrantCountsOnClient", reentrant},
		{"LocksOnOneSessionShareHolds", locksShareHolds},
		{"TryAcquireAllOrNothing", tryAllOrNothing},
		{"ZeroIDsCount", zeroIDs},
		{"TooManyIDs", tooManyIDs},
		{"DoReleasesOnErrorAndPanic", doReleases},
		{"DeadlineKeepsSessionAndOtherLocks", deadlineKeepsSession},
		{"CancelledContextSendsNothing", cancelledSendsNothing},
		{"DeadlockVictimKeepsOtherHolds", deadlockVictim},
		{"DeadlockWithPlainWaiter", deadlockWithPlainWaiter},
		{"ServerTimeoutsLeaveNothingHeld", serverTimeouts},
		{"KilledBackendWhileWaiting", killedWhileWaiting},
		{"ReleaseReportsLoss", releaseReportsLoss},
		{"ReleaseWithCancelledContextUnlocks", releaseCancelledCtx},
		{"GrantCancelRaceLeavesNoGhosts", grantCancelRace},
		{"GiveBackEveryIDKind", giveBackEveryIDKind},
		{"ContextCauseErrors", contextCause},
		{"LostChannelPerHold", lostChannelPerHold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newEnv(t, b))
		})
	}
}
