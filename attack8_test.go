package alock_test

// Attacks on today's Locker changes: sessions opened in goroutines of
// their own (locker.go open), lost sessions counted until closed
// (dropLost), opens the server ends (endedByServer), Serial core Locks
// under the Locker Lock's turn, and the batch leader's scratch. Each
// compares the library's answers with the server's view (pg_locks by
// backend pid, pg_stat_activity by application_name).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// a8Waiting returns how many advisory lock rows of app's backends wait.
func a8Waiting(t *testing.T, admin *pgx.Conn, app string) int {
	t.Helper()
	_, _, waiting := backendsOn(t, admin, app)
	return waiting
}

// TestAttack8OpenedLaterTakesAPoller: a session that an Acquire started
// opening, and that opens after that Acquire left (its deadline ended),
// joins the Locker free of waits. A Lock that meanwhile came to poll beside
// another wait (the only session carried a wait, and the second was being
// opened) must move there and wait on the server, as it would had the
// session come free any other way: polling, it can miss a hot id for ever.
// Here the id it wants is held by another connection that frees and
// retakes it at once, in a loop: a waiter at the server gets it at the
// first free, a poller practically never.
func TestAttack8OpenedLaterTakesAPoller(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const app = "alock_a8_opened_later"
	cfg, opens, stall, release := stallingOpens(t, dsn, app)
	lk := newLockerConfig(t, cfg, &alock.LockerOptions{MaxSessions: 2})
	admin := pgtest.Connect(t, dsn)
	other := pgtest.Connect(t, dsn)
	for _, k := range []int64{1, 2, 3} { // X, Y, Z held elsewhere
		if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
			t.Fatal(err)
		}
	}
	// W1 waits on the only session, at the server.
	w1lock := lk.NewExclusive(alock.Key(1))
	w1 := make(chan error, 1)
	go func() { w1 <- w1lock.Acquire(ctx) }()
	pgtest.WaitFor(t, "W1 to wait at the server", func() bool { return a8Waiting(t, admin, app) == 1 })
	// A starts opening a second session (stalled) and leaves.
	stall.Store(1)
	short, cancelShort := context.WithTimeout(ctx, 150*time.Millisecond)
	if err := lk.NewExclusive(alock.Key(3)).Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("A: %v, want its deadline", err)
	}
	cancelShort()
	// W2 comes while the open is in progress: it polls beside W1.
	w2lock := lk.NewExclusive(alock.Key(2))
	w2ctx, w2cancel := context.WithCancel(ctx)
	defer w2cancel()
	w2 := make(chan error, 1)
	go func() { w2 <- w2lock.Acquire(w2ctx) }()
	time.Sleep(100 * time.Millisecond)
	// The open completes: a session free of waits.
	close(release)
	pgtest.WaitFor(t, "the second session", func() bool { return len(alock.LockerLoads(lk)) == 2 })
	// Y turns hot: freed and retaken at once, over and over.
	stop := make(chan struct{})
	hot := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				hot <- nil
				return
			default:
			}
			if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock(2), pg_advisory_lock(2)"); err != nil {
				hot <- err
				return
			}
		}
	}()
	var got error
	select {
	case got = <-w2:
	case <-time.After(5 * time.Second):
		got = errors.New("still waiting")
		w2cancel()
		<-w2
	}
	close(stop)
	if got != nil {
		t.Errorf("W2 for the hot id: %v after 5 s; loads %+v, %d rows waiting at the server (W1's and W2's if it had moved)",
			got, alock.LockerLoads(lk), a8Waiting(t, admin, app))
	} else if err := w2lock.Release(ctx); err != nil { // lets the hot loop's retake in
		t.Error(err)
	}
	if err := <-hot; err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := <-w1; err != nil {
		t.Fatal(err)
	}
	if err := w1lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d opens, want 2: the first session, and the one A started, which W2 waited on", n)
	}
	expectLockerAtRest(t, lk, "after W1 and W2")
}

// a8HotLoop frees and retakes key on c at once, over and over, until stop
// closes; the returned channel gives its error (nil when stopped).
func a8HotLoop(ctx context.Context, c *pgx.Conn, key int64, stop <-chan struct{}) <-chan error {
	hot := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				hot <- nil
				return
			default:
			}
			if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock($1), pg_advisory_lock($1)", key); err != nil {
				hot <- err
				return
			}
		}
	}()
	return hot
}

