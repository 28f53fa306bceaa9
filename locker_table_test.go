package alock

import (
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
