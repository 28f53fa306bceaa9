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