// TestAttack8WaiterDuringACloseGetsTheReplacement: a lost session counts
// against MaxSessions until its connection is closed. A Lock that must
// wait while one is lost but not yet closed (here MaxSessions 2: one
// session carries a wait, the other is lost with its connection held
// open) goes to poll beside the wait. Once the lost connection closes, a
// replacement is allowed: the poller must end up waiting on the server
// (on a new session), not poll beside the other wait for ever, missing a
// hot id (before the lost session counted, it opened one at once).
func TestAttack8WaiterDuringACloseGetsTheReplacement(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const app = "alock_a8_close_replacement"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := pgtest.Connect(t, dsn)
	other := pgtest.Connect(t, dsn)
	for _, k := range []int64{1, 2} {
		if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
			t.Fatal(err)
		}
	}
	w1lock := lk.NewExclusive(alock.Key(1))
	w1 := make(chan error, 1)
	go func() { w1 <- w1lock.Acquire(ctx) }()
	pgtest.WaitFor(t, "W1 to wait at the server", func() bool { return a8Waiting(t, admin, app) == 1 })
	l := lk.NewExclusive(alock.Key(9)) // opens the second session
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(alock.LockerLoads(lk)); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	_, exit, err := alock.HoldLockerSessionAt(ctx, lk, 1)
	if err != nil {
		t.Fatal(err)
	}
	alock.TellLostAt(lk, 1, errors.New("test: told, connection still open"))
	<-l.Lost()
	w2lock := lk.NewExclusive(alock.Key(2))
	w2ctx, w2cancel := context.WithCancel(ctx)
	defer w2cancel()
	w2 := make(chan error, 1)
	go func() { w2 <- w2lock.Acquire(w2ctx) }()
	time.Sleep(100 * time.Millisecond) // W2 comes while the lost connection is open
	exit()                             // closes it
	// W2 must come to wait at the server, beside W1 (its polls are tries).
	deadline := time.Now().Add(3 * time.Second)
	for a8Waiting(t, admin, app) != 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := a8Waiting(t, admin, app); n != 2 {
		t.Errorf("3 s after the lost connection closed, %d rows wait at the server, want 2 (W1 and W2); loads %+v",
			n, alock.LockerLoads(lk))
	}
	stop := make(chan struct{})
	hot := a8HotLoop(ctx, other, 2, stop)
	var got error
	select {
	case got = <-w2:
	case <-time.After(5 * time.Second):
		got = errors.New("still waiting")
		w2cancel()
		<-w2
	}
	close(stop)
	if got != nil {
		t.Errorf("W2 for the hot id: %v after 5 s; loads %+v, Stat %+v, %d rows waiting at the server",
			got, alock.LockerLoads(lk), lk.Stat(), a8Waiting(t, admin, app))
	} else if err := w2lock.Release(ctx); err != nil {
		t.Error(err)
	}
	if err := <-hot; err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := <-w1; err != nil {
		t.Fatal(err)
	}
	if err := w1lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); !errors.Is(err, alock.ErrLost) {
		t.Errorf("Release of the lost hold: %v", err)
	}
	expectLockerAtRest(t, lk, "at the end")
}

// a8SlowLost is a LostTracer whose Lost takes a while (a logger, a metrics
// call), and records the sessions lost.
type a8SlowLost struct {
	delay time.Duration
	n     atomic.Int32
}

func (*a8SlowLost) AcquireStart(ctx context.Context, _ *alock.Lock) context.Context { return ctx }
func (*a8SlowLost) AcquireEnd(context.Context, *alock.Lock, bool, error)            {}
func (a *a8SlowLost) Lost(*alock.Session, error) {
	a.n.Add(1)
	time.Sleep(a.delay)
}

