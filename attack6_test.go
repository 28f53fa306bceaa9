package alock_test

// Attacks on the batch statement of one part per lock function
// (internal/core/batch_rows.go), on Lost channels made when first asked for
// (internal/core/state.go, locker_lock.go lostChan), and on the Locker's
// choice of a session at grant time (locker_lock.go take). Each checks the
// library's answers against the server's view.

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
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// a6IDs are extreme keys and pairs (and plain ones), every lock function's
// argument kind.
var a6IDs = []alock.ID{
	alock.Key(-1 << 63), alock.Key(1<<63 - 1), alock.Key(0), alock.Key(-1),
	alock.Pair(-1<<31, 1<<31-1), alock.Pair(0, 0), alock.Pair(-1, -2), alock.Pair(1<<31-1, -1<<31),
}

// a6Norm renders id's hold in mode m as pg_locks shows it.
func a6Norm(id alock.ID, m alock.Mode) string {
	norm, _ := alock.FromLockTag(id.LockTag())
	return hold(norm, m)
}

// a6Lock runs fn ("pg_advisory_lock" and the like, with or without
// "_shared") on c for id; it returns the function's boolean, true for the
// blocking ones.
func a6Lock(t *testing.T, c *pgx.Conn, fn string, id alock.ID) bool {
	t.Helper()
	cls, obj, sub := id.LockTag()
	sql, args := "SELECT "+fn+"($1::bigint)::text", []any{int64(cls)<<32 | int64(obj)}
	if sub != 1 {
		sql, args = "SELECT "+fn+"($1::int, $2::int)::text", []any{int32(cls), int32(obj)}
	}
	var out string
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&out); err != nil {
		t.Fatalf("%s %v: %v", fn, id, err)
	}
	return out != "false"
}

// a6Session is a6Lock on a Session's own connection.
func a6SessionUnlock(t *testing.T, s *alock.Session, id alock.ID, m alock.Mode) {
	t.Helper()
	fn := "pg_advisory_unlock"
	if m == alock.Share {
		fn += "_shared"
	}
	cls, obj, sub := id.LockTag()
	sql, args := "SELECT "+fn+"($1::bigint)", []any{int64(cls)<<32 | int64(obj)}
	if sub != 1 {
		sql, args = "SELECT "+fn+"($1::int, $2::int)", []any{int32(cls), int32(obj)}
	}
	if err := alock.SessionExec(context.Background(), s, sql, args...); err != nil {
		t.Fatalf("%s %v on the session: %v", fn, id, err)
	}
}

// a6Busy keeps s's connection busy for d, so that operations submitted
// meanwhile go to the server in one batch; it returns once the statement
// has started (as far as a short sleep tells) and a func that waits for it.
func a6Busy(t *testing.T, s *alock.Session, d time.Duration) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := alock.SessionExec(context.Background(), s, fmt.Sprintf("SELECT pg_sleep(%g)", d.Seconds())); err != nil {
			t.Errorf("busy statement: %v", err)
		}
	})
	time.Sleep(d / 5)
	return wg.Wait
}

// a6Lk is a Lock with its ids and mode.
type a6Lk struct {
	l    *alock.Lock
	ids  []alock.ID
	mode alock.Mode
}

