package core

import (
	"context"
	"errors"
)

// Conn is one database session as a driver adapter presents it to a Lock.
// Except for Cancel and Abort, its methods are called by one goroutine at a
// time, the one that owns the Lock.
type Conn interface {
	// Key identifies the session: two Conns with equal keys are the same
	// session and share their server-side holds (for pgx, the *pgx.Conn).
	Key() any
	// Exec runs a statement and discards its result. ctx is only cancelled to
	// abort the session (see run): the driver may then close the connection.
	Exec(ctx context.Context, sql string, args []any) error
	// QueryText runs a statement that returns one row with one text column and
	// returns it ("" for NULL).
	QueryText(ctx context.Context, sql string, args []any) (string, error)
	// CanCancel reports whether Cancel can interrupt a statement. Without it,
	// waits run in slices of the server's lock_timeout (see takeInSlices).
	CanCancel() bool
	// Cancel sends a cancel request for the statement in progress and returns
	// once the server has received it. Called from another goroutine.
	Cancel(ctx context.Context) error
	// Closed reports whether the session is known to be gone or aborted.
	Closed() bool
	// Close ends the session; used when its lock state is in doubt.
	Close(ctx context.Context)
	// TxStatus returns the transaction status byte of the last ReadyForQuery:
	// 'I' idle, 'T' in a transaction block, 'E' in a failed transaction block.
	TxStatus() byte
}

// SQLState returns the SQLSTATE of a server error from pgx or lib/pq (both
// have a SQLState method), or "".
func SQLState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}