// TestAttack8TryAfterLostWithSlowTracer: once a held Lock's Lost has
// closed, its session is lost, and a TryAcquire on the Locker must not
// spend one of its three attempts on it: with two opens then ended by the
// server (as TestLockerMovesOnFromOpensTheServerEnds does), it must still
// succeed on the third. Session.tell closes the Locks' Lost channels, then
// calls the LostTracer, and only then marks the session ended: with a
// tracer that takes 300 ms (the window is otherwise a few microseconds,
// and TestLockerMovesOnFromOpensTheServerEnds failed so once under load),
// the TryAcquire picked the ended session for its first attempt and failed
// with the second ended open's error.
func TestAttack8TryAfterLostWithSlowTracer(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const app = "alock_a8_slow_tracer"
	cfg, opens, kill := endingOpens(t, dsn, app)
	tracer := &a8SlowLost{delay: 300 * time.Millisecond}
	lk := newLockerConfig(t, cfg, &alock.LockerOptions{MaxSessions: 1, Session: alock.SessionOptions{Tracer: tracer}})
	held := lk.NewExclusive(alock.Key(1))
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	terminate(t, dsn, alock.LockerLoads(lk)[0].PID)
	<-held.Lost()
	if err := held.Release(ctx); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release of a lost hold: %v", err)
	}
	kill.Store(2)
	before := opens.Load()
	l := lk.NewExclusive(alock.Key(2))
	ok, err := l.TryAcquire(ctx)
	if err != nil || !ok {
		t.Fatalf("TryAcquire right after Lost closed, with 2 opens the server ends: %v, %v (%d opens)", ok, err, opens.Load()-before)
	}
	if got := locktest.Holds(t, dsn, alock.LockerLoads(lk)[0].PID); len(got) != 1 || got[0] != hold(alock.Key(2), alock.Exclusive) {
		t.Errorf("pg_locks shows %v for the session", got)
	}
	if err := l.Release(ctx); err != nil {
		t.Error(err)
	}
	if n := opens.Load() - before; n != 3 {
		t.Errorf("%d opens, want 3", n)
	}
	expectLockerAtRest(t, lk, "at the end")
}

// TestAttack8CloseRacesOpens: rounds of a Locker (MaxSessions 3) whose
// opens stall for a random while in AfterConnect, some then failing and
// some terminated by the server, under 32 goroutines whose Locks contend
// with another connection (so that they wait, and sessions get opened)
// with deadlines shorter than an open; Close comes at a random moment.
// Close returns promptly; every goroutine returns, with nil, ErrClosed,
// ErrLost or its deadline (a failed open's error only while it had one
// in flight); no open starts after Close returned; the server never sees
// more than MaxSessions of the Locker's backends (besides terminated and
// lost ones, and those of failed opens, which may linger as they exit),
// and none once Close returned.
func TestAttack8CloseRacesOpens(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const app, maxSessions = "alock_a8_close_opens", 3
	admin := newA4Admin(t, dsn)
	other := pgtest.Connect(t, dsn)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(k) FROM generate_series(1, 4) k"); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(withParam(dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	killer := pgtest.Connect(t, dsn)
	var killerMu sync.Mutex
	// The backends of the opens the hook failed (refused, terminated or
	// ended by Close): the server may still list one as it exits, after
	// its client closed the connection and the Locker began a replacement.
	var failedMu sync.Mutex
	var failed []uint32
	failedPIDs := func() []uint32 { failedMu.Lock(); defer failedMu.Unlock(); return slices.Clone(failed) }
	fail := func(pid uint32) {
		failedMu.Lock()
		defer failedMu.Unlock()
		failed = append(failed, pid)
	}
	var opens atomic.Int32
	var failing atomic.Bool // after the first open
	errHook := errors.New("a8 hook refuses")
	var inHook atomic.Int32 // opens in AfterConnect now
	cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		opens.Add(1)
		inHook.Add(1)
		defer inHook.Add(-1)
		if !failing.Load() {
			return nil
		}
		select {
		case <-time.After(time.Duration(rand.IntN(150)) * time.Millisecond):
		case <-ctx.Done():
			time.Sleep(30 * time.Millisecond) // slow to notice, as a dial or TLS may be
			fail(c.PID())
			return ctx.Err()
		}
		switch rand.IntN(6) {
		case 0:
			fail(c.PID())
			return errHook
		case 1:
			fail(c.PID())
			killerMu.Lock() // one connection, opens in parallel
			defer killerMu.Unlock()
			_, err := killer.Exec(ctx, "SELECT pg_terminate_backend($1)", c.PID())
			return err
		}
		return nil
	}
	for round := range 6 {
		failing.Store(false)
		opts, lost := a4LostOptions(maxSessions)
		lk, err := alock.NewLockerConfig(ctx, cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		failing.Store(true)
		stop := make(chan struct{})
		most := a4MaxBackends(t, dsn, app, stop, failedPIDs, lost.lostPIDs, admin.killedPIDs)
		var wg sync.WaitGroup
		var closedErrs, others atomic.Int32
		for g := range 32 {
			wg.Go(func() {
				for i := 0; ; i++ {
					k := int64(1 + (g+i)%8) // 1-4 held elsewhere: waits
					var l *alock.Lock
					if g%3 == 0 {
						l = lk.NewShare(alock.Key(k))
					} else {
						l = lk.NewExclusive(alock.Key(k))
					}
					c, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(40))*time.Millisecond)
					var err error
					if g%4 == 0 {
						var ok bool
						ok, err = l.TryAcquire(c)
						if err == nil && !ok {
							cancel()
							continue
						}
					} else {
						err = l.Acquire(c)
					}
					cancel()
					switch {
					case err == nil:
						if rerr := l.Release(ctx); rerr != nil && !errors.Is(rerr, alock.ErrLost) && !errors.Is(rerr, alock.ErrClosed) {
							t.Errorf("round %d: Release: %v", round, rerr)
						}
					case errors.Is(err, alock.ErrClosed):
						closedErrs.Add(1)
						return
					case errors.Is(err, context.DeadlineExceeded), errors.Is(err, alock.ErrLost):
					case errors.Is(err, errHook):
						others.Add(1)
					default:
						t.Errorf("round %d: %v", round, err)
						return
					}
				}
			})
		}
		kills := make(chan struct{})
		var killing sync.WaitGroup
		killing.Go(func() { // terminates the Locker's backends: replacements get opened
			for {
				select {
				case <-kills:
					return
				case <-time.After(time.Duration(20+rand.IntN(40)) * time.Millisecond):
				}
				if pids := admin.pids(app); len(pids) > 0 {
					admin.kill(pids[rand.IntN(len(pids))])
				}
			}
		})
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond)
		start := time.Now()
		if err := lk.Close(ctx); err != nil && !errors.Is(err, alock.ErrLost) {
			t.Errorf("round %d: Close: %v", round, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("round %d: Close took %v", round, d)
		}
		after := opens.Load()
		if n := inHook.Load(); n != 0 {
			t.Errorf("round %d: %d opens still in progress when Close returned", round, n)
		}
		close(kills)
		killing.Wait()
		wg.Wait()
		if n := closedErrs.Load(); n != 32 {
			t.Errorf("round %d: %d goroutines saw ErrClosed, want 32", round, n)
		}
		if err := lk.NewExclusive(alock.Key(20)).Acquire(ctx); !errors.Is(err, alock.ErrClosed) {
			t.Errorf("round %d: Acquire after Close: %v", round, err)
		}
		time.Sleep(100 * time.Millisecond)
		if n := opens.Load(); n != after {
			t.Errorf("round %d: %d opens started after Close returned", round, n-after)
		}
		close(stop)
		if n := most(); n > maxSessions {
			t.Errorf("round %d: the server saw %d of the Locker's sessions, MaxSessions is %d", round, n, maxSessions)
		}
		if pids := admin.pids(app); len(pids) > 0 {
			// A backend whose client closed may still be listed as it exits.
			pgtest.WaitFor(t, "the server to list none of the Locker's backends", func() bool { return len(admin.pids(app)) == 0 })
		}
		t.Logf("round %d: %d opens, %d hook errors", round, after, others.Load())
	}
}

