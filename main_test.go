package alock_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// session is one test connection with the database it belongs to.
type session struct {
	*pgx.Conn
	dsn string
}

// newSessions returns n connections to one fresh database.
func newSessions(t *testing.T, n int) []session {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	out := make([]session, n)
	for i := range out {
		out[i] = session{pgtest.Connect(t, dsn), dsn}
	}
	return out
}

// hold renders a granted server hold as "Key(1)/exclusive".
func hold(id alock.ID, m alock.Mode) string { return locktest.Hold(id, m) }

// serverHolds returns the server's view of what s holds (pg_locks for its
// backend), rendered like hold, with waiting rows marked "(waiting)".
func serverHolds(t *testing.T, s session) []string {
	return locktest.Holds(t, s.dsn, s.PgConn().PID())
}

// expectHolds fails the test unless the server shows exactly want for s.
func expectHolds(t *testing.T, s session, want ...string) {
	t.Helper()
	got := serverHolds(t, s)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		pgtest.Fatalf(t, "pg_locks for pid %d: got %v, want %v", s.PgConn().PID(), got, want)
	}
}

// mustAcquire acquires l or fails the test.
func mustAcquire(t *testing.T, l *alock.Lock) {
	t.Helper()
	if err := l.Acquire(context.Background()); err != nil {
		pgtest.Fatalf(t, "Acquire %v: %v", l.IDs(), err)
	}
}

// mustRelease releases l or fails the test.
func mustRelease(t *testing.T, l *alock.Lock) {
	t.Helper()
	if err := l.Release(context.Background()); err != nil {
		pgtest.Fatalf(t, "Release %v: %v", l.IDs(), err)
	}
}

// exec runs sql on s or fails the test.
func exec(t *testing.T, s session, sql string, args ...any) {
	t.Helper()
	if _, err := s.Exec(context.Background(), sql, args...); err != nil {
		pgtest.Fatalf(t, "%s: %v", strings.Fields(sql)[0], err)
	}
}

// begin starts a transaction (or, on a pgx.Tx, a savepoint) or fails the test.
func begin(t *testing.T, b interface {
	Begin(context.Context) (pgx.Tx, error)
}) pgx.Tx {
	t.Helper()
	tx, err := b.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tx
}
