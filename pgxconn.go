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

// QueryText reads the text column's bytes as they come (a text value is the
// same in either format), without a scan plan: the lock statements are on
// the hot path.
func (p pgxConn) QueryText(ctx context.Context, sql string, args []any) (string, error) {
	rows, err := p.c.Query(ctx, sql, args...)
	if err != nil {
		return "", err
	}
	var s string
	found := rows.Next()
	if found {
		if v := rows.RawValues(); len(v) > 0 {
			s = string(v[0])
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	if !found {
		return "", pgx.ErrNoRows
	}
	return s, nil
}

func (p pgxConn) CanCancel() bool { return true }

func (p pgxConn) Cancel(ctx context.Context) error { return p.c.PgConn().CancelRequest(ctx) }

func (p pgxConn) Closed() bool { return p.c.IsClosed() }

func (p pgxConn) Close(ctx context.Context) { _ = p.c.Close(ctx) }

func (p pgxConn) TxStatus() byte { return p.c.PgConn().TxStatus() }