// a8Shared is a Locker Lock shared by goroutines, with how many of its
// acquisitions they hold now.
type a8Shared struct {
	l      *alock.Lock
	share  bool
	inside atomic.Int64
}

// TestAttack8SerialCoresUnderOneTurn: a Locker's core Locks take no turn of
// their own; the Locker Lock's turn gives them one operation at a time.
// Here 32 goroutines share two Locker Locks on the same id, one exclusive
// and one share (so that they exclude each other, and one waits on the
// server or in the process), each acquired re-entrantly with Acquire,
// TryAcquire and Do under ctxs that end before, during and after a round
// trip (with causes), and released with ctxs that have sometimes ended.
// The two are never inside at once; a goroutine inside finds its Lock
// Locked and, now and then, the server granting the id in its mode to one
// of the Locker's backends; ended ctxs give their errors with their
// causes; and after each phase, neither Lock is Locked, pg_locks shows
// nothing for the Locker, and Stat is at rest. The second phase also
// terminates the Locker's backends (ErrLost allowed).
func TestAttack8SerialCoresUnderOneTurn(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const app = "alock_a8_serial"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	var adminMu sync.Mutex
	checker := pgtest.Connect(t, dsn)
	var checkMu sync.Mutex
	serverGrants := func(key int64, mode string) bool { // key granted in mode to a Locker backend
		checkMu.Lock()
		defer checkMu.Unlock()
		var n int
		err := checker.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1 AND l.mode = $2
			AND l.objid = $3 AND l.classid = 0`, app, mode, key).Scan(&n)
		if err != nil {
			t.Error(err)
		}
		return n > 0
	}
	// Two ids, each with an exclusive and a share Lock; other is the Lock
	// of the same id in the other mode.
	locks := []*a8Shared{
		{l: lk.NewExclusive(alock.Key(1))}, {l: lk.NewShare(alock.Key(1)), share: true},
		{l: lk.NewExclusive(alock.Key(2))}, {l: lk.NewShare(alock.Key(2)), share: true},
	}
	otherOf := func(i int) *a8Shared { return locks[i^1] }
	for phase, kills := range []bool{false, true} {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var ops, gots atomic.Int64
		for g := range 32 {
			i := g % len(locks)
			s, other, key := locks[i], otherOf(i), int64(1+i/2)
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
					}
					ops.Add(1)
					c, cancelC, cause := a7Ctx(ctx)
					okErr := func(what string, err error) {
						if err == nil {
							return
						}
						if kills && errors.Is(err, alock.ErrLost) {
							return
						}
						if c.Err() != nil {
							if cerr := a7CtxErr(c, cause, err); cerr == nil {
								return
							} else {
								err = cerr
							}
						}
						t.Errorf("phase %d: %s: %v", phase, what, err)
					}
					inside := func() {
						s.inside.Add(1)
						gots.Add(1)
						if n := other.inside.Load(); n > 0 {
							t.Errorf("phase %d: share and exclusive inside at once (%d other)", phase, n)
						}
						if !s.l.Locked() && !kills {
							t.Errorf("phase %d: inside, but not Locked", phase)
						}
						if rand.IntN(30) == 0 && !kills {
							mode := "ExclusiveLock"
							if s.share {
								mode = "ShareLock"
							}
							if !serverGrants(key, mode) {
								t.Errorf("phase %d: inside, but the server grants no %s on the id", phase, mode)
							}
						}
						time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
						s.inside.Add(-1)
					}
					release := func() {
						rc, cancelR, _ := a7Ctx(ctx)
						err := s.l.Release(rc)
						cancelR()
						for err != nil && !errors.Is(err, alock.ErrLost) && !errors.Is(err, alock.ErrNotHeld) && rc.Err() != nil {
							// not released (the wait for the turn ended): still held
							err = s.l.Release(ctx)
						}
						if err != nil && !(kills && errors.Is(err, alock.ErrLost)) {
							t.Errorf("phase %d: Release: %v", phase, err)
						}
					}
					switch rand.IntN(3) {
					case 0:
						err := s.l.Acquire(c)
						okErr("Acquire", err)
						if err == nil {
							inside()
							release()
						}
					case 1:
						ok, err := s.l.TryAcquire(c)
						okErr("TryAcquire", err)
						if ok && err == nil {
							inside()
							release()
						}
					default:
						fnErr := errors.New("a8 fn")
						err := s.l.Do(c, func(context.Context) error { inside(); return fnErr })
						if !errors.Is(err, fnErr) {
							okErr("Do", err)
						}
					}
					cancelC()
				}
			})
		}
		var killing sync.WaitGroup
		if kills {
			killing.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond):
					}
					adminMu.Lock()
					if pids := admin.pids(app); len(pids) > 0 {
						admin.kill(pids[rand.IntN(len(pids))])
					}
					adminMu.Unlock()
				}
			})
		}
		time.Sleep(1500 * time.Millisecond)
		close(stop)
		wg.Wait()
		killing.Wait()
		for i, s := range locks {
			if s.l.Locked() {
				t.Errorf("phase %d: Lock %d Locked after every goroutine released", phase, i)
			}
			if err := s.l.Release(ctx); !errors.Is(err, alock.ErrNotHeld) {
				t.Errorf("phase %d: one more Release: %v, want ErrNotHeld", phase, err)
			}
		}
		pgtest.WaitFor(t, "the server to show no lock of the Locker", func() bool {
			adminMu.Lock()
			defer adminMu.Unlock()
			granted, waiting := admin.granted(app)
			return len(granted) == 0 && waiting == 0
		})
		expectLockerAtRest(t, lk, fmt.Sprintf("phase %d", phase))
		if gots.Load() == 0 {
			t.Errorf("phase %d: no acquisition succeeded in %d operations", phase, ops.Load())
		}
		t.Logf("phase %d: %d operations, %d inside; %+v", phase, ops.Load(), gots.Load(), lk.Stat())
	}
}

// TestAttack8BatchScratchSameIDBothModes: a Session's batch leader reuses
// its rows, sent map and used flags from round to round, and a taken
// batch's slice goes back to the gate for later submissions. 48 goroutines
// each own a Lock on the session: 6 ids (keys and pairs), each in both
// modes, four Locks per id and mode, some with two ids, so that a batch
// carries tries of one id in share and exclusive from the same session,
// tries of an id another Lock already holds, and unlocks beside tries of
// the same ids. Each toggles its Lock (TryAcquire, which must succeed
// unless its ctx ended, or Release) as fast as it can, in phases that
// alternate large batches (the connection held busy meanwhile) and small
// ones (only a few goroutines). At each pause each Lock is Locked exactly
// when its goroutine holds it, and pg_locks for the session's backend shows
// exactly the holds of the Locked Locks.
func TestAttack8BatchScratchSameIDBothModes(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := alock.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	ids := []alock.ID{alock.Key(1), alock.Key(-1), alock.Pair(3, 4), alock.Pair(-5, 7), alock.Key(1 << 40), alock.Key(-1 << 62)}
	type owned struct {
		l    *alock.Lock
		ids  []alock.ID
		mode alock.Mode
		held bool // by its goroutine, read at pauses
	}
	var locks []*owned
	for i := range 48 {
		id := ids[i%len(ids)]
		mode := alock.Mode(alock.Exclusive)
		if (i/len(ids))%2 == 1 {
			mode = alock.Share
		}
		lids := []alock.ID{id}
		if i%5 == 0 {
			lids = append(lids, ids[(i+1)%len(ids)])
		}
		var l *alock.Lock
		if mode == alock.Share {
			l = s.NewShare(lids...)
		} else {
			l = s.NewExclusive(lids...)
		}
		locks = append(locks, &owned{l: l, ids: lids, mode: mode})
	}
	other := pgtest.Connect(t, dsn)
	conflicts := func(o *owned) bool { return false }
	for phase := range 8 {
		big := phase%2 == 0
		active := locks
		if !big {
			active = locks[:3+phase]
		}
		// In half the phases another connection holds ids[2] exclusively
		// and ids[5] shared: the tries that conflict fail, and multi-id
		// ones give back what they got.
		blocking := phase%4 >= 2
		if blocking {
			if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(3, 4), pg_advisory_lock_shared($1::int8)", int64(-1<<62)); err != nil {
				t.Fatal(err)
			}
			conflicts = func(o *owned) bool {
				return slices.Contains(o.ids, ids[2]) || (o.mode == alock.Exclusive && slices.Contains(o.ids, ids[5]))
			}
		} else {
			if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
				t.Fatal(err)
			}
			conflicts = func(*owned) bool { return false }
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var ok, refused, ended atomic.Int64
		for _, o := range active {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if o.held {
						rc, cancelR, _ := a7Ctx(ctx)
						err := o.l.Release(rc)
						cancelR()
						if err != nil && rc.Err() != nil && o.l.Locked() {
							err = o.l.Release(ctx) // the wait for the session ended: still held
						}
						if err != nil {
							t.Errorf("phase %d: Release %v: %v", phase, o.l, err)
						}
						o.held = false
						continue
					}
					c, cancelC, cause := a7Ctx(ctx)
					got, err := o.l.TryAcquire(c)
					switch {
					case err == nil && got:
						if conflicts(o) {
							t.Errorf("phase %d: TryAcquire %v true while another connection holds a conflicting id", phase, o.l)
						}
						o.held = true
						ok.Add(1)
					case err == nil:
						if !conflicts(o) {
							t.Errorf("phase %d: TryAcquire %v false with no conflicting holder", phase, o.l)
						}
						refused.Add(1)
					case c.Err() != nil:
						if cerr := a7CtxErr(c, cause, err); cerr != nil {
							t.Errorf("phase %d: TryAcquire %v: %v", phase, o.l, cerr)
						}
						ended.Add(1)
					default:
						t.Errorf("phase %d: TryAcquire %v: %v", phase, o.l, err)
					}
					cancelC()
				}
			})
		}
		if big {
			for range 3 {
				a6Busy(t, s, 30*time.Millisecond)()
			}
		} else {
			time.Sleep(150 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		want := map[string]bool{}
		for i, o := range locks {
			if o.l.Locked() != o.held {
				t.Errorf("phase %d: Lock %d (%v) Locked %v, its goroutine holds it: %v", phase, i, o.l, o.l.Locked(), o.held)
			}
			if o.l.Locked() {
				for _, id := range o.ids {
					want[hold(id, o.mode)] = true
				}
			}
		}
		got := slices.Compact(locktest.Holds(t, dsn, s.PID()))
		if w := slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
			t.Errorf("phase %d: pg_locks shows %v, the Locked Locks hold %v", phase, got, w)
		}
		t.Logf("phase %d (%d Locks): %d tries ok, %d refused, %d ended by their ctx", phase, len(active), ok.Load(), refused.Load(), ended.Load())
		for _, o := range locks { // in one batch, as far as the goroutines go
			if o.held {
				wg.Go(func() {
					if err := o.l.Release(ctx); err != nil {
						t.Errorf("phase %d: Release %v: %v", phase, o.l, err)
					}
					o.held = false
				})
			}
		}
		wg.Wait()
		if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
			t.Errorf("phase %d: after every Release pg_locks shows %v", phase, got)
		}
	}
	for _, o := range locks {
		if o.held {
			if err := o.l.Release(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
		t.Errorf("at the end pg_locks shows %v", got)
	}
}

// TestAttack8MassTerminationsDuringAcquisitions: every backend of the
// Locker (MaxSessions 3) is terminated at once, every 80-200 ms, and a
// third of its opens are terminated by the server in AfterConnect, while
// 24 goroutines Acquire, TryAcquire and Lead over 6 ids. An Acquire or a
// Lead whose ctx is alive never fails for an open the server ended (it
// moves on); a TryAcquire may, only with the server's error or a loss;
// held Locks report their losses. The server never sees more than
// MaxSessions of the Locker's backends besides terminated and lost ones;
// at the end nothing is held on the server and Stat is at rest.
func TestAttack8MassTerminationsDuringAcquisitions(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const app, maxSessions = "alock_a8_mass_kills", 3
	cfg, err := pgx.ParseConfig(withParam(dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	admin := newA4Admin(t, dsn)
	var adminMu sync.Mutex
	var opens, ended atomic.Int32
	var enabled atomic.Bool
	cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		opens.Add(1)
		if !enabled.Load() || rand.IntN(3) != 0 {
			return nil
		}
		ended.Add(1)
		adminMu.Lock()
		defer adminMu.Unlock()
		admin.kill(c.PID())
		return nil
	}
	opts, lost := a4LostOptions(maxSessions)
	lk := newLockerConfig(t, cfg, opts)
	enabled.Store(true)
	stop := make(chan struct{})
	most := a4MaxBackends(t, dsn, app, stop, admin.killedPIDs, lost.lostPIDs)
	serverEnded := func(err error) bool {
		var pg *pgconn.PgError
		return errors.As(err, &pg) && (pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03")
	}
	var wg sync.WaitGroup
	var acquired, tries, tryFailed, leads atomic.Int64
	for g := range 24 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := alock.Key(int64(1 + rand.IntN(6)))
				c, cancelC := context.WithTimeout(ctx, 2*time.Second)
				switch g % 3 {
				case 0:
					l := lk.NewExclusive(id)
					err := l.Acquire(c)
					switch {
					case err == nil:
						acquired.Add(1)
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
						if err := l.Release(ctx); err != nil && !errors.Is(err, alock.ErrLost) {
							t.Errorf("Release: %v", err)
						}
					case c.Err() != nil && errors.Is(err, context.DeadlineExceeded):
					default:
						t.Errorf("Acquire with its ctx alive: %v", err)
					}
				case 1:
					l := lk.NewShare(id)
					ok, err := l.TryAcquire(c)
					tries.Add(1)
					switch {
					case err == nil && ok:
						if err := l.Release(ctx); err != nil && !errors.Is(err, alock.ErrLost) {
							t.Errorf("Release: %v", err)
						}
					case err == nil:
					case errors.Is(err, alock.ErrLost) || serverEnded(err):
						tryFailed.Add(1)
					default:
						t.Errorf("TryAcquire: %v", err)
					}
				default:
					err := lk.Lead(c, id, func(lctx context.Context, _ int64) error {
						leads.Add(1)
						select {
						case <-lctx.Done():
						case <-time.After(time.Duration(rand.IntN(3000)) * time.Microsecond):
						}
						return nil
					})
					switch {
					case err == nil, errors.Is(err, alock.ErrLost):
					case c.Err() != nil && errors.Is(err, context.DeadlineExceeded):
					default:
						t.Errorf("Lead with its ctx alive: %v", err)
					}
				}
				cancelC()
			}
		})
	}
	var killing sync.WaitGroup
	killing.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(80+rand.IntN(120)) * time.Millisecond):
			}
			adminMu.Lock()
			for _, pid := range admin.pids(app) {
				admin.kill(pid)
			}
			adminMu.Unlock()
		}
	})
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	killing.Wait()
	wg.Wait()
	enabled.Store(false)
	if n := most(); n > maxSessions {
		t.Errorf("the server saw %d of the Locker's sessions besides terminated and lost ones, MaxSessions is %d", n, maxSessions)
	}
	expectLockerAtRest(t, lk, "at the end")
	pgtest.WaitFor(t, "no lock of the Locker on the server", func() bool {
		adminMu.Lock()
		defer adminMu.Unlock()
		granted, waiting := admin.granted(app)
		return len(granted) == 0 && waiting == 0
	})
	if acquired.Load() == 0 || leads.Load() == 0 {
		t.Errorf("nothing acquired (%d) or led (%d)", acquired.Load(), leads.Load())
	}
	// Still usable: an acquisition after the storm.
	l := lk.NewExclusive(alock.Key(99))
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d opens (%d ended in AfterConnect), %d acquired, %d leads, %d tries (%d failed); %+v",
		opens.Load(), ended.Load(), acquired.Load(), leads.Load(), tries.Load(), tryFailed.Load(), lk.Stat())
}

// TestAttack8LockerInEveryExecMode: a Locker whose pgx configuration uses
// any query exec mode, fenced or not (fenced Locks are not batched: they
// go by the single-Lock statements), takes and frees exactly what
// pg_locks shows: 16 Locks over keys and pairs, both modes, some with two
// ids, acquired and released together (batched), and one that waits on
// the server for ids another connection holds.
func TestAttack8LockerInEveryExecMode(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	for _, mode := range []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	} {
		for _, fenced := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fenced=%v", mode, fenced), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				app := fmt.Sprintf("alock_a8_mode_%d_%v", mode, fenced)
				cfg, err := pgx.ParseConfig(withParam(dsn, "application_name", app))
				if err != nil {
					t.Fatal(err)
				}
				cfg.DefaultQueryExecMode = mode
				lk := newLockerConfig(t, cfg, &alock.LockerOptions{MaxSessions: 2, Session: alock.SessionOptions{Fencing: fenced}})
				admin := newA4Admin(t, dsn)
				want := map[string]bool{}
				var locks []*alock.Lock
				for i := range 16 {
					ids := []alock.ID{alock.Key(int64(2000 + i))}
					if i%3 == 2 {
						ids[0] = alock.Pair(int32(-i), int32(2000+i))
					}
					if i%4 == 0 {
						ids = append(ids, alock.Key(-int64(3000+i)<<33))
					}
					l, m := lk.NewExclusive(ids...), alock.Exclusive
					if i%2 == 1 {
						l, m = lk.NewShare(ids...), alock.Share
					}
					locks = append(locks, l)
					for _, id := range ids {
						want[hold(id, m)] = true
					}
				}
				other := pgtest.Connect(t, dsn)
				if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(77), pg_advisory_lock(5, 6)"); err != nil {
					t.Fatal(err)
				}
				waiter := lk.NewExclusive(alock.Key(77), alock.Pair(5, 6))
				waited := make(chan error, 1)
				go func() { waited <- waiter.Acquire(ctx) }()
				for round := range 3 {
					var wg sync.WaitGroup
					for _, l := range locks {
						wg.Go(func() {
							if err := l.Acquire(ctx); err != nil {
								t.Errorf("round %d: Acquire %v: %v", round, l, err)
							}
						})
					}
					wg.Wait()
					granted, _ := admin.granted(app)
					if w := slices.Sorted(maps.Keys(want)); !slices.Equal(granted, w) {
						t.Errorf("round %d: the server grants %v, the Locks hold %v", round, granted, w)
					}
					for _, l := range locks {
						wg.Go(func() {
							if err := l.Release(ctx); err != nil {
								t.Errorf("round %d: Release %v: %v", round, l, err)
							}
						})
					}
					wg.Wait()
					if granted, _ := admin.granted(app); len(granted) != 0 {
						t.Errorf("round %d: after every Release the server grants %v", round, granted)
					}
				}
				if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
					t.Fatal(err)
				}
				if err := <-waited; err != nil {
					t.Fatal(err)
				}
				if fenced && waiter.Token() == 0 {
					t.Error("a fenced grant without a token")
				}
				granted, waiting := admin.granted(app)
				if w := []string{hold(alock.Key(77), alock.Exclusive), hold(alock.Pair(5, 6), alock.Exclusive)}; !slices.Equal(granted, slices.Sorted(slices.Values(w))) || waiting != 0 {
					t.Errorf("the waiter holds; the server grants %v, %d waiting", granted, waiting)
				}
				if err := waiter.Release(ctx); err != nil {
					t.Fatal(err)
				}
				expectLockerAtRest(t, lk, "at the end")
			})
		}
	}
}
