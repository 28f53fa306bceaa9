package alock_test

// Attacks on the Locker's placement of waits (locker.go session, pick,
// leastLoaded; locker_lock.go takeOnSession): the counts it keeps per
// session must come back after every path, and placement, exclusion and
// the server's view must hold under cancellations, losses and Close.

import (
	"cmp"
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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// a5PerPID returns, per backend with application_name app, how many
// advisory locks it holds and awaits.
func (a *a4Admin) a5PerPID(app string) (granted, waiting map[uint32]int) {
	granted, waiting = map[uint32]int{}, map[uint32]int{}
	rows, err := a.c.Query(context.Background(), `SELECT l.pid, l.granted
		FROM pg_locks l JOIN pg_stat_activity s USING (pid)
		WHERE l.locktype = 'advisory' AND s.application_name = $1`, app)
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid uint32
		var ok bool
		if err := rows.Scan(&pid, &ok); err != nil {
			a.t.Fatal(err)
		}
		if ok {
			granted[pid]++
		} else {
			waiting[pid]++
		}
	}
	if err := rows.Err(); err != nil {
		a.t.Fatal(err)
	}
	return granted, waiting
}

// a5Placement checks, on an idle Locker with MaxSessions 2 whose ids
// 100 and 101 are held by another connection, that its per-session counts
// are back to zero, through what they decide: one waiter waits on the
// server and the holds of free ids all go to the other session; a second
// waiter waits on the server on that other session; then the holds of
// free ids alternate between the two (each carries one wait). A wait
// counted for ever on a session would send the first waiter's holds, or
// the second waiter, elsewhere; a hold counted for ever would skew the
// alternation. Stat must show nothing held or waiting before and after.
// The phase before must first have settled: a session lost in it must have
// closed its connection, and an open it began (which goes on after the
// acquisition that needed it left) must have ended. Until then they count
// against MaxSessions, and a hold that finds no session free of waits goes
// beside the wait (on purpose) instead of waiting for another session.
func a5Placement(t *testing.T, lk *alock.Locker, admin *a4Admin, app, phase string) {
	t.Helper()
	ctx := context.Background()
	expectLockerAtRest(t, lk, fmt.Sprintf("%s: Stat before the check", phase))
	pgtest.WaitFor(t, phase+": no session closing or opening", func() bool {
		return lk.Stat().Sessions == len(alock.LockerLoads(lk)) && alock.LockerOpening(lk) == 0
	})
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		expectLockerAtRest(t, lk, fmt.Sprintf("%s: Stat after the check", phase))
	}()
	waiter := func(k int64) {
		wg.Go(func() {
			if err := lk.NewExclusive(alock.Key(k)).Acquire(wctx); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: waiter for %d: %v", phase, k, err)
			}
		})
	}
	waitRows := func(n int) (pids []uint32) {
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, waiting := admin.a5PerPID(app)
			pids = pids[:0]
			for pid := range waiting {
				pids = append(pids, pid)
			}
			if len(waiting) == n || time.Now().After(deadline) {
				return pids
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	holdFree := func(base int64) (per map[uint32]int, release func()) {
		var locks []*alock.Lock
		for k := range int64(10) {
			l := lk.NewExclusive(alock.Key(base + k))
			if ok, err := l.TryAcquire(ctx); !ok || err != nil {
				t.Errorf("%s: TryAcquire of free %d: %v, %v", phase, base+k, ok, err)
				continue
			}
			locks = append(locks, l)
		}
		per, _ = admin.a5PerPID(app)
		return per, func() {
			for _, l := range locks {
				if err := l.Release(ctx); err != nil {
					t.Errorf("%s: Release: %v", phase, err)
				}
			}
		}
	}
	waiter(100)
	first := waitRows(1)
	if len(first) != 1 {
		t.Errorf("%s: one waiter waits on the server on %d sessions", phase, len(first))
		return
	}
	per, release := holdFree(1000)
	release()
	if len(per) != 1 || per[first[0]] != 0 {
		t.Errorf("%s: with one waiter on %d, 10 free holds went to %v; want all on the other session", phase, first[0], per)
	}
	waiter(101)
	both := waitRows(2)
	if len(both) != 2 {
		t.Errorf("%s: two waiters wait on the server on %d sessions, want 2", phase, len(both))
		return
	}
	per, release = holdFree(2000)
	release()
	if len(per) != 2 || per[both[0]] != 5 || per[both[1]] != 5 {
		t.Errorf("%s: with a waiter on each session, 10 free holds went %v; want 5 and 5", phase, per)
	}
	if sessions := len(admin.pids(app)); sessions > 2 {
		t.Errorf("%s: %d sessions, MaxSessions 2", phase, sessions)
	}
}

// TestAttack5LockerCountsComeBack: a Locker (MaxSessions 2) goes through
// every path of an acquisition that must wait: its deadline in the first
// try or in the session choice (tiny deadlines), in the wait on the server
// and while polling (deadlines of 20-80 ms, more waiters than sessions,
// some with a cancel cause), a grant after the wait, the session lost
// under a waiter, and backends terminated while waiters come and go.
// After each, a5Placement checks that nothing stays counted.
func TestAttack5LockerCountsComeBack(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_counts"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	holdKeys(t, dsn, 100, 101, 102, 103)
	a5Placement(t, lk, admin, app, "at the start")

	// Deadlines that end in the first try, the session choice or the wait.
	run := func(n int, d func() time.Duration, cause bool) {
		var wg sync.WaitGroup
		for g := range n {
			wg.Go(func() {
				l := lk.NewExclusive(alock.Key(int64(100 + g%4)))
				var actx context.Context
				var cancel func()
				if cause {
					c, cc := context.WithCancelCause(ctx)
					tm := time.AfterFunc(d(), func() { cc(errors.New("a5 cause")) })
					actx, cancel = c, func() { tm.Stop(); cc(nil) }
				} else {
					actx, cancel = context.WithTimeout(ctx, d())
				}
				defer cancel()
				if err := l.Acquire(actx); err == nil {
					t.Errorf("Acquire of an id held elsewhere succeeded")
					_ = l.Release(ctx)
				} else if !errors.Is(err, context.Cause(actx)) {
					t.Errorf("Acquire: %v", err)
				}
			})
		}
		wg.Wait()
	}
	run(40, func() time.Duration { return time.Duration(rand.N(3000)) * time.Microsecond }, false)
	a5Placement(t, lk, admin, app, "after tiny deadlines")
	run(12, func() time.Duration { return time.Duration(20+rand.N(60)) * time.Millisecond }, false)
	a5Placement(t, lk, admin, app, "after deadlines in the wait")
	run(12, func() time.Duration { return time.Duration(rand.N(60)) * time.Millisecond }, true)
	a5Placement(t, lk, admin, app, "after causes")

	// Granted after the wait.
	other := holdKeys(t, dsn, 110, 111, 112)
	var wg sync.WaitGroup
	for k := range int64(3) {
		wg.Go(func() {
			l := lk.NewExclusive(alock.Key(110 + k))
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := l.Acquire(actx); err != nil {
				t.Errorf("Acquire of %d: %v", 110+k, err)
				return
			}
			if err := l.Release(ctx); err != nil {
				t.Errorf("Release: %v", err)
			}
		})
	}
	pgtest.WaitFor(t, "3 waiters", func() bool { return lk.Stat().Waiting == 3 })
	time.Sleep(50 * time.Millisecond)
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	a5Placement(t, lk, admin, app, "after grants")

	// A waiter's session lost under it: it goes on on another.
	wctx, cancel := context.WithCancel(ctx)
	for k := range int64(3) {
		wg.Go(func() {
			if err := lk.NewExclusive(alock.Key(100 + k)).Acquire(wctx); !errors.Is(err, context.Canceled) {
				t.Errorf("waiter %d after a loss: %v", 100+k, err)
			}
		})
	}
	pgtest.WaitFor(t, "3 waiters", func() bool { return lk.Stat().Waiting == 3 })
	time.Sleep(50 * time.Millisecond)
	if pids := admin.pids(app); len(pids) > 0 {
		admin.kill(pids[0])
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	a5Placement(t, lk, admin, app, "after a loss under waiters")

	// Terminations while waiters come and go.
	stop := make(chan struct{})
	for g := range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l := lk.NewExclusive(alock.Key(int64(100 + g%4)))
				actx, cancel := context.WithTimeout(ctx, time.Duration(rand.N(40000))*time.Microsecond)
				if err := l.Acquire(actx); err == nil {
					t.Errorf("Acquire of an id held elsewhere succeeded")
					_ = l.Release(ctx)
				}
				cancel()
			}
		})
	}
	for range 4 {
		time.Sleep(time.Duration(50+rand.N(100)) * time.Millisecond)
		if pids := admin.pids(app); len(pids) > 0 {
			admin.kill(pids[rand.N(len(pids))])
		}
	}
	close(stop)
	wg.Wait()
	a5Placement(t, lk, admin, app, "after terminations")
}

