package alock_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestBehaviour runs the behaviour suite shared with alocksql against
// Locks on a *pgx.Conn.
func TestBehaviour(t *testing.T) {
	t.Parallel()
	locktest.Run(t, locktest.Backend{Name: "pgx", Open: openPgx})
}

// pgxSession is a *pgx.Conn as a locktest.Session.
type pgxSession struct{ c *pgx.Conn }

func openPgx(t *testing.T, dsn string) locktest.Session { return pgxSession{pgtest.Connect(t, dsn)} }

func (s pgxSession) NewLock(m alock.Mode, ids ...alock.ID) locktest.Lock {
	if m == alock.Share {
		return alock.NewShare(s.c, ids...)
	}
	return alock.NewExclusive(s.c, ids...)
}

func (s pgxSession) PID() uint32 { return s.c.PgConn().PID() }

func (s pgxSession) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := s.c.Exec(ctx, sql, args...)
	return err
}

func (s pgxSession) Closed() bool { return s.c.IsClosed() }

func (s pgxSession) Close() { _ = s.c.Close(context.Background()) }

// TestTxBehaviour runs the transaction-lock suite against LockTx on a pgx.Tx.
func TestTxBehaviour(t *testing.T) {
	t.Parallel()
	locktest.RunTx(t, locktest.TxBackend{Name: "pgx", Begin: func(t *testing.T, dsn string) (func() locktest.Tx, uint32) {
		c := pgtest.Connect(t, dsn)
		return func() locktest.Tx {
			tx, err := c.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return pgxTx{tx}
		}, c.PgConn().PID()
	}})
}

// pgxTx is a pgx.Tx as a locktest.Tx.
type pgxTx struct{ tx pgx.Tx }

func (p pgxTx) LockTx(ctx context.Context, ids ...alock.ID) error {
	return alock.LockTx(ctx, p.tx, alock.Exclusive, ids...)
}

func (p pgxTx) Exec(ctx context.Context, sql string) error {
	_, err := p.tx.Exec(ctx, sql)
	return err
}

func (p pgxTx) Rollback() error { return p.tx.Rollback(context.Background()) }
