package alock_test

// Adversarial tests of the Locker (in-process table, sessions, loss, Close,
// Lead) and of the batching of a Session's operations. Each checks the
// library's answers against the server's view (pg_locks, pg_stat_activity).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestAttack2LockerZeroIDs: a Lock with no ids counts without the server
// (lock.go), as a Session's does (locktest zeroIDs). A Locker's must too.
func TestAttack2LockerZeroIDs(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	lk := newLocker(t, dsn, "a2_zero", nil)
	l := lk.NewExclusive()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ok, err := l.TryAcquire(ctx); !ok || err != nil {
		t.Errorf("TryAcquire of a Locker Lock with no ids: %v %v, want true", ok, err)
	}
	if err := l.Acquire(ctx); err != nil {
		t.Fatalf("Acquire of a Locker Lock with no ids: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// a2Lock is a Lock with what the test knows of it.
type a2Lock struct {
	l    *alock.Lock
	ids  []alock.ID
	mode alock.Mode
}

// a2Want renders the holds the held Locks should show (distinct id/mode).
func a2Want(held map[*alock.Lock]int, locks []a2Lock) []string {
	set := map[string]bool{}
	for _, a := range locks {
		if held[a.l] > 0 {
			for _, id := range a.ids {
				set[hold(id, a.mode)] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// a2Mixed builds Locks over overlapping ids in both modes, single and
// multi-id (crossed orders), two of each.
func a2Mixed(newEx, newSh func(...alock.ID) *alock.Lock) []a2Lock {
	var locks []a2Lock
	k := alock.Key
	for _, ids := range [][]alock.ID{
		{k(1)}, {k(2)}, {k(3)}, {k(1), k(2)}, {k(2), k(1)}, {k(2), k(3), k(4)}, {k(4), k(5)}, {k(5)}, {alock.Pair(1, 2)},
	} {
		for range 2 {
			locks = append(locks, a2Lock{newEx(ids...), ids, alock.Exclusive}, a2Lock{newSh(ids...), ids, alock.Share})
		}
	}
	return locks
}

// a2Churn runs workers that Acquire (short deadlines), TryAcquire, Do and
// Release the locks at random until deadline; it returns each Lock's count
// still held by the workers. inside, if not nil, wraps Do's body.
func a2Churn(t *testing.T, locks []a2Lock, workers int, d time.Duration, inside func(a a2Lock) error) map[*alock.Lock]int {
	ctx := context.Background()
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	held := map[*alock.Lock]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var mine []*alock.Lock
			bad := func(what string, l *alock.Lock, err error) {
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s %v: %v", what, l, err)
				}
			}
			for time.Now().Before(deadline) {
				a := locks[rand.IntN(len(locks))]
				switch op := rand.IntN(12); {
				case op < 3:
					actx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(30000))*time.Microsecond)
					err := a.l.Acquire(actx)
					cancel()
					bad("Acquire", a.l, err)
					if err == nil {
						mine = append(mine, a.l)
					}
				case op < 6:
					ok, err := a.l.TryAcquire(ctx)
					bad("TryAcquire", a.l, err)
					if ok {
						mine = append(mine, a.l)
					}
				case op < 7:
					dctx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(100))*time.Millisecond)
					err := a.l.Do(dctx, func(context.Context) error {
						if !a.l.Locked() {
							return errors.New("not Locked inside Do")
						}
						if inside != nil {
							return inside(a)
						}
						return nil
					})
					cancel()
					bad("Do", a.l, err)
				default:
					if len(mine) > 0 {
						i := rand.IntN(len(mine))
						r := mine[i]
						mine = slices.Delete(mine, i, i+1)
						if err := r.Release(ctx); err != nil {
							t.Errorf("Release %v: %v", r, err)
						}
					}
				}
			}
			mu.Lock()
			for _, l := range mine {
				held[l]++
			}
			mu.Unlock()
		})
	}
	if !within(t, d+20*time.Second, "the workers", wg.Wait) {
		t.FailNow()
	}
	return held
}

// a2Others makes two other connections take and free keys 1..5 (one
// exclusive, one share) until deadline, so that batched tries partly fail.
func a2Others(t *testing.T, dsn string, d time.Duration) (wait func()) {
	ctx := context.Background()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for o := range 2 {
		c := pgtest.Connect(t, dsn)
		wg.Go(func() {
			fn := "pg_try_advisory_lock"
			if o == 1 {
				fn = "pg_try_advisory_lock_shared"
			}
			for time.Now().Before(deadline) {
				var ok bool
				if err := c.QueryRow(ctx, "SELECT "+fn+"($1)", int64(1+rand.IntN(5))).Scan(&ok); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			}
		})
	}
	return wg.Wait
}

