package alock_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// BenchmarkCycle measures an uncontended Acquire/Release cycle against the
// same pg_advisory_lock/pg_advisory_unlock pair written by hand with
// conn.Exec, in one run, and logs the ratios of ops/s.
func BenchmarkCycle(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	var (
		mu    sync.Mutex
		nsOp  = map[string]float64{}
		ctx   = context.Background()
		eight = []alock.ID{alock.Key(1), alock.Key(2), alock.Key(3), alock.Key(4),
			alock.Pair(1, 5), alock.Pair(1, 6), alock.Pair(1, 7), alock.Name("eight")}
	)
	cases := []struct {
		name  string
		cycle func(b *testing.B, conn *pgx.Conn) func()
	}{
		{"pgx-raw", func(b *testing.B, conn *pgx.Conn) func() {
			return func() {
				if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", int64(1)); err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Exec(ctx, "select pg_advisory_unlock($1)", int64(1)); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"alock-1id", func(b *testing.B, conn *pgx.Conn) func() { return lockCycle(b, alock.NewExclusive(conn, alock.Key(1))) }},
		{"alock-8ids", func(b *testing.B, conn *pgx.Conn) func() { return lockCycle(b, alock.NewExclusive(conn, eight...)) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			conn := pgtest.Connect(b, dsn)
			cycle := c.cycle(b, conn)
			cycle() // prepare the statements
			b.ResetTimer()
			for b.Loop() {
				cycle()
			}
			mu.Lock()
			nsOp[c.name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			mu.Unlock()
		})
	}
	if nsOp["alock-1id"] > 0 && nsOp["alock-8ids"] > 0 {
		b.Logf("ops/s ratio alock-1id/pgx-raw = %.2f (target >= 0.90); alock-8ids/alock-1id = %.2f (target >= 0.80)",
			nsOp["pgx-raw"]/nsOp["alock-1id"], nsOp["alock-1id"]/nsOp["alock-8ids"])
	}
	// The machine's speed drifts between sub-benchmarks; interleaving the
	// three cycles in one loop gives ratios that drift cannot skew.
	b.Run("interleaved", func(b *testing.B) {
		conn := pgtest.Connect(b, dsn)
		cycles := make([]func(), len(cases))
		for i, c := range cases {
			cycles[i] = c.cycle(b, conn)
		}
		spent := pgtest.Interleave(b, cycles...)
		b.ReportMetric(float64(spent[0])/float64(spent[1]), "1id/raw-ops")
		b.ReportMetric(float64(spent[1])/float64(spent[2]), "8ids/1id-ops")
	})
}

func lockCycle(b *testing.B, l *alock.Lock) func() {
	return func() {
		if err := l.Acquire(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := l.Release(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionCycle measures a Session Lock's Acquire/Release cycle
// against the same cycle of a Lock on a plain *pgx.Conn, interleaved in one
// loop, and reports the ratio of ops/s (target >= 0.9).
func BenchmarkSessionCycle(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	s, err := alock.Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	spent := pgtest.Interleave(b,
		lockCycle(b, alock.NewExclusive(pgtest.Connect(b, dsn), alock.Key(1))),
		lockCycle(b, s.NewExclusive(alock.Key(2))))
	b.ReportMetric(float64(spent[0])/float64(b.N), "conn-ns/cycle")
	b.ReportMetric(float64(spent[1])/float64(b.N), "session-ns/cycle")
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "session/conn-ops")
}
