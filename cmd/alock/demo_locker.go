package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgalock/alock"
)

// stepLocker shows the Locker: 200 goroutines of one process take turns on
// one lock through at most 2 database sessions, and pg_stat_activity shows
// no more.
func (d *demo) stepLocker(ctx context.Context) error {
	d.heading("Step 5: a Locker: 200 goroutines, one lock, at most 2 sessions")
	d.say("locker := alock.NewLocker(ctx, dsn, &alock.LockerOptions{MaxSessions: 2})")
	d.say(`200 goroutines each run locker.NewExclusive(alock.Name("account/42")).Do(ctx, fn).`)
	locker, err := alock.NewLockerConfig(ctx, d.cfg, &alock.LockerOptions{MaxSessions: 2})
	if err != nil {
		return relabel("alock: demo: locker: ", err)
	}
	defer locker.Close(context.WithoutCancel(ctx))
	var inside, overlaps, most atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			errs <- locker.NewExclusive(alock.Name("account/42")).Do(ctx, func(context.Context) error {
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				if n := int32(locker.Stat().Sessions); n > most.Load() {
					most.Store(n)
				}
				time.Sleep(100 * time.Microsecond)
				inside.Add(-1)
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	st := locker.Stat()
	d.say("Done: %d acquisitions, %d overlapping critical sections; sessions open: at most %d (MaxSessions 2).",
		st.Acquisitions, overlaps.Load(), most.Load())
	d.say("Goroutines waited in the process, first come first served; only one at a time went to the server.")
	return nil
}
