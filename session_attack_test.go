package alock_test

// Adversarial tests of the Session's shared connection (the Gate, the wait
// slot, preemption, polling, Close and loss). Each checks the library's
// answers against the server's view (pg_locks for the session's backend).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// attackSession opens a Session whose clean-up Close is bounded and skipped
// if the test closed it already (a second Close is itself under test).
func attackSession(t *testing.T, dsn string, opts *alock.SessionOptions) *alock.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := alock.Open(ctx, dsn, opts)
	if err != nil {
		pgtest.Fatalf(t, "Open: %v", err)
	}
	t.Cleanup(func() {
		if s.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	})
	return s
}

// holdKeys makes another connection hold keys (exclusive) until the test ends
// or it is told to unlock them.
func holdKeys(t *testing.T, dsn string, keys ...int64) *pgx.Conn {
	t.Helper()
	c := pgtest.Connect(t, dsn)
	for _, k := range keys {
		if _, err := c.Exec(context.Background(), "SELECT pg_advisory_lock($1)", k); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// within runs fn and fails the test if it has not returned within d.
func within(t *testing.T, d time.Duration, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		t.Errorf("%s has not returned within %v", what, d)
		return false
	}
}

// TestAttackCloseTwice: Close is documented as safe to call twice. The
// second Close must return (at once, or at the latest when its ctx ends).
func TestAttackCloseTwice(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	within(t, 3*time.Second, "a second Close (ctx 1 s)", func() { _ = s.Close(ctx) })
}

// TestAttackConcurrentClose: two goroutines Close the Session at once.
func TestAttackConcurrentClose(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = s.Close(ctx)
		})
	}
	within(t, 3*time.Second, "two concurrent Closes (ctx 1 s)", wg.Wait)
}

// errCause is the cause given to contexts in the cause tests.
var errCause = errors.New("attack: my cause")

// TestAttackCancelCauseWhileWaiting: an Acquire waiting on the server (the
// wait slot) cancelled with a cause returns an error that matches both
// ctx.Err() and the cause.
func TestAttackCancelCauseWhileWaiting(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1)
	s := attackSession(t, dsn, nil)
	ctx, cancel := context.WithCancelCause(context.Background())
	waited := make(chan error, 1)
	go func() { waited <- s.NewExclusive(alock.Key(1)).Acquire(ctx) }()
	locktest.WaitWaiting(t, dsn, s.PID())
	cancel(errCause)
	err := <-waited
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errCause) {
		t.Errorf("Acquire cancelled with a cause while waiting on the server: %v; errors.Is(err, ctx.Err()) = %v, errors.Is(err, cause) = %v",
			err, errors.Is(err, context.Canceled), errors.Is(err, errCause))
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks after the cancelled wait: %v, want nothing", got)
	}
}

// TestAttackTimeoutCauseWhileWaiting: the same with WithTimeoutCause.
func TestAttackTimeoutCauseWhileWaiting(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1)
	s := attackSession(t, dsn, nil)
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errCause)
	defer cancel()
	err := s.NewExclusive(alock.Key(1)).Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errCause) {
		t.Errorf("Acquire timed out with a cause while waiting on the server: %v; errors.Is(err, ctx.Err()) = %v, errors.Is(err, cause) = %v",
			err, errors.Is(err, context.DeadlineExceeded), errors.Is(err, errCause))
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks after the timed-out wait: %v, want nothing", got)
	}
}

// TestAttackTimeoutCausePlainConn: the same on a plain *pgx.Conn.
func TestAttackTimeoutCausePlainConn(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1)
	conn := pgtest.Connect(t, dsn)
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errCause)
	defer cancel()
	err := alock.NewExclusive(conn, alock.Key(1)).Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errCause) {
		t.Errorf("Acquire on a plain conn timed out with a cause: %v; errors.Is(err, ctx.Err()) = %v, errors.Is(err, cause) = %v",
			err, errors.Is(err, context.DeadlineExceeded), errors.Is(err, errCause))
	}
}

// TestAttackCancelCauseWhilePolling: a second Lock that polls (another one
// has the wait slot) cancelled with a cause.
func TestAttackCancelCauseWhilePolling(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1, 2)
	s := attackSession(t, dsn, nil)
	slotCtx, stopSlot := context.WithCancel(context.Background())
	defer stopSlot()
	slot := make(chan error, 1)
	go func() { slot <- s.NewExclusive(alock.Key(1)).Acquire(slotCtx) }()
	locktest.WaitWaiting(t, dsn, s.PID())
	for i := range 10 {
		ctx, cancel := context.WithCancelCause(context.Background())
		polled := make(chan error, 1)
		go func() { polled <- s.NewExclusive(alock.Key(2)).Acquire(ctx) }()
		time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
		cancel(errCause)
		err := <-polled
		if !errors.Is(err, context.Canceled) || !errors.Is(err, errCause) {
			t.Errorf("try %d: polling Acquire cancelled with a cause: %v", i, err)
		}
	}
	stopSlot()
	if err := <-slot; !errors.Is(err, context.Canceled) {
		t.Errorf("slot Acquire: %v, want context.Canceled", err)
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks after the cancelled waits: %v, want nothing", got)
	}
}

