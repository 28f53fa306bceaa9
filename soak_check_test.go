package alock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type soakLog struct {
	mu       sync.Mutex
	sessions map[string]soakSession
	current  map[string]string // worker -> its latest session
	sections []soakSection
	stats    soakStats
	errors   []string
	kills    map[string]time.Time // session -> when the nemesis terminated its backend
	resets   map[string][]time.Time
}

func (g *soakLog) record(ev soakEvent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case ev.Session != nil:
		g.sessions[ev.Session.ID] = *ev.Session
		g.current[ev.Session.Worker] = ev.Session.ID
	case ev.Section != nil:
		g.sections = append(g.sections, *ev.Section)
	case ev.Stats != nil:
		g.stats.add(*ev.Stats)
	case ev.Error != "":
		g.errors = append(g.errors, ev.Error)
	}
}

// faultAt returns the earliest injected fault that could have ended
// session id: its backend's termination, or a reset of its proxy after it
// began to open.
func (g *soakLog) faultAt(id string) (time.Time, bool) {
	s := g.sessions[id]
	at, ok := g.kills[id]
	for _, r := range g.resets[s.Proxy] {
		if s.Proxy != "" && !r.Before(s.Opened) && (!ok || r.Before(at)) {
			at, ok = r, true
		}
	}
	return at, ok
}

// TestSoakMutualExclusion is scenario 17: see soakKeys.
func checkSoak(t *testing.T, g *soakLog, admin *pgx.Conn) {
	t.Helper()
	// effEnd is when a section's hold ended at the latest: Release, or for
	// a lost hold its Lost or the fault that took it, if earlier.
	effEnd := func(s soakSection) time.Time {
		end := s.End
		if !s.lost() {
			return end
		}
		if s.LostAt.Before(end) {
			end = s.LostAt
		}
		if f, ok := g.faultAt(s.Session); ok && f.Before(end) {
			end = f
		}
		if end.Before(s.Acq) {
			end = s.Acq
		}
		return end
	}

	var clean, lost, explained, wrote, skipped, rejectedClaims, rejectedWrites int
	var latency time.Duration // longest time from a fault to the Lost it caused
	byKey := map[int][]soakSection{}
	tokens := map[int64]bool{}
	maxClaimed := map[int]int64{}
	writes := map[int]int64{}
	for _, s := range g.sections {
		byKey[s.Key] = append(byKey[s.Key], s)
		if tokens[s.Token] || s.Token <= 0 {
			t.Errorf("token %d given twice (or not positive): %+v", s.Token, s)
		}
		tokens[s.Token] = true
		if s.Clean {
			clean++
			if !s.Claimed || !s.Wrote {
				// The server held the lock from grant to unlock, yet another
				// holder with a larger token used the resource meanwhile.
				t.Errorf("a section whose Release succeeded had its fenced read or write rejected: %+v", s)
			}
		}
		if s.lost() {
			lost++
			if !s.Closed {
				t.Errorf("a lost hold's Lost channel was never closed: %+v", s)
			}
			if f, ok := g.faultAt(s.Session); ok {
				explained++
				latency = max(latency, s.LostAt.Sub(f))
			}
		}
		if s.Claimed {
			maxClaimed[s.Key] = max(maxClaimed[s.Key], s.Token)
		} else {
			rejectedClaims++
		}
		switch {
		case s.Wrote:
			wrote++
			writes[s.Key]++
		case s.Skipped:
			skipped++
		case s.Claimed:
			rejectedWrites++
		}
	}

	// (a) No overlap, except after the earlier holder's loss.
	var overlaps, afterLost, afterFault int
	for _, secs := range byKey {
		for _, a := range secs {
			end := effEnd(a)
			for _, b := range secs {
				if b.Acq.Before(a.Acq) || !b.Acq.Before(a.End) || a == b {
					continue // b does not begin inside a
				}
				switch {
				case a.lost() && !a.LostAt.After(b.Acq):
					afterLost++
				case !b.Acq.Before(end):
					afterFault++ // the server had freed it; a's Lost was still on its way
				default:
					overlaps++
					if overlaps <= 5 {
						t.Errorf("overlap on Key(%d): %+v (held until %v) and %+v",
							a.Key, a, end.Format(time.StampMicro), b)
					}
				}
			}
		}
	}
	if overlaps > 0 {
		t.Errorf("%d overlapping critical sections", overlaps)
	}

	// (b) Each counter is the number of accepted writes, and carries the
	// largest token that claimed it.
	rows, err := admin.Query(context.Background(), "SELECT id, value, token FROM counters ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type counter struct{ id, value, token int64 }
	counters, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c counter, err error) {
		err = r.Scan(&c.id, &c.value, &c.token)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range counters {
		total += c.value
		if c.value != writes[int(c.id)] {
			t.Errorf("counter %d = %d, but %d writes were accepted: lost or phantom updates", c.id, c.value, writes[int(c.id)])
		}
		if c.token != maxClaimed[int(c.id)] {
			t.Errorf("counter %d carries token %d, want the largest that claimed it, %d", c.id, c.token, maxClaimed[int(c.id)])
		}
	}

	st := g.stats
	t.Logf("%d attempts: %d acquired, %d timed out, %d cancelled, %d found the session lost, %d other errors (session killed while waiting); %d sessions reopened, %d Opens failed (proxy reset)",
		st.Attempts, st.Acquired, st.Timeouts, st.Cancels, st.AcquireLost, st.OtherErrs, st.Reopens, st.OpenErrs)
	t.Logf("%d critical sections: %d released cleanly, %d lost (%d after an injected fault; Lost fired at most %v after it)",
		len(g.sections), clean, lost, explained, latency.Round(time.Millisecond))
	t.Logf("counters %v total %d = accepted writes %d; stale holders: %d claims and %d writes rejected by the fence, %d skipped the write as Lost had fired",
		counters, total, wrote, rejectedClaims, rejectedWrites, skipped)
	t.Logf("overlaps: %d after the earlier holder's Lost, %d after the fault but before its Lost, %d unexplained", afterLost, afterFault, overlaps)
	if len(g.sections) == 0 || clean == 0 {
		t.Error("no critical section completed")
	}
}