// TestAttack2SessionBatchChurn: many goroutines, many Locks of one Session
// over overlapping ids in both modes, so that batches hold unlocks and tries
// of one tag, share and exclusive of one tag, multi-id tries that partly
// fail. At quiescence pg_locks shows exactly what the Locks hold.
func TestAttack2SessionBatchChurn(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, nil)
	locks := a2Mixed(s.NewExclusive, s.NewShare)
	wait := a2Others(t, dsn, 3*time.Second)
	held := a2Churn(t, locks, 24, 3*time.Second, nil)
	wait()
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
	for _, a := range locks {
		if a.l.Locked() != (held[a.l] > 0) {
			t.Errorf("%v: Locked %v, workers hold it %d times", a.l, a.l.Locked(), held[a.l])
		}
	}
	want := a2Want(held, locks)
	if got := locktest.Holds(t, dsn, s.PID()); !slices.Equal(got, want) {
		t.Errorf("pg_locks at quiescence: %v, library holds %v", got, want)
	}
	ctx := context.Background()
	for l, n := range held {
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

// TestAttack2LockerChurn: the same load through a Locker, with an in-process
// exclusion checker in Do: conflicting Locks never inside together; at
// quiescence pg_locks (over all the Locker's sessions) shows exactly what
// the Locks hold, Stat agrees, and MaxSessions is never exceeded.
func TestAttack2LockerChurn(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	const app = "a2_churn"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 3})
	locks := a2Mixed(lk.NewExclusive, lk.NewShare)
	var mu sync.Mutex
	// id → the Locks inside Do over it (the same Lock may be inside twice:
	// its re-entrant count is shared by the goroutines that use it).
	inside := map[string]map[*alock.Lock]int{}
	check := func(a a2Lock) error {
		mu.Lock()
		for _, id := range a.ids {
			for o := range inside[id.String()] {
				if o != a.l && (o.Mode() == alock.Exclusive || a.mode == alock.Exclusive) {
					mu.Unlock()
					return fmt.Errorf("%v entered while %v is inside", a.l, o)
				}
			}
		}
		for _, id := range a.ids {
			if inside[id.String()] == nil {
				inside[id.String()] = map[*alock.Lock]int{}
			}
			inside[id.String()][a.l]++
		}
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		mu.Lock()
		for _, id := range a.ids {
			if inside[id.String()][a.l]--; inside[id.String()][a.l] == 0 {
				delete(inside[id.String()], a.l)
			}
		}
		mu.Unlock()
		return nil
	}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if n := len(srv.pids(app)); n > 3 {
				t.Errorf("%d sessions open, MaxSessions is 3", n)
			}
		}
	})
	wait := a2Others(t, dsn, 3*time.Second)
	held := a2Churn(t, locks, 24, 3*time.Second, check)
	wait()
	close(stop)
	sampler.Wait()
	for _, a := range locks {
		if a.l.Locked() != (held[a.l] > 0) {
			t.Errorf("%v: Locked %v, workers hold it %d times", a.l, a.l.Locked(), held[a.l])
		}
	}
	want := a2Want(held, locks)
	got, waiting := srv.granted(app)
	if !slices.Equal(got, want) || waiting != 0 {
		t.Errorf("pg_locks at quiescence: %v (%d waiting), library holds %v", got, waiting, want)
	}
	nheld := 0
	for _, n := range held {
		if n > 0 {
			nheld++
		}
	}
	if st := lk.Stat(); st.Held != nheld || st.Waiting != 0 {
		t.Errorf("Stat at quiescence: %+v, want Held %d Waiting 0", st, nheld)
	}
	ctx := context.Background()
	for l, n := range held {
		for range n {
			if err := l.Release(ctx); err != nil {
				t.Errorf("final Release %v: %v", l, err)
			}
		}
	}
	if got, waiting := srv.granted(app); len(got)+waiting != 0 {
		t.Errorf("pg_locks after releasing everything: %v, %d waiting", got, waiting)
	}
	expectLockerAtRest(t, lk, "Stat after releasing everything")
}

