package alocksql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pgalock/alock/internal/core"
)

// ErrStillHeld: CloseConn was asked to return a connection to its pool while
// Locks still hold locks on it.
var ErrStillHeld = errors.New("alock: connection still holds locks")

// CloseConn hands conn back to its pool only if its session holds no
// advisory lock, which (*sql.Conn).Close does not check.
//
// If Locks of this package still hold locks on conn, CloseConn returns an
// error wrapping ErrStillHeld and leaves conn open: release them first.
// Otherwise it asks the server, so that locks taken on conn with plain SQL
// are found too; if any is held, or the question cannot be answered, it
// discards the connection (database/sql closes it, ending the session and
// its locks) and says so in its error. It returns nil when conn went back
// to the pool clean, and an error for a nil conn.
func CloseConn(ctx context.Context, conn *sql.Conn) error {
	if conn == nil {
		return errors.New("alock: close connection: the connection is nil")
	}
	if n := core.HoldCount(conn); n > 0 {
		return fmt.Errorf("alock: close connection: %w (%d ids)", ErrStillHeld, n)
	}
	var n int
	err := conn.QueryRowContext(ctx,
		"SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").Scan(&n)
	if err != nil || n > 0 {
		newSQLConn(conn).Close(ctx)
		if err == nil {
			err = fmt.Errorf("%d advisory locks taken outside this package", n)
		}
		return fmt.Errorf("alock: close connection: discarded instead of pooled: %w", err)
	}
	return conn.Close()
}
