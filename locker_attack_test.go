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
