package alock_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// benchLocker opens a Locker for a benchmark.
func benchLocker(b *testing.B, dsn string, max int) *alock.Locker {
	b.Helper()
	lk, err := alock.NewLocker(context.Background(), dsn, &alock.LockerOptions{MaxSessions: max})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = lk.Close(context.Background()) })
	return lk
}

// BenchmarkLockerCycle measures one goroutine's uncontended Acquire and
// Release through a Locker against the core Lock on a plain *pgx.Conn,
// interleaved in one loop (target >= 0.8).
func BenchmarkLockerCycle(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	lk := benchLocker(b, dsn, 2)
	spent := pgtest.Interleave(b,
		lockCycle(b, alock.NewExclusive(pgtest.Connect(b, dsn), alock.Key(1))),
		lockCycle(b, lk.NewExclusive(alock.Key(2))))
	b.ReportMetric(float64(spent[1])/float64(b.N), "locker-ns/cycle")
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "locker/conn-ops")
}

// BenchmarkLockerThroughput runs 64 goroutines that each lock and unlock
// their own key through one Locker with MaxSessions 4, against 4 goroutines
// that each run pg_advisory_lock/pg_advisory_unlock by hand on their own
// connection, in alternating windows of 300 ms, and reports the cycles/s of
// both and their ratio (the target is 4x). A third window runs the same 64
// goroutines through a handBatcher, the least a batching client does, to
// show what the Locker's bookkeeping costs (locker/hand). Where the CPU
// can be read, it also reports the CPU (this process and the server) that
// one cycle of each costs, the share of the machine's cores each kept
// busy, and the ratio of the Locker's and the baseline's CPU per cycle: the
// throughput ratio the Locker would have if both kept the machine equally
// busy.
func BenchmarkLockerThroughput(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	lk := benchLocker(b, dsn, 4)
	conns := make([]*pgx.Conn, 4)
	for i := range conns {
		conns[i] = pgtest.Connect(b, dsn)
	}
	locks := make([]*alock.Lock, 64)
	for i := range locks {
		locks[i] = lk.NewExclusive(alock.Key(int64(1000 + i)))
	}
	hand := startHandBatcher(pgtest.Connect(b, dsn))
	handOps := newHandOps(64)
	var raw, locker, handed tally
	b.ResetTimer()
	for b.Loop() {
		raw.window(b, 4, rawCycle(conns))
		locker.window(b, 64, func(w int) error {
			if err := locks[w].Acquire(ctx); err != nil {
				return err
			}
			return locks[w].Release(ctx)
		})
		handed.window(b, 64, hand.cycles(handOps, 2000))
	}
	b.StopTimer()
	if err := hand.stop(); err != nil {
		b.Error(err)
	}
	b.ReportMetric(raw.rate(), "raw4-cycles/s")
	b.ReportMetric(locker.rate(), "locker64-cycles/s")
	b.ReportMetric(handed.rate(), "hand64-cycles/s")
	b.ReportMetric(locker.rate()/raw.rate(), "locker/raw")
	b.ReportMetric(handed.rate()/raw.rate(), "hand/raw")
	b.ReportMetric(locker.rate()/handed.rate(), "locker/hand")
	if !raw.cpuBad && !locker.cpuBad && !handed.cpuBad {
		perCycle := func(t tally) float64 { return float64(t.cpu.Microseconds()) / float64(t.cycles) }
		busy := func(t tally) float64 { return 100 * t.cpu.Seconds() / t.elapsed.Seconds() / float64(runtime.NumCPU()) }
		b.ReportMetric(perCycle(raw), "raw4-cpu-µs/cycle")
		b.ReportMetric(perCycle(locker), "locker64-cpu-µs/cycle")
		b.ReportMetric(perCycle(handed), "hand64-cpu-µs/cycle")
		b.ReportMetric(busy(raw), "raw4-busy-%")
		b.ReportMetric(busy(locker), "locker64-busy-%")
		b.ReportMetric(perCycle(raw)/perCycle(locker), "raw/locker-cpu")
	}
}

