package locktest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// grantCancelRace releases a lock around the moment a waiter gives up, many
// times, so that the server sometimes grants the lock as the cancel (or
// lock_timeout) lands. Whatever Acquire returns must match the server:
// success means held, an error means not held, and the session, its other
// lock and the next statement are never hit.
func grantCancelRace(t *testing.T, e *env) {
	iterations := 150
	if testing.Short() {
		iterations = 30
	}
	for _, via := range []string{"context", "lock_timeout"} {
		t.Run(via, func(t *testing.T) {
			e := newEnv(t, e.b)
			waiter, holder := e.session(), e.other()
			keep := waiter.NewLock(alock.Share, alock.Key(1))
			e.mustAcquire(keep)
			const patience = 20 * time.Millisecond
			if via == "lock_timeout" {
				if err := waiter.Exec(context.Background(), "SET lock_timeout = '20ms'"); err != nil {
					t.Fatal(err)
				}
			}
			l := waiter.NewLock(alock.Exclusive, alock.Key(40))
			var won, lost int
			for range iterations {
				e.exec(holder, "SELECT pg_advisory_lock(40)")
				unlocked := make(chan error, 1)
				delay := patience + time.Duration(rand.IntN(4000)-2000)*time.Microsecond
				go func() {
					time.Sleep(delay)
					_, err := holder.Exec(context.Background(), "SELECT pg_advisory_unlock(40)")
					unlocked <- err
				}()
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if via == "context" {
					ctx, cancel = context.WithTimeout(ctx, patience)
				}
				err := l.Acquire(ctx)
				cancel()
				if uerr := <-unlocked; uerr != nil {
					t.Fatal(uerr)
				}
				held := heldBy(t, holder, waiter.PID(), 40)
				switch {
				case err == nil && !held:
					pgtest.Fatalf(t, "Acquire succeeded but the server does not hold the lock")
				case err != nil && held:
					pgtest.Fatalf(t, "ghost lock: Acquire failed (%v) but the server holds the lock", err)
				case err == nil:
					won++
					e.mustRelease(l)
				default:
					lost++
				}
				e.expectUsable(waiter)
			}
			e.expectHolds(waiter, hold(alock.Key(1), alock.Share))
			t.Logf("%d iterations: %d acquired, %d gave up", iterations, won, lost)
		})
	}
}

// heldBy reports whether pid holds Key(key) exclusively, asked through c.
func heldBy(t *testing.T, c *pgx.Conn, pid uint32, key int64) bool {
	t.Helper()
	var n int
	err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND pid = $1 AND objid = $2 AND objsubid = 1 AND granted`, pid, key).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}