// TestAttack6SessionBatchAllKinds: rounds in which a Session's Locks over
// extreme keys and pairs, in both modes, single and multi-id (mixing keys
// and pairs), release (unlocks of every kind) and try (tries of every
// kind) in one batch, while another connection holds some ids in either
// mode; some tries fail, some multi-id tries get part of their ids (given
// back), and unlocks and tries of the same ids in other modes land
// together. Each try must succeed exactly when no id conflicts with the
// other connection's holds, and pg_locks must show exactly the holds of
// the Locks that say they are Locked.
func TestAttack6SessionBatchAllKinds(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, nil)
	other := pgtest.Connect(t, dsn)
	var locks []a6Lk
	add := func(m alock.Mode, ids ...alock.ID) {
		l := s.NewExclusive(ids...)
		if m == alock.Share {
			l = s.NewShare(ids...)
		}
		locks = append(locks, a6Lk{l, ids, m})
	}
	for i, id := range a6IDs {
		for _, m := range []alock.Mode{alock.Exclusive, alock.Share} {
			add(m, id)
			add(m, id) // two Locks share each single hold
			add(m, id, a6IDs[(i+3)%len(a6IDs)])
		}
	}
	// kind renders a single-id Lock's lock function kind.
	kind := func(a a6Lk) (k int, ok bool) {
		if len(a.ids) != 1 {
			return 0, false
		}
		if a.mode == alock.Share {
			k |= 2
		}
		if _, _, sub := a.ids[0].LockTag(); sub != 1 {
			k |= 4
		}
		return k, true
	}
	for round := range 40 {
		// Held before the round, released in it: every unlock kind.
		pre := map[int]bool{}
		seen := map[int]bool{}
		for i := range locks {
			k, single := kind(locks[i])
			if rand.IntN(4) == 0 || single && !seen[k] && rand.IntN(3) == 0 {
				pre[i] = true
				if single {
					seen[k] = true
				}
			}
		}
		for i := range locks {
			if k, single := kind(locks[i]); single && !seen[k] {
				pre[i], seen[k] = true, true
			}
		}
		for i := range pre {
			if ok, err := locks[i].l.TryAcquire(ctx); !ok || err != nil {
				t.Fatalf("round %d: TryAcquire %v with nothing held elsewhere: %v %v", round, locks[i].l, ok, err)
			}
		}
		// The other connection takes what it can of some ids.
		others := map[alock.ID]alock.Mode{}
		for _, id := range a6IDs {
			if rand.IntN(3) != 0 {
				continue
			}
			m, fn := alock.Exclusive, "pg_try_advisory_lock"
			if rand.IntN(2) == 0 {
				m, fn = alock.Share, fn+"_shared"
			}
			if a6Lock(t, other, fn, id) {
				others[id] = m
			}
		}
		conflicts := func(a a6Lk) bool {
			for _, id := range a.ids {
				if m, ok := others[id]; ok && (m == alock.Exclusive || a.mode == alock.Exclusive) {
					return true
				}
			}
			return false
		}
		// Tried in the round: every try kind, among the rest.
		var tries []int
		seen = map[int]bool{}
		for i := range locks {
			if pre[i] {
				continue
			}
			k, single := kind(locks[i])
			if rand.IntN(2) == 0 || single && !seen[k] {
				tries = append(tries, i)
				if single {
					seen[k] = true
				}
			}
		}
		wait := a6Busy(t, s, 150*time.Millisecond)
		start := make(chan struct{})
		got := make(map[int]bool)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range pre {
			wg.Go(func() {
				<-start
				if err := locks[i].l.Release(ctx); err != nil {
					t.Errorf("round %d: Release %v: %v", round, locks[i].l, err)
				}
			})
		}
		for _, i := range tries {
			wg.Go(func() {
				<-start
				ok, err := locks[i].l.TryAcquire(ctx)
				if err != nil {
					t.Errorf("round %d: TryAcquire %v: %v", round, locks[i].l, err)
				}
				mu.Lock()
				got[i] = ok
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		wait()
		want := map[string]bool{}
		for _, i := range tries {
			a := locks[i]
			if got[i] == conflicts(a) {
				t.Errorf("round %d: TryAcquire %v: %v, other connection holds %v", round, a.l, got[i], others)
			}
			if got[i] != a.l.Locked() {
				t.Errorf("round %d: %v: TryAcquire %v, Locked %v", round, a.l, got[i], a.l.Locked())
			}
			if got[i] {
				for _, id := range a.ids {
					want[a6Norm(id, a.mode)] = true
				}
			}
		}
		for i := range pre {
			if locks[i].l.Locked() {
				t.Errorf("round %d: %v Locked after its Release", round, locks[i].l)
			}
		}
		if have, w := locktest.Holds(t, dsn, s.PID()), slices.Sorted(maps.Keys(want)); !slices.Equal(have, w) {
			t.Fatalf("round %d (other holds %v): pg_locks %v, Locks say %v", round, others, have, w)
		}
		wait = a6Busy(t, s, 50*time.Millisecond)
		for _, i := range tries {
			if got[i] {
				wg.Go(func() {
					if err := locks[i].l.Release(ctx); err != nil {
						t.Errorf("round %d: Release %v: %v", round, locks[i].l, err)
					}
				})
			}
		}
		wg.Wait()
		wait()
		if have := locktest.Holds(t, dsn, s.PID()); len(have) != 0 {
			t.Fatalf("round %d: pg_locks after every Release: %v", round, have)
		}
		if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAttack6BatchUnlockFailuresReachTheirReleases: a Session holds one
// Lock per id and mode (every unlock kind); some of the holds are unlocked
// behind the Locks' back, then every Lock releases in one batch, with
// tries of every kind on other ids in the same batch. Exactly the Releases
// whose hold was gone report ErrLost (and their Lost channels are closed),
// whichever part of the statement their unlock was in and at whatever
// position; the tries all succeed.
func TestAttack6BatchUnlockFailuresReachTheirReleases(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := attackSession(t, dsn, nil)
	extra := []alock.ID{alock.Key(7), alock.Key(8), alock.Pair(7, 7), alock.Pair(8, 8)}
	for round := range 30 {
		var held, tries []a6Lk
		for _, id := range a6IDs {
			held = append(held, a6Lk{s.NewExclusive(id), []alock.ID{id}, alock.Exclusive},
				a6Lk{s.NewShare(id), []alock.ID{id}, alock.Share})
		}
		for _, id := range extra {
			tries = append(tries, a6Lk{s.NewExclusive(id), []alock.ID{id}, alock.Exclusive},
				a6Lk{s.NewShare(id), []alock.ID{id}, alock.Share})
		}
		for _, a := range held {
			if err := a.l.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
		}
		gone := make([]bool, len(held))
		for i, a := range held {
			if rand.IntN(3) == 0 {
				gone[i] = true
				a6SessionUnlock(t, s, a.ids[0], a.mode)
			}
		}
		wait := a6Busy(t, s, 150*time.Millisecond)
		start := make(chan struct{})
		errs := make([]error, len(held))
		oks := make([]bool, len(tries))
		var wg sync.WaitGroup
		for i, a := range held {
			wg.Go(func() {
				<-start
				errs[i] = a.l.Release(ctx)
			})
		}
		for i, a := range tries {
			wg.Go(func() {
				<-start
				ok, err := a.l.TryAcquire(ctx)
				if err != nil {
					t.Errorf("round %d: TryAcquire %v: %v", round, a.l, err)
				}
				oks[i] = ok
			})
		}
		close(start)
		wg.Wait()
		wait()
		for i, a := range held {
			if lost := errors.Is(errs[i], alock.ErrLost); lost != gone[i] || !lost && errs[i] != nil {
				t.Errorf("round %d: Release %v (unlocked behind its back: %v): %v", round, a.l, gone[i], errs[i])
			}
			select {
			case <-a.l.Lost():
				if !gone[i] {
					t.Errorf("round %d: %v: Lost closed, its hold was released", round, a.l)
				}
			default:
				if gone[i] {
					t.Errorf("round %d: %v: Lost open after a Release that found the hold gone", round, a.l)
				}
			}
		}
		var want []string
		for i, a := range tries {
			if !oks[i] {
				t.Errorf("round %d: TryAcquire %v of a free id failed", round, a.l)
				continue
			}
			want = append(want, a6Norm(a.ids[0], a.mode))
		}
		slices.Sort(want)
		if have := locktest.Holds(t, dsn, s.PID()); !slices.Equal(have, want) {
			t.Fatalf("round %d: pg_locks %v, want the tries' %v", round, have, want)
		}
		for i, a := range tries {
			if oks[i] {
				if err := a.l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if s.Err() != nil {
			t.Fatalf("round %d: session ended: %v", round, s.Err())
		}
	}
}

// a6Closed reports whether ch is closed, waiting up to d for it; true for
// a nil ch (a channel never asked for has nothing to close).
func a6Closed(ch <-chan struct{}, d time.Duration) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
	}
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// a6UntilUnlocked waits up to 10 s for l to report itself not Locked (its
// session known lost), without asking for Lost.
func a6UntilUnlocked(t *testing.T, l *alock.Lock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Locked() {
		if time.Now().After(deadline) {
			t.Fatalf("%v still Locked 10 s after its backend was terminated", l)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAttack6SessionLostAskedLate: Lost asked for only after the session
// was killed, after the Release of a lost hold, before the kill, and
// never (Do), on batched and fenced Locks: every lost hold's channel is
// closed, a released hold's is not.
func TestAttack6SessionLostAskedLate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	admin := newA4Admin(t, dsn)
	for _, fenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("fenced=%v", fenced), func(t *testing.T) {
			s := attackSession(t, dsn, &alock.SessionOptions{Fencing: fenced})
			before := s.NewExclusive(alock.Key(1))
			late := s.NewShare(alock.Key(2), alock.Pair(-1<<31, 1<<31-1))
			released := s.NewExclusive(alock.Key(3))
			afterRelease := s.NewExclusive(alock.Key(1<<63 - 1))
			counted := s.NewShare(alock.Key(-1 << 63))
			for _, l := range []*alock.Lock{before, late, released, afterRelease, counted, counted} {
				if err := l.Acquire(ctx); err != nil {
					t.Fatal(err)
				}
			}
			early := before.Lost()
			releasedCh := released.Lost()
			if err := released.Release(ctx); err != nil {
				t.Fatal(err)
			}
			doLost := make(chan error, 1)
			inDo := make(chan struct{})
			go func() {
				doLost <- s.NewExclusive(alock.Key(4)).Do(ctx, func(ctx context.Context) error {
					close(inDo)
					select {
					case <-ctx.Done():
						return context.Cause(ctx)
					case <-time.After(15 * time.Second):
						return errors.New("Do's ctx did not end within 15 s of the kill")
					}
				})
			}()
			<-inDo
			admin.kill(s.PID())
			a6UntilUnlocked(t, late)
			if !a6Closed(late.Lost(), 0) {
				t.Error("Lost asked for after the loss is open")
			}
			if !a6Closed(early, 0) {
				t.Error("Lost asked for before the loss is open after it")
			}
			if !a6Closed(counted.Lost(), 0) {
				t.Error("Lost of a hold counted twice, asked for after the loss, is open")
			}
			if err := afterRelease.Release(ctx); !errors.Is(err, alock.ErrLost) {
				t.Errorf("Release of a lost hold: %v", err)
			}
			if !a6Closed(afterRelease.Lost(), 0) {
				t.Error("Lost asked for after the Release of a lost hold is open")
			}
			if err := counted.Release(ctx); !errors.Is(err, alock.ErrLost) {
				t.Errorf("first Release of a lost hold counted twice: %v", err)
			}
			if !a6Closed(counted.Lost(), 0) {
				t.Error("Lost after the first of two Releases of a lost hold is open")
			}
			if a6Closed(releasedCh, 0) || a6Closed(released.Lost(), 0) {
				t.Error("a hold released before the kill has a closed Lost channel")
			}
			if err := <-doLost; !errors.Is(err, alock.ErrLost) {
				t.Errorf("Do over a killed session: %v, want ErrLost", err)
			}
		})
	}
}

// TestAttack6LockerLostAskedLate: the same for a Locker Lock, whose Lost is
// its latest hold's: asked for after the loss, after the Release of the
// lost hold, on a new hold after a lost one (open, and it closes when that
// hold is lost in turn), and Do's ctx when nobody asked before the kill.
func TestAttack6LockerLostAskedLate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a6_lk_lost"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	killAll := func() {
		for _, pid := range admin.pids(app) {
			admin.kill(pid)
		}
	}
	l := lk.NewExclusive(alock.Key(1), alock.Pair(-1<<31, 1<<31-1))
	never := l.Lost()
	for range 3 {
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		killAll()
		a6UntilUnlocked(t, l)
		if !a6Closed(l.Lost(), 0) {
			t.Fatal("Locker Lock: Lost asked for after the loss is open")
		}
		if err := l.Release(ctx); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release of a lost hold: %v", err)
		}
		if !a6Closed(l.Lost(), 0) {
			t.Fatal("Locker Lock: Lost asked for after the Release of a lost hold is open")
		}
	}
	if a6Closed(never, 0) {
		t.Error("Lost of the never-held Lock closed")
	}
	// A new hold after a lost one: open, closes on its own loss.
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	ch := l.Lost()
	if a6Closed(ch, 0) {
		t.Fatal("a new hold after a lost one has a closed Lost channel")
	}
	killAll()
	if !a6Closed(ch, 10*time.Second) {
		t.Fatal("the new hold's Lost did not close on its loss")
	}
	_ = l.Release(ctx)
	// Released normally: its channel stays open.
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if a6Closed(l.Lost(), 0) {
		t.Error("Lost after a normal Release is closed")
	}
	// Do: nobody asks for Lost before the kill but Do itself.
	for range 2 {
		d := lk.NewShare(alock.Key(5))
		err := d.Do(ctx, func(ctx context.Context) error {
			killAll()
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(15 * time.Second):
				return errors.New("Do's ctx did not end within 15 s of the kill")
			}
		})
		if !errors.Is(err, alock.ErrLost) {
			t.Errorf("Locker Do over a killed session: %v, want ErrLost", err)
		}
	}
	expectLockerAtRest(t, lk, "Stat at the end")
}

// TestAttack6LostRacesKillsAndReleases: goroutines acquire, ask for Lost
// at random moments (or never), and release Locks of a Session and of a
// Locker while backends are terminated; every hold whose Release reported
// ErrLost (or that was still held when its session ended) must have every
// channel asked for during it closed, and Lost asked for afterwards closed
// too. Run with -race.
func TestAttack6LostRacesKillsAndReleases(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app = "a6_lost_race"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	var checked, lostHolds atomic.Int64
	work := func(newLock func(m alock.Mode, ids ...alock.ID) *alock.Lock, until func() bool) {
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for !until() {
					m := alock.Exclusive
					if rand.IntN(2) == 0 {
						m = alock.Share
					}
					ids := []alock.ID{alock.Key(int64(g)), alock.Pair(int32(g), -1<<31)}[:1+rand.IntN(2)]
					l := newLock(m, ids...)
					var chans []<-chan struct{}
					var watch sync.WaitGroup
					if rand.IntN(2) == 0 {
						watch.Go(func() { // asks while the hold is taken
							time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
							_ = l.Lost()
						})
					}
					actx, cancel := context.WithTimeout(ctx, time.Second)
					err := l.Acquire(actx)
					cancel()
					watch.Wait()
					if err != nil {
						continue // the session died under the Acquire
					}
					for range rand.IntN(3) {
						chans = append(chans, l.Lost())
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
					}
					err = l.Release(ctx)
					if errors.Is(err, alock.ErrLost) {
						lostHolds.Add(1)
						chans = append(chans, l.Lost())
						for i, ch := range chans {
							if !a6Closed(ch, 0) {
								t.Errorf("%v: Release reported ErrLost, Lost channel %d of %d asked for during the hold is open", l, i, len(chans))
							}
						}
						checked.Add(1)
					} else if err != nil {
						t.Errorf("Release %v: %v", l, err)
					}
				}
			})
		}
		wg.Wait()
	}
	// A Locker survives kills: kill for a second, then check at rest.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(30+rand.IntN(70)) * time.Millisecond):
			}
			if pids := admin.pids(app); len(pids) > 0 {
				admin.kill(pids[rand.IntN(len(pids))])
			}
		}
	})
	deadline := time.Now().Add(1500 * time.Millisecond)
	work(func(m alock.Mode, ids ...alock.ID) *alock.Lock {
		if m == alock.Share {
			return lk.NewShare(ids...)
		}
		return lk.NewExclusive(ids...)
	}, func() bool { return time.Now().After(deadline) })
	close(stop)
	bg.Wait()
	expectLockerAtRest(t, lk, "Locker Stat at rest")
	// Sessions: each lives until killed once.
	for range 6 {
		s := attackSession(t, dsn, nil)
		var kill sync.WaitGroup
		kill.Go(func() {
			time.Sleep(time.Duration(20+rand.IntN(100)) * time.Millisecond)
			admin.kill(s.PID())
		})
		work(func(m alock.Mode, ids ...alock.ID) *alock.Lock {
			if m == alock.Share {
				return s.NewShare(ids...)
			}
			return s.NewExclusive(ids...)
		}, func() bool { return s.Err() != nil })
		kill.Wait()
	}
	if lostHolds.Load() == 0 {
		t.Error("no Release reported ErrLost: the kills never hit a hold")
	}
	t.Logf("%d lost holds checked", checked.Load())
}

