package alock_test

import (
	"context"
	"testing"

	"github.com/pgalock/alock"
)

func TestIDZeroIsKeyZero(t *testing.T) {
	var zero alock.ID
	if zero != alock.Key(0) || !zero.Equal(alock.Key(0)) {
		t.Errorf("zero ID %v differs from Key(0)", zero)
	}
	c, o, s := zero.LockTag()
	if c != 0 || o != 0 || s != 1 {
		t.Errorf("zero ID's LockTag: %d:%d:%d, want 0:0:1", c, o, s)
	}
	if got := zero.String(); got != "Key(0)" {
		t.Errorf("zero ID's String: %s", got)
	}
}

func TestIDEqualComparesServerLocks(t *testing.T) {
	for _, tc := range []struct {
		a, b  alock.ID
		equal bool
	}{
		{alock.Name("jobs"), alock.Key(alock.NameKey("jobs")), true},
		{alock.Name("jobs"), alock.Name("jobs"), true},
		{alock.ID{}, alock.Key(0), true},
		{alock.Key(1<<32 | 2), alock.Pair(1, 2), false},
		{alock.ID{}, alock.Pair(0, 0), false},
		{alock.Name("jobs"), alock.Name("Jobs"), false},
	} {
		if got := tc.a.Equal(tc.b); got != tc.equal || tc.b.Equal(tc.a) != got {
			t.Errorf("%v.Equal(%v) = %v, want %v", tc.a, tc.b, got, tc.equal)
		}
		if back, ok := alock.FromLockTag(tc.a.LockTag()); !ok || !back.Equal(tc.a) {
			t.Errorf("FromLockTag(%v.LockTag()) = %v, %v", tc.a, back, ok)
		}
	}
	if alock.Name("jobs") == alock.Key(alock.NameKey("jobs")) {
		t.Error("Name(\"jobs\") == its Key: the name is lost for String")
	}
}

// TestIDsNamingOneLockAreOneHold checks the server: ids that name one lock
// (the zero ID and Key(0), a Name and its Key) are one server-level hold,
// so a single unlock ends it.
func TestIDsNamingOneLockAreOneHold(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	l := alock.NewExclusive(s.Conn, alock.ID{}, alock.Key(0), alock.Name("jobs"), alock.Key(alock.NameKey("jobs")))
	mustAcquire(t, l)
	other := alock.NewExclusive(s.Conn, alock.Key(0))
	mustAcquire(t, other)
	expectHolds(t, s, hold(alock.Key(0), alock.Exclusive), hold(alock.Key(alock.NameKey("jobs")), alock.Exclusive))
	mustRelease(t, other)
	exec(t, s, "SELECT pg_advisory_unlock(0), pg_advisory_unlock(hashtextextended('jobs', 0))")
	expectHolds(t, s)
	if err := l.Release(context.Background()); err == nil {
		t.Error("Release after the locks were unlocked behind its back: nil error")
	}
}

// TestEmptyNameIsAName: Name("") keeps its name as any Name does: not ==
// to Key(NameKey("")), though Equal, and String says Name("").
func TestEmptyNameIsAName(t *testing.T) {
	n, k := alock.Name(""), alock.Key(alock.NameKey(""))
	if n == k || !n.Equal(k) {
		t.Errorf("Name(\"\") == Key(NameKey(\"\")): %v, Equal: %v; want false and true", n == k, n.Equal(k))
	}
	if got := n.String(); got != `Name("")` {
		t.Errorf("Name(\"\").String() = %s, want Name(\"\")", got)
	}
}