// BenchmarkBatchingCeiling measures what batching can reach on this
// machine, whatever the client: BenchmarkLockerThroughput's load (64
// goroutines, each locking and unlocking its own key) through hand-written
// batchers that keep no state, against the same raw baseline (4
// goroutines, each on its own connection). hand1 is the handBatcher on one
// connection; hand2 two of them, on two connections, each serving half the
// goroutines; pipelined one connection with up to two batches at the
// server at once. The Locker batches on one session and does not
// pipeline: these show why.
func BenchmarkBatchingCeiling(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	conns := make([]*pgx.Conn, 4)
	for i := range conns {
		conns[i] = pgtest.Connect(b, dsn)
	}
	one := startHandBatcher(pgtest.Connect(b, dsn))
	two := []*handBatcher{startHandBatcher(pgtest.Connect(b, dsn)), startHandBatcher(pgtest.Connect(b, dsn))}
	piped := startPipelinedBatcher(pgtest.Connect(b, dsn))
	ops := newHandOps(64)
	var raw, hand1, hand2, pipelined tally
	for b.Loop() {
		raw.window(b, 4, rawCycle(conns))
		hand1.window(b, 64, one.cycles(ops, 2000))
		hand2.window(b, 64, func(w int) error { return two[w%2].cycle(ops[w], int64(3000+w)) })
		pipelined.window(b, 64, piped.cycles(ops, 4000))
	}
	b.StopTimer()
	for _, h := range append(two, one, piped) {
		if err := h.stop(); err != nil {
			b.Error(err)
		}
	}
	b.ReportMetric(raw.rate(), "raw4-cycles/s")
	b.ReportMetric(hand1.rate()/raw.rate(), "hand1/raw")
	b.ReportMetric(hand2.rate()/raw.rate(), "hand2/raw")
	b.ReportMetric(pipelined.rate()/raw.rate(), "pipelined/raw")
	b.ReportMetric(one.perStatement(), "hand1-ops/statement")
	b.ReportMetric((two[0].perStatement()+two[1].perStatement())/2, "hand2-ops/statement")
	b.ReportMetric(piped.perStatement(), "pipelined-ops/statement")
}

// tally is what the windows of one load add up to.
type tally struct {
	cycles       int64
	elapsed, cpu time.Duration
	cpuBad       bool // a reading failed
}