// TestAttackCloseBreaksWaitWithErrClosed: a waiting Acquire that Close
// breaks off (expired ctx: the statement is broken off with a deadline)
// fails with an error wrapping ErrClosed, not an unexplained one.
func TestAttackCloseBreaksWaitWithErrClosed(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1)
	for i := range 5 {
		s, err := alock.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { waited <- s.NewExclusive(alock.Key(1)).Acquire(context.Background()) }()
		locktest.WaitWaiting(t, dsn, s.PID())
		expired, cancel := context.WithTimeout(context.Background(), 0)
		within(t, 3*time.Second, "Close(expired)", func() { _ = s.Close(expired) })
		cancel()
		select {
		case err := <-waited:
			if !errors.Is(err, alock.ErrClosed) {
				t.Errorf("try %d: Acquire broken off by Close(expired ctx): %v, want ErrClosed", i, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("try %d: Acquire not ended 3 s after Close", i)
		}
		if !errors.Is(s.Err(), alock.ErrClosed) || errors.Is(s.Err(), alock.ErrLost) {
			t.Errorf("try %d: Err %v, want ErrClosed only", i, s.Err())
		}
	}
}

// TestAttackCloseBreaksWaitLiveCtx: the same with a live ctx for Close.
func TestAttackCloseBreaksWaitLiveCtx(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	holdKeys(t, dsn, 1, 2)
	for i := range 5 {
		s, err := alock.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 2)
		go func() { waited <- s.NewExclusive(alock.Key(1)).Acquire(context.Background()) }()
		locktest.WaitWaiting(t, dsn, s.PID())
		go func() { waited <- s.NewExclusive(alock.Key(2)).Acquire(context.Background()) }() // polls
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		within(t, 4*time.Second, "Close", func() { _ = s.Close(ctx) })
		cancel()
		for range 2 {
			select {
			case err := <-waited:
				if !errors.Is(err, alock.ErrClosed) {
					t.Errorf("try %d: Acquire broken off by Close: %v, want ErrClosed", i, err)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("try %d: Acquire not ended 3 s after Close", i)
			}
		}
	}
}

// TestAttackOpsAfterClose: every operation after Close fails with ErrClosed
// (a Release of a held Lock: ErrClosed or ErrLost), at once, and Locked is
// false.
func TestAttackOpsAfterClose(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	ctx := context.Background()
	held := s.NewExclusive(alock.Key(1))
	mustAcquire(t, held)
	mustAcquire(t, held) // count 2
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := s.NewExclusive(alock.Key(2))
	within(t, 2*time.Second, "operations after Close", func() {
		if err := fresh.Acquire(ctx); !errors.Is(err, alock.ErrClosed) {
			t.Errorf("Acquire after Close: %v", err)
		}
		if ok, err := fresh.TryAcquire(ctx); ok || !errors.Is(err, alock.ErrClosed) {
			t.Errorf("TryAcquire after Close: %v %v", ok, err)
		}
		if err := fresh.Do(ctx, func(context.Context) error { return nil }); !errors.Is(err, alock.ErrClosed) {
			t.Errorf("Do after Close: %v", err)
		}
		if err := fresh.Release(ctx); !errors.Is(err, alock.ErrNotHeld) {
			t.Errorf("Release of an unheld Lock after Close: %v", err)
		}
		if held.Locked() {
			t.Error("Locked after Close")
		}
		if err := held.Acquire(ctx); !errors.Is(err, alock.ErrClosed) {
			t.Errorf("re-entrant Acquire after Close: %v", err)
		}
		for i := range 2 {
			if err := held.Release(ctx); !errors.Is(err, alock.ErrClosed) && !errors.Is(err, alock.ErrLost) {
				t.Errorf("Release %d of a held Lock after Close: %v", i, err)
			}
		}
		if err := held.Release(ctx); !errors.Is(err, alock.ErrNotHeld) {
			t.Errorf("third Release after Close (count was 2): %v, want ErrNotHeld", err)
		}
	})
	select {
	case <-held.Lost():
	default:
		t.Error("Lost not closed after Close")
	}
}

// TestAttackReentrantReleaseRace: goroutines Acquire and Release one Lock
// in a loop (balanced), so the last Release of one races the re-entrant
// Acquire of another. Every call must succeed, and at the end the Lock and
// the server hold nothing.
func TestAttackReentrantReleaseRace(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	l := s.NewExclusive(alock.Key(1))
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var fails atomic.Int32
	var rounds atomic.Int64
	for range 3 {
		wg.Go(func() {
			for time.Now().Before(deadline) && fails.Load() < 5 {
				if err := l.Acquire(ctx); err != nil {
					fails.Add(1)
					t.Errorf("Acquire: %v", err)
					continue
				}
				if err := l.Release(ctx); err != nil {
					fails.Add(1)
					t.Errorf("Release: %v", err)
				}
				rounds.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d rounds", rounds.Load())
	if l.Locked() {
		t.Error("Locked after balanced Acquire/Release")
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks at quiescence: %v, want nothing", got)
	}
	if err := s.Err(); err != nil {
		t.Errorf("session ended: %v", err)
	}
}

// attackLock is one Lock of the stress test with what it stands for.
type attackLock struct {
	l    *alock.Lock
	ids  []alock.ID
	mode alock.Mode
}

// TestAttackMixedTraffic: goroutines Acquire (with deadlines), TryAcquire,
// Do and Release many Locks of one Session (same and different ids, share
// and exclusive, re-entrant), while other sessions take and free
// conflicting locks. Only deadline errors are explained. At quiescence,
// pg_locks for the session shows exactly what its held Locks stand for.
func TestAttackMixedTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	ctx := context.Background()
	var locks []attackLock
	for _, ids := range [][]alock.ID{{alock.Key(1)}, {alock.Key(2)}, {alock.Key(3)}, {alock.Key(1), alock.Key(2)}, {alock.Key(3), alock.Key(4)}} {
		for range 2 {
			locks = append(locks, attackLock{s.NewExclusive(ids...), ids, alock.Exclusive}, attackLock{s.NewShare(ids...), ids, alock.Share})
		}
	}
	deadline := time.Now().Add(4 * time.Second)
	// Other sessions take and free conflicting locks.
	var others sync.WaitGroup
	for o := range 2 {
		c := pgtest.Connect(t, dsn)
		others.Go(func() {
			for time.Now().Before(deadline) {
				k := int64(1 + rand.IntN(4))
				fn := "pg_try_advisory_lock"
				if o == 1 {
					fn = "pg_try_advisory_lock_shared"
				}
				var ok bool
				if err := c.QueryRow(ctx, "SELECT "+fn+"($1)", k).Scan(&ok); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(80)) * time.Millisecond)
				if ok {
					if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
						t.Error(err)
						return
					}
				}
				time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			}
		})
	}
	var workers sync.WaitGroup
	var ops atomic.Int64
	held := make([][]*alock.Lock, 6) // each worker's acquisitions still to release
	for w := range 6 {
		workers.Go(func() {
			var mine []*alock.Lock
			unexplained := func(what string, err error) {
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: %v", what, err)
				}
			}
			for time.Now().Before(deadline) {
				ops.Add(1)
				a := locks[rand.IntN(len(locks))]
				switch op := rand.IntN(10); {
				case op < 3:
					actx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(300))*time.Millisecond)
					err := a.l.Acquire(actx)
					cancel()
					unexplained("Acquire "+a.l.String(), err)
					if err == nil {
						mine = append(mine, a.l)
					}
				case op < 5:
					ok, err := a.l.TryAcquire(ctx)
					unexplained("TryAcquire "+a.l.String(), err)
					if ok {
						mine = append(mine, a.l)
					}
				case op < 6:
					dctx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(200))*time.Millisecond)
					err := a.l.Do(dctx, func(context.Context) error {
						if !a.l.Locked() {
							return errors.New("not Locked inside Do")
						}
						return nil
					})
					cancel()
					unexplained("Do "+a.l.String(), err)
				default:
					if len(mine) > 0 {
						i := rand.IntN(len(mine))
						r := mine[i]
						mine = slices.Delete(mine, i, i+1)
						var rctx context.Context = ctx
						if rand.IntN(4) == 0 {
							c, cancel := context.WithCancel(ctx)
							cancel()
							rctx = c
						}
						if err := r.Release(rctx); err != nil {
							t.Errorf("Release %v: %v", r, err)
						}
					}
				}
			}
			held[w] = mine
		})
	}
	if !within(t, 20*time.Second, "the workers", workers.Wait) {
		return
	}
	others.Wait()
	t.Logf("%d operations", ops.Load())
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
	// The server must show exactly the union of the held Locks' ids.
	want := map[string]bool{}
	count := map[*alock.Lock]int{}
	for _, mine := range held {
		for _, l := range mine {
			count[l]++
		}
	}
	for _, a := range locks {
		if a.l.Locked() != (count[a.l] > 0) {
			t.Errorf("%v: Locked %v, but the workers hold it %d times", a.l, a.l.Locked(), count[a.l])
		}
		if count[a.l] > 0 {
			for _, id := range a.ids {
				want[hold(id, a.mode)] = true
			}
		}
	}
	var wantList []string
	for h := range want {
		wantList = append(wantList, h)
	}
	slices.Sort(wantList)
	if got := locktest.Holds(t, dsn, s.PID()); !slices.Equal(got, wantList) {
		t.Errorf("pg_locks at quiescence: %v, library holds %v", got, wantList)
	}
	for l, n := range count {
		for range n {
			if err := l.Release(ctx); err != nil {
				t.Errorf("final Release %v: %v", l, err)
			}
		}
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks after releasing everything: %v", got)
	}
}