// a5Hot makes another connection hold key k all the time but for an
// instant every 20 ms (one statement unlocks and locks again), until the
// test ends: a Lock that polls for k never finds it free, while one that
// waits on the server is granted it at the next unlock.
func a5Hot(t *testing.T, dsn string, k int64) {
	t.Helper()
	c := pgtest.Connect(t, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock($1), pg_advisory_lock($1)", k); err != nil {
				if ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// TestAttack5PollerMovesToFreedSession: a Locker (MaxSessions 2) has a
// Lock waiting on the server on each session (ids held elsewhere); a
// third Lock must wait for an id that another process holds all the time
// but for an instant every 20 ms, so it polls on a session that carries a
// wait. Then the second session's waiter is granted and goes: the poller
// must move to the session now free of waits and wait on the server there,
// and get the hot id within a few of its releases, not starve polling
// beside the first waiter (whose wait each of its tries breaks). The docs
// promise the move "as soon as a session carries none", with no figure:
// 10 s is a hang guard, which a poller that stays practically never meets.
func TestAttack5PollerMovesToFreedSession(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_poller_moves"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	holdKeys(t, dsn, 100)
	second := holdKeys(t, dsn, 101)
	a5Hot(t, dsn, 102)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // waits for 100 to the end
		if err := lk.NewExclusive(alock.Key(100)).Acquire(wctx); !errors.Is(err, context.Canceled) {
			t.Errorf("waiter for 100: %v", err)
		}
	})
	pgtest.WaitFor(t, "a wait on the server", func() bool { _, w := admin.a5PerPID(app); return len(w) == 1 })
	wg.Go(func() { // waits for 101 until the other connection lets it go
		l := lk.NewExclusive(alock.Key(101))
		if err := l.Acquire(wctx); err != nil {
			t.Errorf("waiter for 101: %v", err)
			return
		}
		if err := l.Release(ctx); err != nil {
			t.Errorf("Release 101: %v", err)
		}
	})
	pgtest.WaitFor(t, "waits on both sessions", func() bool { _, w := admin.a5PerPID(app); return len(w) == 2 })
	got := make(chan time.Time, 1)
	wg.Go(func() { // polls for the hot 102
		l := lk.NewExclusive(alock.Key(102))
		if err := l.Acquire(wctx); err != nil {
			if !errors.Is(err, context.Canceled) { // ended by the bound below
				t.Errorf("the hot id 102 not acquired: %v", err)
			}
			close(got)
			return
		}
		got <- time.Now()
		if err := l.Release(ctx); err != nil {
			t.Errorf("Release 102: %v", err)
		}
	})
	pgtest.WaitFor(t, "three waiting", func() bool { return lk.Stat().Waiting == 3 })
	time.Sleep(100 * time.Millisecond)
	freed := time.Now()
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case at, ok := <-got:
		if ok {
			t.Logf("the poller got the hot id %v after the second session was freed", at.Sub(freed))
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the poller has not got the hot id 10 s after a session was free of waits")
	}
	cancel()
}

