package pgtest

import (
	"testing"
	"time"
)

// Interleave runs each cycle once to warm it up (prepared statements), then
// runs them in turn, b.N times each, and returns the time each one took in
// all. The machine's speed drifts over a run; interleaving gives every cycle
// the same drift, so the ratios of the results are fair.
func Interleave(b *testing.B, cycles ...func()) []time.Duration {
	b.Helper()
	for _, cycle := range cycles {
		cycle()
	}
	spent := make([]time.Duration, len(cycles))
	b.ResetTimer()
	for b.Loop() {
		for i, cycle := range cycles {
			start := time.Now()
			cycle()
			spent[i] += time.Since(start)
		}
	}
	return spent
}