// TestAttack6LockerLoadsComeBack: a Locker (MaxSessions 3) under churn —
// Acquires with a ctx cancelled before they start (on free and on busy
// ids), short Acquires, TryAcquires and Do, over ids another connection
// takes and frees — with backends terminated now and then. The server
// never sees more than 3 of its sessions besides lost and terminated ones
// (see a4MaxBackends); at rest every open session's
// load and waits are zero, Stat shows nothing held or waiting, and
// placement still spreads waiters (a5Placement).
func TestAttack6LockerLoadsComeBack(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	const app, maxSessions = "a6_lk_loads", 3
	opts, lost := a4LostOptions(maxSessions)
	lk := newLocker(t, dsn, app, opts)
	admin := newA4Admin(t, dsn)
	stop := make(chan struct{})
	most := a4MaxBackends(t, dsn, app, stop, admin.killedPIDs, lost.lostPIDs)
	var bg sync.WaitGroup
	bg.Go(func() { // another process takes and frees keys 60..63
		c := pgtest.Connect(t, dsn)
		for {
			for k := int64(60); k < 64; k++ {
				if _, err := c.Exec(ctx, "SELECT pg_try_advisory_lock($1)", k); err != nil {
					t.Error(err)
					return
				}
			}
			select {
			case <-stop:
				_, _ = c.Exec(ctx, "SELECT pg_advisory_unlock_all()")
				return
			case <-time.After(time.Duration(20+rand.IntN(60)) * time.Millisecond):
			}
			if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		}
	})
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(150+rand.IntN(200)) * time.Millisecond):
			}
			if pids := admin.pids(app); len(pids) > 0 {
				admin.kill(pids[rand.IntN(len(pids))])
			}
		}
	})
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				k := int64(rand.IntN(64))
				l := lk.NewExclusive(alock.Key(k))
				if rand.IntN(3) == 0 {
					l = lk.NewShare(alock.Key(k))
				}
				var err error
				switch op := rand.IntN(8); {
				case op < 2:
					err = l.Acquire(cancelled)
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Acquire %v with a cancelled ctx: %v", l, err)
						if err == nil {
							_ = l.Release(ctx)
						}
					}
					continue
				case op < 4:
					var ok bool
					ok, err = l.TryAcquire(ctx)
					if ok {
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
						err = l.Release(ctx)
					}
				case op < 6:
					actx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(50))*time.Millisecond)
					err = l.Acquire(actx)
					cancel()
					if err == nil {
						err = l.Release(ctx)
					}
				default:
					dctx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(50))*time.Millisecond)
					err = l.Do(dctx, func(context.Context) error { return nil })
					cancel()
				}
				if err != nil && !errors.Is(err, alock.ErrLost) && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%v: %v", l, err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if n := most(); n > maxSessions {
		t.Errorf("the server saw %d sessions besides lost and terminated ones, MaxSessions is %d", n, maxSessions)
	}
	expectLockerAtRest(t, lk, "Stat at rest")
	for _, c := range alock.LockerLoads(lk) {
		if c.Load != 0 || c.Waits != 0 {
			t.Errorf("at rest, session %d counts load %d, waits %d", c.PID, c.Load, c.Waits)
		}
	}
	if granted, waiting := admin.granted(app); len(granted) != 0 || waiting != 0 {
		t.Errorf("at rest, pg_locks shows %v granted and %d waiting", granted, waiting)
	}
	// Cancelled Acquires on free ids alone, then placement.
	for range 500 {
		if err := lk.NewExclusive(alock.Key(int64(1000 + rand.IntN(10)))).Acquire(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire with a cancelled ctx: %v", err)
		}
	}
	for _, c := range alock.LockerLoads(lk) {
		if c.Load != 0 || c.Waits != 0 {
			t.Errorf("after cancelled Acquires, session %d counts load %d, waits %d", c.PID, c.Load, c.Waits)
		}
	}
	// a5Placement wants exactly two sessions: a fresh Locker's view.
	lk2 := newLocker(t, dsn, app+"2", &alock.LockerOptions{MaxSessions: 2})
	holdKeys(t, dsn, 100, 101)
	for i := range 400 { // free ids (granted at once in the process) and a held one
		k := int64(2000 + rand.IntN(5))
		if i%4 == 0 {
			k = 100
		}
		if err := lk2.NewExclusive(alock.Key(k)).Acquire(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire %d with a cancelled ctx: %v", k, err)
		}
	}
	a5Placement(t, lk2, admin, app+"2", "after cancelled Acquires")
}
