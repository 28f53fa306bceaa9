package alock_test

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// allocatedPerCycle returns the bytes the process allocated per call of
// cycle, over n calls. (Not parallel: other tests' allocations would count.)
func allocatedPerCycle(n int, cycle func()) uint64 {
	cycle() // warm up: statement caches, first-use allocations
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		cycle()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(n)
}

// TestLockCycleAllocationIndependentOfNameLength checks that an
// Acquire/Release cycle of a Lock over a 1 MiB Name allocates about what
// one over a Key does: messages naming the Lock are built only for errors.
func TestLockCycleAllocationIndependentOfNameLength(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	conn := pgtest.Connect(t, dsn)
	session := openSession(t, dsn, nil)
	locker := newLocker(t, dsn, "alloc", nil)
	long := alock.Name(strings.Repeat("n", 1<<20))
	for _, tc := range []struct {
		name       string
		key, named *alock.Lock
	}{
		{"Conn", alock.NewExclusive(conn, alock.Key(1)), alock.NewExclusive(conn, long)},
		{"Session", session.NewExclusive(alock.Key(1)), session.NewExclusive(long)},
		{"Locker", locker.NewExclusive(alock.Key(1)), locker.NewExclusive(long)},
	} {
		perCycle := func(l *alock.Lock) uint64 {
			return allocatedPerCycle(20, func() {
				if err := l.Acquire(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := l.Release(context.Background()); err != nil {
					t.Fatal(err)
				}
			})
		}
		key, named := perCycle(tc.key), perCycle(tc.named)
		t.Logf("%s: bytes allocated per Acquire/Release cycle: Key %d, 1 MiB Name %d", tc.name, key, named)
		if named > key+16<<10 {
			t.Errorf("%s: a cycle over a 1 MiB Name allocates %d bytes, a Key %d", tc.name, named, key)
		}
	}
}
