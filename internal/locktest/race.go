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
			r := newRace(e, alock.Key(40), "40")
			if via == "lock_timeout" {
				if err := r.waiter.Exec(context.Background(), "SET lock_timeout = '20ms'"); err != nil {
					t.Fatal(err)
				}
			}
			r.run(iterations, via == "context")
		})
	}
}

// giveBackEveryIDKind is grantCancelRace (by context) for each kind of ID,
// including the zero ID: a lock granted as the cancel lands is found in
// pg_locks and given back whatever the ID's kind. Each kind's lock is taken
// and released by the other party in plain SQL.
func giveBackEveryIDKind(t *testing.T, e *env) {
	iterations := 60
	if testing.Short() {
		iterations = 15
	}
	for _, k := range []struct {
		name string
		id   alock.ID
		args string // the SQL arguments naming the same server lock
	}{
		{"ZeroID", alock.ID{}, "0"},
		{"Key", alock.Key(-40), "-40"},
		{"Pair", alock.Pair(40, -40), "40, -40"},
		{"Name", alock.Name("jobs"), "hashtextextended('jobs', 0)"},
	} {
		t.Run(k.name, func(t *testing.T) {
			newRace(newEnv(t, e.b), k.id, k.args).run(iterations, true)
		})
	}
}

// race is one waiter session, which keeps a share lock on Key(1), and a
// holder that takes and releases the lock of id (named by args in SQL).
type race struct {
	e      *env
	waiter Session
	holder *pgx.Conn
	l      Lock
	args   string
}

func newRace(e *env, id alock.ID, args string) *race {
	r := &race{e: e, waiter: e.session(), holder: e.other(), args: args}
	e.mustAcquire(r.waiter.NewLock(alock.Share, alock.Key(1)))
	r.l = r.waiter.NewLock(alock.Exclusive, id)
	return r
}

// run plays n rounds: the holder releases the lock about when the waiter
// gives up (by its context if withCtx, else by its lock_timeout).
func (r *race) run(n int, withCtx bool) {
	t, e := r.e.t, r.e
	const patience = 20 * time.Millisecond
	var won, lost int
	for range n {
		e.exec(r.holder, "SELECT pg_advisory_lock("+r.args+")")
		unlocked := make(chan error, 1)
		delay := patience + time.Duration(rand.IntN(4000)-2000)*time.Microsecond
		go func() {
			time.Sleep(delay)
			_, err := r.holder.Exec(context.Background(), "SELECT pg_advisory_unlock("+r.args+")")
			unlocked <- err
		}()
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if withCtx {
			ctx, cancel = context.WithTimeout(ctx, patience)
		}
		err := r.l.Acquire(ctx)
		cancel()
		if uerr := <-unlocked; uerr != nil {
			t.Fatal(uerr)
		}
		held := heldBy(t, r.holder, r.waiter.PID())
		switch {
		case err == nil && !held:
			pgtest.Fatalf(t, "Acquire succeeded but the server does not hold the lock")
		case err != nil && held:
			pgtest.Fatalf(t, "ghost lock: Acquire failed (%v) but the server holds the lock: %v", err, e.holds(r.waiter.PID()))
		case err == nil:
			won++
			e.mustRelease(r.l)
		default:
			lost++
		}
		e.expectUsable(r.waiter)
	}
	e.expectHolds(r.waiter, hold(alock.Key(1), alock.Share))
	t.Logf("%d iterations: %d acquired, %d gave up", n, won, lost)
}

// heldBy reports whether pid holds an advisory lock exclusively, asked
// through c. (The races' waiters keep only a share lock besides.)
func heldBy(t *testing.T, c *pgx.Conn, pid uint32) bool {
	t.Helper()
	var n int
	err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND pid = $1 AND mode = 'ExclusiveLock' AND granted`, pid).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}