// TestAttack2SessionFullLockTableBatch: a try that runs out of the server's
// shared lock table (53200) must fail for itself, as the core Lock's
// unbatched path does (TestFullLockTableIsReportedAndGivenBack): the
// Session stays open and its other Locks stay held.
func TestAttack2SessionFullLockTableBatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, &pgserver.Options{Settings: map[string]string{
		"max_locks_per_transaction": "10", "max_connections": "10",
	}})
	if errors.Is(err, pgserver.ErrNotInstalled) && pgtest.Server() == nil {
		t.Skip("no PostgreSQL binaries for a private server:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dsn := srv.ConnString("postgres")
	s := attackSession(t, dsn, &alock.SessionOptions{KeepaliveInterval: -1})
	kept := s.NewExclusive(alock.Key(-1))
	if err := kept.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	filler := pgtest.Connect(t, dsn)
	watcher := pgtest.Connect(t, dsn)
	var filled int
	for i := int64(0); i < 100000; i++ {
		if _, err := filler.Exec(ctx, "SELECT pg_advisory_lock($1)", 1000+i); err != nil {
			filled = int(i)
			break
		}
	}
	if filled == 0 {
		t.Fatal("the lock table never filled")
	}
	t.Logf("lock table full after %d locks", filled)
	ok, err := s.NewExclusive(alock.Key(5)).TryAcquire(ctx)
	t.Logf("TryAcquire on a full lock table: %v %v", ok, err)
	if err == nil || !strings.Contains(err.Error(), "max_locks_per_transaction") {
		t.Errorf("TryAcquire on a full lock table: %v %v, want an error naming max_locks_per_transaction", ok, err)
	}
	if err := s.Err(); err != nil {
		t.Errorf("the Session ended on a full lock table: %v", err)
	}
	if !kept.Locked() {
		t.Errorf("a held Lock of the Session was lost because another Lock hit a full lock table")
	}
	holds := serverHoldsOf(t, session{watcher, dsn}, s.PID())
	if !slices.Contains(holds, hold(alock.Key(-1), alock.Exclusive)) {
		t.Errorf("server holds of the Session: %v, want Key(-1) still held", holds)
	}
}

// TestAttack2LockerFencedReleaseTimeout: a Release whose ctx ends while the
// session is busy with a statement that cannot be preempted (another
// Lock's token draw, blocked) fails, as the core Lock documents, with "the
// Lock then stays held". The Locker must then still count the hold, or
// else unlock it: the server must never keep a lock that no Lock holds.
func TestAttack2LockerFencedReleaseTimeout(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	ctx := context.Background()
	const app = "a2_fenced_release"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 1,
		Session: alock.SessionOptions{Fencing: true, FenceSequence: "a2_fence"}})
	a := lk.NewExclusive(alock.Key(1))
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	unblock := blockFence(t, dsn, "a2_fence")
	second := make(chan error, 1)
	b := lk.NewExclusive(alock.Key(2))
	go func() { second <- b.Acquire(ctx) }()
	time.Sleep(300 * time.Millisecond) // b's nextval is blocked, on the one session
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	rerr := a.Release(rctx)
	cancel()
	unblock()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	t.Logf("Release with a short ctx while the session is busy: %v; Locked %v", rerr, a.Locked())
	got, _ := srv.granted(app)
	serverHas := slices.Contains(got, hold(alock.Key(1), alock.Exclusive))
	if serverHas != a.Locked() {
		t.Errorf("after Release: %v: Locked %v, but pg_locks shows %v (a ghost lock the Locker forgot)", rerr, a.Locked(), got)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Locked() {
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := srv.granted(app); len(got) != 0 {
		t.Errorf("pg_locks after releasing everything: %v (the Locker holds nothing)", got)
	}
	// Re-acquiring and releasing the Lock must leave nothing either.
	if err := a.Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.granted(app); len(got) != 0 {
		t.Errorf("pg_locks after a Do of the same Lock: %v", got)
	}
}

// TestAttack2LockerWaiterSurvivesSessionLoss: the issue says a terminated
// session's waiters "move on": a goroutine waiting (not holding) when its
// session is terminated must not fail; it waits on a replacement session
// and gets the lock when the other process lets go.
func TestAttack2LockerWaiterSurvivesSessionLoss(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a2_waiter_loss"
	other := holdKeys(t, dsn, 100)
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 1})
	w := lk.NewExclusive(alock.Key(100))
	res := make(chan error, 1)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() { res <- w.Acquire(wctx) }()
	var pid uint32
	pgtest.WaitFor(t, "the waiter at the server", func() bool {
		admin := pgtest.Connect(t, dsn)
		err := admin.QueryRow(ctx, `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1`, app).Scan(&pid)
		return err == nil
	})
	terminate(t, dsn, pid)
	time.Sleep(300 * time.Millisecond)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock(100)"); err != nil {
		t.Fatal(err)
	}
	err := <-res
	if err != nil {
		t.Fatalf("a waiter whose session was terminated: %v; want it to move on and get the lock", err)
	}
	if !w.Locked() {
		t.Fatal("not Locked")
	}
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAttack2LockerCancelCausePhases: an Acquire cancelled with a cause
// while queued in the process, while polling at the session, and while
// waiting at the server returns an error matching ctx.Err() and the
// cause, leaves the queue, and holds nothing; Stat goes back to 0. It
// returns within CleanupTimeout (which bounds "delivering a cancel request,
// waiting for the cancelled statement, and giving back what a failed
// acquisition took") plus 3 s of slack for a loaded machine.
func TestAttack2LockerCancelCausePhases(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	ctx := context.Background()
	const app = "a2_cancel_phases"
	holdKeys(t, dsn, 10, 11)
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 1})
	inproc := lk.NewExclusive(alock.Key(1))
	if err := inproc.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("a2 cause")
	type phase struct {
		name string
		l    *alock.Lock
	}
	phases := []phase{
		{"at the server", lk.NewExclusive(alock.Key(10))},      // takes the wait slot
		{"polling", lk.NewShare(alock.Key(11), alock.Key(12))}, // polls on the same session
		{"queued in the process", lk.NewExclusive(alock.Key(1), alock.Key(13))},
	}
	errs := make([]chan error, len(phases))
	cancels := make([]context.CancelCauseFunc, len(phases))
	for i, p := range phases {
		pctx, cancel := context.WithCancelCause(ctx)
		cancels[i] = cancel
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- p.l.Acquire(pctx) }()
		time.Sleep(150 * time.Millisecond)
	}
	pgtest.WaitFor(t, "three waiting", func() bool { return lk.Stat().Waiting == 3 })
	time.Sleep(300 * time.Millisecond)
	const bound = alock.CleanupTimeout + 3*time.Second
	for i, p := range phases {
		start := time.Now()
		cancels[i](cause)
		select {
		case err := <-errs[i]:
			if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
				t.Errorf("%s: %v, want Canceled and the cause", p.name, err)
			}
			if took := time.Since(start); took > bound {
				t.Errorf("%s: returned %v after the cancel, more than CleanupTimeout and slack (%v)", p.name, took, bound)
			}
		case <-time.After(2 * bound):
			t.Fatalf("%s: Acquire did not return %v after the cancel", p.name, 2*bound)
		}
		if p.l.Locked() {
			t.Errorf("%s: Locked after a cancelled Acquire", p.name)
		}
	}
	if err := inproc.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got, waiting := srv.granted(app)
	if len(got) != 0 || waiting != 0 {
		t.Errorf("pg_locks: %v, %d waiting; want nothing", got, waiting)
	}
	expectLockerAtRest(t, lk, "Stat")
	// The queue was left: the ids are free in the process.
	for _, p := range phases[2:] {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a hang guard
		ok, err := p.l.TryAcquire(tctx)
		cancel()
		if !ok || err != nil {
			t.Errorf("TryAcquire %v after the cancel: %v %v", p.l, ok, err)
		} else if err := p.l.Release(ctx); err != nil {
			t.Error(err)
		}
	}
}

