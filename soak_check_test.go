package alock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// soakLog gathers every worker's events, and the nemesis's faults.
type soakLog struct {
	mu       sync.Mutex
	sessions map[string]soakSession
	current  map[string]string // worker -> its latest session
	sections []soakSection
	stats    soakStats
	errors   []string
	kills    map[string]time.Time // session -> when the nemesis terminated its backend
	// linkFaults: a link (a proxy, or a network namespace) -> when the
	// nemesis reset it or cut it.
	linkFaults map[string][]*linkFault
}

// linkFault is a reset of a proxy, which ends every connection through it,
// or a cut of a namespace's link, held until Until: long enough that every
// Session inside is lost.
type linkFault struct {
	At, Until time.Time // Until is zero for a reset
	What      string    // for the logs: "reset", or the cut's direction
}

// ends reports whether f ends session s: for a reset, one whose Open began
// before it; for a cut, one whose Open began before it and returned before
// the heal (an Open that rode out the cut made a Session after it).
func (f *linkFault) ends(s soakSession) bool {
	return !f.At.Before(s.Opened) && (f.Until.IsZero() || s.Ready.Before(f.Until))
}

// newSoakLog returns an empty log.
func newSoakLog() *soakLog {
	return &soakLog{
		sessions: map[string]soakSession{}, current: map[string]string{},
		kills: map[string]time.Time{}, linkFaults: map[string][]*linkFault{},
	}
}

// linkFault records a fault of link starting now, and returns it (for a
// cut, to set Until at the heal, under g.mu).
func (g *soakLog) linkFault(link, what string) *linkFault {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := &linkFault{At: time.Now(), What: what}
	g.linkFaults[link] = append(g.linkFaults[link], f)
	return f
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
// session id: its backend's termination, or a reset or cut of its link
// that ends it.
func (g *soakLog) faultAt(id string) (time.Time, bool) {
	s := g.sessions[id]
	at, ok := g.kills[id]
	for _, f := range g.linkFaults[s.Link] {
		if s.Link != "" && f.ends(s) && (!ok || f.At.Before(at)) {
			at, ok = f.At, true
		}
	}
	return at, ok
}

// lossAt returns when a lost section's hold ended at the latest: the
// earliest injected fault on its session or, failing one, its Lost. ok is
// false for a section whose hold was never lost.
func (g *soakLog) lossAt(s soakSection) (time.Time, bool) {
	if !s.lost() {
		return time.Time{}, false
	}
	if f, ok := g.faultAt(s.Session); ok && f.Before(s.LostAt) {
		return f, true
	}
	return s.LostAt, true
}

// overlap reports whether two sections overlap in the clients' time.
func overlap(a, b soakSection) bool { return a.Acq.Before(b.End) && b.Acq.Before(a.End) }

// checkSoak runs the overlap and counter checks and logs the figures (see
// TestSoakMutualExclusion).
func checkSoak(t *testing.T, g *soakLog, admin *pgx.Conn) {
	t.Helper()
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

	// (a) No overlap, except after the earlier holder's loss. Sections are
	// ordered by what the server decided, not by the clients' clocks: the
	// token is drawn on the lock's session after the grant, so the smaller
	// token was granted first. A later grant means the server had freed the
	// earlier hold by then, so the earlier section may only reach into the
	// later one if its lock was lost, and the loss (an injected fault, or its
	// Lost) came no later than the later section's Acquire returned. Acquire
	// can return a lock that is already lost (its success was in flight when
	// the backend died): such a section's write must then have been refused
	// by the fence, or skipped, unless it came before the next claim.
	var overlaps, afterLoss, staleWrites int
	for _, secs := range byKey {
		for _, a := range secs {
			for _, b := range secs {
				if a.Token >= b.Token || !overlap(a, b) {
					continue // a is not the earlier grant of an overlapping pair
				}
				switch gone, ok := g.lossAt(a); {
				case ok && !gone.After(b.Acq):
					afterLoss++
					if a.Wrote && b.Claimed && a.WriteAt.After(b.ClaimAt) {
						staleWrites++
						t.Errorf("Key(%d): a stale write was accepted after the next holder's claim: %+v then %+v", a.Key, a, b)
					}
				default:
					overlaps++
					if overlaps <= 5 {
						t.Errorf("overlap on Key(%d): %+v (granted first, lost at %v) and %+v",
							a.Key, a, gone.Format(time.StampMicro), b)
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
	t.Logf("%d attempts: %d acquired, %d timed out, %d cancelled, %d found the session lost, %d other errors (session killed while waiting); %d sessions reopened, %d Opens failed (proxy reset or cut)",
		st.Attempts, st.Acquired, st.Timeouts, st.Cancels, st.AcquireLost, st.OtherErrs, st.Reopens, st.OpenErrs)
	t.Logf("%d critical sections: %d released cleanly, %d lost (%d after an injected fault; Lost fired at most %v after it)",
		len(g.sections), clean, lost, explained, latency.Round(time.Millisecond))
	t.Logf("counters %v total %d = accepted writes %d; stale holders: %d claims and %d writes rejected by the fence, %d skipped the write as Lost had fired",
		counters, total, wrote, rejectedClaims, rejectedWrites, skipped)
	t.Logf("overlaps in the clients' time: %d explained by the earlier grant's loss (%d stale writes accepted after the next claim), %d unexplained", afterLoss, staleWrites, overlaps)
	if len(g.sections) == 0 || clean == 0 {
		t.Error("no critical section completed")
	}
}
