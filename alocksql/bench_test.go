package alocksql_test

import (
	"context"
	"testing"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/pgtest"
)

// BenchmarkCycle measures an uncontended Acquire/Release cycle of a Lock on
// a *sql.Conn against the same statements written by hand through the same
// *sql.Conn, per driver, interleaved in one loop so that the machine's drift
// cannot skew the ratio it reports (sql-raw/alocksql-ops: ops/s of alocksql
// over ops/s of the hand-written cycle).
func BenchmarkCycle(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	for _, name := range drivers {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			raw := openSession(b, name, dsn)
			lib := openSession(b, name, dsn)
			l := alocksql.NewExclusive(lib.c, alock.Key(1))
			spent := pgtest.Interleave(b,
				func() {
					if _, err := raw.c.ExecContext(ctx, "select pg_advisory_lock($1)", int64(2)); err != nil {
						b.Fatal(err)
					}
					if _, err := raw.c.ExecContext(ctx, "select pg_advisory_unlock($1)", int64(2)); err != nil {
						b.Fatal(err)
					}
				},
				func() {
					if err := l.Acquire(ctx); err != nil {
						b.Fatal(err)
					}
					if err := l.Release(ctx); err != nil {
						b.Fatal(err)
					}
				})
			b.ReportMetric(float64(spent[0])/float64(b.N), "sql-raw-ns/cycle")
			b.ReportMetric(float64(spent[1])/float64(b.N), "alocksql-ns/cycle")
			b.ReportMetric(float64(spent[0])/float64(spent[1]), "alocksql/sql-raw-ops")
		})
	}
}
