package alocksql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "github.com/lib/pq"              // registers "postgres"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// drivers are the database/sql drivers the adapter is tested with.
var drivers = []string{"pgx", "postgres"}

// TestBehaviour runs the behaviour suite shared with package alock against
// Locks on a *sql.Conn, over each driver.
func TestBehaviour(t *testing.T) {
	t.Parallel()
	for _, name := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			locktest.Run(t, locktest.Backend{Name: name, Open: func(t *testing.T, dsn string) locktest.Session {
				return openSession(t, name, dsn)
			}})
		})
	}
}

// sqlSession is a *sql.Conn as a locktest.Session.
type sqlSession struct {
	db  *sql.DB
	c   *sql.Conn
	pid uint32
}

// openSession pins one connection of a fresh pool of driverName.
func openSession(t testing.TB, driverName, dsn string) *sqlSession {
	t.Helper()
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := db.Conn(ctx)
	if err != nil {
		pgtest.Fatalf(t, "%s: pin a connection: %v", driverName, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s := &sqlSession{db: db, c: c}
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&s.pid); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sqlSession) NewLock(m alock.Mode, ids ...alock.ID) locktest.Lock {
	if m == alock.Share {
		return alocksql.NewShare(s.c, ids...)
	}
	return alocksql.NewExclusive(s.c, ids...)
}

func (s *sqlSession) PID() uint32 { return s.pid }

func (s *sqlSession) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := s.c.ExecContext(ctx, sql, args...)
	return err
}

func (s *sqlSession) Closed() bool { return s.c.Raw(func(any) error { return nil }) != nil }

func (s *sqlSession) Close() {
	_ = s.c.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.c.Close()
}

// TestTxBehaviour runs the transaction-lock suite against LockTx on a
// *sql.Tx, over each driver.
func TestTxBehaviour(t *testing.T) {
	t.Parallel()
	for _, name := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			locktest.RunTx(t, locktest.TxBackend{Name: name, Begin: func(t *testing.T, dsn string) (func() locktest.Tx, uint32) {
				s := openSession(t, name, dsn)
				return func() locktest.Tx {
					tx, err := s.c.BeginTx(context.Background(), nil)
					if err != nil {
						t.Fatal(err)
					}
					return sqlTx{tx}
				}, s.pid
			}})
		})
	}
}

// sqlTx is a *sql.Tx as a locktest.Tx.
type sqlTx struct{ tx *sql.Tx }

func (s sqlTx) LockTx(ctx context.Context, ids ...alock.ID) error {
	return alocksql.LockTx(ctx, s.tx, alock.Exclusive, ids...)
}

func (s sqlTx) Exec(ctx context.Context, sql string) error {
	_, err := s.tx.ExecContext(ctx, sql)
	return err
}

func (s sqlTx) Rollback() error { return s.tx.Rollback() }
