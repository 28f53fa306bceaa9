package alock_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestSessionBatchesInEveryExecMode: a Session whose pgx configuration
// uses any query exec mode (pgx's default describes statements; the simple
// protocol and Exec go by the arguments' Go types, as behind some poolers)
// sends batches of keys and pairs, in both modes, that take and free
// exactly what pg_locks shows. The batches pass their keys as arrays, which
// the library encodes by reference only where pgx knows the parameter
// types.
func TestSessionBatchesInEveryExecMode(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	for _, mode := range []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			s, err := alock.OpenConfig(ctx, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close(ctx) }()
			var locks []*alock.Lock
			var want []string
			for i := range 12 {
				id := alock.Key(int64(1000 + i))
				if i%3 == 2 {
					id = alock.Pair(int32(-i), int32(1000+i))
				}
				l, m := s.NewExclusive(id), alock.Exclusive
				if i%2 == 1 {
					l, m = s.NewShare(id), alock.Share
				}
				locks = append(locks, l)
				want = append(want, a6Norm(id, m))
			}
			slices.Sort(want)
			for round := range 3 {
				wait := a6Busy(t, s, 100*time.Millisecond) // the Locks' statements queue behind it: one batch
				var wg sync.WaitGroup
				for _, l := range locks {
					wg.Go(func() {
						if err := l.Acquire(ctx); err != nil {
							t.Errorf("round %d: Acquire %v: %v", round, l, err)
						}
					})
				}
				wg.Wait()
				wait()
				if got := locktest.Holds(t, dsn, s.PID()); !slices.Equal(got, want) {
					t.Fatalf("round %d: pg_locks shows %v, want %v", round, got, want)
				}
				wait = a6Busy(t, s, 100*time.Millisecond)
				for _, l := range locks {
					wg.Go(func() {
						if err := l.Release(ctx); err != nil {
							t.Errorf("round %d: Release %v: %v", round, l, err)
						}
					})
				}
				wg.Wait()
				wait()
				if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
					t.Fatalf("round %d: pg_locks shows %v after every Release", round, got)
				}
			}
		})
	}
}
