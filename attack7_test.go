package alock_test

// Attacks on the reused batch op and signal channel of a core Lock
// (internal/core/batch.go), on a Session's sharded set of held Locks
// (heldset.go), on the Locker table's idle entries (locker_table.go) and on
// a Locker Lock's reused table request (locker_lock.go). Each checks the
// library's answers against the server's view (pg_locks by backend pid).

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

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// a7Ctx returns a ctx of one of the kinds that end an operation early:
// none, a deadline shorter than a round trip, a cancel with a cause at a
// random moment, a deadline with a cause, or one already cancelled; cause
// is the cause the error must carry, nil for none.
func a7Ctx(parent context.Context) (ctx context.Context, cancel func(), cause error) {
	d := time.Duration(rand.IntN(600)) * time.Microsecond
	switch rand.IntN(6) {
	case 0, 1:
		return parent, func() {}, nil
	case 2:
		ctx, cancel := context.WithTimeout(parent, d)
		return ctx, cancel, nil
	case 3:
		cause := fmt.Errorf("a7 cancel %d", rand.IntN(1000))
		ctx, cancel := context.WithCancelCause(parent)
		t := time.AfterFunc(d, func() { cancel(cause) })
		return ctx, func() { t.Stop(); cancel(nil) }, cause
	case 4:
		cause := fmt.Errorf("a7 deadline %d", rand.IntN(1000))
		ctx, cancel := context.WithDeadlineCause(parent, time.Now().Add(d), cause)
		return ctx, cancel, cause
	default:
		cause := errors.New("a7 cancelled before")
		ctx, cancel := context.WithCancelCause(parent)
		cancel(cause)
		return ctx, func() {}, cause
	}
}

// a7CtxErr checks that err is the error of an operation ended by ctx: it
// wraps ctx.Err() and, when ctx has a cause, the cause.
func a7CtxErr(ctx context.Context, cause error, err error) error {
	if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("not ctx's error (ctx.Err %v): %w", ctx.Err(), err)
	}
	if cause != nil && context.Cause(ctx) == cause && !errors.Is(err, cause) {
		return fmt.Errorf("without the cause %v: %w", cause, err)
	}
	return nil
}

// a7SharedLock is a Session Lock shared by goroutines, with the count they
// believe they hold.
type a7SharedLock struct {
	l     *alock.Lock
	ids   []alock.ID
	mode  alock.Mode
	count atomic.Int64 // held by its goroutines, counted before each acquisition
	kept  atomic.Int64 // held between phases
}