// TestAttackDeadlockTwoSessions: two Sessions, each with a Lock held and
// another Lock waiting for the other's: one wait fails with ErrDeadlock,
// the other gets its lock once the victim releases.
func TestAttackDeadlockTwoSessions(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s1, s2 := attackSession(t, dsn, nil), attackSession(t, dsn, nil)
	h1, h2 := s1.NewExclusive(alock.Key(1)), s2.NewExclusive(alock.Key(2))
	mustAcquire(t, h1)
	mustAcquire(t, h2)
	w1, w2 := s1.NewExclusive(alock.Key(2)), s2.NewExclusive(alock.Key(1))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r1, r2 := make(chan error, 1), make(chan error, 1)
	go func() { r1 <- w1.Acquire(wctx) }()
	go func() { r2 <- w2.Acquire(wctx) }()
	var victim, winner *alock.Lock
	var victimHold *alock.Lock
	var winnerCh chan error
	select {
	case err := <-r1:
		if !errors.Is(err, alock.ErrDeadlock) {
			t.Fatalf("first result (session 1): %v, want ErrDeadlock", err)
		}
		victim, victimHold, winner, winnerCh = w1, h1, w2, r2
	case err := <-r2:
		if !errors.Is(err, alock.ErrDeadlock) {
			t.Fatalf("first result (session 2): %v, want ErrDeadlock", err)
		}
		victim, victimHold, winner, winnerCh = w2, h2, w1, r1
	}
	if victim.Locked() || !victimHold.Locked() {
		t.Fatalf("victim: wait Locked %v, hold Locked %v", victim.Locked(), victimHold.Locked())
	}
	mustRelease(t, victimHold)
	if err := <-winnerCh; err != nil {
		t.Fatalf("the other wait after the victim released: %v", err)
	}
	if !winner.Locked() {
		t.Fatal("winner not Locked")
	}
}