// TestAttack5TwoLockersExcludeUnderWaits: two Lockers (MaxSessions 2 and
// 3) of one process, 24 goroutines each, over 6 hot ids in both modes and
// pairs of ids (all or none), Do with deadlines of 5-150 ms, while another
// connection takes and frees 3 of the ids: so most acquisitions wait, more
// than the sessions, and waiters move between sessions as waits end. One
// in-process check spans both Lockers (they exclude each other only at the
// server): conflicting holders are never inside at once. Neither Locker
// exceeds its MaxSessions; every Do succeeds or meets its deadline; at
// the end nothing is held or waiting (Stat, pg_locks).
func TestAttack5TwoLockersExcludeUnderWaits(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	apps := []string{"a5_excl_a", "a5_excl_b"}
	optsA, lostA := a4LostOptions(2)
	optsB, lostB := a4LostOptions(3)
	lks := []*alock.Locker{newLocker(t, dsn, apps[0], optsA), newLocker(t, dsn, apps[1], optsB)}
	stop := make(chan struct{})
	most := []func() int{a4MaxBackends(t, dsn, apps[0], stop, lostA.lostPIDs), a4MaxBackends(t, dsn, apps[1], stop, lostB.lostPIDs)}
	inside := newA4Inside()
	var bg sync.WaitGroup
	bg.Go(func() { // another process takes and frees 0..2
		c := pgtest.Connect(t, dsn)
		for {
			k := int64(rand.N(3))
			if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stop:
			case <-time.After(time.Duration(rand.N(40)) * time.Millisecond):
			}
			if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock($1)", k); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(rand.N(20)) * time.Millisecond):
			}
		}
	})
	var bad a4Errs
	var ops, got, deadlines atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for g := range 48 {
		lk := lks[g%2]
		wg.Go(func() {
			for time.Now().Before(deadline) {
				keys := []int64{int64(rand.N(6))}
				if rand.N(4) == 0 {
					keys = append(keys, int64(rand.N(6)))
				}
				share := rand.N(3) == 0
				var ids []alock.ID
				for _, k := range keys {
					ids = append(ids, alock.Key(k))
				}
				l := lk.NewExclusive(ids...)
				if share {
					l = lk.NewShare(ids...)
				}
				dctx, cancel := context.WithTimeout(ctx, time.Duration(5+rand.N(145))*time.Millisecond)
				err := l.Do(dctx, func(context.Context) error {
					for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
						inside.enter(k, share)
					}
					got.Add(1)
					time.Sleep(time.Duration(rand.N(3000)) * time.Microsecond)
					for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
						inside.leave(k, share)
					}
					return nil
				})
				cancel()
				ops.Add(1)
				switch {
				case err == nil:
				case errors.Is(err, context.DeadlineExceeded):
					deadlines.Add(1)
				default:
					bad.add("Do %v: %v", l, err)
				}
			}
		})
	}
	if !within(t, 20*time.Second, "the goroutines", wg.Wait) {
		t.FailNow()
	}
	close(stop)
	bg.Wait()
	bad.report(t, "two Lockers")
	seen := []int{most[0](), most[1]()}
	t.Logf("%d Do, %d inside, %d deadlines; at most %v sessions seen; at most %d shares inside at once",
		ops.Load(), got.Load(), deadlines.Load(), seen, inside.most.Load())
	if n := inside.clashes.Load(); n > 0 {
		t.Errorf("%d times conflicting holders were inside at once", n)
	}
	if seen[0] > 2 || seen[1] > 3 {
		t.Errorf("sessions seen %v, MaxSessions 2 and 3", seen)
	}
	admin := newA4Admin(t, dsn)
	for i, lk := range lks {
		expectLockerAtRest(t, lk, fmt.Sprintf("%s: Stat at the end", apps[i]))
		if granted, waiting := admin.granted(apps[i]); len(granted)+waiting != 0 {
			t.Errorf("%s: pg_locks at the end: %v (%d waiting)", apps[i], granted, waiting)
		}
	}
}

