package alock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// queryCounter is a pgx tracer that counts the statements a connection
// sends: one statement, one round trip.
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// count returns how many statements fn sent.
func (q *queryCounter) count(fn func()) int64 {
	before := q.n.Load()
	fn()
	return q.n.Load() - before
}

func TestRoundTrips(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	other := pgtest.Connect(t, dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	counter := &queryCounter{}
	cfg.Tracer = counter
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	s := session{conn, dsn}

	eight := alock.NewExclusive(conn, alock.Key(1), alock.Key(2), alock.Key(3), alock.Key(4),
		alock.Pair(1, 1), alock.Pair(1, 2), alock.Pair(1, 3), alock.Name("x"))
	expectRoundTrips(t, counter, "Acquire of 8 ids", 1, func() { mustAcquire(t, eight) })
	expectRoundTrips(t, counter, "re-entrant Acquire", 0, func() { mustAcquire(t, eight) })
	expectRoundTrips(t, counter, "inner Release", 0, func() { mustRelease(t, eight) })
	expectRoundTrips(t, counter, "last Release", 1, func() { mustRelease(t, eight) })

	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(2)"); err != nil {
		t.Fatal(err)
	}
	three := alock.NewExclusive(conn, alock.Key(1), alock.Key(2), alock.Key(3))
	expectRoundTrips(t, counter, "failed TryAcquire", 2, func() {
		if ok, err := three.TryAcquire(ctx); ok || err != nil {
			t.Fatalf("TryAcquire: %v %v", ok, err)
		}
	})
	expectHolds(t, s)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock(2)"); err != nil {
		t.Fatal(err)
	}

	// Fenced: the token is drawn in the lock statement, and a failed try draws none.
	if _, err := other.Exec(ctx, "CREATE SEQUENCE public.alock_fence"); err != nil {
		t.Fatal(err)
	}
	fenced := alock.NewFencedExclusive(conn, `"public"."alock_fence"`, alock.Key(5), alock.Key(6))
	expectRoundTrips(t, counter, "fenced Acquire", 1, func() { mustAcquire(t, fenced) })
	if fenced.Token() != 1 {
		t.Errorf("fenced token %d, want 1", fenced.Token())
	}
	expectRoundTrips(t, counter, "fenced Release", 1, func() { mustRelease(t, fenced) })
	expectRoundTrips(t, counter, "fenced TryAcquire", 1, func() {
		if ok, err := fenced.TryAcquire(ctx); !ok || err != nil {
			t.Fatalf("TryAcquire: %v %v", ok, err)
		}
	})
	mustRelease(t, fenced)
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(6)"); err != nil {
		t.Fatal(err)
	}
	expectRoundTrips(t, counter, "failed fenced TryAcquire", 2, func() {
		if ok, err := fenced.TryAcquire(ctx); ok || err != nil {
			t.Fatalf("TryAcquire: %v %v", ok, err)
		}
	})
	var drawn int64
	if err := other.QueryRow(ctx, "SELECT last_value FROM public.alock_fence").Scan(&drawn); err != nil || drawn != 2 {
		t.Errorf("the sequence is at %d (%v) after two grants and a failed try, want 2", drawn, err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	expectRoundTrips(t, counter, "LockTx of 8 ids", 1, func() {
		if err := alock.LockTx(ctx, tx, alock.Exclusive, eight.IDs()...); err != nil {
			t.Fatal(err)
		}
	})
}

func expectRoundTrips(t *testing.T, counter *queryCounter, what string, want int64, fn func()) {
	t.Helper()
	if got := counter.count(fn); got != want {
		t.Errorf("%s: %d round trips, want %d", what, got, want)
	}
}