// TestAttackDeadlockWithPoller: as above, but the session-1 side of the
// cycle is a Lock that polls (another Lock of session 1 has the wait slot,
// waiting for a lock a third session keeps). Records whether the cycle is
// ever broken (the server cannot see a cycle made of try-locks).
func TestAttackDeadlockWithPoller(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 9)
	s1, s2 := attackSession(t, dsn, nil), attackSession(t, dsn, nil)
	h1, h2 := s1.NewExclusive(alock.Key(1)), s2.NewExclusive(alock.Key(2))
	mustAcquire(t, h1)
	mustAcquire(t, h2)
	sctx, stopSlot := context.WithCancel(ctx)
	slot := make(chan error, 1)
	go func() { slot <- s1.NewExclusive(alock.Key(9)).Acquire(sctx) }()
	locktest.WaitWaiting(t, dsn, s1.PID())
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r1, r2 := make(chan error, 1), make(chan error, 1)
	go func() { r1 <- s1.NewExclusive(alock.Key(2)).Acquire(wctx) }()
	go func() { r2 <- s2.NewExclusive(alock.Key(1)).Acquire(wctx) }()
	e1, e2 := <-r1, <-r2
	stopSlot()
	<-slot
	if !errors.Is(e1, alock.ErrDeadlock) && !errors.Is(e2, alock.ErrDeadlock) {
		t.Errorf("deadlock through a polling Lock never detected within 5 s: %v / %v", e1, e2)
	}
}

// hasHold reports whether the server shows h granted to pid.
func hasHold(t *testing.T, dsn string, pid uint32, h string) bool {
	return slices.Contains(locktest.Holds(t, dsn, pid), h)
}

