package alock

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/pgxtext"
)

// pgxConn presents a *pgx.Conn to the core Lock. keysByRef: the batch
// statements' key arrays go to pgx by reference (see pgxtext.KeysByRef): a
// Session's, whose exec mode Open read once (pgx's Config copies the whole
// configuration, too dear for every statement).
type pgxConn struct {
	c         *pgx.Conn
	keysByRef bool
}

func (p pgxConn) Key() any { return p.c }

func (p pgxConn) Exec(ctx context.Context, sql string, args []any) error {
	_, err := p.c.Exec(ctx, sql, args...)
	return err
}

// QueryText runs a lock statement (see pgxtext).
func (p pgxConn) QueryText(ctx context.Context, sql string, args []any) (string, error) {
	if p.keysByRef {
		args = pgxtext.KeysByRef(args)
	}
	return pgxtext.QueryText(ctx, p.c, sql, args)
}

func (p pgxConn) CanCancel() bool { return true }

func (p pgxConn) Cancel(ctx context.Context) error { return p.c.PgConn().CancelRequest(ctx) }

func (p pgxConn) Closed() bool { return p.c.IsClosed() }

func (p pgxConn) Close(ctx context.Context) { _ = p.c.Close(ctx) }

func (p pgxConn) TxStatus() byte { return p.c.PgConn().TxStatus() }
