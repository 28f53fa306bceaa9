package alocksql

import (
	"context"
	"database/sql"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/core"
)

// LockTx is alock.LockTx over a *sql.Tx: it takes ids in mode until tx
// ends, waiting under a savepoint so that a failed wait leaves tx usable.
// database/sql gives no way to cancel a statement without closing its
// connection, so a wait under a context that can end runs in slices of the
// server's lock_timeout (50 to 100 ms, or deadlock_timeout plus 100 ms while
// a deadlock is suspected), as Lock does with lib/pq; the transaction's own
// lock_timeout is restored after each slice. A deadlock returns an error
// wrapping alock.ErrDeadlock, after which tx holds what it held before and
// is usable. A nil tx is an error.
func LockTx(ctx context.Context, tx *sql.Tx, mode alock.Mode, ids ...alock.ID) error {
	return core.LockTx(ctx, txConn(tx), core.Mode(mode), tags(ids), describe(mode, ids))
}

// TryLockTx is alock.TryLockTx over a *sql.Tx: every id or none, without
// waiting, in three round trips.
func TryLockTx(ctx context.Context, tx *sql.Tx, mode alock.Mode, ids ...alock.ID) (bool, error) {
	return core.TryLockTx(ctx, txConn(tx), core.Mode(mode), tags(ids), describe(mode, ids))
}

// txConn returns tx as a core.Conn, nil for a nil tx.
func txConn(tx *sql.Tx) core.Conn {
	if tx == nil {
		return nil
	}
	return sqlTx{tx}
}
