package locktest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// deadlockTimeout is the server's deadlock_timeout in the deadlock tests:
// longer than a slice of a driver that waits in slices (see
// core.takeInSlices), so that slices alone cannot let the server see the
// deadlock.
const deadlockTimeout = 500 * time.Millisecond

// deadlockBound is how long after deadlockTimeout a deadlock must be
// reported: the waits that can end, end then, and both sides report that
// instead of ErrDeadlock.
const deadlockBound = 3 * time.Second

// forEachWait runs fn with each kind of context for the waits, each on a
// database of its own: one that never ends, one that can be cancelled (and is,
// deadlockTimeout + deadlockBound after it is made, so that the test ends),
// and one with that deadline. Drivers that cannot cancel a statement wait in
// slices under the last two.
func forEachWait(t *testing.T, b Backend, fn func(t *testing.T, e *env, ctx func() (context.Context, context.CancelFunc))) {
	for _, kind := range []string{"background", "cancellable", "deadline"} {
		t.Run(kind, func(t *testing.T) {
			fn(t, newEnv(t, b), func() (context.Context, context.CancelFunc) {
				switch kind {
				case "cancellable":
					ctx, cancel := context.WithCancel(context.Background())
					stop := time.AfterFunc(deadlockTimeout+deadlockBound, cancel)
					return ctx, func() { stop.Stop(); cancel() }
				case "deadline":
					return context.WithTimeout(context.Background(), deadlockTimeout+deadlockBound)
				}
				return context.Background(), func() {}
			})
		})
	}
}

// setDeadlockTimeout sets deadlockTimeout on a session (as a superuser).
func setDeadlockTimeout(t *testing.T, exec func(context.Context, string) error) {
	t.Helper()
	if err := exec(context.Background(), fmt.Sprintf("SET deadlock_timeout = '%dms'", deadlockTimeout.Milliseconds())); err != nil {
		t.Fatal(err)
	}
}

// result is one side's outcome in a deadlock test.
type result struct {
	who int
	err error
}

// firstDeadlock waits for the first side to return, which must be a
// deadlock victim, and logs how long the deadlock took to be detected.
func firstDeadlock(t *testing.T, results <-chan result, start time.Time) result {
	t.Helper()
	first := <-results
	if !errors.Is(first.err, alock.ErrDeadlock) {
		pgtest.Fatalf(t, "first result (after %v): %v, want ErrDeadlock", time.Since(start), first.err)
	}
	t.Logf("deadlock reported after %v (deadlock_timeout %v)", time.Since(start).Round(time.Millisecond), deadlockTimeout)
	return first
}

// deadlockVictim: session 0 holds Key(1) and wants Key(2), session 1 holds
// Key(2) and wants Key(1). One side fails with ErrDeadlock soon after
// deadlock_timeout, with or without a deadline on its wait, and keeps what it
// held before; the other gets its lock once the victim lets go.
func deadlockVictim(t *testing.T, e *env) {
	forEachWait(t, e.b, func(t *testing.T, e *env, waitCtx func() (context.Context, context.CancelFunc)) {
		s := []Session{e.session(), e.session()}
		e.mustAcquire(s[0].NewLock(alock.Exclusive, alock.Key(1)))
		e.mustAcquire(s[1].NewLock(alock.Exclusive, alock.Key(2)))
		for _, x := range s {
			setDeadlockTimeout(t, func(ctx context.Context, sql string) error { return x.Exec(ctx, sql) })
		}
		results := make(chan result, 2)
		start := time.Now()
		for i, x := range s {
			go func() {
				ctx, cancel := waitCtx()
				defer cancel()
				results <- result{i, x.NewLock(alock.Exclusive, alock.Key(int64(2-i))).Acquire(ctx)}
			}()
		}
		first := firstDeadlock(t, results, start)
		victim, winner := s[first.who], s[1-first.who]
		// The victim still holds its first lock; the other side proceeds only
		// when the victim lets go of it.
		select {
		case r := <-results:
			t.Fatalf("second Acquire returned %v while the victim still holds its lock", r.err)
		case <-time.After(100 * time.Millisecond):
		}
		e.expectHolds(victim, hold(alock.Key(int64(first.who+1)), alock.Exclusive))
		e.expectUsable(victim)
		if err := victim.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
		if r := <-results; r.err != nil {
			t.Fatalf("winner: %v", r.err)
		}
		e.expectHolds(winner, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive))
	})
}

