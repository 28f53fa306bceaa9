package alocksql_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/pgtest"
)

// forEachDriver runs fn as a parallel subtest per driver, on a fresh database.
func forEachDriver(t *testing.T, fn func(t *testing.T, driverName, dsn string)) {
	t.Parallel()
	for _, name := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, name, pgtest.NewDatabase(t))
		})
	}
}

// advisoryLocksOf counts the advisory locks pid holds, per the server.
func advisoryLocksOf(t *testing.T, dsn string, pid uint32) int {
	t.Helper()
	return len(pgtest.AdvisoryLocks(t, dsn, pid))
}

func TestLockPinsOneSessionUnderPoolTraffic(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		ctx := context.Background()
		l := alocksql.NewExclusive(s.c, alock.Key(1))
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if _, err := s.db.ExecContext(ctx, "SELECT pg_try_advisory_lock(1) AND pg_advisory_unlock(1)"); err != nil {
				t.Fatal(err)
			}
		}
		var others bool
		if err := s.db.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(1)").Scan(&others); err != nil || others {
			t.Fatalf("another pooled connection got Key(1): %v %v", others, err)
		}
		if got := advisoryLocksOf(t, dsn, s.pid); got != 1 {
			t.Fatalf("pinned session holds %d locks, want 1", got)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := advisoryLocksOf(t, dsn, s.pid); got != 0 {
			t.Fatalf("pinned session holds %d locks after Release", got)
		}
	})
}

func TestLostSessionIsDiscarded(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		admin := pgtest.Connect(t, dsn)
		ctx := context.Background()
		l := alocksql.NewExclusive(s.c, alock.Key(1))
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", s.pid); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", err)
		}
		if err := s.c.Raw(func(any) error { return nil }); !errors.Is(err, sql.ErrConnDone) {
			t.Fatalf("the *sql.Conn is still usable after its session was lost: %v", err)
		}
		if open := s.db.Stats().OpenConnections; open != 0 {
			t.Fatalf("%d connections open, want the lost one discarded", open)
		}
	})
}

func TestCloseConn(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		ctx := context.Background()
		s := openSession(t, driverName, dsn)
		l := alocksql.NewShare(s.c, alock.Key(7))
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if err := alocksql.CloseConn(ctx, s.c); !errors.Is(err, alocksql.ErrStillHeld) {
			t.Fatalf("CloseConn with a Lock held: %v, want ErrStillHeld", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release after a refused CloseConn: %v", err)
		}
		if err := alocksql.CloseConn(ctx, s.c); err != nil {
			t.Fatalf("CloseConn of a clean connection: %v", err)
		}
		if idle := s.db.Stats().Idle; idle != 1 {
			t.Fatalf("%d idle connections, want the clean one pooled", idle)
		}

		// A lock taken with plain SQL is found on the server: the connection
		// is discarded, not pooled.
		dirty := openSession(t, driverName, dsn)
		if _, err := dirty.c.ExecContext(ctx, "SELECT pg_advisory_lock(8)"); err != nil {
			t.Fatal(err)
		}
		if err := alocksql.CloseConn(ctx, dirty.c); err == nil {
			t.Fatal("CloseConn returned a connection holding a lock to the pool")
		}
		if open := dirty.db.Stats().OpenConnections; open != 0 {
			t.Fatalf("%d connections open, want the dirty one discarded", open)
		}
		pgtest.WaitFor(t, "Key(8) to be free", func() bool {
			return advisoryLocksOf(t, dsn, dirty.pid) == 0
		})
	})
}

func TestLockTx(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		ctx := context.Background()
		s := openSession(t, driverName, dsn)
		other := pgtest.Connect(t, dsn)
		if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(2)"); err != nil {
			t.Fatal(err)
		}
		tx, err := s.c.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := alocksql.LockTx(ctx, tx, alock.Exclusive, alock.Key(9)); err != nil {
			t.Fatal(err)
		}
		if ok, err := alocksql.TryLockTx(ctx, tx, alock.Exclusive, alock.Key(1), alock.Key(2)); ok || err != nil {
			t.Fatalf("TryLockTx with id 2 held elsewhere: %v %v", ok, err)
		}
		wait, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err = alocksql.LockTx(wait, tx, alock.Exclusive, alock.Key(3), alock.Key(2))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LockTx past its deadline: %v", err)
		}
		var lockTimeout string
		if err := tx.QueryRowContext(ctx, "SHOW lock_timeout").Scan(&lockTimeout); err != nil || lockTimeout != "0" {
			t.Fatalf("transaction after a failed LockTx: lock_timeout %q, %v; want it usable and unchanged", lockTimeout, err)
		}
		if got := pgtest.AdvisoryLocks(t, dsn, s.pid); len(got) != 1 || got[0].ObjID != 9 {
			t.Fatalf("server shows %+v, want only Key(9)", got)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := advisoryLocksOf(t, dsn, s.pid); got != 0 {
			t.Fatalf("%d locks after commit", got)
		}
		if err := alocksql.LockTx(ctx, tx, alock.Exclusive, alock.Key(1)); !errors.Is(err, sql.ErrTxDone) {
			t.Fatalf("LockTx after commit: %v, want sql.ErrTxDone", err)
		}
	})
}

func TestNilConnOrTxReturnsError(t *testing.T) {
	ctx := context.Background()
	nilErr := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "nil") {
			t.Errorf("%s: %v, want an error saying the connection is nil", what, err)
		}
	}
	l := alocksql.NewShare(nil, alock.Key(1))
	nilErr("Acquire", l.Acquire(ctx))
	ok, err := l.TryAcquire(ctx)
	nilErr("TryAcquire", err)
	nilErr("Release", l.Release(ctx))
	if ok || l.Locked() {
		t.Error("a Lock on a nil connection is held")
	}
	nilErr("LockTx", alocksql.LockTx(ctx, nil, alock.Exclusive, alock.Key(1)))
	ok, err = alocksql.TryLockTx(ctx, nil, alock.Exclusive, alock.Key(1))
	nilErr("TryLockTx", err)
	if ok {
		t.Error("TryLockTx on a nil transaction succeeded")
	}
	nilErr("CloseConn", alocksql.CloseConn(ctx, nil))
}
