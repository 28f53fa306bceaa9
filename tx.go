package alock

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// ErrNoTransaction: a transaction lock was asked for outside a transaction
// block, where PostgreSQL would release it at the end of the statement.
var ErrNoTransaction = core.ErrNoTransaction

// LockTx takes ids in mode until tx ends: pg_advisory_xact_lock, or
// pg_advisory_xact_lock_shared for Share. There is no release: COMMIT or
// ROLLBACK ends the locks, and so does a ROLLBACK TO a savepoint taken
// before LockTx (pgx's nested Tx.Rollback). Taking an id twice in one
// transaction is harmless.
//
// LockTx waits under a savepoint of its own, in one round trip when nothing
// fails. If the wait fails (ctx ends, deadlock, lock_timeout, statement
// timeout) it rolls back to that savepoint, which releases every id the
// wait took, and returns an error (wrapping ctx.Err() and its cause, or
// ErrDeadlock, as Acquire does) with tx still usable and the connection open. If ctx ends
// as the locks are granted, LockTx returns nil: they are held until tx ends.
// If even the rollback fails, the error says the transaction is aborted. A
// tx that is not in a transaction block returns ErrNoTransaction, and a nil
// tx an error saying so.
func LockTx(ctx context.Context, tx pgx.Tx, mode Mode, ids ...ID) error {
	return core.LockTx(ctx, txConn(tx), core.Mode(mode), tags(ids), describeLock(mode, ids))
}

// TryLockTx takes every id in mode until tx ends, or none, without waiting:
// false means none of ids is held in tx, although another session may hold
// only some of them. It costs three round trips (a savepoint, the tries, and
// its release or rollback). Errors are as for LockTx.
func TryLockTx(ctx context.Context, tx pgx.Tx, mode Mode, ids ...ID) (bool, error) {
	return core.TryLockTx(ctx, txConn(tx), core.Mode(mode), tags(ids), describeLock(mode, ids))
}

// txConn returns the connection of tx, nil for a nil tx.
func txConn(tx pgx.Tx) core.Conn {
	if tx == nil {
		return nil
	}
	return pgxConn{c: tx.Conn()}
}
