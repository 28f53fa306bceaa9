package alocksql_test

// Adversarial tests of the database/sql adapter (branch sqlattack): each
// step is checked against pg_locks for the *sql.Conn's backend, read over
// a second connection, not only against the library's answers.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

var errSACause = errors.New("sqlattack cause")

// saTCP returns dsn pointed at the server over TCP to 127.0.0.1 instead of
// its unix socket: pgx's cancel requests then dial the connection's remote
// address.
func saTCP(dsn string) string {
	return regexp.MustCompile(`host=('[^']*'|\S+)`).ReplaceAllString(dsn, "host=127.0.0.1")
}

// saTransports are the ways the tests reach the server.
var saTransports = []string{"unix", "tcp"}

// forEachDriverAndTransport runs fn as a parallel subtest per driver and
// transport, each on a fresh database; dsn is the transport's.
func forEachDriverAndTransport(t *testing.T, fn func(t *testing.T, driverName, dsn string)) {
	t.Parallel()
	for _, name := range drivers {
		for _, tr := range saTransports {
			t.Run(name+"/"+tr, func(t *testing.T) {
				t.Parallel()
				dsn := pgtest.NewDatabase(t)
				if tr == "tcp" {
					dsn = saTCP(dsn)
				}
				fn(t, name, dsn)
			})
		}
	}
}

// saExpect fails unless the server shows exactly want for pid.
func saExpect(t *testing.T, what, dsn string, pid uint32, want ...string) {
	t.Helper()
	got := locktest.Holds(t, dsn, pid)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		pgtest.Fatalf(t, "%s: server shows %v for pid %d, want %v", what, got, pid, want)
	}
}

func saExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		pgtest.Fatalf(t, "%s: %v", sql, err)
	}
}

// userTimeouts are the settings a session or transaction sets to bound
// its waits, and the error each raises.
var userTimeouts = map[string]error{"lock_timeout": alock.ErrLockTimeout, "statement_timeout": alock.ErrStatementTimeout}

// TestSQLAttackUserTimeoutsWithDeadline: the session's own lock_timeout
// and statement_timeout end a blocked Acquire with ErrLockTimeout or
// ErrStatementTimeout (as alock.Lock.Acquire documents: "a lock_timeout or
// statement_timeout the session set"), also when the caller's context has
// a (longer) deadline, which makes lib/pq's wait run in slices that each
// override lock_timeout and are too short for statement_timeout.
func TestSQLAttackUserTimeoutsWithDeadline(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		other := pgtest.Connect(t, dsn)
		saExec(t, other, "SELECT pg_advisory_lock(2)")
		for setting, sentinel := range userTimeouts {
			s := openSession(t, driverName, dsn)
			keep := alocksql.NewShare(s.c, alock.Key(1))
			if err := keep.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.c.ExecContext(context.Background(), "SET "+setting+" = '300ms'"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			start := time.Now()
			err := alocksql.NewExclusive(s.c, alock.Key(1), alock.Key(2)).Acquire(ctx)
			took := time.Since(start)
			cancel()
			if !errors.Is(err, sentinel) || took > 2*time.Second {
				t.Errorf("Acquire under %s=300ms and a 4 s deadline: %v after %v; want %v after about 300 ms", setting, err, took.Round(time.Millisecond), sentinel)
			}
			saExpect(t, "after the timeout", dsn, s.pid, locktest.Hold(alock.Key(1), alock.Share))
		}
	})
}

