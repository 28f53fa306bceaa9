package alock

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// pgxConn presents a *pgx.Conn to the core Lock.
type pgxConn struct{ c *pgx.Conn }

func (p pgxConn) Key() any { return p.c }

func (p pgxConn) Exec(ctx context.Context, sql string, args []any) error {
	_, err := p.c.Exec(ctx, sql, args...)
	return err
}

func (p pgxConn) QueryText(ctx context.Context, sql string, args []any) (string, error) {
	var s *string
	if err := p.c.QueryRow(ctx, sql, args...).Scan(&s); err != nil || s == nil {
		return "", err
	}
	return *s, nil
}

func (p pgxConn) CanCancel() bool { return true }

func (p pgxConn) Cancel(ctx context.Context) error { return p.c.PgConn().CancelRequest(ctx) }

func (p pgxConn) Closed() bool { return p.c.IsClosed() }

func (p pgxConn) Close(ctx context.Context) { _ = p.c.Close(ctx) }

func (p pgxConn) TxStatus() byte { return p.c.PgConn().TxStatus() }