// TestAttackGrantCancelRaceWhilePreempted: a waiting Acquire with a
// deadline, preempted again and again by a polling Lock of the same
// Session, while the other session frees the lock right around the
// deadline. Whatever Acquire answers, the server must agree.
func TestAttackGrantCancelRaceWhilePreempted(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 2) // the poller's key, never freed
	s := attackSession(t, dsn, nil)
	pctx, stopPoll := context.WithCancel(ctx)
	polled := make(chan error, 1)
	l := s.NewExclusive(alock.Key(1))
	other := pgtest.Connect(t, dsn)
	var wins, losses int
	for i := range 30 {
		if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(1)"); err != nil {
			t.Fatal(err)
		}
		d := time.Duration(100+rand.IntN(100)) * time.Millisecond
		actx, cancel := context.WithTimeout(ctx, d)
		waited := make(chan error, 1)
		go func() { waited <- l.Acquire(actx) }()
		if i == 0 {
			locktest.WaitWaiting(t, dsn, s.PID())
			go func() { polled <- s.NewExclusive(alock.Key(2)).Acquire(pctx) }()
		}
		time.Sleep(d + time.Duration(rand.IntN(46)-40)*time.Millisecond)
		if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock(1)"); err != nil {
			t.Fatal(err)
		}
		err := <-waited
		cancel()
		onServer := hasHold(t, dsn, s.PID(), hold(alock.Key(1), alock.Exclusive))
		switch {
		case err == nil:
			wins++
			if !onServer || !l.Locked() {
				t.Errorf("try %d: Acquire succeeded, Locked %v, server holds %v", i, l.Locked(), onServer)
			}
			mustRelease(t, l)
		default:
			losses++
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("try %d: unexplained error %v", i, err)
			}
			if onServer || l.Locked() {
				t.Errorf("try %d: Acquire failed (%v), Locked %v, server holds %v", i, err, l.Locked(), onServer)
			}
		}
		if hasHold(t, dsn, s.PID(), hold(alock.Key(1), alock.Exclusive)) {
			t.Fatalf("try %d: ghost Key(1) on the server", i)
		}
	}
	stopPoll()
	if err := <-polled; !errors.Is(err, context.Canceled) {
		t.Errorf("poller: %v", err)
	}
	t.Logf("%d granted, %d timed out", wins, losses)
}