// TestAttack2LockerCrossedMultiIDs: Locks over [1,2] and [2,1] (and [2,3],
// [3,1]) hammered by many goroutines never deadlock in the process, and
// never overlap.
func TestAttack2LockerCrossedMultiIDs(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	ctx := context.Background()
	const app = "a2_crossed"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	k := alock.Key
	sets := [][]int64{{1, 2}, {2, 1}, {2, 3}, {3, 1}}
	var inside [4]atomic.Int32
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				ns := sets[(g+i)%len(sets)]
				l := lk.NewExclusive(k(ns[0]), k(ns[1]))
				err := l.Do(ctx, func(context.Context) error {
					for _, n := range ns {
						if inside[n].Add(1) != 1 {
							t.Errorf("%v entered while Key(%d) is held", l, n)
						}
					}
					for _, n := range ns {
						inside[n].Add(-1)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	if !within(t, 30*time.Second, "the crossed Locks", wg.Wait) {
		t.FailNow()
	}
	if got, waiting := srv.granted(app); len(got)+waiting != 0 {
		t.Errorf("pg_locks: %v, %d waiting", got, waiting)
	}
}

// a2Op runs one random operation on a random Lock, for the race tests; it
// returns the error of the operation and whether the Lock is now one more
// held by the caller.
func a2Op(ctx context.Context, locks []*alock.Lock, mine *[]*alock.Lock) (string, error) {
	l := locks[rand.IntN(len(locks))]
	switch op := rand.IntN(8); {
	case op < 3:
		actx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(400))*time.Millisecond)
		defer cancel()
		err := l.Acquire(actx)
		if err == nil {
			*mine = append(*mine, l)
		}
		return "Acquire", err
	case op < 5:
		ok, err := l.TryAcquire(ctx)
		if ok {
			*mine = append(*mine, l)
		}
		return "TryAcquire", err
	case op < 6:
		dctx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(300))*time.Millisecond)
		defer cancel()
		return "Do", l.Do(dctx, func(context.Context) error { time.Sleep(time.Millisecond); return nil })
	default:
		if len(*mine) == 0 {
			return "", nil
		}
		i := rand.IntN(len(*mine))
		r := (*mine)[i]
		*mine = slices.Delete(*mine, i, i+1)
		return "Release", r.Release(ctx)
	}
}