// txDeadlockVictim is deadlockVictim for LockTx: the victim's transaction
// stays usable and holds what it held before.
func txDeadlockVictim(t *testing.T, e *env, b TxBackend) {
	forEachWait(t, e.b, func(t *testing.T, e *env, waitCtx func() (context.Context, context.CancelFunc)) {
		var txs []Tx
		var pids []uint32
		for i := range 2 {
			begin, pid := b.Begin(t, e.dsn)
			tx := begin()
			t.Cleanup(func() { _ = tx.Rollback() })
			if err := tx.LockTx(context.Background(), alock.Key(int64(i+1))); err != nil {
				t.Fatal(err)
			}
			setDeadlockTimeout(t, tx.Exec)
			txs, pids = append(txs, tx), append(pids, pid)
		}
		results := make(chan result, 2)
		start := time.Now()
		for i, tx := range txs {
			go func() {
				ctx, cancel := waitCtx()
				defer cancel()
				results <- result{i, tx.LockTx(ctx, alock.Key(int64(2-i)))}
			}()
		}
		first := firstDeadlock(t, results, start)
		victim := first.who
		if got, want := Holds(t, e.dsn, pids[victim]), hold(alock.Key(int64(victim+1)), alock.Exclusive); len(got) != 1 || got[0] != want {
			pgtest.Fatalf(t, "victim's pg_locks: %v, want [%s]", got, want)
		}
		if err := txs[victim].Exec(context.Background(), "SELECT 1"); err != nil {
			pgtest.Fatalf(t, "victim's transaction unusable: %v", err)
		}
		if err := txs[victim].Rollback(); err != nil {
			t.Fatal(err)
		}
		if r := <-results; r.err != nil {
			t.Fatalf("winner: %v", r.err)
		}
		if got := Holds(t, e.dsn, pids[1-victim]); len(got) != 2 {
			pgtest.Fatalf(t, "winner's pg_locks: %v, want Key(1) and Key(2)", got)
		}
	})
}

// deadlockWithPlainWaiter: the session under test holds Key(1) and wants
// Key(2); a plain pgx session that waits in one statement, as the server
// expects, holds Key(2) and wants Key(1). Whichever side the server picks
// fails with a deadlock; the other gets its lock once the victim lets go.
func deadlockWithPlainWaiter(t *testing.T, e *env) {
	forEachWait(t, e.b, func(t *testing.T, e *env, waitCtx func() (context.Context, context.CancelFunc)) {
		s, other := e.session(), e.other()
		e.mustAcquire(s.NewLock(alock.Exclusive, alock.Key(1)))
		e.exec(other, "SELECT pg_advisory_lock(2)")
		setDeadlockTimeout(t, func(ctx context.Context, sql string) error { return s.Exec(ctx, sql) })
		setDeadlockTimeout(t, func(ctx context.Context, sql string) error { _, err := other.Exec(ctx, sql); return err })
		results := make(chan result, 2)
		start := time.Now()
		go func() {
			ctx, cancel := waitCtx()
			defer cancel()
			results <- result{0, s.NewLock(alock.Exclusive, alock.Key(2)).Acquire(ctx)}
		}()
		go func() {
			_, err := other.Exec(context.Background(), "SELECT pg_advisory_lock(1)")
			if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "40P01" {
				err = fmt.Errorf("%w: %w", alock.ErrDeadlock, err)
			}
			results <- result{1, err}
		}()
		first := firstDeadlock(t, results, start)
		if first.who == 0 {
			e.expectHolds(s, hold(alock.Key(1), alock.Exclusive))
			e.expectUsable(s)
			if err := s.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
				t.Fatal(err)
			}
		} else {
			e.exec(other, "SELECT pg_advisory_unlock_all()")
		}
		if r := <-results; r.err != nil {
			t.Fatalf("winner: %v", r.err)
		}
		t.Logf("victim: %s", []string{"the session under test", "the plain waiter"}[first.who])
	})
}