// TestAttack5LeadTwoLockersWithKills: two fenced Lockers, three
// goroutines each campaigning in a loop for one id (terms of 10-60 ms),
// while a backend of either is terminated every 100-200 ms, for 2 s and
// until 20 terms have run (20 s at most: fewer terms then fail). Two
// terms overlap only when the earlier one was lost (its backend killed:
// the server let the other in before the old leader could be told; its
// Lead returns an error wrapping ErrLost), and then it ends within a
// second of the next term's start (terms in the order of their tokens); Lead
// returns nil, an error wrapping ErrLost, or its ctx's error; every term
// has a token of its own.
func TestAttack5LeadTwoLockersWithKills(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	opts := &alock.LockerOptions{Session: alock.SessionOptions{Fencing: true, FenceSequence: "a5_lead_fence"}}
	apps := []string{"a5_lead_a", "a5_lead_b"}
	lks := []*alock.Locker{newLocker(t, dsn, apps[0], opts), newLocker(t, dsn, apps[1], opts)}
	type term struct {
		who        int
		token      int64
		start, end time.Time
		lost       bool
	}
	var mu sync.Mutex
	var terms []term
	var bad a4Errs
	const minTerms, minRun, maxRun = 20, 2 * time.Second, 20 * time.Second
	begin := time.Now()
	lctx, cancel := context.WithTimeout(ctx, maxRun)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for lctx.Err() == nil {
				var tm term
				err := lks[g%2].Lead(lctx, alock.Name("a5 leader"), func(fctx context.Context, token int64) error {
					tm = term{who: g % 2, token: token, start: time.Now()}
					select {
					case <-fctx.Done():
					case <-time.After(time.Duration(10+rand.N(50)) * time.Millisecond):
					}
					tm.end = time.Now()
					return nil
				})
				if err != nil && !errors.Is(err, alock.ErrLost) && lctx.Err() == nil {
					bad.add("Lead: %v", err)
				}
				if tm.token != 0 {
					// Lost while fn ran, told then or at the resignation
					// (the watchdog parks its read after 50 ms idle).
					tm.lost = errors.Is(err, alock.ErrLost)
					mu.Lock()
					terms = append(terms, tm)
					mu.Unlock()
				}
			}
		})
	}
	admin := newA4Admin(t, dsn)
	kills := 0
	for lctx.Err() == nil {
		time.Sleep(time.Duration(100+rand.N(100)) * time.Millisecond)
		if pids := admin.pids(apps[rand.N(2)]); len(pids) > 0 {
			admin.kill(pids[rand.N(len(pids))])
			kills++
		}
		mu.Lock()
		enough := len(terms) >= minTerms
		mu.Unlock()
		if enough && time.Since(begin) >= minRun {
			cancel()
		}
	}
	ran := time.Since(begin)
	if !within(t, 10*time.Second, "the campaigners", wg.Wait) {
		t.FailNow()
	}
	bad.report(t, "campaigners")
	// In the order of the grants: each draws its token as it is granted.
	// (Not by start: a goroutine can be descheduled between its grant and
	// fn's first line for longer than a kill takes to let the next leader
	// in, under a loaded machine's -race.)
	slices.SortFunc(terms, func(a, b term) int { return cmp.Compare(a.token, b.token) })
	lost, overlaps := 0, 0
	for i, tm := range terms {
		if tm.lost {
			lost++
		}
		if i == 0 {
			continue
		}
		if prev := terms[i-1]; tm.token == prev.token {
			t.Errorf("two terms (Lockers %d and %d) with token %d", prev.who, tm.who, tm.token)
		}
		for _, p := range terms[:i] {
			if p.end.After(tm.start) {
				overlaps++
				if !p.lost {
					t.Errorf("term %d (Locker %d, token %d) began %v before the end of a term not lost (Locker %d, token %d)",
						i, tm.who, tm.token, p.end.Sub(tm.start), p.who, p.token)
				} else if d := p.end.Sub(tm.start); d > time.Second {
					t.Errorf("a lost term ended %v after the next began", d)
				}
			}
		}
	}
	t.Logf("%d terms in %v, %d kills, %d terms lost, %d overlaps (all after a kill)", len(terms), ran.Round(time.Millisecond), kills, lost, overlaps)
	if len(terms) < minTerms {
		t.Errorf("only %d terms in %v", len(terms), ran.Round(time.Millisecond))
	}
}

