package alock

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pgalock/alock/internal/core"
)

// TestTableSweepsIdleEntries: the entries of released ids stay (idle) for
// the next request, but no more than minIdle of them once they are most of
// the map; a held or awaited id's entry is never swept.
func TestTableSweepsIdleEntries(t *testing.T) {
	tb := newTable()
	held := newRequest(Exclusive, []core.Tag{core.KeyTag(-1)})
	tb.request(&held)
	waiting := newRequest(Exclusive, []core.Tag{core.KeyTag(-1)})
	tb.request(&waiting)
	for i := range 5 * minIdle {
		r := newRequest(Exclusive, []core.Tag{core.KeyTag(int64(i))})
		tb.request(&r)
		if !isClosed(r.granted) {
			t.Fatalf("request %d not granted", i)
		}
		tb.release(&r)
		if len(tb.ids) > minIdle+2 || tb.idle > minIdle+1 {
			t.Fatalf("after %d cycles: %d entries, %d idle", i+1, len(tb.ids), tb.idle)
		}
	}
	r := newRequest(Exclusive, []core.Tag{core.KeyTag(7)}) // an idle entry, or a new one
	tb.request(&r)
	tb.release(&r)
	tb.release(&held)
	if !isClosed(waiting.granted) {
		t.Fatal("the waiting request was not granted by the release")
	}
	tb.release(&waiting)
	n := 0
	for _, e := range tb.ids {
		if !e.idle() {
			t.Fatal("an entry is not idle after every release")
		}
		n++
	}
	if n != tb.idle {
		t.Fatalf("%d idle entries, counted %d", n, tb.idle)
	}
}

// TestAttack7TableIdleCount: random requests (1 to 3 of 3,000 ids, both
// modes), withdrawals of waiting and granted requests and releases; after
// each step the idle count is the number of idle entries, no held or
// awaited id is missing, and the map stays within what the sweep allows.
func TestAttack7TableIdleCount(t *testing.T) {
	tb := newTable()
	rng := rand.New(rand.NewPCG(7, 7))
	var live []*tableRequest // granted or waiting
	check := func(step int) {
		idle := 0
		for _, e := range tb.ids {
			if e.idle() {
				idle++
			}
		}
		if idle != tb.idle {
			t.Fatalf("step %d: %d idle entries, counted %d", step, idle, tb.idle)
		}
		for _, r := range live {
			for _, tag := range r.tags {
				if tb.ids[tag] == nil {
					t.Fatalf("step %d: the entry of a live request's id is gone", step)
				}
			}
		}
		if busy := len(tb.ids) - idle; idle > minIdle+1 && idle > busy+1 {
			t.Fatalf("step %d: %d idle entries beside %d busy ones", step, idle, busy)
		}
	}
	for step := range 12000 {
		if len(live) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(live))
			r := live[i]
			live = slices.Delete(live, i, i+1)
			if isClosed(r.granted) && rng.IntN(2) == 0 {
				tb.release(r)
			} else {
				tb.withdraw(r)
			}
		} else {
			var tags []core.Tag
			for _, k := range rng.Perm(3000)[:1+rng.IntN(3)] {
				if rng.IntN(4) == 0 {
					k %= 8 // a hot id
				}
				tags = append(tags, core.KeyTag(int64(k)))
			}
			tags = core.Distinct(tags)
			m := Exclusive
			if rng.IntN(2) == 0 {
				m = Share
			}
			r := newRequest(m, tags)
			tb.request(&r)
			live = append(live, &r)
		}
		if step%4 == 0 || step > 11000 {
			check(step)
		}
	}
}
