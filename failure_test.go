package alock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestAcquireInTransactionKeepsItUsable(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	ctx := context.Background()
	tx := begin(t, s[0])
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '100ms'"); err != nil {
		t.Fatal(err)
	}
	got := alock.NewExclusive(s[0].Conn, alock.Key(1))
	mustAcquire(t, got)
	if err := alock.NewExclusive(s[0].Conn, alock.Key(3), alock.Key(2)).Acquire(ctx); err == nil {
		t.Fatal("Acquire of a held id succeeded")
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("transaction unusable after a failed Acquire: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Session locks ignore the rollback.
	expectHolds(t, s[0], hold(alock.Key(1), alock.Exclusive))
	mustRelease(t, got)
	expectHolds(t, s[0])
}

func TestReleaseInFailedTransactionClosesSession(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	ctx := context.Background()
	l := alock.NewExclusive(s[0].Conn, alock.Key(1))
	mustAcquire(t, l)
	tx := begin(t, s[0])
	_, _ = tx.Exec(ctx, "SELECT 1/0")
	if err := l.Release(ctx); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release in a failed transaction: %v, want ErrLost", err)
	}
	if !s[0].IsClosed() {
		t.Fatal("connection still open with its lock state in doubt")
	}
	// The lock died with the session: another session gets it.
	var ok bool
	pgtest.WaitFor(t, "Key(1) to be free", func() bool {
		return s[1].QueryRow(ctx, "SELECT pg_try_advisory_lock(1)").Scan(&ok) == nil && ok
	})
}

// TestFailedAcquireKeepsPlainSQLLock: a failed Acquire gives back only
// what its statement took. It waits for Key(6), held elsewhere, and never
// reaches Key(5), which the program holds on the same connection with
// plain SQL: Key(5) stays held (the give-back released every id the
// server showed held).
func TestFailedAcquireKeepsPlainSQLLock(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, other := pgtest.Connect(t, dsn), pgtest.Connect(t, dsn)
	for c, sql := range map[*pgx.Conn]string{other: "SELECT pg_advisory_lock(6)", conn: "SELECT pg_advisory_lock(5)"} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := alock.NewExclusive(conn, alock.Key(6), alock.Key(5)).Acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire: %v, want the deadline", err)
	}
	if got, want := locktest.Holds(t, dsn, conn.PgConn().PID()), []string{locktest.Hold(alock.Key(5), alock.Exclusive)}; !slices.Equal(got, want) {
		t.Errorf("after the failed Acquire the server shows %v, want %v", got, want)
	}
}