// TestSQLAttackLockTxUserTimeoutsWithDeadline is the same for LockTx: the
// transaction's own lock_timeout and statement_timeout end the wait.
func TestSQLAttackLockTxUserTimeoutsWithDeadline(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		other := pgtest.Connect(t, dsn)
		saExec(t, other, "SELECT pg_advisory_lock(2)")
		for setting, sentinel := range userTimeouts {
			s := openSession(t, driverName, dsn)
			tx, err := s.c.BeginTx(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(context.Background(), "SET LOCAL "+setting+" = '300ms'"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			start := time.Now()
			err = alocksql.LockTx(ctx, tx, alock.Exclusive, alock.Key(1), alock.Key(2))
			took := time.Since(start)
			cancel()
			saExpect(t, "after LockTx", dsn, s.pid)
			_ = tx.Rollback()
			if !errors.Is(err, sentinel) || took > 2*time.Second {
				t.Errorf("LockTx under SET LOCAL %s = '300ms' and a 4 s deadline: %v after %v; want %v after about 300 ms", setting, err, took.Round(time.Millisecond), sentinel)
			}
		}
	})
}

// TestSQLAttackFailedAcquireKeepsPlainSQLLock: a lock the caller took on
// the *sql.Conn with plain SQL (CloseConn's documentation counts on such
// locks) is not released by a failed Acquire that never took it: the
// statement waits for Key(6) first and never reaches Key(5).
func TestSQLAttackFailedAcquireKeepsPlainSQLLock(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		other := pgtest.Connect(t, dsn)
		saExec(t, other, "SELECT pg_advisory_lock(6)")
		if _, err := s.c.ExecContext(context.Background(), "SELECT pg_advisory_lock(5)"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errSACause)
		defer cancel()
		err := alocksql.NewExclusive(s.c, alock.Key(6), alock.Key(5)).Acquire(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errSACause) {
			t.Fatalf("Acquire: %v", err)
		}
		saExpect(t, "after the failed Acquire", dsn, s.pid, locktest.Hold(alock.Key(5), alock.Exclusive))
	})
}

// TestSQLAttackTryAcquireTinyDeadlines: TryAcquire under deadlines from
// 1 µs to 20 ms with a cause, on free ids and on a mix with one held
// elsewhere, over both drivers and both transports: held iff true, the
// server agrees, and an error matches ctx.Err() and its cause.
func TestSQLAttackTryAcquireTinyDeadlines(t *testing.T) {
	forEachDriverAndTransport(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		other := pgtest.Connect(t, dsn)
		saExec(t, other, "SELECT pg_advisory_lock(2)")
		keep := alocksql.NewShare(s.c, alock.Key(9))
		if err := keep.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		base := locktest.Hold(alock.Key(9), alock.Share)
		deadlines := []time.Duration{time.Microsecond, 100 * time.Microsecond, 300 * time.Microsecond,
			time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
		for round := range 3 {
			for _, d := range deadlines {
				for _, ids := range [][]alock.ID{{alock.Key(1)}, {alock.Key(1), alock.Key(2)}, {alock.Key(3), alock.Pair(1, 2), alock.Key(4)}} {
					what := fmt.Sprintf("round %d, %v, %v", round, d, ids)
					l := alocksql.NewExclusive(s.c, ids...)
					ctx, cancel := context.WithTimeoutCause(context.Background(), d, errSACause)
					ok, err := l.TryAcquire(ctx)
					switch {
					case err != nil:
						if ok || !errors.Is(err, ctx.Err()) || !errors.Is(err, errSACause) {
							t.Fatalf("%s: %v %v; want false and an error matching ctx.Err() and its cause", what, ok, err)
						}
						saExpect(t, what, dsn, s.pid, base)
					case ok:
						var want []string
						for _, id := range ids {
							want = append(want, locktest.Hold(id, alock.Exclusive))
						}
						saExpect(t, what, dsn, s.pid, append(want, base)...)
						if err := l.Release(context.Background()); err != nil {
							t.Fatalf("%s: Release: %v", what, err)
						}
						saExpect(t, what+" released", dsn, s.pid, base)
					default:
						if !slices.Contains(ids, alock.Key(2)) {
							t.Fatalf("%s: TryAcquire of free ids returned false", what)
						}
						saExpect(t, what, dsn, s.pid, base)
					}
					cancel()
					if l.Locked() {
						t.Fatalf("%s: Locked after the round", what)
					}
				}
			}
		}
		var pid uint32
		if err := s.c.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil || pid != s.pid {
			t.Fatalf("session after the rounds: pid %d (was %d), %v", pid, s.pid, err)
		}
	})
}

