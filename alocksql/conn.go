package alocksql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pgalock/alock/internal/pgxtext"
)

// sqlConn presents a *sql.Conn to the core Lock. database/sql allows the
// driver connection to be used only inside (*sql.Conn).Raw, so sqlConn keeps
// nothing of it: with pgx's stdlib driver it keeps a cancel-only PgConn made
// of copies (see cancelOnly) for cancel requests, and reads the transaction
// status and whether the connection is closed inside Raw each time. With
// other drivers (lib/pq) waits run in slices of the server's lock_timeout,
// the session is assumed outside a transaction block, and a lock statement
// goes with its ids written in (see withLiterals).
type sqlConn struct {
	c      *sql.Conn
	cancel *pgconn.PgConn // nil unless the driver is pgx's stdlib
}

func newSQLConn(c *sql.Conn) sqlConn {
	s := sqlConn{c: c}
	_ = c.Raw(func(dc any) error {
		if sc, ok := dc.(*stdlib.Conn); ok {
			s.cancel = cancelOnly(sc)
		}
		return nil
	})
	return s
}

// errClosed makes Raw report a pgx connection that is closed.
var errClosed = errors.New("alock: connection closed")

func (s sqlConn) Key() any { return s.c }

func (s sqlConn) Exec(ctx context.Context, sql string, args []any) error {
	_, err := s.c.ExecContext(ctx, sql, args...)
	return err
}

// QueryText runs a lock statement: with pgx's stdlib driver on the
// *pgx.Conn itself, inside Raw (the hot path; database/sql allows it there),
// else through database/sql.
func (s sqlConn) QueryText(ctx context.Context, query string, args []any) (string, error) {
	if s.cancel != nil {
		var text string
		err := s.c.Raw(func(dc any) (err error) {
			text, err = pgxtext.QueryText(ctx, dc.(*stdlib.Conn).Conn(), query, args)
			return err
		})
		return text, err
	}
	if q, ok := withLiterals(query, args); ok {
		query, args = q, nil
	}
	var text sql.NullString
	err := s.c.QueryRowContext(ctx, query, args...).Scan(&text)
	return text.String, err
}

func (s sqlConn) CanCancel() bool { return s.cancel != nil }

func (s sqlConn) Cancel(ctx context.Context) error { return s.cancel.CancelRequest(ctx) }

// Closed reports a *sql.Conn that was closed or discarded (Raw then fails),
// or whose pgx connection is closed.
func (s sqlConn) Closed() bool {
	return s.c.Raw(func(dc any) error {
		if sc, ok := dc.(*stdlib.Conn); ok && sc.Conn().IsClosed() {
			return errClosed
		}
		return nil
	}) != nil
}

// Close discards the connection: database/sql closes it instead of pooling
// it, so the session and its locks end.
func (s sqlConn) Close(context.Context) {
	_ = s.c.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.c.Close()
}

func (s sqlConn) TxStatus() byte {
	status := byte('I')
	_ = s.c.Raw(func(dc any) error {
		if sc, ok := dc.(*stdlib.Conn); ok {
			status = sc.Conn().PgConn().TxStatus()
		}
		return nil
	})
	return status
}

// sqlTx presents a *sql.Tx to the core's transaction locks. database/sql
// gives no way to the driver connection of a Tx, so no cancel requests:
// waits run in slices of the server's lock_timeout.
type sqlTx struct{ tx *sql.Tx }

func (s sqlTx) Key() any { return s.tx }

func (s sqlTx) Exec(ctx context.Context, sql string, args []any) error {
	_, err := s.tx.ExecContext(ctx, sql, args...)
	return err
}

func (s sqlTx) QueryText(ctx context.Context, query string, args []any) (string, error) {
	var text sql.NullString
	err := s.tx.QueryRowContext(ctx, query, args...).Scan(&text)
	return text.String, err
}

func (s sqlTx) CanCancel() bool              { return false }
func (s sqlTx) Cancel(context.Context) error { return nil }
func (s sqlTx) Closed() bool                 { return false }
func (s sqlTx) Close(context.Context)        { _ = s.tx.Rollback() }
func (s sqlTx) TxStatus() byte               { return 'T' }
