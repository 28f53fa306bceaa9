package alocksql

import (
	"context"
	"database/sql"
	"slices"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/core"
)

// Lock is alock.Lock over a *sql.Conn: a set of advisory locks in one mode
// on one database session, acquired and released together and counted like
// a re-entrant mutex. Its methods keep alock.Lock's contracts word for word;
// read them there. What differs:
//
//   - The *sql.Conn pins one session of the pool; lock and unlock run on it.
//     (*sql.Conn).Close returns the session to the pool with its locks still
//     held, where the next borrower silently shares them: release every Lock
//     first, or hand the connection back with CloseConn, which refuses while
//     Locks hold on it.
//   - A connection whose lock state is in doubt is discarded (Raw returns
//     driver.ErrBadConn, so database/sql closes it), never pooled; every Lock
//     on it then reports ErrLost.
//   - With pgx's stdlib driver a cancelled wait sends a cancel request, as
//     alock.Lock does. With other drivers (lib/pq) a wait under a context
//     that can end runs in slices of the server's lock_timeout (50 to
//     100 ms): a cancellation is noticed within a slice, the waiter queues
//     again between slices (less fair), and the session's own lock_timeout
//     and statement_timeout bound the whole wait, not each slice (the wait
//     fails with ErrLockTimeout or ErrStatementTimeout). A deadlock is still reported (ErrDeadlock) soon after the
//     server's deadlock_timeout, but while one is suspected a slice lasts
//     deadlock_timeout plus 100 ms, and a cancellation is noticed only when
//     it ends (see the package documentation).
//   - Do not use a Lock while a *sql.Tx is open on the same *sql.Conn; use
//     LockTx for locks inside a transaction.
type Lock struct {
	core *core.Lock
	mode alock.Mode
	ids  []alock.ID
}

// NewExclusive returns an unheld Lock on conn over ids in Exclusive mode, as
// alock.NewExclusive; with a nil conn its methods return an error.
func NewExclusive(conn *sql.Conn, ids ...alock.ID) *Lock { return newLock(conn, alock.Exclusive, ids) }

// NewShare returns an unheld Lock on conn over ids in Share mode, as
// alock.NewShare.
func NewShare(conn *sql.Conn, ids ...alock.ID) *Lock { return newLock(conn, alock.Share, ids) }

func newLock(conn *sql.Conn, m alock.Mode, ids []alock.ID) *Lock {
	var c core.Conn // nil for a nil conn: the Lock's methods then say so
	if conn != nil {
		c = newSQLConn(conn)
	}
	ids = slices.Clone(ids)
	return &Lock{core: core.NewLock(c, describe(m, ids), core.Mode(m), tags(ids), core.Options{}), mode: m, ids: ids}
}

// describe returns the name of a lock in messages, built when called (for
// an error, or String).
func describe(m alock.Mode, ids []alock.ID) func() string {
	return func() string { return core.Describe(m.String(), ids) }
}

// Acquire is alock.Lock.Acquire.
func (l *Lock) Acquire(ctx context.Context) error { return l.core.Acquire(ctx) }

// TryAcquire is alock.Lock.TryAcquire.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) { return l.core.TryAcquire(ctx) }

// Release is alock.Lock.Release.
func (l *Lock) Release(ctx context.Context) error { return l.core.Release(ctx) }

// Locked is alock.Lock.Locked.
func (l *Lock) Locked() bool { return l.core.Locked() }

// Do is alock.Lock.Do.
func (l *Lock) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	return core.Do(ctx, l.core.Acquire, l.core.Release, fn)
}

// Lost is alock.Lock.Lost: closed when the Lock itself sees the loss.
func (l *Lock) Lost() <-chan struct{} { return l.core.Lost() }

// Mode returns the Lock's mode.
func (l *Lock) Mode() alock.Mode { return l.mode }

// IDs returns a copy of the ids the Lock was made with, duplicates included.
func (l *Lock) IDs() []alock.ID { return slices.Clone(l.ids) }

// String describes the Lock as alock.Lock.String does.
func (l *Lock) String() string { return describe(l.mode, l.ids)() }

// tags returns the core tags of ids.
func tags(ids []alock.ID) []core.Tag {
	out := make([]core.Tag, len(ids))
	for i, id := range ids {
		c, o, s := id.LockTag()
		out[i] = core.Tag{ClassID: c, ObjID: o, ObjSubID: s}
	}
	return out
}