// a2LockerLocks makes Locks over keys 1..6 (5 and 6 held by another
// process), both modes, some multi-id.
func a2LockerLocks(lk *alock.Locker) []*alock.Lock {
	var locks []*alock.Lock
	k := alock.Key
	for _, ids := range [][]alock.ID{{k(1)}, {k(2)}, {k(3)}, {k(1), k(2)}, {k(3), k(4)}, {k(5)}, {k(6), k(1)}} {
		locks = append(locks, lk.NewExclusive(ids...), lk.NewExclusive(ids...), lk.NewShare(ids...))
	}
	return locks
}

// TestAttack2LockerCloseRacesTraffic: Close at a random moment while
// goroutines use the Locker's Locks (some queued in the process, some
// waiting or polling at the server). Every operation returns; the only
// errors are ErrClosed (ErrLost for the Release of a hold Close ended) or
// an explained ctx error; afterwards no session and no lock is left at the
// server.
func TestAttack2LockerCloseRacesTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	for round := range 4 {
		app := fmt.Sprintf("a2_close_race_%d", round)
		ctx := context.Background()
		other := holdKeys(t, dsn, 5, 6)
		lk, err := alock.NewLocker(ctx, withParam(dsn, "application_name", app), &alock.LockerOptions{MaxSessions: 3})
		if err != nil {
			t.Fatal(err)
		}
		locks := a2LockerLocks(lk)
		var wg sync.WaitGroup
		var closed atomic.Bool
		for range 16 {
			wg.Go(func() {
				var mine []*alock.Lock
				for {
					after := closed.Load()
					what, err := a2Op(ctx, locks, &mine)
					switch {
					case err == nil, errors.Is(err, context.DeadlineExceeded):
					case errors.Is(err, alock.ErrClosed):
					case what == "Release" && errors.Is(err, alock.ErrLost):
					default:
						t.Errorf("round %d: %s: %v", round, what, err)
					}
					if after {
						for _, l := range mine {
							if err := l.Release(ctx); err == nil {
								t.Errorf("round %d: Release after Close succeeded for %v", round, l)
							}
						}
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
		var cctx context.Context = ctx
		var cancel context.CancelFunc = func() {}
		switch round % 2 {
		case 1:
			cctx, cancel = context.WithTimeout(ctx, time.Duration(rand.IntN(50))*time.Millisecond)
		}
		cerr := lk.Close(cctx)
		cancel()
		closed.Store(true)
		if cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
			t.Errorf("round %d: Close: %v", round, cerr)
		}
		if !within(t, 15*time.Second, "the workers after Close", wg.Wait) {
			t.FailNow()
		}
		pgtest.WaitFor(t, "no session left", func() bool { return len(srv.pids(app)) == 0 })
		if st := lk.Stat(); st.Sessions != 0 || st.Waiting != 0 {
			t.Errorf("round %d: Stat after Close: %+v", round, st)
		}
		if err := lk.NewExclusive(alock.Key(1)).Acquire(ctx); !errors.Is(err, alock.ErrClosed) {
			t.Errorf("round %d: Acquire after Close: %v", round, err)
		}
		_ = other.Close(ctx)
	}
}

// TestAttack2LockerKillRacesTraffic: terminate one of the Locker's backends
// while goroutines use its Locks. The only errors are losses (ErrLost);
// MaxSessions is never exceeded (pg_stat_activity, less the terminated
// backend and those of sessions the Locker was told it lost, which may stay
// listed as they exit after the replacement opened: see a4MaxBackends);
// acquisitions after the loss succeed on a replacement; at quiescence
// pg_locks matches the Locks.
func TestAttack2LockerKillRacesTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	ctx := context.Background()
	const app = "a2_kill_race"
	holdKeys(t, dsn, 5)
	opts, lost := a4LostOptions(2)
	lk := newLocker(t, dsn, app, opts)
	locks := a2LockerLocks(lk)
	stop := make(chan struct{})
	most := a4MaxBackends(t, dsn, app, stop, srv.killedPIDs, lost.lostPIDs)
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lostN atomic.Int32
	held := map[*alock.Lock]int{}
	for range 12 {
		wg.Go(func() {
			var mine []*alock.Lock
			for time.Now().Before(deadline) {
				what, err := a2Op(ctx, locks, &mine)
				switch {
				case err == nil, errors.Is(err, context.DeadlineExceeded):
				case errors.Is(err, alock.ErrLost):
					lostN.Add(1)
					if what != "Release" { // a lost re-entrant hold: give it back
						for i, l := range mine {
							if !l.Locked() {
								_ = l.Release(ctx)
								mine = slices.Delete(mine, i, i+1)
								break
							}
						}
					}
				default:
					t.Errorf("%s: %v", what, err)
				}
			}
			mu.Lock()
			for _, l := range mine {
				held[l]++
			}
			mu.Unlock()
		})
	}
	time.Sleep(time.Second)
	pids := srv.pids(app)
	if len(pids) == 0 {
		t.Fatal("the Locker has no session")
	}
	srv.kill(slices.Min(pids))
	if !within(t, 20*time.Second, "the workers", wg.Wait) {
		t.FailNow()
	}
	close(stop)
	maxSeen := most()
	t.Logf("%d losses reported; at most %d sessions seen", lostN.Load(), maxSeen)
	if maxSeen > 2 {
		t.Errorf("%d sessions seen, MaxSessions is 2", maxSeen)
	}
	// Locks the workers still count and that report the loss are dropped.
	for l, n := range held {
		if !l.Locked() {
			for range n {
				if err := l.Release(ctx); !errors.Is(err, alock.ErrLost) {
					t.Errorf("Release of a lost %v: %v", l, err)
				}
			}
			delete(held, l)
		}
	}
	var want []string
	set := map[string]bool{}
	for l := range held {
		for _, id := range l.IDs() {
			set[hold(id, l.Mode())] = true
		}
	}
	want = slices.Sorted(maps.Keys(set))
	if got, waiting := srv.granted(app); !slices.Equal(got, want) || waiting != 0 {
		t.Errorf("pg_locks at quiescence: %v (%d waiting), library holds %v", got, waiting, want)
	}
	for l, n := range held {
		for range n {
			if err := l.Release(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	for k := range 4 {
		if err := lk.NewExclusive(alock.Key(int64(k+1))).Do(ctx, func(context.Context) error { return nil }); err != nil {
			t.Errorf("Do after the loss: %v", err)
		}
	}
	expectLockerAtRest(t, lk, "Stat at the end")
}

// TestAttack2LockerExclusiveNotStarved: a stream of overlapping shares on
// one id does not starve an exclusive that comes later (FIFO per id).
func TestAttack2LockerExclusiveNotStarved(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	lk := newLocker(t, dsn, "a2_fifo", &alock.LockerOptions{MaxSessions: 2})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l := lk.NewShare(alock.Key(1))
				if err := l.Do(ctx, func(context.Context) error { time.Sleep(5 * time.Millisecond); return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := lk.NewExclusive(alock.Key(1)).Do(actx, func(context.Context) error { return nil })
	cancel()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("exclusive behind a stream of shares: %v after %v", err, took)
	}
	t.Logf("exclusive got in after %v", took)
}

// TestAttack2LockerLeadKill: two Lockers campaign for one id; the leader's
// backend is terminated: its fn's ctx ends with a cause wrapping ErrLost,
// its Lead returns an error wrapping ErrLost, and the other, waiting on the
// server, leads with a larger token. No time is promised for the takeover
// (a lost leader lets a waiting campaigner in as any release does), so the
// 10 s after the kill only guard against a hang.
func TestAttack2LockerLeadKill(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	opts := &alock.LockerOptions{Session: alock.SessionOptions{Fencing: true, FenceSequence: "a2_lead_fence"}}
	a := newLocker(t, dsn, "a2_lead_a", opts)
	b := newLocker(t, dsn, "a2_lead_b", opts)
	type term struct {
		who   string
		token int64
		at    time.Time
		cause error
	}
	terms := make(chan term, 4)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan error, 2)
	lead := func(who string, lk *alock.Locker) {
		results <- lk.Lead(lctx, alock.Name("a2 leader"), func(fctx context.Context, token int64) error {
			terms <- term{who: who, token: token, at: time.Now()}
			<-fctx.Done()
			terms <- term{who: who, cause: context.Cause(fctx), at: time.Now()}
			return nil
		})
	}
	go lead("a", a)
	first := <-terms
	go lead("b", b)
	admin := pgtest.Connect(t, dsn)
	other := map[string]string{"a": "b", "b": "a"}[first.who]
	pgtest.WaitFor(t, "the other campaigner to wait on the server", func() bool {
		_, _, waiting := backendsOn(t, admin, "a2_lead_"+other)
		return waiting == 1
	})
	var victim uint32
	if err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, "a2_lead_"+first.who).Scan(&victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	terminate(t, dsn, victim)
	var ended, second term
	guard := time.After(10 * time.Second)
	for range 2 {
		select {
		case tm := <-terms:
			if tm.token == 0 && tm.who == first.who {
				ended = tm
			} else {
				second = tm
			}
		case <-guard:
			t.Fatal("no new term or no end within 10 s of the kill")
		}
	}
	if !errors.Is(ended.cause, alock.ErrLost) {
		t.Errorf("the killed leader's fn ctx cause: %v, want ErrLost", ended.cause)
	}
	if second.who != other {
		t.Errorf("second term %+v, %v after the kill; want the other Locker's", second, second.at.Sub(killed))
	}
	t.Logf("the other Locker led %v after the kill", second.at.Sub(killed))
	if second.token <= first.token {
		t.Errorf("tokens %d then %d", first.token, second.token)
	}
	if err := <-results; !errors.Is(err, alock.ErrLost) {
		t.Errorf("the killed leader's Lead: %v, want ErrLost", err)
	}
	cancel()
	if err := <-results; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("the second leader's Lead: %v", err)
	}
}

// TestAttack2LockerTinyDeadlines: deadlines shorter than a round trip, on
// every operation, while others hold the ids: only deadline errors, and
// nothing left held (library, Stat and server).
func TestAttack2LockerTinyDeadlines(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	srv := newA4Admin(t, dsn)
	ctx := context.Background()
	const app = "a2_tiny"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	holdKeys(t, dsn, 3)
	k := alock.Key
	var locks []*alock.Lock
	for _, ids := range [][]alock.ID{{k(1)}, {k(2)}, {k(1), k(2)}, {k(3)}, {k(2), k(3)}} {
		locks = append(locks, lk.NewExclusive(ids...), lk.NewShare(ids...))
	}
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			for range 60 {
				l := locks[rand.IntN(len(locks))]
				dctx, cancel := context.WithTimeoutCause(ctx, time.Duration(rand.IntN(3000))*time.Microsecond, errCause)
				var err error
				var ok bool
				switch rand.IntN(3) {
				case 0:
					if err = l.Acquire(dctx); err == nil {
						ok = true
					}
				case 1:
					ok, err = l.TryAcquire(dctx)
				case 2:
					err = l.Do(dctx, func(context.Context) error { return nil })
				}
				cancel()
				if err != nil && (!errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errCause)) {
					t.Errorf("%v: %v; want DeadlineExceeded and the cause", l, err)
				}
				if ok {
					if err := l.Release(ctx); err != nil {
						t.Errorf("Release %v: %v", l, err)
					}
				}
			}
		})
	}
	if !within(t, 30*time.Second, "the workers", wg.Wait) {
		t.FailNow()
	}
	for _, l := range locks {
		if l.Locked() {
			t.Errorf("%v Locked at the end", l)
		}
	}
	if got, waiting := srv.granted(app); len(got)+waiting != 0 {
		t.Errorf("pg_locks at the end: %v, %d waiting", got, waiting)
	}
	expectLockerAtRest(t, lk, "Stat at the end")
}

