package alock_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestKeyEncodingMatchesPgLocks(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	ids := []alock.ID{alock.Key(0), alock.Key(-1), alock.Key(1<<32 | 2), alock.Pair(1, 2), alock.Pair(-1, -7), alock.Name("jobs")}
	mustAcquire(t, alock.NewExclusive(s[0].Conn, ids...))
	var want []string
	for _, id := range ids {
		if id == alock.Name("jobs") {
			id = alock.Key(alock.NameKey("jobs"))
		}
		want = append(want, hold(id, alock.Exclusive))
	}
	expectHolds(t, s[0], want...)
	// The same locks taken by SQL from another session conflict, and Key and
	// Pair spaces are disjoint: Pair(0, 0) is free while Key(0) is held.
	var k0, p12, byName, p00 bool
	err := s[1].QueryRow(context.Background(),
		"SELECT pg_try_advisory_lock(0), pg_try_advisory_lock(1, 2), pg_try_advisory_lock(hashtextextended('jobs', 0)), pg_try_advisory_lock(0, 0)").
		Scan(&k0, &p12, &byName, &p00)
	if err != nil {
		t.Fatal(err)
	}
	if k0 || p12 || byName || !p00 {
		t.Fatalf("try from SQL: Key(0)=%v Pair(1,2)=%v Name=%v Pair(0,0)=%v; want false false false true", k0, p12, byName, p00)
	}
}

func TestIDsTakenInOrderAndFailureLeavesNone(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	l := alock.NewExclusive(s[0].Conn, alock.Key(1), alock.Key(2), alock.Key(3))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Acquire(ctx) }()
	waitHolds(t, s[0], hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive)+"(waiting)")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
	}
	expectHolds(t, s[0])
	expectUsable(t, s[0])
	if l.Locked() {
		t.Fatal("Locked after a cancelled Acquire")
	}
}

func TestReentrantCountsOnClient(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	l := alock.NewShare(s.Conn, alock.Key(5), alock.Key(5), alock.Pair(5, 5))
	want := []string{hold(alock.Key(5), alock.Share), hold(alock.Pair(5, 5), alock.Share)}
	for range 3 {
		mustAcquire(t, l)
		expectHolds(t, s, want...)
	}
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("TryAcquire of a held Lock: %v, %v", ok, err)
	}
	for range 3 {
		mustRelease(t, l)
		expectHolds(t, s, want...)
		if !l.Locked() {
			t.Fatal("not Locked with count above zero")
		}
	}
	mustRelease(t, l)
	expectHolds(t, s)
	if l.Locked() {
		t.Fatal("Locked after the last Release")
	}
	// A server-level count above 1 would leave the lock held here.
	var free bool
	if err := s.QueryRow(context.Background(), "SELECT pg_advisory_unlock_shared(5)").Scan(&free); err != nil || free {
		t.Fatalf("server still counted a hold: %v %v", free, err)
	}
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrNotHeld) {
		t.Fatalf("Release at zero: %v, want ErrNotHeld", err)
	}
}

func TestLocksOnOneSessionShareHolds(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	a := alock.NewExclusive(s.Conn, alock.Key(1), alock.Key(2))
	b := alock.NewExclusive(s.Conn, alock.Key(2), alock.Key(3))
	c := alock.NewShare(s.Conn, alock.Key(2))
	mustAcquire(t, a)
	if ok, err := b.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("second Lock on the session: %v %v", ok, err)
	}
	mustAcquire(t, c)
	expectHolds(t, s, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive),
		hold(alock.Key(3), alock.Exclusive), hold(alock.Key(2), alock.Share))
	mustRelease(t, a)
	expectHolds(t, s, hold(alock.Key(2), alock.Exclusive), hold(alock.Key(3), alock.Exclusive), hold(alock.Key(2), alock.Share))
	mustRelease(t, c)
	expectHolds(t, s, hold(alock.Key(2), alock.Exclusive), hold(alock.Key(3), alock.Exclusive))
	mustRelease(t, b)
	expectHolds(t, s)
}

func TestTryAcquireAllOrNothing(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock_shared(2)")
	ex := alock.NewExclusive(s[0].Conn, alock.Key(1), alock.Key(2), alock.Key(3))
	if ok, err := ex.TryAcquire(context.Background()); ok || err != nil {
		t.Fatalf("TryAcquire with id 2 held elsewhere: %v %v, want false nil", ok, err)
	}
	expectHolds(t, s[0])
	if ex.Locked() {
		t.Fatal("Locked after a failed TryAcquire")
	}
	sh := alock.NewShare(s[0].Conn, alock.Key(1), alock.Key(2), alock.Key(3))
	if ok, err := sh.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("share TryAcquire beside a share hold: %v %v", ok, err)
	}
	expectHolds(t, s[0], hold(alock.Key(1), alock.Share), hold(alock.Key(2), alock.Share), hold(alock.Key(3), alock.Share))
}

func TestZeroIDsCount(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	l := alock.NewExclusive(s.Conn)
	mustAcquire(t, l)
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	if !l.Locked() {
		t.Fatal("not Locked")
	}
	mustRelease(t, l)
	mustRelease(t, l)
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrNotHeld) {
		t.Fatalf("third Release: %v", err)
	}
	expectHolds(t, s)
}

func TestTooManyIDs(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	ids := make([]alock.ID, alock.MaxIDs+1)
	for i := range ids {
		ids[i] = alock.Key(int64(i))
	}
	if err := alock.NewExclusive(s.Conn, ids...).Acquire(context.Background()); !errors.Is(err, alock.ErrTooManyIDs) {
		t.Fatalf("Acquire of %d ids: %v", len(ids), err)
	}
	mustAcquire(t, alock.NewExclusive(s.Conn, ids[:alock.MaxIDs]...))
	if got := len(serverHolds(t, s)); got != alock.MaxIDs {
		pgtest.Fatalf(t, "held %d, want %d", got, alock.MaxIDs)
	}
}

func TestDoReleasesOnErrorAndPanic(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	l := alock.NewExclusive(s.Conn, alock.Key(9))
	boom := errors.New("boom")
	err := l.Do(context.Background(), func(ctx context.Context) error {
		expectHolds(t, s, hold(alock.Key(9), alock.Exclusive))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Do: %v", err)
	}
	expectHolds(t, s)
	func() {
		defer func() {
			if r := recover(); r != "panic in fn" {
				t.Fatalf("recovered %v", r)
			}
		}()
		_ = l.Do(context.Background(), func(ctx context.Context) error { panic("panic in fn") })
	}()
	expectHolds(t, s)
	if l.Locked() {
		t.Fatal("Locked after Do")
	}
}
