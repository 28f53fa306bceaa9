package alock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// newLocker returns a Locker whose sessions carry application_name app,
// closed at the end of the test.
func newLocker(t *testing.T, dsn, app string, opts *alock.LockerOptions) *alock.Locker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lk, err := alock.NewLocker(ctx, withParam(dsn, "application_name", app), opts)
	return keepLocker(t, lk, err)
}

// newLockerConfig is newLocker with a configuration the test built (hooks
// on its opens, an exec mode).
func newLockerConfig(t *testing.T, cfg *pgx.ConnConfig, opts *alock.LockerOptions) *alock.Locker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lk, err := alock.NewLockerConfig(ctx, cfg, opts)
	return keepLocker(t, lk, err)
}

// keepLocker fails the test if the Locker could not be made, and closes it
// at the end of the test.
func keepLocker(t *testing.T, lk *alock.Locker, err error) *alock.Locker {
	t.Helper()
	if err != nil {
		pgtest.Fatalf(t, "new Locker: %v", err)
	}
	t.Cleanup(func() { _ = lk.Close(context.Background()) })
	return lk
}

// backends counts the backends with application_name app, and the
// advisory locks they hold (granted) or await.
func backends(t *testing.T, dsn, app string) (sessions, held, waiting int) {
	t.Helper()
	return backendsOn(t, pgtest.Connect(t, dsn), app)
}