// TestAttack2TryAcquireBehindOwnBlockedAcquire: the issue: "a Release, a
// TryAcquire or another id's Acquire never waits behind a blocked wait". A
// Lock shared by goroutines: one Acquires it and waits (another process
// holds the id); another goroutine's TryAcquire of the same Lock must
// return (false) at once, not wait until the Acquire is granted.
func TestAttack2TryAcquireBehindOwnBlockedAcquire(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	holdKeys(t, dsn, 1)
	lk := newLocker(t, dsn, "a2_try_behind", nil)
	s := attackSession(t, dsn, nil)
	for _, c := range []struct {
		name string
		l    *alock.Lock
	}{{"Locker", lk.NewExclusive(alock.Key(1))}, {"Session", s.NewExclusive(alock.Key(1))}} {
		t.Run(c.name, func(t *testing.T) {
			actx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.l.Acquire(actx) }()
			time.Sleep(300 * time.Millisecond) // waiting
			tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
			start := time.Now()
			ok, err := c.l.TryAcquire(tctx)
			took := time.Since(start)
			tcancel()
			cancel()
			<-done
			if took > time.Second {
				t.Errorf("TryAcquire of a Lock another goroutine waits for: %v %v after %v; want false at once", ok, err, took)
			}
		})
	}
}