// TestAttack7SharedLocksSignals: a Session's Locks, each shared by six
// goroutines that Acquire, TryAcquire and Release it (re-entrant) under
// ctxs that end before, during and after a round trip, with causes, while
// the Locks' batched ops are led, handed over and withdrawn. In the phases
// where no other connection holds anything every TryAcquire must succeed
// unless its ctx ended; in the others another connection holds some ids.
// After each phase (goroutines paused, holding what they hold) each Lock
// is Locked exactly when its goroutines count it held, and pg_locks for
// the session's backend shows exactly the holds of the Locked Locks.
func TestAttack7SharedLocksSignals(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	bg := context.Background()
	s := attackSession(t, dsn, nil)
	other := pgtest.Connect(t, dsn)
	pid := s.PID()
	var locks []*a7SharedLock
	for i := range 8 {
		ids := []alock.ID{alock.Key(int64(7000 + i))}
		if i%3 == 1 {
			ids = append(ids, alock.Pair(70, int32(i)))
		}
		m := alock.Exclusive
		l := s.NewExclusive(ids...)
		if i%2 == 1 {
			m, l = alock.Share, s.NewShare(ids...)
		}
		locks = append(locks, &a7SharedLock{l: l, ids: ids, mode: m})
	}
	want := func() []string {
		set := map[string]bool{}
		for _, a := range locks {
			if a.count.Load() > 0 {
				for _, id := range a.ids {
					set[a6Norm(id, a.mode)] = true
				}
			}
		}
		out := make([]string, 0, len(set))
		for h := range set {
			out = append(out, h)
		}
		slices.Sort(out)
		return out
	}
	check := func(when string) {
		t.Helper()
		for _, a := range locks {
			if got := a.l.Locked(); got != (a.count.Load() > 0) {
				t.Errorf("%s: %v Locked %v, its goroutines count %d", when, a.l, got, a.count.Load())
			}
		}
		if got, w := locktest.Holds(t, dsn, pid), want(); !slices.Equal(got, w) {
			t.Errorf("%s: pg_locks for pid %d: %v, the Locks say %v", when, pid, got, w)
		}
	}
	var ops, ctxEnded, tries atomic.Int64
	phase := func(n int, busy bool, d time.Duration) {
		var blocked map[int]bool // the locks another connection holds an id of
		if busy {
			blocked = map[int]bool{}
			for i, a := range locks {
				if i%2 == 0 && rand.IntN(2) == 0 && a6Lock(t, other, "pg_try_advisory_lock", a.ids[0]) {
					blocked[i] = true
				}
			}
		}
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for i, a := range locks {
			for range 6 {
				wg.Go(func() {
					mine := 0
					defer func() { // give back half of what it holds, keep the rest
						for ; mine > 0 && rand.IntN(2) == 0; mine-- {
							if err := a.l.Release(bg); err != nil {
								t.Errorf("phase %d: Release %v: %v", n, a.l, err)
							}
							a.count.Add(-1)
						}
						a.kept.Add(int64(mine))
					}()
					mine = int(a.kept.Swap(0))
					for time.Now().Before(deadline) && !t.Failed() {
						ops.Add(1)
						opCtx, opCancel := context.WithTimeout(bg, 100*time.Millisecond)
						ctx, cancel, cause := a7Ctx(opCtx)
						switch r := rand.IntN(10); {
						case mine > 0 && r < 4:
							// The last Release of a count may wait for the
							// turn: then it fails with ctx's error and the
							// count stays.
							err := a.l.Release(ctx)
							if err != nil {
								if e := a7CtxErr(ctx, cause, err); e != nil {
									t.Errorf("phase %d: Release %v: %v", n, a.l, e)
								}
								if !a.l.Locked() {
									t.Errorf("phase %d: Release %v failed (%v) but the Lock is not Locked", n, a.l, err)
								}
								ctxEnded.Add(1)
								break
							}
							mine--
							a.count.Add(-1)
						case r < 7:
							tries.Add(1)
							prev := a.count.Add(1) - 1 // counted before, so that a check never sees a hold nobody counts
							ok, err := a.l.TryAcquire(ctx)
							switch {
							case err != nil:
								a.count.Add(-1)
								if e := a7CtxErr(ctx, cause, err); e != nil {
									t.Errorf("phase %d: TryAcquire %v: %v", n, a.l, e)
								}
								ctxEnded.Add(1)
							case ok:
								mine++
								if blocked[i] {
									t.Errorf("phase %d: TryAcquire %v true while another connection holds %v", n, a.l, a.ids[0])
								}
								if !a.l.Locked() {
									t.Errorf("phase %d: TryAcquire %v true but not Locked", n, a.l)
								}
							default:
								// A try gives up while another goroutine has
								// the Lock's turn marked waiting, which an
								// Acquire also does when it comes to count on
								// a hold taken meanwhile: so false is
								// wrong only if no other goroutine counted.
								if now := a.count.Add(-1); !busy && prev == 0 && now == 0 {
									t.Errorf("phase %d: TryAcquire %v false, nothing held elsewhere (ctx.Err %v)", n, a.l, ctx.Err())
								}
							}
						default:
							a.count.Add(1)
							err := a.l.Acquire(ctx)
							if err != nil {
								a.count.Add(-1)
								if e := a7CtxErr(ctx, cause, err); e != nil {
									t.Errorf("phase %d: Acquire %v: %v", n, a.l, e)
								}
								ctxEnded.Add(1)
								break
							}
							if blocked[i] {
								t.Errorf("phase %d: Acquire %v granted while another connection holds %v", n, a.l, a.ids[0])
							}
							mine++
							if !a.l.Locked() {
								t.Errorf("phase %d: Acquire %v succeeded but not Locked", n, a.l)
							}
						}
						cancel()
						opCancel()
					}
				})
			}
		}
		wg.Wait()
		check(fmt.Sprintf("after phase %d", n))
		if busy {
			exec(t, session{other, dsn}, "SELECT pg_advisory_unlock_all()")
		}
	}
	for n := range 8 {
		phase(n, n%2 == 1, 250*time.Millisecond)
		if t.Failed() {
			break
		}
	}
	for _, a := range locks {
		for ; a.kept.Load() > 0; a.kept.Add(-1) {
			mustRelease(t, a.l)
			a.count.Add(-1)
		}
	}
	check("at rest")
	if got := locktest.Holds(t, dsn, pid); len(got) > 0 {
		t.Errorf("at rest: pg_locks for pid %d: %v", pid, got)
	}
	t.Logf("%d operations, %d tries, %d ended by their ctx", ops.Load(), tries.Load(), ctxEnded.Load())
}