// window runs cycle on workers goroutines (w is the goroutine's number)
// for 300 ms, and adds the cycles, the time and the CPU (this process and
// the server) to t.
func (t *tally) window(b *testing.B, workers int, cycle func(w int) error) {
	var n atomic.Int64
	client0, server0, ok0 := pgtest.CPU()
	start := time.Now()
	stop := start.Add(300 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := cycle(w); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	client1, server1, ok1 := pgtest.CPU()
	t.cycles += n.Load()
	t.elapsed += time.Since(start)
	t.cpu += client1 - client0 + server1 - server0
	t.cpuBad = t.cpuBad || !ok0 || !ok1
}

// rate is the cycles a second.
func (t tally) rate() float64 { return float64(t.cycles) / t.elapsed.Seconds() }

// rawCycle is the raw baseline's cycle: pg_advisory_lock and
// pg_advisory_unlock by hand, goroutine w on conns[w] with key w.
func rawCycle(conns []*pgx.Conn) func(w int) error {
	ctx := context.Background()
	return func(w int) error {
		if _, err := conns[w].Exec(ctx, "select pg_advisory_lock($1)", int64(w)); err != nil {
			return err
		}
		_, err := conns[w].Exec(ctx, "select pg_advisory_unlock($1)", int64(w))
		return err
	}
}

// BenchmarkLockerHandoff measures the time from one process's Release to a
// waiting process's Acquire returning, each with its own Locker, against
// the server's own hand-off (a waiter blocked in pg_advisory_lock on a plain
// connection), interleaved, and reports both medians and their ratio
// (target <= 2).
func BenchmarkLockerHandoff(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	holder, waiter := benchLocker(b, dsn, 1), benchLocker(b, dsn, 1)
	c1, c2 := pgtest.Connect(b, dsn), pgtest.Connect(b, dsn)
	var server, locker []time.Duration
	handoff := func(hold, release func() error, wait func() error) time.Duration {
		if err := hold(); err != nil {
			b.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			if err := wait(); err != nil {
				b.Error(err)
			}
			got <- time.Now()
		}()
		time.Sleep(2 * time.Millisecond) // let the waiter wait
		start := time.Now()
		if err := release(); err != nil {
			b.Fatal(err)
		}
		return (<-got).Sub(start)
	}
	exec := func(c *pgx.Conn, sql string) func() error {
		return func() error { _, err := c.Exec(ctx, sql); return err }
	}
	h, w := holder.NewExclusive(alock.Key(1)), waiter.NewExclusive(alock.Key(1))
	b.ResetTimer()
	for b.Loop() {
		server = append(server, handoff(exec(c1, "select pg_advisory_lock(7)"), exec(c1, "select pg_advisory_unlock(7)"),
			exec(c2, "select pg_advisory_lock(7)")))
		if _, err := c2.Exec(ctx, "select pg_advisory_unlock(7)"); err != nil {
			b.Fatal(err)
		}
		locker = append(locker, handoff(func() error { return h.Acquire(ctx) }, func() error { return h.Release(ctx) },
			func() error { return w.Acquire(ctx) }))
		if err := w.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	ps, pl := median(server), median(locker)
	b.ReportMetric(float64(ps.Microseconds()), "server-p50-µs")
	b.ReportMetric(float64(pl.Microseconds()), "locker-p50-µs")
	b.ReportMetric(float64(pl)/float64(ps), "locker/server")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(s []time.Duration, p float64) time.Duration {
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkLockerScale runs 10,000 goroutines that each take one of 1,000
// ids (exclusive or share at random) through one Locker with MaxSessions 4,
// checks mutual exclusion, and reports throughput and the p50/p99 wait.
// Beside it, it tries one connection per waiter and reports how many the
// server accepted.
func BenchmarkLockerScale(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	const goroutines, ids = 10000, 1000
	for b.Loop() {
		lk := benchLocker(b, dsn, 4)
		var inside [ids]atomic.Int32
		waits := make([]time.Duration, goroutines)
		var wg sync.WaitGroup
		start := time.Now()
		for g := range goroutines {
			wg.Go(func() {
				k := rand.IntN(ids)
				l := lk.NewExclusive(alock.Key(int64(k)))
				share := rand.IntN(2) == 0
				if share {
					l = lk.NewShare(alock.Key(int64(k)))
				}
				t0 := time.Now()
				if err := l.Acquire(ctx); err != nil {
					b.Error(err)
					return
				}
				waits[g] = time.Since(t0)
				if share {
					if inside[k].Add(1) <= 0 {
						b.Errorf("share with an exclusive on Key(%d)", k)
					}
					inside[k].Add(-1)
				} else if !inside[k].CompareAndSwap(0, -1) {
					b.Errorf("two holders on Key(%d)", k)
				} else {
					inside[k].Store(0)
				}
				if err := l.Release(ctx); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		slices.Sort(waits)
		st := lk.Stat()
		if st.Sessions > 4 {
			b.Errorf("%d sessions, MaxSessions 4", st.Sessions)
		}
		b.ReportMetric(goroutines/took.Seconds(), "locker-acq/s")
		b.ReportMetric(float64(percentile(waits, 0.5).Microseconds()), "wait-p50-µs")
		b.ReportMetric(float64(percentile(waits, 0.99).Microseconds()), "wait-p99-µs")
	}
	// One connection per waiter: how far does it get?
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(ctx)
		}
	}()
	var refused error
	for range goroutines {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			refused = err
			break
		}
		conns = append(conns, c)
	}
	b.ReportMetric(float64(len(conns)), "conn-per-waiter-got")
	b.Logf("one connection per waiter: %d of %d connections opened, then: %v", len(conns), goroutines, refused)
}