// TestAttack2GuardPoolModes: with a real pgxpool, a connection given back
// while a share Lock, or a Lock taken by TryAcquire, or a re-entrant Lock
// counted down once, still holds is destroyed; one given back after the
// Locks' last Release is reused.
func TestAttack2GuardPoolModes(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	alock.GuardPool(cfg, nil)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for i, leave := range []func(c *pgx.Conn) (release func()){
		func(c *pgx.Conn) func() { // share
			l := alock.NewShare(c, alock.Key(1))
			mustAcquire(t, l)
			return nil
		},
		func(c *pgx.Conn) func() { // TryAcquire
			l := alock.NewExclusive(c, alock.Key(2), alock.Key(3))
			if ok, err := l.TryAcquire(ctx); !ok || err != nil {
				t.Fatal(ok, err)
			}
			return nil
		},
		func(c *pgx.Conn) func() { // re-entrant, counted down once
			l := alock.NewExclusive(c, alock.Key(4))
			mustAcquire(t, l)
			mustAcquire(t, l)
			mustRelease(t, l)
			return nil
		},
		func(c *pgx.Conn) func() { // two Locks sharing a key, one released
			a, b := alock.NewShare(c, alock.Key(5)), alock.NewShare(c, alock.Key(5))
			mustAcquire(t, a)
			mustAcquire(t, b)
			mustRelease(t, a)
			return nil
		},
	} {
		pc, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pid := pc.Conn().PgConn().PID()
		leave(pc.Conn())
		pc.Release()
		pgtest.WaitFor(t, "the backend gone", func() bool { return len(pgtest.AdvisoryLocks(t, dsn, pid)) == 0 })
		pc, err = pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pc.Conn().PgConn().PID() == pid {
			t.Errorf("case %d: a connection given back holding a lock was reused", i)
		}
		// A clean cycle: reused.
		pid = pc.Conn().PgConn().PID()
		l := alock.NewExclusive(pc.Conn(), alock.Key(9))
		mustAcquire(t, l)
		mustAcquire(t, l)
		mustRelease(t, l)
		mustRelease(t, l)
		pc.Release()
		pc, err = pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pc.Conn().PgConn().PID() != pid {
			t.Errorf("case %d: a clean connection was not reused", i)
		}
		pc.Release()
	}
}

