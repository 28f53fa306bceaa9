package core

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// A wait in slices (see takeInSlices) hides a deadlock from the server:
// PostgreSQL looks for one only when a backend has waited deadlock_timeout
// (1 s by default) for one lock, and a slice ends before that. So between
// slices the waiter asks the server whether it is suspected of a deadlock:
// whether a session that holds or waits for one of the locks it wants is, by
// pg_blocking_pids, waiting for it, directly or through others. If so, the
// next slice lasts the session's deadlock_timeout plus sliceTimeout, so that
// the server's own deadlock check runs during it: the server, not the
// library, decides whether there is a deadlock and which side is its victim
// (40P01, reported as ErrDeadlock), so the suspicion cannot cause a false
// ErrDeadlock, and when both sides wait in slices only one of them fails.
//
// The suspicion is read from several snapshots (one per pg_blocking_pids
// call), so it may be wrong both ways. A false suspicion costs one long
// slice: a cancelled context is noticed up to deadlock_timeout later. A
// deadlock missed once is found after the next slice.

// suspectSQL returns NULL, or the session's deadlock_timeout in milliseconds
// if it is suspected of a deadlock over the tags given in $1 as
// "classid:objid:objsubid" joined by commas. UNION ends the recursion on a
// cycle among the others; the waiter itself waits for nothing between slices.
const suspectSQL = `WITH RECURSIVE chain(pid) AS (
	SELECT l.pid FROM pg_catalog.pg_locks l
	WHERE l.locktype = 'advisory' AND l.pid <> pg_catalog.pg_backend_pid()
	AND l.classid::text || ':' || l.objid::text || ':' || l.objsubid::text = ANY (pg_catalog.string_to_array($1, ','))
UNION
	SELECT b FROM chain, unnest(pg_catalog.pg_blocking_pids(chain.pid)) AS b
)
SELECT CASE WHEN pg_catalog.pg_backend_pid() IN (SELECT pid FROM chain)
	THEN (extract(epoch FROM pg_catalog.current_setting('deadlock_timeout')::interval) * 1000)::bigint::text END`

// nextSlice returns how long the next slice of a wait for tags on c lasts:
// shortSlice, or deadlock_timeout plus sliceTimeout if the session is
// suspected of a deadlock. It is asked after a slice ran out, outside a
// failed transaction block.
func nextSlice(ctx context.Context, c Conn, tags []Tag) (time.Duration, error) {
	text, err := suspect(ctx, c, tags)
	if err != nil || text == "" {
		return shortSlice(), err
	}
	ms, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return shortSlice(), err
	}
	return time.Duration(ms)*time.Millisecond + sliceTimeout, nil
}

// suspect runs suspectSQL for tags on c.
func suspect(ctx context.Context, c Conn, tags []Tag) (string, error) {
	return queryText(ctx, c, finish, statement{sql: suspectSQL, args: []any{tagList(tags)}})
}

// shortSlice returns the length of a slice when no deadlock is suspected: a
// random length between half of sliceTimeout and sliceTimeout. Two waiters in
// slices that started together would otherwise stay in step, each asking
// about the other while the other is between slices and waits for nothing,
// and neither would suspect the deadlock.
func shortSlice() time.Duration {
	return sliceTimeout/2 + rand.N(sliceTimeout/2+1)
}

// tagList renders tags as pg_locks shows them, "classid:objid:objsubid",
// joined by commas.
func tagList(tags []Tag) string {
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(t.ClassID), 10) + ":" + strconv.FormatUint(uint64(t.ObjID), 10) + ":" + strconv.FormatUint(uint64(t.ObjSubID), 10))
	}
	return b.String()
}

// A Lock that polls with try-locks (its session's wait slot is taken, see
// takeOrWait) is invisible to the server's deadlock detection: it waits for
// nothing in pg_locks. So every pollCheck polls it asks the server whether
// it is suspected of a deadlock (suspectSQL), and after two suspicions in a
// row it gives up with ErrDeadlock, as the server would with its victim: the
// other side, a session blocked in the server, would otherwise wait for
// ever. A session blocked for one of this session's locks that it holds
// while holding what this Lock wants is a cycle at that moment, whatever is
// to come, which is also the server's rule.
const pollCheck = 4

// polling is the waiting state of an acquisition: its polls, and whether
// it took the session's wait slot.
type polling struct {
	polls, suspicions int
	slot              bool // the acquisition took the session's wait slot
}

// pollDeadlocked counts a failed poll for send and reports whether the
// Lock is to give up with ErrDeadlock. The caller has the session.
func (l *Lock) pollDeadlocked(ctx context.Context, send []Tag) bool {
	if l.polls.polls++; l.polls.polls%pollCheck != 0 {
		return false
	}
	text, err := suspect(ctx, l.conn, send)
	if err != nil || text == "" {
		l.polls.suspicions = 0
		return false
	}
	l.polls.suspicions++
	return l.polls.suspicions >= 2
}
