package alocksql_test

// Adversarial tests of Locks on a *sql.Conn: contexts with causes and
// deadlines shorter than a round trip, over pgx's stdlib and lib/pq, each
// outcome checked against pg_locks for the connection's backend.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

var errA3Cause = errors.New("attack3 cause")

// a3Check compares the library's answer with the server's: after Acquire
// returned err, the Lock is held iff err is nil, and the server shows exactly
// its ids then, nothing otherwise; a failure matches ctx.Err() and its cause.
func a3Check(t *testing.T, what, dsn string, s *sqlSession, ctx context.Context, l *alocksql.Lock, err error, want ...string) {
	t.Helper()
	got := locktest.Holds(t, dsn, s.pid)
	if err == nil {
		if !l.Locked() || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: acquired; Locked %v, server shows %v, want %v", what, l.Locked(), got, want)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatalf("%s: Release: %v", what, err)
		}
		if got := locktest.Holds(t, dsn, s.pid); len(got) != 0 {
			t.Fatalf("%s: after Release the server shows %v", what, got)
		}
		return
	}
	if ctx.Err() == nil || !errors.Is(err, ctx.Err()) || !errors.Is(err, errA3Cause) {
		t.Fatalf("%s: %v; want an error matching ctx.Err() (%v) and the cause", what, err, ctx.Err())
	}
	if l.Locked() || len(got) != 0 {
		t.Fatalf("%s failed (%v) but Locked %v and the server shows %v", what, err, l.Locked(), got)
	}
	var pid uint32
	if err := s.c.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil || pid != s.pid {
		t.Fatalf("%s: the connection after a cancelled acquisition: pid %d (was %d), %v", what, pid, s.pid, err)
	}
}

// TestAttack3TinyDeadlinesWithCause: Acquire with deadlines from 1 µs to
// 20 ms (shorter than, around and longer than a round trip) and a cause,
// on a free id (the grant races the deadline) and on one held elsewhere
// (the wait is cancelled, by cancel request or lock_timeout slices).
func TestAttack3TinyDeadlinesWithCause(t *testing.T) {
	t.Parallel()
	for _, name := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			s := openSession(t, name, dsn)
			other := pgtest.Connect(t, dsn)
			if _, err := other.Exec(context.Background(), "SELECT pg_advisory_lock(2)"); err != nil {
				t.Fatal(err)
			}
			deadlines := []time.Duration{time.Microsecond, 50 * time.Microsecond, 200 * time.Microsecond,
				500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
			for round := range 3 {
				for _, d := range deadlines {
					for _, ids := range [][]alock.ID{{alock.Key(1)}, {alock.Key(1), alock.Key(2)}, {alock.Key(3), alock.Key(4)}} {
						l := alocksql.NewExclusive(s.c, ids...)
						ctx, cancel := context.WithTimeoutCause(context.Background(), d, errA3Cause)
						err := l.Acquire(ctx)
						var want []string
						for _, id := range ids {
							want = append(want, locktest.Hold(id, alock.Exclusive))
						}
						a3Check(t, fmt.Sprintf("round %d, %v, %v", round, d, ids), dsn, s, ctx, l, err, want...)
						cancel()
					}
				}
			}
		})
	}
}

// TestAttack3CancelCauseRacesGrant: the holder of the id releases it while
// the waiter's context is cancelled with a cause, at varying offsets, so
// that the cancel races the grant.
func TestAttack3CancelCauseRacesGrant(t *testing.T) {
	t.Parallel()
	for _, name := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			s := openSession(t, name, dsn)
			other := pgtest.Connect(t, dsn)
			for i := range 20 {
				if _, err := other.Exec(context.Background(), "SELECT pg_advisory_lock(1)"); err != nil {
					t.Fatal(err)
				}
				l := alocksql.NewExclusive(s.c, alock.Key(1))
				ctx, cancel := context.WithCancelCause(context.Background())
				done := make(chan error, 1)
				go func() { done <- l.Acquire(ctx) }()
				time.Sleep(30 * time.Millisecond)
				unlocked := make(chan struct{})
				go func(c *pgx.Conn) {
					defer close(unlocked)
					_, _ = c.Exec(context.Background(), "SELECT pg_advisory_unlock(1)")
				}(other)
				time.Sleep(time.Duration(i%5) * 300 * time.Microsecond)
				cancel(errA3Cause)
				var err error
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: Acquire has not returned 10 s after its cancel", i)
				}
				<-unlocked
				a3Check(t, fmt.Sprintf("round %d", i), dsn, s, ctx, l, err, locktest.Hold(alock.Key(1), alock.Exclusive))
			}
		})
	}
}