// a5Backends returns, per granted advisory lock of the backends with
// application_name app (rendered as hold renders it), how many backends
// hold it.
func (a *a4Admin) a5Backends(app string) map[string]int {
	rows, err := a.c.Query(context.Background(), `SELECT l.classid::int8, l.objid::int8, l.objsubid::int4, l.mode, count(DISTINCT l.pid)
		FROM pg_locks l JOIN pg_stat_activity s USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = $1
		GROUP BY 1, 2, 3, 4`, app)
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string]int{}
	var classid, objid int64
	var objsubid int32
	var mode string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&classid, &objid, &objsubid, &mode, &n}, func() error {
		id, valid := alock.FromLockTag(uint32(classid), uint32(objid), uint16(objsubid))
		if !valid {
			return fmt.Errorf("unexpected lock tag %d:%d:%d", classid, objid, objsubid)
		}
		m := alock.Exclusive
		if mode == "ShareLock" {
			m = alock.Share
		}
		out[hold(id, m)] = n
		return nil
	}); err != nil {
		a.t.Fatal(err)
	}
	return out
}

// TestAttack5StepsMatchServerUnderWaits: 48 goroutines, one Lock each
// (both modes, single and multi-id over 12 keys), on a Locker with
// MaxSessions 3, take one random step at a time together (Acquire with a
// 5-80 ms ctx, TryAcquire, Release) while another connection holds a
// random third of the keys and lets them go at a random moment of the
// step: Acquires wait on the server, poll, move between sessions, are
// granted or time out there. At two steps a backend is terminated. After
// every step the server's granted locks are exactly those of the Locks
// that say Locked, and each is on no more backends than Locks hold it (a
// grant left on the session of a first try, or of a wait that moved or
// timed out, would show); at the end nothing is left.
func TestAttack5StepsMatchServerUnderWaits(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_steps"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 3})
	admin := newA4Admin(t, dsn)
	other := pgtest.Connect(t, dsn)
	type worker struct {
		l    *alock.Lock
		held int
	}
	var workers []*worker
	for g := range 48 {
		ids := []alock.ID{alock.Key(int64(g % 12))}
		if g%5 == 0 {
			ids = append(ids, alock.Key(int64((g+5)%12)))
		}
		l := lk.NewExclusive(ids...)
		if g%3 == 0 {
			l = lk.NewShare(ids...)
		}
		workers = append(workers, &worker{l: l})
	}
	want := func() map[string]int {
		out := map[string]int{}
		for _, w := range workers {
			if w.l.Locked() {
				for _, id := range slices.Compact(w.l.IDs()) {
					out[hold(id, w.l.Mode())]++
				}
			}
		}
		return out
	}
	matches := func(got, want map[string]int) bool {
		if len(got) != len(want) {
			return false
		}
		for h, n := range got {
			if want[h] == 0 || n > want[h] {
				return false
			}
		}
		return true
	}
	var bad a4Errs
	var lost, timeouts, acquired int
	var mu sync.Mutex
	for step := range 24 {
		for k := range int64(12) { // the other connection takes a third of the keys
			if rand.N(3) == 0 {
				if _, err := other.Exec(ctx, "SELECT pg_try_advisory_lock($1)", k); err != nil {
					t.Fatal(err)
				}
			}
		}
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Go(func() {
				var what string
				var err error
				switch op := rand.N(4); {
				case w.held > 0 && op == 0:
					what, err = "Release", w.l.Release(ctx)
					w.held--
				case op == 1:
					what = "TryAcquire"
					var ok bool
					if ok, err = w.l.TryAcquire(ctx); ok {
						w.held++
					}
				default:
					what = "Acquire"
					actx, cancel := context.WithTimeout(ctx, time.Duration(5+rand.N(75))*time.Millisecond)
					if err = w.l.Acquire(actx); err == nil {
						w.held++
						mu.Lock()
						acquired++
						mu.Unlock()
					}
					cancel()
				}
				if errors.Is(err, context.DeadlineExceeded) {
					mu.Lock()
					timeouts++
					mu.Unlock()
				} else if err != nil && !errors.Is(err, alock.ErrLost) {
					bad.add("step %d: %s %v: %v", step, what, w.l, err)
				}
			})
		}
		time.Sleep(time.Duration(rand.N(50)) * time.Millisecond)
		if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
		if step%12 == 7 {
			if pids := admin.pids(app); len(pids) > 0 {
				admin.kill(pids[rand.N(len(pids))])
			}
		}
		if !within(t, 10*time.Second, fmt.Sprintf("step %d", step), wg.Wait) {
			t.FailNow()
		}
		for _, w := range workers {
			if w.l.Locked() && w.held == 0 {
				t.Fatalf("step %d: %v Locked, but its goroutine holds nothing", step, w.l)
			}
			if !w.l.Locked() && w.held > 0 {
				lost++
				for ; w.held > 0; w.held-- {
					if err := w.l.Release(ctx); !errors.Is(err, alock.ErrLost) {
						t.Errorf("step %d: Release of a lost %v: %v", step, w.l, err)
					}
				}
			}
		}
		var got map[string]int
		deadline := time.Now().Add(3 * time.Second)
		for {
			got = admin.a5Backends(app)
			if matches(got, want()) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if w := want(); !matches(got, w) {
			t.Fatalf("step %d: pg_locks (backends per hold) %v; the Locks hold %v", step, got, w)
		}
		if _, waiting := admin.granted(app); waiting != 0 {
			t.Fatalf("step %d: %d waits left on the server", step, waiting)
		}
	}
	bad.report(t, "steps")
	t.Logf("%d Acquires granted, %d deadlines, %d holds found lost", acquired, timeouts, lost)
	for _, w := range workers {
		for ; w.held > 0; w.held-- {
			if err := w.l.Release(ctx); err != nil && !errors.Is(err, alock.ErrLost) {
				t.Errorf("Release %v: %v", w.l, err)
			}
		}
	}
	if got, waiting := admin.granted(app); len(got)+waiting != 0 {
		t.Errorf("pg_locks at the end: %v (%d waiting)", got, waiting)
	}
	expectLockerAtRest(t, lk, "Stat at the end")
}

