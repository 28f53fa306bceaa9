package locktest

import (
	"context"
	"errors"
	"testing"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func idsTakenInOrder(t *testing.T, e *env) {
	s, other := e.session(), e.other()
	e.exec(other, "SELECT pg_advisory_lock(2)")
	l := s.NewLock(alock.Exclusive, alock.Key(1), alock.Key(2), alock.Key(3))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Acquire(ctx) }()
	e.waitHolds(s, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive)+"(waiting)")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
	}
	e.expectHolds(s)
	e.expectUsable(s)
	if l.Locked() {
		t.Fatal("Locked after a cancelled Acquire")
	}
}

func reentrant(t *testing.T, e *env) {
	s := e.session()
	l := s.NewLock(alock.Share, alock.Key(5), alock.Key(5), alock.Pair(5, 5))
	want := []string{hold(alock.Key(5), alock.Share), hold(alock.Pair(5, 5), alock.Share)}
	for range 3 {
		e.mustAcquire(l)
		e.expectHolds(s, want...)
	}
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("TryAcquire of a held Lock: %v, %v", ok, err)
	}
	for range 3 {
		e.mustRelease(l)
		e.expectHolds(s, want...)
		if !l.Locked() {
			t.Fatal("not Locked with count above zero")
		}
	}
	e.mustRelease(l)
	// A server-level count above 1 would leave the locks held here.
	e.expectHolds(s)
	if l.Locked() {
		t.Fatal("Locked after the last Release")
	}
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrNotHeld) {
		t.Fatalf("Release at zero: %v, want ErrNotHeld", err)
	}
}

func locksShareHolds(t *testing.T, e *env) {
	s := e.session()
	a := s.NewLock(alock.Exclusive, alock.Key(1), alock.Key(2))
	b := s.NewLock(alock.Exclusive, alock.Key(2), alock.Key(3))
	c := s.NewLock(alock.Share, alock.Key(2))
	e.mustAcquire(a)
	if ok, err := b.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("second Lock on the session: %v %v", ok, err)
	}
	e.mustAcquire(c)
	e.expectHolds(s, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive),
		hold(alock.Key(3), alock.Exclusive), hold(alock.Key(2), alock.Share))
	e.mustRelease(a)
	e.expectHolds(s, hold(alock.Key(2), alock.Exclusive), hold(alock.Key(3), alock.Exclusive), hold(alock.Key(2), alock.Share))
	e.mustRelease(c)
	e.expectHolds(s, hold(alock.Key(2), alock.Exclusive), hold(alock.Key(3), alock.Exclusive))
	e.mustRelease(b)
	e.expectHolds(s)
}

func tryAllOrNothing(t *testing.T, e *env) {
	s, other := e.session(), e.other()
	e.exec(other, "SELECT pg_advisory_lock_shared(2)")
	ex := s.NewLock(alock.Exclusive, alock.Key(1), alock.Key(2), alock.Key(3))
	if ok, err := ex.TryAcquire(context.Background()); ok || err != nil {
		t.Fatalf("TryAcquire with id 2 held elsewhere: %v %v, want false nil", ok, err)
	}
	e.expectHolds(s)
	if ex.Locked() {
		t.Fatal("Locked after a failed TryAcquire")
	}
	sh := s.NewLock(alock.Share, alock.Key(1), alock.Key(2), alock.Key(3))
	if ok, err := sh.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("share TryAcquire beside a share hold: %v %v", ok, err)
	}
	e.expectHolds(s, hold(alock.Key(1), alock.Share), hold(alock.Key(2), alock.Share), hold(alock.Key(3), alock.Share))
}

func zeroIDs(t *testing.T, e *env) {
	s := e.session()
	l := s.NewLock(alock.Exclusive)
	e.mustAcquire(l)
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	if !l.Locked() {
		t.Fatal("not Locked")
	}
	e.mustRelease(l)
	e.mustRelease(l)
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrNotHeld) {
		t.Fatalf("third Release: %v", err)
	}
	e.expectHolds(s)
}

func tooManyIDs(t *testing.T, e *env) {
	s := e.session()
	ids := make([]alock.ID, alock.MaxIDs+1)
	for i := range ids {
		ids[i] = alock.Key(int64(i))
	}
	if err := s.NewLock(alock.Exclusive, ids...).Acquire(context.Background()); !errors.Is(err, alock.ErrTooManyIDs) {
		t.Fatalf("Acquire of %d ids: %v", len(ids), err)
	}
	e.mustAcquire(s.NewLock(alock.Exclusive, ids[:alock.MaxIDs]...))
	if got := len(e.holds(s.PID())); got != alock.MaxIDs {
		pgtest.Fatalf(t, "held %d, want %d", got, alock.MaxIDs)
	}
}

func doReleases(t *testing.T, e *env) {
	s := e.session()
	l := s.NewLock(alock.Exclusive, alock.Key(9))
	boom := errors.New("boom")
	err := l.Do(context.Background(), func(ctx context.Context) error {
		e.expectHolds(s, hold(alock.Key(9), alock.Exclusive))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Do: %v", err)
	}
	e.expectHolds(s)
	func() {
		defer func() {
			if r := recover(); r != "panic in fn" {
				t.Fatalf("recovered %v", r)
			}
		}()
		_ = l.Do(context.Background(), func(ctx context.Context) error { panic("panic in fn") })
	}()
	e.expectHolds(s)
	if l.Locked() {
		t.Fatal("Locked after Do")
	}
}