// TestAttack2SessionBatchSettle: rounds of many tries released at once (so
// that they share batches) over overlapping multi-id Locks in both modes,
// extreme keys and pairs, while another session holds some ids: after each
// round the server holds exactly the ids of the tries that succeeded, and
// after the releases nothing.
func TestAttack2SessionBatchSettle(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, nil)
	other := pgtest.Connect(t, dsn)
	ids := []alock.ID{alock.Key(-1 << 63), alock.Key(1<<63 - 1), alock.Key(0), alock.Key(-1),
		alock.Pair(-1, -2), alock.Pair(-1<<31, 1<<31-1), alock.Pair(0, 0), alock.Name("a2 batch")}
	var locks []*alock.Lock
	for i := range ids {
		a, b := ids[i], ids[(i+1)%len(ids)]
		locks = append(locks, s.NewExclusive(a), s.NewShare(a), s.NewExclusive(a, b), s.NewShare(b, a))
	}
	for round := range 30 {
		// Another session holds one id, in one mode, for the round.
		busy := ids[rand.IntN(len(ids))]
		fn := "pg_advisory_lock"
		if round%2 == 1 {
			fn = "pg_advisory_lock_shared"
		}
		c, o, sub := busy.LockTag()
		if sub == 1 {
			_, err := other.Exec(ctx, "SELECT "+fn+"($1::bigint)", int64(c)<<32|int64(o))
			if err != nil {
				t.Fatal(err)
			}
		} else {
			if _, err := other.Exec(ctx, "SELECT "+fn+"($1::int, $2::int)", int32(c), int32(o)); err != nil {
				t.Fatal(err)
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		got := make([]bool, len(locks))
		for i, l := range locks {
			wg.Go(func() {
				<-start
				ok, err := l.TryAcquire(ctx)
				if err != nil {
					t.Errorf("TryAcquire %v: %v", l, err)
				}
				got[i] = ok
			})
		}
		close(start)
		wg.Wait()
		set := map[string]bool{}
		for i, l := range locks {
			if got[i] != l.Locked() {
				t.Errorf("round %d: %v: TryAcquire %v, Locked %v", round, l, got[i], l.Locked())
			}
			if got[i] {
				for _, id := range l.IDs() {
					norm, _ := alock.FromLockTag(id.LockTag()) // as pg_locks renders it
					set[hold(norm, l.Mode())] = true
				}
			}
		}
		want := slices.Sorted(maps.Keys(set))
		if have := locktest.Holds(t, dsn, s.PID()); !slices.Equal(have, want) {
			t.Fatalf("round %d (other holds %v by %s): pg_locks %v, library holds %v", round, busy, fn, have, want)
		}
		var rel sync.WaitGroup
		for i, l := range locks {
			if got[i] {
				rel.Go(func() {
					if err := l.Release(ctx); err != nil {
						t.Errorf("Release %v: %v", l, err)
					}
				})
			}
		}
		rel.Wait()
		if have := locktest.Holds(t, dsn, s.PID()); len(have) != 0 {
			t.Fatalf("round %d: pg_locks after the releases: %v", round, have)
		}
		if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
	}
}