// backendsOn is backends over an open connection, for loops.
func backendsOn(t *testing.T, admin *pgx.Conn, app string) (sessions, held, waiting int) {
	t.Helper()
	err := admin.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = $1),
		       (SELECT count(*) FILTER (WHERE l.granted) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		         WHERE l.locktype = 'advisory' AND a.application_name = $1),
		       (SELECT count(*) FILTER (WHERE NOT l.granted) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		         WHERE l.locktype = 'advisory' AND a.application_name = $1)`, app).Scan(&sessions, &held, &waiting)
	if err != nil {
		t.Fatal(err)
	}
	return sessions, held, waiting
}

// TestLockerExcludesGoroutines: Locks of one Locker exclude each other
// inside the process (share with share does not), over at most MaxSessions
// connections, and nothing is left held.
func TestLockerExcludesGoroutines(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	lk := newLocker(t, dsn, "alock_locker_excl", &alock.LockerOptions{MaxSessions: 2})
	const keys = 4
	var inside [keys]atomic.Int32 // >0: shares inside; -1: an exclusive inside
	var maxShares atomic.Int32
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if n, _, _ := backends(t, dsn, "alock_locker_excl"); n > 2 {
				t.Errorf("%d sessions open, MaxSessions is 2", n)
			}
		}
	})
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 30 {
				k := rng.IntN(keys)
				share := rng.IntN(3) == 0
				l := lk.NewExclusive(alock.Key(int64(k)))
				if share {
					l = lk.NewShare(alock.Key(int64(k)))
				}
				err := l.Do(context.Background(), func(context.Context) error {
					if share {
						if n := inside[k].Add(1); n <= 0 {
							t.Errorf("share inside with an exclusive on Key(%d)", k)
						} else if n > maxShares.Load() {
							maxShares.Store(n)
						}
						time.Sleep(time.Millisecond)
						inside[k].Add(-1)
						return nil
					}
					if !inside[k].CompareAndSwap(0, -1) {
						t.Errorf("exclusive on Key(%d) entered while %d inside", k, inside[k].Load())
						return nil
					}
					time.Sleep(time.Millisecond)
					inside[k].Store(0)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampled.Wait()
	if maxShares.Load() < 2 {
		t.Logf("shares never overlapped (max %d): not checked", maxShares.Load())
	}
	st := lk.Stat()
	if st.Held != 0 || st.Waiting != 0 || st.Acquisitions != 24*30 || st.Sessions > 2 {
		t.Fatalf("Stat after the load: %+v", st)
	}
	t.Logf("Stat: %+v", st)
	if _, held, waiting := backends(t, dsn, "alock_locker_excl"); held+waiting != 0 {
		t.Fatalf("server shows %d held and %d waiting after the load", held, waiting)
	}
}

// TestLockerWaitCostsNoConnection: many goroutines wait for ids held by
// another session; the Locker stays within MaxSessions, at most one waiter
// per session waits on the server, a Release and a TryAcquire go through
// at once, and every waiter gets its id once freed.
func TestLockerWaitCostsNoConnection(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	other := pgtest.Connect(t, dsn)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(k) FROM generate_series(1, 20) k"); err != nil {
		t.Fatal(err)
	}
	lk := newLocker(t, dsn, "alock_locker_wait", &alock.LockerOptions{MaxSessions: 2})
	held := lk.NewExclusive(alock.Key(100))
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 100 {
		wg.Go(func() {
			l := lk.NewExclusive(alock.Key(int64(1 + g%20)))
			if err := l.Do(ctx, func(context.Context) error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	pgtest.WaitFor(t, "100 goroutines waiting", func() bool { return lk.Stat().Waiting == 100 })
	sessions, _, waiting := backends(t, dsn, "alock_locker_wait")
	if sessions > 2 || waiting > 2 {
		t.Fatalf("%d sessions, %d waits on the server: want at most 2 of each", sessions, waiting)
	}
	start := time.Now()
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	ok, err := lk.NewExclusive(alock.Key(101)).TryAcquire(ctx)
	if err != nil || !ok {
		t.Fatalf("TryAcquire of a free id: %v %v", ok, err)
	}
	t.Logf("Release and TryAcquire while 100 goroutines wait: %v", time.Since(start))
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if st := lk.Stat(); st.Waiting != 0 || st.Held != 1 {
		t.Fatalf("Stat: %+v", st)
	}
}

// TestLockerCancelLeavesTheQueue: a goroutine cancelled while it waits in
// the process leaves the queue; the next one gets the lock.
func TestLockerCancelLeavesTheQueue(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_cancel", nil)
	first := lk.NewExclusive(alock.Key(1))
	if err := first.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	cause := errors.New("given up")
	cancelled := make(chan error, 1)
	go func() { cancelled <- lk.NewExclusive(alock.Key(1)).Acquire(cctx) }()
	next := lk.NewExclusive(alock.Key(1))
	got := make(chan error, 1)
	time.Sleep(50 * time.Millisecond)
	go func() { got <- next.Acquire(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel(cause)
	if err := <-cancelled; !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
		t.Fatalf("cancelled Acquire: %v", err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, held, _ := backends(t, dsn, "alock_locker_cancel"); held != 1 {
		t.Fatalf("server shows %d held, want 1", held)
	}
	if err := next.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLockerSessionLoss: with holds and waiters on both sessions,
// terminating one session's backend makes exactly the Locks it carried
// report the loss; its waiter moves on to a live session and still waits;
// later acquisitions use a new session.
func TestLockerSessionLoss(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_loss", &alock.LockerOptions{MaxSessions: 2})
	outsider := holdKeys(t, dsn, 100, 101)
	admin := pgtest.Connect(t, dsn)
	waitingRows := func() int {
		_, _, waiting := backendsOn(t, admin, "alock_locker_loss")
		return waiting
	}
	// Holds go to the first session with nobody waiting on the server: four
	// holds and a waiter on the first, then four holds and a waiter on the
	// second, which the first's wait makes the Locker open.
	var locks []*alock.Lock
	waited := make(chan error, 2)
	for s, waitKey := range []int64{100, 101} {
		for k := range 4 {
			l := lk.NewExclusive(alock.Key(int64(4*s + k)))
			if err := l.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
			locks = append(locks, l)
		}
		w := lk.NewExclusive(alock.Key(waitKey))
		go func() {
			err := w.Acquire(ctx)
			if err == nil {
				err = w.Release(ctx)
			}
			waited <- err
		}()
		pgtest.WaitFor(t, "the waiter to wait on the server", func() bool { return waitingRows() == s+1 })
	}
	var victim uint32
	var carried, sessions int
	if err := admin.QueryRow(ctx, `SELECT min(l.pid), count(*) FILTER (WHERE l.granted AND l.pid = (SELECT min(pid) FROM pg_locks
			JOIN pg_stat_activity USING (pid) WHERE locktype = 'advisory' AND application_name = 'alock_locker_loss')),
			count(DISTINCT l.pid)
		FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND a.application_name = 'alock_locker_loss'`).Scan(&victim, &carried, &sessions); err != nil {
		t.Fatal(err)
	}
	if sessions != 2 || carried != 4 {
		t.Fatalf("holds over %d sessions, %d on the first: want 4 holds and a waiter on each of 2", sessions, carried)
	}
	terminate(t, dsn, victim)
	pgtest.WaitFor(t, "the carried Locks to report the loss", func() bool {
		n := 0
		for _, l := range locks {
			if !l.Locked() {
				n++
			}
		}
		return n == carried
	})
	// The first session's waiter moves on to a live session and still waits.
	pgtest.WaitFor(t, "both waiters to wait on the server again", func() bool { return waitingRows() == 2 })
	lost := 0
	for _, l := range locks {
		err := l.Release(ctx)
		if errors.Is(err, alock.ErrLost) {
			lost++
			select {
			case <-l.Lost():
			default:
				t.Error("Lost not closed for a lost Lock")
			}
		} else if err != nil {
			t.Error(err)
		}
	}
	if lost != carried {
		t.Fatalf("%d Locks reported the loss, the session carried %d", lost, carried)
	}
	if err := outsider.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-waited; err != nil {
			t.Fatalf("a waiter: %v", err)
		}
	}
	for k := range 8 {
		if err := lk.NewExclusive(alock.Key(int64(k))).Do(ctx, func(context.Context) error { return nil }); err != nil {
			t.Fatalf("Do after the loss: %v", err)
		}
	}
	if st := lk.Stat(); st.Losses != int64(carried) || st.Sessions > 2 {
		t.Fatalf("Stat: %+v", st)
	}
}

// TestLockerPacksUncontendedHolds: holds go to one session while nobody
// waits on the server, so that their operations share its batches.
func TestLockerPacksUncontendedHolds(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_pack", &alock.LockerOptions{MaxSessions: 4})
	var wg sync.WaitGroup
	locks := make([]*alock.Lock, 32)
	for i := range locks {
		locks[i] = lk.NewExclusive(alock.Key(int64(i)))
		wg.Go(func() {
			if err := locks[i].Acquire(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	sessions, held, _ := backends(t, dsn, "alock_locker_pack")
	if sessions != 1 || held != len(locks) {
		t.Fatalf("%d holds over %d sessions: want %d on one", held, sessions, len(locks))
	}
	for _, l := range locks {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLockerSpreadsWaitersArrivingTogether: Locks that must wait and come
// at once each wait on the server, on a session of their own, up to
// MaxSessions; the holds of free ids stay on the first session.
func TestLockerSpreadsWaitersArrivingTogether(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_waiters", &alock.LockerOptions{MaxSessions: 4})
	outsider := holdKeys(t, dsn, 100, 101, 102, 103)
	got := make(chan error, 4)
	for k := range 4 {
		go func() {
			l := lk.NewExclusive(alock.Key(int64(100 + k)))
			err := l.Acquire(ctx)
			if err == nil {
				err = l.Release(ctx)
			}
			got <- err
		}()
	}
	admin := pgtest.Connect(t, dsn)
	pgtest.WaitFor(t, "four waits on the server", func() bool {
		_, _, waiting := backendsOn(t, admin, "alock_locker_waiters")
		return waiting == 4
	})
	if sessions, _, _ := backends(t, dsn, "alock_locker_waiters"); sessions != 4 {
		t.Fatalf("%d sessions for 4 waiters, want 4", sessions)
	}
	if err := outsider.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
}

// TestLockerOpenerKeepsItsSession: Locks that come together and must wait
// each wait on the server on a session of their own, up to MaxSessions,
// however late a goroutine that opened a session for its wait runs after
// the open: here another Lock (c) comes and waits meanwhile. Before, c
// could take that session first, and the opener went to poll beside c's
// wait, with a session left to open and nothing to open it (3 waits on
// the server for 4 Locks, seen under load).
func TestLockerOpenerKeepsItsSession(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app, n = "alock_locker_opener", 4
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: n + 1})
	outsider := holdKeys(t, dsn, 100, 101, 102, 103, 104)
	admin := pgtest.Connect(t, dsn)
	var adminMu sync.Mutex
	waitingFor := func(key int64) bool {
		adminMu.Lock()
		defer adminMu.Unlock()
		var w bool
		err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'
			AND NOT granted AND objid = $1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`, key).Scan(&w)
		return err == nil && w
	}
	got := make(chan error, n+1)
	acquire := func(key int64) {
		l := lk.NewExclusive(alock.Key(key))
		err := l.Acquire(ctx)
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}
	var late atomic.Bool
	// Restored once every Lock has returned (deferred first, run last), so
	// that no open reads the hook as it changes.
	defer alock.SetOpenedHook(func() {
		if late.Swap(true) {
			return
		}
		// The first opener runs late: c comes and waits.
		go acquire(100 + n)
		for start := time.Now(); !waitingFor(100 + n); time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Errorf("c does not wait on the server")
				return
			}
		}
	})()
	for k := range n { // they come together: all try on the first session
		go acquire(int64(100 + k))
	}
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		adminMu.Lock()
		_, _, waiting := backendsOn(t, admin, app)
		adminMu.Unlock()
		if waiting == n+1 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("%d waits on the server for %d Locks after 10 s", waiting, n+1)
			break
		}
	}
	// Every Lock gets its id once the outsider is gone, failed or not:
	// the test ends only once they all returned.
	if err := outsider.Close(ctx); err != nil {
		t.Error(err)
	}
	for range n + 1 {
		if err := <-got; err != nil {
			t.Error(err)
		}
	}
}