// TestAttack7KillDuringBatchedGrants: 48 goroutines, each with its own
// Lock on one Session, take (TryAcquire or Acquire, batched) and release
// in a tight loop while another connection terminates the session's
// backend. Before the kill, at a pause, pg_locks shows exactly the holds
// of the Locked Locks and none of their Lost channels is closed. After
// it, every Lock a goroutine holds (granted before the session was told
// lost, or as it was) has its Lost channel closed, is not Locked, and its
// Release reports ErrLost; so does the Lost channel, asked for during the
// hold, of a Release that reports ErrLost.
func TestAttack7KillDuringBatchedGrants(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	bg := context.Background()
	admin := newA4Admin(t, dsn)
	var grantedLate, lostChecked, releasesLost atomic.Int64
	for round := range 6 {
		s := attackSession(t, dsn, nil)
		pid := s.PID()
		type worker struct {
			l    *alock.Lock
			mode alock.Mode
			held bool
			lost <-chan struct{}
			log  []string
		}
		workers := make([]*worker, 48)
		for i := range workers {
			id := alock.Key(int64(71000 + i))
			w := &worker{l: s.NewExclusive(id), mode: alock.Exclusive}
			if i%2 == 1 {
				w.mode, w.l = alock.Share, s.NewShare(id, alock.Key(71999)) // one id for all of them
			}
			workers[i] = w
		}
		run := func(until func() bool, stopHolding bool) {
			var wg sync.WaitGroup
			for _, w := range workers {
				wg.Go(func() {
					for !until() {
						if w.held {
							err := w.l.Release(bg)
							w.log = append(w.log, fmt.Sprintf("release: %v", err))
							if errors.Is(err, alock.ErrLost) {
								releasesLost.Add(1)
								if !a6Closed(w.lost, 2*time.Second) {
									t.Errorf("round %d: Release %v reported ErrLost (%v), the Lost channel asked for during the hold is open", round, w.l, err)
								}
								w.held = false
								continue
							}
							if err != nil {
								t.Errorf("round %d: Release %v: %v", round, w.l, err)
								return
							}
							w.held = false
							continue
						}
						var err error
						ok := true
						wasLost := s.Err() != nil
						if rand.IntN(2) == 0 {
							ok, err = w.l.TryAcquire(bg)
						} else {
							ctx, cancel := context.WithTimeout(bg, 2*time.Second)
							err = w.l.Acquire(ctx)
							cancel()
						}
						if err != nil {
							if s.Err() == nil && !errors.Is(err, alock.ErrLost) {
								t.Errorf("round %d: acquire %v: %v", round, w.l, err)
								return
							}
							time.Sleep(100 * time.Microsecond)
							continue
						}
						if !ok {
							t.Errorf("round %d: TryAcquire %v false: nothing else holds its ids", round, w.l)
							return
						}
						w.held = true
						w.lost = w.l.Lost()
						w.log = append(w.log, fmt.Sprintf("grant (lost %v, closed %v)", wasLost, a6Closed(w.lost, 0)))
						if wasLost {
							grantedLate.Add(1)
						}
						if stopHolding && rand.IntN(4) == 0 {
							return
						}
						if !stopHolding && rand.IntN(3) == 0 { // hold as the session is lost
							for !until() {
								time.Sleep(time.Millisecond)
							}
							w.log = append(w.log, fmt.Sprintf("held to the end: same channel %v", w.l.Lost() == w.lost))
							return
						}
					}
				})
			}
			wg.Wait()
		}
		// A pause before the kill: goroutines keep what they hold.
		pauseAt := time.Now().Add(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		run(func() bool { return time.Now().After(pauseAt) }, true)
		var want []string
		for _, w := range workers {
			if w.l.Locked() != w.held {
				t.Errorf("round %d, pause: %v Locked %v, held %v", round, w.l, w.l.Locked(), w.held)
			}
			if w.held {
				if a6Closed(w.l.Lost(), 0) {
					t.Errorf("round %d, pause: %v held, its Lost channel closed", round, w.l)
				}
				for _, id := range w.l.IDs() {
					want = append(want, hold(id, w.mode))
				}
			}
		}
		slices.Sort(want)
		want = slices.Compact(want)
		if got := locktest.Holds(t, dsn, pid); !slices.Equal(got, want) {
			t.Errorf("round %d, pause: pg_locks for pid %d: %v, the Locks say %v", round, pid, got, want)
		}
		if t.Failed() {
			return
		}
		var kill sync.WaitGroup
		kill.Go(func() {
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			admin.kill(pid)
		})
		// Until the session knows, and a little after (grants that
		// complete as it is told).
		var toldAt atomic.Int64
		run(func() bool {
			if s.Err() == nil {
				return false
			}
			toldAt.CompareAndSwap(0, time.Now().UnixNano())
			return time.Since(time.Unix(0, toldAt.Load())) > 5*time.Millisecond
		}, false)
		kill.Wait()
		for _, w := range workers {
			if !w.held {
				continue
			}
			lostChecked.Add(1)
			if a, b := a6Closed(w.lost, 5*time.Second), a6Closed(w.l.Lost(), 0); !a || !b {
				t.Errorf("round %d: %v held as the session was lost (%v), its Lost channel is open (asked at the grant: closed %v; now: closed %v; Locked %v) %q", round, w.l, s.Err(), a, b, w.l.Locked(), w.log[max(0, len(w.log)-4):])
			}
			if w.l.Locked() {
				t.Errorf("round %d: %v Locked after the session was lost", round, w.l)
			}
			if err := w.l.Release(bg); !errors.Is(err, alock.ErrLost) {
				t.Errorf("round %d: Release %v after the loss: %v", round, w.l, err)
			}
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d holds checked lost, %d Releases reported ErrLost, %d grants while the session was known lost", lostChecked.Load(), releasesLost.Load(), grantedLate.Load())
}

// TestAttack7LockerSweepsUnderWaits: a Locker's table cycles through more
// than 1,024 distinct ids (so idle entries are swept again and again)
// while other goroutines hold, wait for and withdraw from (ctx ended) a few
// hot ids, in both modes, with multi-id Locks that overlap, and while
// goroutines share hot Lock objects (re-entrant, their Acquire waiting in
// the process while the same Lock's TryAcquire is called). A checker per
// hot id sees no two conflicting holds; at a pause pg_locks of the
// Locker's sessions shows exactly the ids of the held Locks; at rest Stat
// shows nothing held or waiting; Close with waiters in the process fails
// them with ErrClosed.
func TestAttack7LockerSweepsUnderWaits(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	bg := context.Background()
	const app = "a7_sweeps"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 2})
	admin := newA4Admin(t, dsn)
	const hot = 6
	var excl, share [hot]atomic.Int32
	enter := func(ids []int, m alock.Mode, what string) {
		for _, i := range ids {
			if m == alock.Exclusive {
				if excl[i].Add(1) != 1 || share[i].Load() != 0 {
					t.Errorf("%s: exclusive hold of hot id %d beside another hold", what, i)
				}
			} else if share[i].Add(1); excl[i].Load() != 0 {
				t.Errorf("%s: share hold of hot id %d beside an exclusive one", what, i)
			}
		}
	}
	leave := func(ids []int, m alock.Mode) {
		for _, i := range ids {
			if m == alock.Exclusive {
				excl[i].Add(-1)
			} else {
				share[i].Add(-1)
			}
		}
	}
	hotIDs := func(n []int) []alock.ID {
		var out []alock.ID
		for _, i := range n {
			out = append(out, alock.Key(int64(72000+i)))
		}
		return out
	}
	// Shared hot Locks: one Lock object, many goroutines, one hold.
	type sharedLock struct {
		l     *alock.Lock
		ids   []int
		mode  alock.Mode
		mu    sync.Mutex
		count int // counted by its goroutines; the checker sees the hold from 0 to 1 and back
	}
	shared := []*sharedLock{
		{l: lk.NewExclusive(hotIDs([]int{0, 1})...), ids: []int{0, 1}, mode: alock.Exclusive},
		{l: lk.NewShare(hotIDs([]int{1, 2})...), ids: []int{1, 2}, mode: alock.Share},
	}
	var cold atomic.Int64
	var ops, withdrawn atomic.Int64
	type kept struct {
		l    *alock.Lock
		ids  []alock.ID
		mode alock.Mode
	}
	var keptMu sync.Mutex
	var keptLocks []kept
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for time.Now().Before(deadline) && !t.Failed() {
				ops.Add(1)
				r := rand.IntN(10)
				switch {
				case g < 10 || r < 3: // a fresh cold id: table churn and sweeps
					id := alock.Key(100000 + cold.Add(1))
					l := lk.NewExclusive(id)
					if rand.IntN(2) == 0 {
						l = lk.NewShare(id)
					}
					if ok, err := l.TryAcquire(bg); err != nil || !ok {
						t.Errorf("TryAcquire of a fresh id %v: %v, %v", id, ok, err)
						return
					}
					if err := l.Release(bg); err != nil {
						t.Errorf("Release %v: %v", l, err)
						return
					}
				case r < 6: // a fresh Lock over one to three hot ids
					n := rand.Perm(hot)[:1+rand.IntN(3)]
					m := alock.Exclusive
					l := lk.NewExclusive(hotIDs(n)...)
					if rand.IntN(2) == 0 {
						m, l = alock.Share, lk.NewShare(hotIDs(n)...)
					}
					ctx, cancel, _ := a7Ctx(bg)
					limit := 50 * time.Millisecond
					if g < 16 { // these must get it: a wait is never stranded
						ctx, cancel = bg, func() {}
						limit = 5 * time.Second
					}
					tctx, tcancel := context.WithTimeout(ctx, limit)
					err := l.Acquire(tctx)
					// The cause Acquire must report is tctx's, fixed when it
					// ended: ctx's own cause may come later (its timer's
					// goroutine may run after tctx's), and is then not why
					// Acquire stopped.
					why := context.Cause(tctx)
					tcancel()
					if err != nil {
						cancel()
						if tctx.Err() == nil || !errors.Is(err, tctx.Err()) || limit > time.Second {
							t.Errorf("Acquire %v: %v", l, err)
							return
						}
						if !errors.Is(err, why) {
							t.Errorf("Acquire %v: without the cause %v: %v", l, why, err)
						}
						withdrawn.Add(1)
						continue
					}
					cancel()
					enter(n, m, l.String())
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					leave(n, m)
					if err := l.Release(bg); err != nil {
						t.Errorf("Release %v: %v", l, err)
						return
					}
				default: // a shared hot Lock
					s := shared[rand.IntN(len(shared))]
					ctx, cancel, _ := a7Ctx(bg)
					tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
					var ok bool
					var err error
					if rand.IntN(2) == 0 {
						ok, err = s.l.TryAcquire(tctx)
					} else {
						err = s.l.Acquire(tctx)
						ok = err == nil
					}
					tcancel()
					cancel()
					if err != nil {
						if tctx.Err() == nil || !errors.Is(err, tctx.Err()) {
							t.Errorf("shared %v: %v", s.l, err)
							return
						}
						withdrawn.Add(1)
						continue
					}
					if !ok {
						continue
					}
					s.mu.Lock()
					if s.count++; s.count == 1 {
						enter(s.ids, s.mode, s.l.String())
					}
					s.mu.Unlock()
					if !s.l.Locked() {
						t.Errorf("shared %v: acquired, not Locked", s.l)
					}
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					s.mu.Lock()
					if s.count--; s.count == 0 {
						leave(s.ids, s.mode)
					}
					s.mu.Unlock()
					// The checker's count goes down before the Lock's, so that
					// a checker never sees a hold the table gave away.
					if err := s.l.Release(bg); err != nil {
						t.Errorf("Release shared %v: %v", s.l, err)
						return
					}
				}
			}
			// Keep one fresh id for the pause.
			id := alock.Key(200000 + int64(g))
			l := lk.NewShare(id)
			if g%2 == 0 {
				l = lk.NewExclusive(id)
			}
			mustAcquire(t, l)
			keptMu.Lock()
			keptLocks = append(keptLocks, kept{l, []alock.ID{id}, l.Mode()})
			keptMu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var want []string
	for _, k := range keptLocks {
		if !k.l.Locked() {
			t.Errorf("pause: kept %v not Locked", k.l)
		}
		want = append(want, hold(k.ids[0], k.mode))
	}
	slices.Sort(want)
	if got, waiting := admin.granted(app); !slices.Equal(got, want) || waiting != 0 {
		t.Errorf("pause: the Locker's sessions hold %v (%d waiting), its Locks say %v", got, waiting, want)
	}
	for _, k := range keptLocks {
		mustRelease(t, k.l)
	}
	expectLockerAtRest(t, lk, "after the churn")
	if got, waiting := admin.granted(app); len(got) > 0 || waiting != 0 {
		t.Errorf("at rest: the Locker's sessions hold %v (%d waiting)", got, waiting)
	}
	// Close with waiters in the process (and a TryAcquire of a shared Lock
	// whose Acquire waits).
	holder := lk.NewExclusive(hotIDs([]int{3})...)
	mustAcquire(t, holder)
	waiter := lk.NewShare(hotIDs([]int{3, 4})...)
	errs := make(chan error, 16)
	var waiters sync.WaitGroup
	for range 8 {
		waiters.Go(func() { errs <- waiter.Acquire(bg) })
		waiters.Go(func() {
			ctx, cancel := context.WithTimeout(bg, time.Duration(rand.IntN(30))*time.Millisecond)
			defer cancel()
			if err := lk.NewExclusive(hotIDs([]int{4, 3})...).Acquire(ctx); err != nil && !errors.Is(err, ctx.Err()) && !errors.Is(err, alock.ErrClosed) {
				t.Errorf("Acquire beside Close: %v", err)
			}
		})
	}
	pgtest.WaitFor(t, "waiters in the process", func() bool { return lk.Stat().Waiting > 0 })
	if ok, err := waiter.TryAcquire(bg); ok || err != nil {
		t.Errorf("TryAcquire of a Lock whose Acquire waits: %v, %v", ok, err)
	}
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	if err := lk.Close(bg); err != nil {
		t.Errorf("Close: %v", err)
	}
	waiters.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, alock.ErrClosed) {
			t.Errorf("Acquire waiting as the Locker closed: %v", err)
		}
	}
	if err := holder.Release(bg); err == nil {
		t.Error("Release after Close succeeded")
	}
	expectLockerAtRest(t, lk, "after Close")
	t.Logf("%d operations, %d ended by their ctx, %d cold ids", ops.Load(), withdrawn.Load(), cold.Load())
}
