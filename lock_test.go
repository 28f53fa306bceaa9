package alock_test

import (
	"context"
	"testing"

	"github.com/pgalock/alock"
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
