package alock_test

// Attacks on the batch leader's rounds and hand-off (internal/core batch.go,
// gate.go) and on the Locker's choice of session (locker.go). Each checks
// the library's answers against the server (pg_locks, pg_stat_activity),
// and bounds every operation in time.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// a4Traffic runs n goroutines that Acquire and Release Locks of their own
// (distinct keys from base) on newLock until stop closes; ops counts their
// operations. Every operation must succeed unless ok accepts its error.
func a4Traffic(t *testing.T, n int, base int64, newLock func(...alock.ID) *alock.Lock, stop <-chan struct{}, ops *atomic.Int64, ok func(error) bool) (wait func()) {
	var wg sync.WaitGroup
	for g := range n {
		l := newLock(alock.Key(base + int64(g)))
		wg.Go(func() {
			ctx := context.Background()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := l.Acquire(ctx); err != nil {
					if ok == nil || !ok(err) {
						t.Errorf("traffic Acquire %v: %v", l, err)
					}
					continue
				}
				ops.Add(1)
				if err := l.Release(ctx); err != nil && (ok == nil || !ok(err)) {
					t.Errorf("traffic Release %v: %v", l, err)
				}
				ops.Add(1)
			}
		})
	}
	return wg.Wait
}

// TestAttack4WaiterGetsFreedLockUnderTraffic: one goroutine of a Session
// waits on the server for a lock held elsewhere while 4 others keep the
// session busy with batched Acquires and Releases. Once the lock is freed,
// the waiter must get it while the traffic goes on, within a second (a
// poller's bound is 200 ms). The wait slot's Lock found another user queued
// for the session each time it came, was preempted before it sent its wait,
// and so never tried: 1-3 s, at times not until the traffic stopped.
func TestAttack4WaiterGetsFreedLockUnderTraffic(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	other := holdKeys(t, dsn, 1)
	s := attackSession(t, dsn, nil)
	w := s.NewExclusive(alock.Key(1))
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		waited <- w.Acquire(wctx)
	}()
	waitWaiting(t, dsn, s.PID())
	stop := make(chan struct{})
	var ops atomic.Int64
	wait := a4Traffic(t, 4, 1000, s.NewExclusive, stop, &ops, nil)
	time.Sleep(300 * time.Millisecond)
	before := ops.Load()
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock(1)"); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var err error
	var took time.Duration
	select {
	case err = <-waited:
		took = time.Since(freed)
	case <-time.After(time.Second):
		took = -1
	}
	during := ops.Load() - before
	close(stop)
	if !within(t, 10*time.Second, "the traffic", wait) {
		t.FailNow()
	}
	if took < 0 {
		err = <-waited
		t.Fatalf("the waiter did not get the freed lock within 1 s while %d operations ran (after the traffic: %v, %v after the unlock)",
			during, err, time.Since(freed))
	}
	if err != nil {
		t.Fatalf("the waiter: %v", err)
	}
	t.Logf("the waiter got the freed lock after %v; %d traffic operations meanwhile", took, during)
	if !w.Locked() {
		t.Fatal("the waiter's Lock is not Locked")
	}
	if during == 0 {
		t.Fatal("no traffic operation ran while the waiter took the lock")
	}
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