// TestAttack5WaitBesideHoldFalseDeadlock: a known limit, documented in the
// README. A goroutine holds X on the Locker's first session and waits for
// nothing; another process holds Z and waits for X; another goroutine waits
// for Z, on that same session (the first on which no Lock waits). The
// server sees a cycle (that session waits for the other process, which
// waits for that session) and fails one of the two waits with a deadlock
// error: the other process's 40P01, or the Locker's ErrDeadlock. The test
// holds the library to what follows: exactly one wait fails so, the other
// is granted once X or Z is let go, and nothing is left on the server.
// (Sending waits to a session without holds would remove this case only
// while such a session is left, and would hide from the server the real
// deadlocks it now sees.)
func TestAttack5WaitBesideHoldFalseDeadlock(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_false_deadlock"
	lk := newLocker(t, dsn, app, nil)
	admin := newA4Admin(t, dsn)
	a := lk.NewExclusive(alock.Key(1)) // X
	if err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	other := holdKeys(t, dsn, 2) // Z
	if _, err := other.Exec(ctx, "SET deadlock_timeout = '200ms'"); err != nil {
		t.Fatal(err)
	}
	otherErr := make(chan error, 1)
	go func() { // the other process waits for X
		_, err := other.Exec(ctx, "SELECT pg_advisory_lock(1)")
		otherErr <- err
	}()
	pgtest.WaitFor(t, "the other process's wait", func() bool {
		var n int
		if err := admin.c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b := lk.NewExclusive(alock.Key(2)) // Z
	bErr := make(chan error, 1)
	go func() { bErr <- b.Acquire(bctx) }()
	deadlock := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.Is(err, alock.ErrDeadlock) || errors.As(err, &pgErr) && pgErr.Code == "40P01"
	}
	select {
	case err := <-otherErr: // X is free for the Locker's wait for Z once Z is
		if !deadlock(err) {
			t.Fatalf("the other process's wait ended first, not with a deadlock: %v", err)
		}
		if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
		if err := <-bErr; err != nil {
			t.Fatalf("the wait for Z, let go: %v", err)
		}
		if err := b.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
	case err := <-bErr:
		if !deadlock(err) {
			t.Fatalf("the Locker's wait ended first, not with ErrDeadlock: %v", err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-otherErr; err != nil {
			t.Fatalf("the other process's wait for X, let go: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("neither wait ended: the server saw no cycle")
	}
	if got, waiting := admin.granted(app); len(got)+waiting != 0 {
		t.Errorf("pg_locks at the end: %v (%d waiting)", got, waiting)
	}
}

// TestAttack5CloseWithMovingWaiters: Close while a Locker (MaxSessions 2)
// has a waiter on the server on each session, four Locks polling beside
// them, and waits ending (so pollers move) as Close runs: every Acquire
// returns (granted before Close, or an error wrapping ErrClosed), no
// backend is left, Stat shows nothing held or waiting.
func TestAttack5CloseWithMovingWaiters(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_close_moving"
	ctx10, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lk, err := alock.NewLocker(ctx10, withParam(dsn, "application_name", app), &alock.LockerOptions{MaxSessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	admin := newA4Admin(t, dsn)
	holdKeys(t, dsn, 100, 101, 102, 103)
	ending := holdKeys(t, dsn, 110, 111)
	errs := make(chan error, 6)
	for _, k := range []int64{110, 111, 100, 101, 102, 103} {
		go func() {
			l := lk.NewExclusive(alock.Key(k))
			err := l.Acquire(ctx10)
			if err == nil {
				if err = l.Release(ctx); errors.Is(err, alock.ErrClosed) || errors.Is(err, alock.ErrLost) {
					err = nil
				}
			}
			errs <- err
		}()
		if k >= 110 {
			pgtest.WaitFor(t, "a wait on the server", func() bool { _, w := admin.a5PerPID(app); return len(w) == int(k-109) })
		}
	}
	pgtest.WaitFor(t, "six waiting", func() bool { return lk.Stat().Waiting == 6 })
	time.Sleep(50 * time.Millisecond)
	go func() { _ = ending.Close(ctx) }()
	time.Sleep(time.Duration(rand.N(20)) * time.Millisecond)
	if err := lk.Close(ctx10); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, alock.ErrClosed) {
				t.Errorf("an Acquire ended by Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an Acquire has not returned 5 s after Close")
		}
	}
	if st := lk.Stat(); st.Held != 0 || st.Waiting != 0 || st.Sessions != 0 {
		t.Errorf("Stat after Close: %+v", st)
	}
	pgtest.WaitFor(t, "no backend left", func() bool { return len(admin.pids(app)) == 0 })
}

// TestAttack5FreedLocksReachWaitersPromptly: a Locker (MaxSessions 2)
// with six Locks waiting for six ids that six other connections hold (two
// wait on the server, four poll); the ids are let go one at a time, 150
// ms apart, in a random order. Each waiter must have its id within the
// pollers' bound of the release (a waiter on the server at once, a poller
// within 200 ms: README, "the others poll with try-locks every 5–200 ms";
// pollers move to the sessions the granted waiters leave), plus 3 s of
// slack for a loaded machine.
func TestAttack5FreedLocksReachWaitersPromptly(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a5_prompt"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	const n = 6
	var holders [n]*pgx.Conn
	for i := range n {
		holders[i] = holdKeys(t, dsn, int64(100+i))
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got := make(chan struct {
		k  int
		at time.Time
	}, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l := lk.NewExclusive(alock.Key(int64(100 + i)))
			if err := l.Acquire(wctx); err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			got <- struct {
				k  int
				at time.Time
			}{i, time.Now()}
			if err := l.Release(ctx); err != nil {
				t.Errorf("Release %d: %v", i, err)
			}
		})
	}
	pgtest.WaitFor(t, "six waiting", func() bool { return lk.Stat().Waiting == n })
	time.Sleep(100 * time.Millisecond)
	var freed [n]time.Time
	for _, i := range rand.Perm(n) {
		freed[i] = time.Now()
		if _, err := holders[i].Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	wg.Wait()
	close(got)
	var lat []time.Duration
	for g := range got {
		d := g.at.Sub(freed[g.k])
		lat = append(lat, d)
		if d > 200*time.Millisecond+3*time.Second { // a poller's bound, and slack for a loaded machine
			t.Errorf("waiter %d had its id %v after the release", g.k, d)
		}
	}
	slices.Sort(lat)
	t.Logf("latencies from release to grant: %v", lat)
}

// TestAttack5WaitersReplaceKilledSessions: 30 Locks of a Locker
// (MaxSessions 3) wait for 30 ids another connection holds; every backend
// of the Locker is terminated at once, three times, 150 ms apart. The
// waiters move on to new sessions together: the server never sees more
// than 3 of the Locker's sessions, and after the last kill there is again
// one wait on the server per session (3); then the waiters are cancelled
// and nothing is left.
func TestAttack5WaitersReplaceKilledSessions(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app, n = "a5_waiters_killed", 30
	opts, lost := a4LostOptions(3)
	lk := newLocker(t, dsn, app, opts)
	admin := newA4Admin(t, dsn)
	var keys []int64
	for i := range int64(n) {
		keys = append(keys, 100+i)
	}
	holdKeys(t, dsn, keys...)
	stop := make(chan struct{})
	most := a4MaxBackends(t, dsn, app, stop, admin.killedPIDs, lost.lostPIDs)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			if err := lk.NewExclusive(alock.Key(k)).Acquire(wctx); !errors.Is(err, context.Canceled) {
				t.Errorf("waiter %d: %v", k, err)
			}
		})
	}
	pgtest.WaitFor(t, "30 waiting", func() bool { return lk.Stat().Waiting == n })
	for range 3 {
		time.Sleep(150 * time.Millisecond)
		for _, pid := range admin.pids(app) {
			admin.kill(pid)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	var per map[uint32]int
	spread := func() bool {
		for _, w := range per {
			if w != 1 {
				return false
			}
		}
		return len(per) == 3
	}
	for time.Now().Before(deadline) {
		if _, per = admin.a5PerPID(app); spread() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !spread() {
		t.Errorf("after the kills, waits on the server per backend %v; want one on each of 3", per)
	}
	cancel()
	wg.Wait()
	close(stop)
	if seen := most(); seen > 3 {
		t.Errorf("the server saw %d sessions, MaxSessions 3", seen)
	}
	if st := lk.Stat(); st.Held != 0 || st.Waiting != 0 || st.Sessions > 3 {
		t.Errorf("Stat at the end: %+v", st)
	}
	if granted, waiting := admin.granted(app); len(granted)+waiting != 0 {
		t.Errorf("pg_locks at the end: %v (%d waiting)", granted, waiting)
	}
}
