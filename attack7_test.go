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
