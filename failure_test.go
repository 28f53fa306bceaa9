package alock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestDeadlineKeepsSessionAndOtherLocks(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	mustAcquire(t, alock.NewExclusive(s[0].Conn, alock.Key(10)))
	exec(t, s[1], "SELECT pg_advisory_lock(20)")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l := alock.NewExclusive(s[0].Conn, alock.Key(20))
	err := l.Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past its deadline: %v, want DeadlineExceeded", err)
	}
	expectUsable(t, s[0])
	expectHolds(t, s[0], hold(alock.Key(10), alock.Exclusive))
	// Once the holder lets go, the same Lock works on the same session.
	exec(t, s[1], "SELECT pg_advisory_unlock(20)")
	mustAcquire(t, l)
	expectHolds(t, s[0], hold(alock.Key(10), alock.Exclusive), hold(alock.Key(20), alock.Exclusive))
}

func TestCancelledContextSendsNothing(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := alock.NewExclusive(s.Conn, alock.Key(1))
	if err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire: %v", err)
	}
	if ok, err := l.TryAcquire(ctx); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	expectHolds(t, s)
	expectUsable(t, s)
}

func TestDeadlockVictimKeepsOtherHolds(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	mustAcquire(t, alock.NewExclusive(s[0].Conn, alock.Key(1)))
	mustAcquire(t, alock.NewExclusive(s[1].Conn, alock.Key(2)))
	exec(t, s[0], "SET deadlock_timeout = '50ms'")
	exec(t, s[1], "SET deadlock_timeout = '50ms'")
	results := make(chan error, 2)
	go func() { results <- alock.NewExclusive(s[0].Conn, alock.Key(2)).Acquire(context.Background()) }()
	go func() { results <- alock.NewExclusive(s[1].Conn, alock.Key(1)).Acquire(context.Background()) }()
	first := <-results
	if !errors.Is(first, alock.ErrDeadlock) {
		t.Fatalf("first result: %v, want ErrDeadlock", first)
	}
	// The victim still holds its first lock; the other side proceeds only
	// when the victim lets go of it.
	victim, winner := s[0], s[1]
	if len(serverHolds(t, s[1])) == 1 && serverHolds(t, s[1])[0] == hold(alock.Key(2), alock.Exclusive) {
		victim, winner = s[1], s[0]
	}
	select {
	case err := <-results:
		t.Fatalf("second Acquire returned %v while the victim still holds its lock", err)
	case <-time.After(100 * time.Millisecond):
	}
	expectUsable(t, victim)
	exec(t, victim, "SELECT pg_advisory_unlock_all()")
	if err := <-results; err != nil {
		t.Fatalf("winner: %v", err)
	}
	if got := len(serverHolds(t, winner)); got != 2 {
		t.Fatalf("winner holds %d locks, want 2", got)
	}
}

func TestServerTimeoutsLeaveNothingHeld(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ setting, says string }{
		{"lock_timeout", "lock_timeout"},
		{"statement_timeout", "statement_timeout"},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			t.Parallel()
			s := newSessions(t, 2)
			exec(t, s[1], "SELECT pg_advisory_lock(2)")
			keep := alock.NewShare(s[0].Conn, alock.Key(1))
			mustAcquire(t, keep)
			exec(t, s[0], "SET "+tc.setting+" = '100ms'")
			err := alock.NewExclusive(s[0].Conn, alock.Key(1), alock.Key(2)).Acquire(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Acquire: %v, want an error that says %s", err, tc.says)
			}
			expectHolds(t, s[0], hold(alock.Key(1), alock.Share))
			expectUsable(t, s[0])
		})
	}
}

func TestKilledBackendWhileWaiting(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 3)
	keep := alock.NewExclusive(s[0].Conn, alock.Key(1))
	mustAcquire(t, keep)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	done := make(chan error)
	go func() { done <- alock.NewExclusive(s[0].Conn, alock.Key(2)).Acquire(context.Background()) }()
	pid := s[0].PgConn().PID()
	waitHolds(t, s[0], hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive)+"(waiting)")
	exec(t, s[2], "SELECT pg_terminate_backend($1)", pid)
	if err := <-done; err == nil {
		t.Fatal("Acquire on a terminated backend succeeded")
	}
	if keep.Locked() {
		t.Fatal("Locked after the session was terminated")
	}
	if err := keep.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release on a lost session: %v, want ErrLost", err)
	}
}

func TestReleaseReportsLoss(t *testing.T) {
	t.Parallel()
	t.Run("terminated", func(t *testing.T) {
		t.Parallel()
		s := newSessions(t, 2)
		l := alock.NewExclusive(s[0].Conn, alock.Key(1))
		mustAcquire(t, l)
		exec(t, s[1], "SELECT pg_terminate_backend($1)", s[0].PgConn().PID())
		if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", err)
		}
		if l.Locked() {
			t.Fatal("Locked after a lost Release")
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		s := newSessions(t, 1)[0]
		l := alock.NewExclusive(s.Conn, alock.Key(1))
		mustAcquire(t, l)
		_ = s.Close(context.Background())
		if l.Locked() {
			t.Fatal("Locked on a closed connection")
		}
		if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", err)
		}
	})
	t.Run("unlocked behind its back", func(t *testing.T) {
		t.Parallel()
		s := newSessions(t, 1)[0]
		l := alock.NewExclusive(s.Conn, alock.Key(1))
		mustAcquire(t, l)
		exec(t, s, "SELECT pg_advisory_unlock_all()")
		if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", err)
		}
		if l.Locked() {
			t.Fatal("Locked after a lost Release")
		}
		expectUsable(t, s)
	})
}

func TestReleaseWithCancelledContextUnlocks(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	keep := alock.NewExclusive(s.Conn, alock.Key(2))
	mustAcquire(t, keep)
	l := alock.NewExclusive(s.Conn, alock.Key(1))
	mustAcquire(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release with a cancelled ctx: %v", err)
	}
	expectHolds(t, s, hold(alock.Key(2), alock.Exclusive))
	expectUsable(t, s)
}

func TestAcquireInTransactionKeepsItUsable(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	ctx := context.Background()
	tx, err := s[0].Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
	tx, err := s[0].Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