// TestAttackTerminateWhilePreempted: the backend is terminated while one
// Lock waits (and is preempted over and over by a polling one) and another
// is held. Every Acquire ends with ErrLost, Lost and Done close, Err has
// the server's cause, and nothing hangs.
func TestAttackTerminateWhilePreempted(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 1, 2)
	for i := range 6 {
		s := attackSession(t, dsn, nil)
		h := s.NewShare(alock.Key(3))
		mustAcquire(t, h)
		waited := make(chan error, 2)
		go func() { waited <- s.NewExclusive(alock.Key(1)).Acquire(ctx) }()
		locktest.WaitWaiting(t, dsn, s.PID())
		go func() { waited <- s.NewExclusive(alock.Key(2)).Acquire(ctx) }()
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		terminate(t, dsn, s.PID())
		for range 2 {
			select {
			case err := <-waited:
				if !errors.Is(err, alock.ErrLost) {
					t.Errorf("try %d: Acquire after the termination: %v, want ErrLost", i, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("try %d: Acquire still running 5 s after the termination", i)
			}
		}
		select {
		case <-h.Lost():
		case <-time.After(2 * time.Second):
			t.Fatalf("try %d: Lost not closed", i)
		}
		<-s.Done()
		if !errors.Is(s.Err(), alock.ErrLost) {
			t.Errorf("try %d: Err %v", i, s.Err())
		}
		if h.Locked() {
			t.Errorf("try %d: Locked after the loss", i)
		}
		if err := h.Release(ctx); !errors.Is(err, alock.ErrLost) {
			t.Errorf("try %d: Release after the loss: %v", i, err)
		}
	}
}

// blockFence makes another session lock the fencing sequence, so that the
// Session's next nextval blocks (a statement that does not only wait, so
// it cannot be preempted); unblock ends that transaction.
func blockFence(t *testing.T, dsn, seq string) (unblock func()) {
	t.Helper()
	c := pgtest.Connect(t, dsn)
	tx, err := c.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "ALTER SEQUENCE "+seq+" INCREMENT BY 1"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unblock = func() { once.Do(func() { _ = tx.Rollback(context.Background()) }) }
	t.Cleanup(unblock)
	return unblock
}

// waitBlocked waits until backend pid waits on the server for a lock of
// any kind (a relation's, for nextval behind blockFence).
func waitBlocked(t *testing.T, dsn string, pid uint32) {
	t.Helper()
	admin := pgtest.Connect(t, dsn)
	pgtest.WaitFor(t, fmt.Sprintf("pid %d blocked on the server", pid), func() bool {
		var blocked bool
		if err := admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)`, pid).Scan(&blocked); err != nil {
			t.Fatal(err)
		}
		return blocked
	})
}

// TestAttackCancelWhileQueuedAtGate: while the connection runs a statement
// that cannot be preempted (a fenced Acquire drawing its token, blocked),
// other goroutines queue at the gate; cancelling them (with causes) ends
// them with errors matching ctx.Err() and the cause, without waiting for
// the blocked statement: within CleanupTimeout, which bounds what is done
// after a ctx ends, plus 3 s of slack for a loaded machine.
func TestAttackCancelWhileQueuedAtGate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true, FenceSequence: "atk_fence"})
	unblock := blockFence(t, dsn, "atk_fence")
	first := make(chan error, 1)
	fenced := s.NewExclusive(alock.Key(1))
	go func() { first <- fenced.Acquire(ctx) }()
	waitBlocked(t, dsn, s.PID()) // nextval is blocked
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, 3)
	for i := range 3 {
		go func() {
			qctx, cancel := context.WithTimeoutCause(ctx, time.Duration(100+50*i)*time.Millisecond, errCause)
			defer cancel()
			start := time.Now()
			var err error
			switch i {
			case 0:
				err = s.NewExclusive(alock.Key(2)).Acquire(qctx)
			case 1:
				_, err = s.NewShare(alock.Key(3)).TryAcquire(qctx)
			case 2:
				err = s.NewExclusive(alock.Key(4)).Do(qctx, func(context.Context) error { return nil })
			}
			results <- result{err, time.Since(start) - time.Duration(100+50*i)*time.Millisecond}
		}()
	}
	const bound = alock.CleanupTimeout + 3*time.Second
	for range 3 {
		var r result
		select {
		case r = <-results:
		case <-time.After(2 * bound):
			t.Fatalf("a queued operation has not returned %v after its deadline", 2*bound)
		}
		if !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, errCause) {
			t.Errorf("queued operation: %v; want DeadlineExceeded and the cause", r.err)
		}
		if r.took > bound {
			t.Errorf("queued operation returned %v after its deadline, more than CleanupTimeout and slack (%v)", r.took, bound)
		}
	}
	unblock()
	if err := <-first; err != nil {
		t.Fatalf("fenced Acquire: %v", err)
	}
	if fenced.Token() == 0 {
		t.Error("no token")
	}
	if got := locktest.Holds(t, dsn, s.PID()); !slices.Equal(got, []string{hold(alock.Key(1), alock.Exclusive)}) {
		t.Errorf("pg_locks: %v, want only Key(1)", got)
	}
}

// TestAttackCancelWhileDrawingToken: an Acquire whose ctx ends while it
// draws its fencing token (nextval blocked) returns the ctx's error soon
// (within CleanupTimeout, which bounds the cancel request and the wait for
// the cancelled statement, plus 3 s of slack for a loaded machine), holds
// nothing (library and server), and leaves the session alive (the cancel
// worked: the session was not closed for want of it).
func TestAttackCancelWhileDrawingToken(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true, FenceSequence: "atk_fence"})
	unblock := blockFence(t, dsn, "atk_fence")
	l := s.NewExclusive(alock.Key(1))
	actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Acquire(actx)
	took := time.Since(start)
	unblock()
	t.Logf("Acquire: %v after %v; session Err %v", err, took, s.Err())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire: %v, want DeadlineExceeded", err)
	}
	if bound := 300*time.Millisecond + alock.CleanupTimeout + 3*time.Second; took > bound {
		t.Errorf("Acquire returned %v after a 300 ms deadline, more than CleanupTimeout and slack (%v)", took, bound)
	}
	if s.Err() != nil {
		t.Errorf("the session ended: %v", s.Err())
	}
	if l.Locked() {
		t.Error("Locked after a failed Acquire")
	}
	if s.Err() == nil {
		if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
			t.Errorf("pg_locks: %v, want nothing", got)
		}
	}
}

// TestAttackCloseRacesTraffic: Close (with an expired, a short or a live
// ctx) at a random moment while goroutines Acquire, TryAcquire, Do and
// Release on the Session, some waiting or polling for locks held
// elsewhere. Close returns, every operation returns, the only errors are
// ErrClosed (or an explained ctx error), and Err says ErrClosed, not
// ErrLost.
func TestAttackCloseRacesTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 5, 6)
	for i := range 9 {
		s, err := alock.Open(ctx, dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []string
		report := func(what string, err error) {
			if err == nil || errors.Is(err, alock.ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			mu.Lock()
			bad = append(bad, fmt.Sprintf("%s: %v", what, err))
			mu.Unlock()
		}
		for g := range 5 {
			wg.Go(func() {
				l := s.NewExclusive(alock.Key(int64(1 + g)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					switch g {
					case 0, 1: // short holds
						if err := l.Acquire(ctx); err != nil {
							report("Acquire", err)
							if errors.Is(err, alock.ErrClosed) {
								return
							}
							continue
						}
						report("Release", l.Release(ctx))
					case 2:
						report("Do", l.Do(ctx, func(context.Context) error { return nil }))
					case 3, 4: // waits: the slot and a poller
						l = s.NewExclusive(alock.Key(int64(2 + g)))
						actx, cancel := context.WithTimeout(ctx, time.Duration(50+rand.IntN(300))*time.Millisecond)
						err := l.Acquire(actx)
						cancel()
						report("waiting Acquire", err)
						if errors.Is(err, alock.ErrClosed) {
							return
						}
					}
				}
			})
		}
		time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
		var cctx context.Context
		var cancel context.CancelFunc
		switch i % 3 {
		case 0:
			cctx, cancel = context.WithTimeout(ctx, 0)
		case 1:
			cctx, cancel = context.WithTimeout(ctx, time.Millisecond)
		default:
			cctx, cancel = context.WithTimeout(ctx, 3*time.Second)
		}
		closed := within(t, 5*time.Second, fmt.Sprintf("try %d: Close", i), func() { _ = s.Close(cctx) })
		cancel()
		close(stop)
		if !within(t, 5*time.Second, fmt.Sprintf("try %d: the operations after Close", i), wg.Wait) || !closed {
			return
		}
		for _, b := range bad {
			t.Errorf("try %d (close ctx %d): %s", i, i%3, b)
		}
		if err := s.Err(); !errors.Is(err, alock.ErrClosed) || errors.Is(err, alock.ErrLost) {
			t.Errorf("try %d: Err %v, want ErrClosed only", i, err)
		}
	}
}

// TestAttackTinyDeadlines: Acquire and TryAcquire with deadlines from 0 to
// a few round trips, spaced around the watchdog's parkDelay, while another
// Lock of the Session waits on the server (so every operation preempts
// something). After each, the library and the server agree.
func TestAttackTinyDeadlines(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 9)
	s := attackSession(t, dsn, nil)
	wctx, stopWait := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { waited <- s.NewExclusive(alock.Key(9)).Acquire(wctx) }()
	locktest.WaitWaiting(t, dsn, s.PID())
	l := s.NewExclusive(alock.Key(1), alock.Key(2))
	want := []string{hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive)}
	var ok, failed int
	for i := range 100 {
		d := time.Duration(rand.IntN(40000)) * time.Microsecond
		actx, cancel := context.WithTimeout(ctx, d)
		var err error
		got := false
		if i%2 == 0 {
			err = l.Acquire(actx)
			got = err == nil
		} else {
			got, err = l.TryAcquire(actx)
		}
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("op %d (deadline %v): unexplained %v", i, d, err)
		}
		var server []string
		for _, h := range locktest.Holds(t, dsn, s.PID()) {
			if h != hold(alock.Key(9), alock.Exclusive)+"(waiting)" {
				server = append(server, h)
			}
		}
		if got {
			ok++
			if !l.Locked() || !slices.Equal(server, want) {
				t.Fatalf("op %d: granted; Locked %v, server %v", i, l.Locked(), server)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatalf("op %d: Release: %v", i, err)
			}
		} else {
			failed++
			if l.Locked() || len(server) != 0 {
				t.Fatalf("op %d: not granted (%v); Locked %v, server %v", i, err, l.Locked(), server)
			}
		}
		time.Sleep(time.Duration(40+rand.IntN(20)) * time.Millisecond)
	}
	stopWait()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Errorf("waiter: %v", err)
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("pg_locks at the end: %v", got)
	}
	t.Logf("%d granted, %d not", ok, failed)
}

// TestAttackTerminateRacesTraffic: the backend is terminated at a random
// moment while goroutines hold, wait, poll, Do and Release. Every
// operation returns, the only errors wrap ErrLost (or an explained ctx
// error), every held Lock's Lost closes, Done closes, and Err wraps ErrLost.
func TestAttackTerminateRacesTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 5, 6)
	for i := range 8 {
		s := attackSession(t, dsn, nil)
		keep := s.NewShare(alock.Key(7))
		mustAcquire(t, keep)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []string
		report := func(what string, err error) bool {
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				return false
			}
			if !errors.Is(err, alock.ErrLost) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: %v", what, err))
				mu.Unlock()
			}
			return true
		}
		for g := range 5 {
			wg.Go(func() {
				l := s.NewExclusive(alock.Key(int64(1 + g)))
				if g >= 3 {
					l = s.NewExclusive(alock.Key(int64(2 + g)))
				}
				for {
					select {
					case <-stop:
						return
					default:
					}
					switch g {
					case 0, 1:
						if report("Acquire", l.Acquire(ctx)) {
							return
						}
						if report("Release", l.Release(ctx)) {
							return
						}
					case 2:
						if report("Do", l.Do(ctx, func(context.Context) error { return nil })) {
							return
						}
					default:
						actx, cancel := context.WithTimeout(ctx, time.Duration(50+rand.IntN(300))*time.Millisecond)
						err := l.Acquire(actx)
						cancel()
						if report("waiting Acquire", err) {
							return
						}
					}
				}
			})
		}
		time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
		terminate(t, dsn, s.PID())
		select {
		case <-keep.Lost():
		case <-time.After(3 * time.Second):
			t.Errorf("try %d: Lost not closed 3 s after the termination", i)
		}
		if !within(t, 5*time.Second, fmt.Sprintf("try %d: the operations after the termination", i), wg.Wait) {
			close(stop)
			return
		}
		close(stop)
		for _, b := range bad {
			t.Errorf("try %d: %s", i, b)
		}
		<-s.Done()
		if err := s.Err(); !errors.Is(err, alock.ErrLost) {
			t.Errorf("try %d: Err %v, want ErrLost", i, err)
		}
		if err := keep.Release(ctx); !errors.Is(err, alock.ErrLost) {
			t.Errorf("try %d: Release after the loss: %v", i, err)
		}
	}
}

// TestAttackCloseWhileProbing: Close (expired ctx) and pg_terminate_backend
// at random moments of a Session that probes every 20 ms, so that Close
// meets the watchdog parking, probing or idle. Close returns, Err is
// ErrClosed (or ErrLost when the termination came first), held Locks'
// Lost closes.
func TestAttackCloseWhileProbing(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	for i := range 20 {
		s, err := alock.Open(context.Background(), dsn, &alock.SessionOptions{KeepaliveInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		l := s.NewExclusive(alock.Key(1))
		mustAcquire(t, l)
		time.Sleep(time.Duration(rand.IntN(120)) * time.Millisecond)
		if i%4 == 3 {
			terminate(t, dsn, s.PID()) // then Close at once
		}
		expired, cancel := context.WithTimeout(context.Background(), 0)
		within(t, 3*time.Second, fmt.Sprintf("try %d: Close", i), func() { _ = s.Close(expired) })
		cancel()
		err = s.Err()
		if i%4 != 3 && (!errors.Is(err, alock.ErrClosed) || errors.Is(err, alock.ErrLost)) {
			t.Errorf("try %d: Err %v, want ErrClosed only", i, err)
		}
		if err == nil {
			t.Errorf("try %d: Err nil after Close", i)
		}
		select {
		case <-l.Lost():
		default:
			t.Errorf("try %d: Lost not closed after Close", i)
		}
		if err := l.Release(context.Background()); !errors.Is(err, alock.ErrClosed) && !errors.Is(err, alock.ErrLost) {
			t.Errorf("try %d: Release after Close: %v", i, err)
		}
	}
}

// TestAttackCloseBreaksBlockedStatement: Close with a short ctx while the
// connection runs a statement that cannot be preempted (a fenced Acquire's
// nextval, blocked): Close returns soon after its ctx ends, the Acquire
// fails with ErrClosed, and Err is ErrClosed.
func TestAttackCloseBreaksBlockedStatement(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true, FenceSequence: "atk_fence"})
	blockFence(t, dsn, "atk_fence")
	first := make(chan error, 1)
	go func() { first <- s.NewExclusive(alock.Key(1)).Acquire(ctx) }()
	time.Sleep(300 * time.Millisecond)
	queued := make(chan error, 1)
	go func() { queued <- s.NewExclusive(alock.Key(2)).Acquire(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	within(t, 3*time.Second, "Close(100 ms)", func() { _ = s.Close(cctx) })
	t.Logf("Close took %v", time.Since(start))
	for _, ch := range []chan error{first, queued} {
		select {
		case err := <-ch:
			if !errors.Is(err, alock.ErrClosed) {
				t.Errorf("Acquire broken off by Close: %v, want ErrClosed", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Acquire still running 3 s after Close")
		}
	}
	if err := s.Err(); !errors.Is(err, alock.ErrClosed) || errors.Is(err, alock.ErrLost) {
		t.Errorf("Err %v, want ErrClosed only", err)
	}
}