// TestSQLAttackKilledWhileWaitingWithDeadline: the backend of a *sql.Conn
// is terminated while a Lock waits under a context with a deadline (a
// cancel-request wait with pgx, a sliced wait with lib/pq) and another Lock
// holds: the wait fails with ErrLost soon, the holder reports ErrLost, the
// server holds nothing for the pid, and CloseConn discards the connection
// rather than pooling it.
func TestSQLAttackKilledWhileWaitingWithDeadline(t *testing.T) {
	forEachDriverAndTransport(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		other, admin := pgtest.Connect(t, dsn), pgtest.Connect(t, dsn)
		keep := alocksql.NewExclusive(s.c, alock.Key(1))
		if err := keep.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		lost := keep.Lost()
		saExec(t, other, "SELECT pg_advisory_lock(2)")
		ctx, cancel := context.WithTimeoutCause(context.Background(), 20*time.Second, errSACause)
		defer cancel()
		l := alocksql.NewShare(s.c, alock.Key(3), alock.Key(2))
		done := make(chan error, 1)
		go func() { done <- l.Acquire(ctx) }()
		locktest.WaitWaiting(t, dsn, s.pid)
		saExec(t, admin, "SELECT pg_terminate_backend($1)", int64(s.pid))
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Acquire has not returned 5 s after its backend was terminated")
		}
		if !errors.Is(err, alock.ErrLost) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire on a terminated backend: %v, want ErrLost", err)
		}
		if l.Locked() || keep.Locked() {
			t.Fatalf("Locked after the session was terminated: waiter %v, holder %v", l.Locked(), keep.Locked())
		}
		if err := keep.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("holder's Release: %v, want ErrLost", err)
		}
		select {
		case <-lost:
		default:
			t.Fatal("the holder's Lost channel is open after its Release reported ErrLost")
		}
		pgtest.WaitFor(t, "the terminated pid to hold nothing", func() bool { return len(locktest.Holds(t, dsn, s.pid)) == 0 })
		if err := alocksql.CloseConn(context.Background(), s.c); err == nil {
			t.Fatal("CloseConn of a connection whose session was terminated returned nil")
		}
		if open := s.db.Stats().OpenConnections; open != 0 {
			t.Fatalf("%d connections open after CloseConn, want the dead one discarded", open)
		}
		if ok, err := alocksql.NewExclusive(mustConn(t, s), alock.Key(1), alock.Key(3)).TryAcquire(context.Background()); !ok || err != nil {
			t.Fatalf("a new session cannot take the ids of the terminated one: %v %v", ok, err)
		}
	})
}

// mustConn pins a new connection of s's pool.
func mustConn(t *testing.T, s *sqlSession) *sql.Conn {
	t.Helper()
	c, err := s.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSQLAttackDoOnKilledSession: Do on a *sql.Conn whose backend was
// terminated while another Lock held: fn does not run, the error wraps
// ErrLost, and nothing is held at the server.
func TestSQLAttackDoOnKilledSession(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		admin := pgtest.Connect(t, dsn)
		keep := alocksql.NewExclusive(s.c, alock.Key(1))
		if err := keep.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		saExec(t, admin, "SELECT pg_terminate_backend($1)", int64(s.pid))
		pgtest.WaitFor(t, "the terminated pid to hold nothing", func() bool { return len(locktest.Holds(t, dsn, s.pid)) == 0 })
		for _, ctx := range []context.Context{context.Background(), saDeadline(t, 5*time.Second)} {
			ran := false
			err := alocksql.NewExclusive(s.c, alock.Key(2)).Do(ctx, func(context.Context) error { ran = true; return nil })
			if ran || !errors.Is(err, alock.ErrLost) {
				t.Fatalf("Do on a terminated session: ran %v, %v; want ErrLost", ran, err)
			}
		}
		if err := keep.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", err)
		}
	})
}

func saDeadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestSQLAttackCrossDriverDeadlock: a deadlock between a *sql.Conn over
// pgx (a server-side wait, interruptible by cancel request) and one over
// lib/pq (a sliced wait), both under deadlines: exactly one side fails with
// ErrDeadlock and keeps its other hold; the other side gets its lock once
// the victim releases; nothing else is held. Both for two ids crossed and
// for two share holders upgrading to exclusive.
func TestSQLAttackCrossDriverDeadlock(t *testing.T) {
	t.Parallel()
	for _, upgrade := range []bool{false, true} {
		t.Run(fmt.Sprint("upgrade=", upgrade), func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			a, b := openSession(t, "pgx", dsn), openSession(t, "postgres", dsn)
			var holdA, holdB, wantA, wantB *alocksql.Lock
			if upgrade {
				holdA, holdB = alocksql.NewShare(a.c, alock.Key(3)), alocksql.NewShare(b.c, alock.Key(3))
				wantA, wantB = alocksql.NewExclusive(a.c, alock.Key(3)), alocksql.NewExclusive(b.c, alock.Key(3))
			} else {
				holdA, holdB = alocksql.NewExclusive(a.c, alock.Key(1)), alocksql.NewExclusive(b.c, alock.Key(2))
				wantA, wantB = alocksql.NewExclusive(a.c, alock.Key(2)), alocksql.NewExclusive(b.c, alock.Key(1))
			}
			for _, l := range []*alocksql.Lock{holdA, holdB} {
				if err := l.Acquire(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errA, errB := make(chan error, 1), make(chan error, 1)
			start := time.Now()
			go func() { errA <- wantA.Acquire(ctx) }()
			go func() { errB <- wantB.Acquire(ctx) }()
			var victimHold, winner *alocksql.Lock
			var winnerErr chan error
			select {
			case err := <-errA:
				if !errors.Is(err, alock.ErrDeadlock) {
					t.Fatalf("pgx side: %v, want ErrDeadlock", err)
				}
				victimHold, winner, winnerErr = holdA, wantB, errB
			case err := <-errB:
				if !errors.Is(err, alock.ErrDeadlock) {
					t.Fatalf("lib/pq side: %v, want ErrDeadlock", err)
				}
				victimHold, winner, winnerErr = holdB, wantA, errA
			case <-time.After(10 * time.Second):
				t.Fatal("no side failed 10 s into the deadlock")
			}
			t.Logf("deadlock reported after %v", time.Since(start).Round(time.Millisecond))
			select {
			case err := <-winnerErr:
				t.Fatalf("the other side returned while the victim still holds: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := victimHold.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-winnerErr:
				if err != nil {
					t.Fatalf("the other side after the victim released: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the other side has not got its lock 5 s after the victim released")
			}
			if !winner.Locked() {
				t.Fatal("winner not Locked")
			}
			// Server view: the winner's session holds its hold and its new
			// lock; the victim's holds nothing.
			var winnerPID, victimPID uint32 = a.pid, b.pid
			if winner == wantB {
				winnerPID, victimPID = b.pid, a.pid
			}
			var want []string
			if upgrade {
				want = []string{locktest.Hold(alock.Key(3), alock.Exclusive), locktest.Hold(alock.Key(3), alock.Share)}
			} else {
				want = []string{locktest.Hold(alock.Key(1), alock.Exclusive), locktest.Hold(alock.Key(2), alock.Exclusive)}
			}
			saExpect(t, "winner", dsn, winnerPID, want...)
			saExpect(t, "victim", dsn, victimPID)
		})
	}
}

// TestSQLAttackLockTxCancelInLongSlice: a LockTx whose waits are sliced
// (a context that can end, no deadline) is suspected of a deadlock, so its
// slice lasts deadlock_timeout plus 100 ms; with deadlock_timeout 8 s
// (allowed; some servers raise it) that is longer than CleanupTimeout. The
// context is cancelled 1 s into the long slice. The package documents that
// "during such a long slice the end of the context is noticed only when
// the slice ends": LockTx must still return an error matching the
// context's end (or ErrDeadlock, from the server's own check at 8 s) with
// the transaction usable and the connection open, not close the session.
func TestSQLAttackLockTxCancelInLongSlice(t *testing.T) {
	forEachDriver(t, func(t *testing.T, driverName, dsn string) {
		s := openSession(t, driverName, dsn)
		other := pgtest.Connect(t, dsn)
		saExec(t, other, "SET deadlock_timeout = '60s'")
		saExec(t, other, "SELECT pg_advisory_lock(2)")
		tx, err := s.c.BeginTx(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(context.Background(), "SET LOCAL deadlock_timeout = '8s'"); err != nil {
			t.Fatal(err)
		}
		if err := alocksql.LockTx(context.Background(), tx, alock.Exclusive, alock.Key(1)); err != nil {
			t.Fatal(err)
		}
		blocked := make(chan error, 1)
		go func() { _, err := other.Exec(context.Background(), "SELECT pg_advisory_lock(1)"); blocked <- err }()
		defer func() { _ = tx.Rollback(); <-blocked }() // before the cleanup closes other
		admin := pgtest.Connect(t, dsn)
		pgtest.WaitFor(t, "the other session to wait for Key(1)", func() bool {
			var n int
			_ = admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&n)
			return n > 0
		})
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(1500*time.Millisecond, func() { cancel(errSACause) })
		start := time.Now()
		err = alocksql.LockTx(ctx, tx, alock.Exclusive, alock.Key(2))
		took := time.Since(start)
		t.Logf("LockTx returned after %v: %v", took.Round(time.Millisecond), err)
		if err == nil {
			t.Fatal("LockTx in a deadlock succeeded")
		}
		if !(errors.Is(err, context.Canceled) && errors.Is(err, errSACause)) && !errors.Is(err, alock.ErrDeadlock) {
			t.Errorf("LockTx: %v; want an error matching ctx.Err() and its cause, or ErrDeadlock", err)
		}
		var pid uint32
		if err := tx.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil || pid != s.pid {
			t.Errorf("transaction after LockTx: pid %d (was %d), %v; want it usable on the same session", pid, s.pid, err)
			return
		}
		saExpect(t, "transaction after LockTx", dsn, s.pid, locktest.Hold(alock.Key(1), alock.Exclusive))
	})
}

// TestSQLAttackRandomModel drives several Locks of both modes over
// overlapping ids on one *sql.Conn, with random Acquire, TryAcquire and
// Release under random tiny deadlines and causes, while another session
// takes and drops conflicting holds; after every step the server's holds
// for the pid must be exactly the union of the held Locks' (id, mode), and
// every Lock's Locked must match the model's count.
func TestSQLAttackRandomModel(t *testing.T) {
	forEachDriverAndTransport(t, func(t *testing.T, driverName, dsn string) {
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewPCG(seed, 7))
		s := openSession(t, driverName, dsn)
		other := pgtest.Connect(t, dsn)
		pool := []alock.ID{alock.Key(1), alock.Key(2), alock.Key(-3), alock.Pair(1, 1)}
		type mlock struct {
			l     *alocksql.Lock
			count int
		}
		var locks []*mlock
		for range 6 {
			perm := rng.Perm(len(pool))[:1+rng.IntN(3)]
			var ids []alock.ID
			for _, i := range perm {
				ids = append(ids, pool[i])
			}
			if rng.IntN(2) == 0 {
				locks = append(locks, &mlock{l: alocksql.NewShare(s.c, ids...)})
			} else {
				locks = append(locks, &mlock{l: alocksql.NewExclusive(s.c, ids...)})
			}
		}
		otherHolds := map[string]bool{} // "fn(args)" of other's holds
		sqlArgs := func(id alock.ID) string {
			c, o, sub := id.LockTag()
			if sub == 2 {
				return fmt.Sprintf("%d, %d", int32(c), int32(o))
			}
			return fmt.Sprint(int64(c)<<32 | int64(o))
		}
		deadlines := []time.Duration{time.Microsecond, 200 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond, 40 * time.Millisecond, 150 * time.Millisecond}
		newCtx := func() (context.Context, context.CancelFunc) {
			d := deadlines[rng.IntN(len(deadlines))]
			if rng.IntN(2) == 0 {
				return context.WithTimeoutCause(context.Background(), d, errSACause)
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			tm := time.AfterFunc(d, func() { cancel(errSACause) })
			return ctx, func() { tm.Stop(); cancel(nil) }
		}
		for step := range 150 {
			var what string
			switch k := rng.IntN(10); {
			case k < 2: // the other session toggles a hold
				id := pool[rng.IntN(len(pool))]
				fn := "pg_advisory_lock"
				if rng.IntN(2) == 0 {
					fn += "_shared"
				}
				key := fn + "(" + sqlArgs(id) + ")"
				if otherHolds[key] {
					saExec(t, other, "SELECT "+strings.Replace(fn, "lock", "unlock", 1)+"("+sqlArgs(id)+")")
					delete(otherHolds, key)
					what = "other drops " + key
				} else {
					var ok bool
					if err := other.QueryRow(context.Background(), "SELECT "+strings.Replace(fn, "advisory_lock", "try_advisory_lock", 1)+"("+sqlArgs(id)+")").Scan(&ok); err != nil {
						t.Fatal(err)
					}
					if ok {
						otherHolds[key] = true
					}
					what = fmt.Sprintf("other takes %s: %v", key, ok)
				}
			case k < 6: // Acquire or TryAcquire
				m := locks[rng.IntN(len(locks))]
				ctx, cancel := newCtx()
				var ok bool
				var err error
				try := rng.IntN(3) == 0
				if try {
					ok, err = m.l.TryAcquire(ctx)
				} else {
					err = m.l.Acquire(ctx)
					ok = err == nil
				}
				what = fmt.Sprintf("%v try=%v: %v %v", m.l, try, ok, err)
				if err != nil && (ok || !errors.Is(err, ctx.Err()) || !errors.Is(err, errSACause)) {
					cancel()
					pgtest.Fatalf(t, "step %d: %s; want an error matching ctx.Err() and its cause", step, what)
				}
				cancel()
				if ok {
					m.count++
				}
			default: // Release
				m := locks[rng.IntN(len(locks))]
				ctx := context.Background()
				if rng.IntN(3) == 0 {
					c, cancel := context.WithCancelCause(ctx)
					cancel(errSACause)
					ctx = c
				}
				err := m.l.Release(ctx)
				what = fmt.Sprintf("release %v (count %d): %v", m.l, m.count, err)
				switch {
				case m.count == 0 && !errors.Is(err, alock.ErrNotHeld):
					pgtest.Fatalf(t, "step %d: %s; want ErrNotHeld", step, what)
				case m.count > 0 && err != nil:
					pgtest.Fatalf(t, "step %d: %s", step, what)
				case m.count > 0:
					m.count--
				}
			}
			want := map[string]bool{}
			for _, m := range locks {
				if m.l.Locked() != (m.count > 0) {
					pgtest.Fatalf(t, "step %d (%s): %v Locked %v, model count %d", step, what, m.l, m.l.Locked(), m.count)
				}
				if m.count > 0 {
					for _, id := range m.l.IDs() {
						want[locktest.Hold(id, m.l.Mode())] = true
					}
				}
			}
			wantList := slices.Sorted(maps.Keys(want))
			saExpect(t, fmt.Sprintf("step %d (%s)", step, what), dsn, s.pid, wantList...)
		}
		for _, m := range locks {
			for ; m.count > 0; m.count-- {
				if err := m.l.Release(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		saExpect(t, "at the end", dsn, s.pid)
	})
}
