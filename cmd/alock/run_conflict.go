package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
)

// conflictTimeout bounds looking up who holds a lock that was not obtained.
const conflictTimeout = 5 * time.Second

// conflictLine returns one line naming the sessions that hold lock's ids in
// a mode that conflicts with it, read from pg_locks and pg_stat_activity
// through a connection of its own.
func conflictLine(ctx context.Context, cfg *pgx.ConnConfig, o *runOptions, lock *alock.Lock) string {
	ctx, cancel := context.WithTimeout(ctx, conflictTimeout)
	defer cancel()
	prefix := fmt.Sprintf("alock: %s (%s) is held elsewhere", joinIDArgs(o.idArgs), lock.Mode())
	conn, err := connect(ctx, cfg)
	if err != nil {
		return fmt.Sprintf("%s (could not see by whom: %s)", prefix, oneLine(err.Error()))
	}
	defer closeConn(conn)
	snap, err := readLocks(ctx, conn, lock.IDs())
	if err != nil {
		return fmt.Sprintf("%s (could not see by whom: %s)", prefix, oneLine(err.Error()))
	}
	snap.addNames(nil)
	var holders []string
	var waiters []int32
	for _, r := range snap.rows {
		switch {
		case !r.granted && r.pid != nil:
			waiters = append(waiters, *r.pid)
		case r.granted && (lock.Mode() == alock.Exclusive || r.mode == "exclusive"):
			holders = append(holders, snap.holder(r))
		}
	}
	switch {
	case len(holders) > 0:
		return prefix + ": " + strings.Join(holders, "; ")
	case len(waiters) > 0:
		return fmt.Sprintf("%s: no session holds it now, but pid %s wait(s) for it first", prefix, joinPIDs(waiters, ", "))
	}
	return prefix + " (no session holds it now: try again)"
}

// holder describes the session that holds r: pid, application_name, user
// and since when its session exists.
func (s *snapshot) holder(r lockInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s by %s", displayID(r), r.mode, holderText(r.pidText()))
	var details []string
	if r.app != nil && *r.app != "" {
		details = append(details, "application_name "+strconv.Quote(*r.app))
	}
	if r.user != nil {
		details = append(details, "user "+*r.user)
	}
	if r.sessionStart != nil {
		details = append(details, fmt.Sprintf("session since %s (%s ago)",
			r.sessionStart.Local().Format("2006-01-02 15:04:05 MST"), formatAge(s.now.Sub(*r.sessionStart))))
	} else if r.pid != nil {
		details = append(details, "session start hidden (another user's session)")
	}
	if len(details) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(details, ", "))
	}
	return b.String()
}
