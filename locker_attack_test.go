package alock_test

// Adversarial tests of the Locker (in-process table, sessions, loss, Close,
// Lead) and of the batching of a Session's operations. Each checks the
// library's answers against the server's view (pg_locks, pg_stat_activity).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// a2Granted returns the distinct granted advisory locks (id/mode) of the
// backends with application_name app, and how many rows wait.
func a2Granted(t *testing.T, dsn, app string) (granted []string, waiting int) {
	t.Helper()
	admin := pgtest.Connect(t, dsn)
	rows, err := admin.Query(context.Background(), `SELECT a.pid FROM pg_stat_activity a WHERE a.application_name = $1`, app)
	if err != nil {
		t.Fatal(err)
	}
	var pids []uint32
	for rows.Next() {
		var pid uint32
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	rows.Close()
	set := map[string]bool{}
	for _, pid := range pids {
		for _, h := range locktest.Holds(t, dsn, pid) {
			if strings.HasSuffix(h, "(waiting)") {
				waiting++
				continue
			}
			set[h] = true
		}
	}
	for h := range set {
		granted = append(granted, h)
	}
	slices.Sort(granted)
	return granted, waiting
}

// a2Session counts the backends with application_name app.
func a2Sessions(t *testing.T, dsn, app string) int {
	n, _, _ := backends(t, dsn, app)
	return n
}

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
	var out []string
	for h := range set {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
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
			if n := a2Sessions(t, dsn, app); n > 3 {
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
	got, waiting := a2Granted(t, dsn, app)
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
	if got, waiting := a2Granted(t, dsn, app); len(got)+waiting != 0 {
		t.Errorf("pg_locks after releasing everything: %v, %d waiting", got, waiting)
	}
	if st := lk.Stat(); st.Held != 0 || st.Waiting != 0 {
		t.Errorf("Stat after releasing everything: %+v", st)
	}
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
	got, _ := a2Granted(t, dsn, app)
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
	if got, _ := a2Granted(t, dsn, app); len(got) != 0 {
		t.Errorf("pg_locks after releasing everything: %v (the Locker holds nothing)", got)
	}
	// Re-acquiring and releasing the Lock must leave nothing either.
	if err := a.Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := a2Granted(t, dsn, app); len(got) != 0 {
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
// cause, leaves the queue, and holds nothing; Stat goes back to 0.
func TestAttack2LockerCancelCausePhases(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
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
	for i, p := range phases {
		start := time.Now()
		cancels[i](cause)
		select {
		case err := <-errs[i]:
			if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
				t.Errorf("%s: %v, want Canceled and the cause", p.name, err)
			}
			if time.Since(start) > time.Second {
				t.Errorf("%s: returned %v after the cancel", p.name, time.Since(start))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Acquire did not return after the cancel", p.name)
		}
		if p.l.Locked() {
			t.Errorf("%s: Locked after a cancelled Acquire", p.name)
		}
	}
	if err := inproc.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got, waiting := a2Granted(t, dsn, app)
	if len(got) != 0 || waiting != 0 {
		t.Errorf("pg_locks: %v, %d waiting; want nothing", got, waiting)
	}
	if st := lk.Stat(); st.Held != 0 || st.Waiting != 0 {
		t.Errorf("Stat: %+v", st)
	}
	// The queue was left: the ids are free in the process.
	for _, p := range phases[2:] {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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
	if got, waiting := a2Granted(t, dsn, app); len(got)+waiting != 0 {
		t.Errorf("pg_locks: %v, %d waiting", got, waiting)
	}
}