// TestLockerReopensWithinMaxSessions: when every session is lost, goroutines
// that come at once open no more than MaxSessions new ones between them.
// The terminated backend may stay listed in pg_stat_activity as it exits,
// after the Locker was told and closed its connection, so the test waits
// for it to leave before the goroutines come: then the server's count is
// the new sessions only.
func TestLockerReopensWithinMaxSessions(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_reopen", &alock.LockerOptions{MaxSessions: 1})
	first := lk.NewExclusive(alock.Key(1))
	if err := first.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Connect(t, dsn)
	var pid uint32
	if err := admin.QueryRow(ctx,
		`SELECT pid FROM pg_stat_activity WHERE application_name = 'alock_locker_reopen'`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	terminate(t, dsn, pid)
	<-first.Lost()
	pgtest.WaitFor(t, "the lost session to be dropped", func() bool { return lk.Stat().Sessions == 0 })
	pgtest.WaitFor(t, "the terminated backend to leave pg_stat_activity", func() bool {
		var listed bool
		if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&listed); err != nil {
			t.Fatal(err)
		}
		return !listed
	})
	var wg sync.WaitGroup
	for k := range 20 {
		wg.Go(func() {
			l := lk.NewExclusive(alock.Key(int64(10 + k)))
			if err := l.Do(ctx, func(context.Context) error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := lk.Stat().Sessions; n != 1 {
		t.Fatalf("%d sessions open after the reopening, MaxSessions is 1", n)
	}
	if sessions, _, _ := backends(t, dsn, "alock_locker_reopen"); sessions != 1 {
		t.Fatalf("the server sees %d sessions, MaxSessions is 1", sessions)
	}
}

// TestLockerCloseWithWaiters: Close ends every wait with ErrClosed and
// the server holds nothing afterwards.
func TestLockerCloseWithWaiters(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 1)
	lk := newLocker(t, dsn, "alock_locker_close", nil)
	held := lk.NewExclusive(alock.Key(2))
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	for range 10 {
		go func() { errs <- lk.NewExclusive(alock.Key(1)).Acquire(ctx) }()
	}
	pgtest.WaitFor(t, "10 waiters", func() bool { return lk.Stat().Waiting == 10 })
	if err := lk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := <-errs; !errors.Is(err, alock.ErrClosed) {
			t.Fatalf("a wait ended by Close: %v, want ErrClosed", err)
		}
	}
	<-held.Lost()
	pgtest.WaitFor(t, "no session left", func() bool {
		n, _, _ := backends(t, dsn, "alock_locker_close")
		return n == 0
	})
	if err := lk.NewExclusive(alock.Key(3)).Acquire(ctx); !errors.Is(err, alock.ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
}

// TestLockerHotProcessLetsAColdOneIn: a process whose goroutines hand a hot
// id around still lets another process in, within the poll bound.
func TestLockerHotProcessLetsAColdOneIn(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	hot := newLocker(t, dsn, "alock_locker_hot", nil)
	cold := newLocker(t, dsn, "alock_locker_cold", nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			l := hot.NewExclusive(alock.Key(1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = l.Do(ctx, func(context.Context) error {
					time.Sleep(time.Millisecond)
					return nil
				})
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	time.Sleep(100 * time.Millisecond)
	for range 5 {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := cold.NewExclusive(alock.Key(1)).Do(actx, func(context.Context) error { return nil })
		cancel()
		if err != nil {
			t.Fatalf("the cold process did not get the hot id within 2 s: %v", err)
		}
		t.Logf("cold process got the hot id after %v", time.Since(start))
	}
}

// TestLockerLead: two Lockers campaign; one leads; its backend is
// terminated; fn's ctx ends with ErrLost and the other, waiting on the
// server, leads. The docs promise no time for that ("a resigned or lost
// leader lets a waiting campaigner in as any release does": the server
// wakes its waiter at once), so the 10 s bound only guards against a hang.
func TestLockerLead(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	a := newLocker(t, dsn, "alock_lead_a", &alock.LockerOptions{Session: alock.SessionOptions{Fencing: true}})
	b := newLocker(t, dsn, "alock_lead_b", &alock.LockerOptions{Session: alock.SessionOptions{Fencing: true}})
	leading := make(chan string, 2)
	var lost error
	terms := make(chan int64, 2)
	campaign := func(lk *alock.Locker, name string) error {
		return lk.Lead(ctx, alock.Name("leader"), func(ctx context.Context, token int64) error {
			terms <- token
			leading <- name
			<-ctx.Done()
			if name == "first" {
				lost = context.Cause(ctx)
			}
			return nil
		})
	}
	errA := make(chan error, 1)
	go func() { errA <- campaign(a, "first") }()
	if got := <-leading; got != "first" {
		t.Fatal(got)
	}
	bctx, cancelB := context.WithCancel(ctx)
	defer cancelB()
	errB := make(chan error, 1)
	go func() {
		errB <- b.Lead(bctx, alock.Name("leader"), func(ctx context.Context, token int64) error {
			terms <- token
			leading <- "second"
			<-ctx.Done()
			return nil
		})
	}()
	admin := pgtest.Connect(t, dsn)
	pgtest.WaitFor(t, "the second campaigner to wait on the server", func() bool {
		_, _, waiting := backendsOn(t, admin, "alock_lead_b")
		return waiting == 1
	})
	var pid uint32
	if err := admin.QueryRow(ctx, `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'alock_lead_a'`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	terminate(t, dsn, pid)
	select {
	case got := <-leading:
		if got != "second" {
			t.Fatal(got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second campaigner did not lead within 10 s")
	}
	t.Logf("second leader after %v", time.Since(start))
	if err := <-errA; !errors.Is(err, alock.ErrLost) || !errors.Is(lost, alock.ErrLost) {
		t.Fatalf("first leader's Lead: %v, its ctx cause %v; want ErrLost", err, lost)
	}
	first, second := <-terms, <-terms
	if first <= 0 || second <= first {
		t.Fatalf("terms' tokens %d then %d", first, second)
	}
	cancelB()
	if err := <-errB; err != nil {
		t.Fatal(err)
	}
}

// TestLockerReentrantReleaseRace: goroutines sharing one Locker Lock
// Acquire and Release it at random; no error, and nothing left held.
func TestLockerReentrantReleaseRace(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	lk := newLocker(t, dsn, "alock_locker_reentrant", nil)
	l := lk.NewExclusive(alock.Key(1))
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := l.Acquire(ctx); err != nil {
					t.Error(err)
					return
				}
				if err := l.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if l.Locked() {
		t.Fatal("Locked after balanced Acquire/Release")
	}
	if _, held, _ := backends(t, dsn, "alock_locker_reentrant"); held != 0 {
		t.Fatalf("server shows %d held", held)
	}
}

// TestLockerTenThousandGoroutines: 10,000 goroutines take one of 1,000 ids
// each (exclusive or share) through one Locker with MaxSessions 4: mutual
// exclusion holds, and the server never sees more than 4 sessions.
func TestLockerTenThousandGoroutines(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "alock_locker_10k", &alock.LockerOptions{MaxSessions: 4})
	const goroutines, ids = 10000, 1000
	var inside [ids]atomic.Int32
	stop := make(chan struct{})
	var most atomic.Int32
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			if n, _, _ := backends(t, dsn, "alock_locker_10k"); int32(n) > most.Load() {
				most.Store(int32(n))
			}
		}
	})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			k := g % ids
			share := g%3 == 0
			l := lk.NewExclusive(alock.Key(int64(k)))
			if share {
				l = lk.NewShare(alock.Key(int64(k)))
			}
			err := l.Do(ctx, func(context.Context) error {
				if share {
					if inside[k].Add(1) <= 0 {
						t.Errorf("a share with an exclusive on Key(%d)", k)
					}
					inside[k].Add(-1)
				} else if !inside[k].CompareAndSwap(0, -1) {
					t.Errorf("two holders of Key(%d)", k)
				} else {
					inside[k].Store(0)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	if most.Load() > 4 {
		t.Fatalf("the server saw %d sessions, MaxSessions is 4", most.Load())
	}
	if st := lk.Stat(); st.Acquisitions != goroutines || st.Held != 0 || st.Waiting != 0 {
		t.Fatalf("Stat: %+v", st)
	}
	t.Logf("at most %d sessions; %+v", most.Load(), lk.Stat())
}

// expectLockerAtRest checks that lk counts no Lock held and no goroutine
// waiting; what says when.
func expectLockerAtRest(t *testing.T, lk *alock.Locker, what string) {
	t.Helper()
	if st := lk.Stat(); st.Held != 0 || st.Waiting != 0 {
		t.Errorf("%s: Stat %+v, want nothing held or waiting", what, st)
	}
}
