package core

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrPooler is re-exported by alock; see its documentation there.
var ErrPooler = errors.New("alock: a transaction-mode pooler is in the way: one connection's statements ran on different backends (use LockTx there, or a session-mode pool)")

// backendPID is the session's backend as far as it is known: the one
// given in Options, or else the one its holds were taken on (0 if none).
func (l *Lock) backendPID() uint32 {
	if l.pid != 0 {
		return l.pid
	}
	return sessionPID(l.conn.Key())
}

// checkBackend checks that a lock statement ran on the session's backend:
// a pooler in transaction or statement mode (PgBouncer) moves a client's
// statements between backends, where session locks are taken on one and
// unlocked on another, or shared with other clients. The backend is the one
// given in Options (a Session's, from Open), or else the one that answered
// this Lock's first statement, or the one the session's current holds were
// taken on. A lock statement (claim) of a session that holds nothing claims
// its backend, which must not be the backend of another holding session of this
// process: only a pooler makes two connections share one.
func (l *Lock) checkBackend(op operation, r reply, claim bool) error {
	want := l.backendPID()
	if want != 0 && r.pid != want {
		return fmt.Errorf("alock: %s: %w: backend %d answered, the session's is %d", op, ErrPooler, r.pid, want)
	}
	if r.start != "" && l.start == "" {
		l.learnServer(r.start)
	}
	if claim && l.start != "" && !claimBackend(l.conn.Key(), backend{l.start, r.pid}) && !l.reclaim(backend{l.start, r.pid}) {
		return fmt.Errorf("alock: %s: %w: backend %d also holds the locks of another connection", op, ErrPooler, r.pid)
	}
	if l.pid == 0 && l.guard == nil { // a Session's Locks know their pid from Options
		l.pid = r.pid
	}
	return nil
}

// who is how the Lock's statements name their backend: with the server's
// start time until the Lock knows it.
func (l *Lock) who() string {
	if l.start == "" {
		return pidStartSQL
	}
	return pidSQL
}

// learnServer records the start time of the Lock's server, which a
// connection never changes (a pooler serves a database from one server),
// and stops asking for it: the server's start only names it.
func (l *Lock) learnServer(start string) {
	l.start = start
	l.lockAll = lockStatement(l.mode, l.tags, l.fence, pidSQL)
	l.tryAll = tryStatement(l.mode, l.tags, l.fence, pidSQL)
}

// distrust handles a statement that ran on the wrong backend: the lock
// state of the session is in doubt. It unlocks tags, which the statement
// may have taken, wherever that unlock lands, and closes the session
// (ending the locks of its own backend); every Lock on it reports ErrLost.
func (l *Lock) distrust(ctx context.Context, cause error, tags []Tag) error {
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	err := l.unlock(cctx, tags, false)
	if !l.conn.Closed() {
		err = errors.Join(err, l.abandon(cctx, "check the backend of", cause))
	}
	return errors.Join(cause, err)
}

// reclaim settles a claim of backend b that another connection's holds
// already name: it asks b (this session's backend, as the answer must show)
// which advisory locks it holds. If none of the other connection's holds is
// among them, that record is stale (the connection was closed while it
// held, and its backend then ended, or was reset by a session-mode pooler
// for this client), so it is dropped and the claim made. Otherwise the
// backend serves two connections: only a transaction-mode pooler does that.
func (l *Lock) reclaim(b backend) bool {
	ctx, cancel := cleanupContext(context.Background())
	defer cancel()
	text, err := queryText(ctx, l.conn, finish, statement{sql: backendHoldsSQL})
	if err != nil {
		return false
	}
	pid, held, ok := parseBackendHolds(text)
	if !ok || pid != b.pid {
		return false
	}
	return dropStaleClaim(l.conn.Key(), b, held)
}

// backendHoldsSQL returns the backend's pid and the advisory locks it
// holds, as "pid;classid:objid:objsubid:m,..." with m 'e' or 's'.
const backendHoldsSQL = `SELECT concat(pg_catalog.pg_backend_pid(), ';', string_agg(classid::text || ':' || objid::text || ':' || objsubid::text || ':' ||
	CASE mode WHEN 'ShareLock' THEN 's' ELSE 'e' END, ','))
FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted`

// parseBackendHolds parses backendHoldsSQL's text.
func parseBackendHolds(text string) (pid uint32, held map[holdKey]bool, ok bool) {
	head, list, found := strings.Cut(text, ";")
	n, err := strconv.ParseUint(head, 10, 32)
	if !found || err != nil {
		return 0, nil, false
	}
	held = make(map[holdKey]bool)
	for item := range strings.SplitSeq(list, ",") {
		if item == "" {
			continue
		}
		i := strings.LastIndexByte(item, ':')
		if i < 0 {
			return 0, nil, false
		}
		m := Exclusive
		if item[i+1:] == "s" {
			m = Share
		}
		tags, err := parseHeld(item[:i])
		if err != nil {
			return 0, nil, false
		}
		for t := range tags {
			held[keyOf(t, m)] = true
		}
	}
	return uint32(n), held, true
}
