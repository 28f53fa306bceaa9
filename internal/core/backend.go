package core

import (
	"context"
	"errors"
	"fmt"
)

// ErrPooler is re-exported by alock; see its documentation there.
var ErrPooler = errors.New("alock: a transaction-mode pooler is in the way: one connection's statements ran on different backends (use LockTx there, or a session-mode pool)")

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
	want := l.pid
	if want == 0 {
		want = sessionPID(l.conn.Key())
	}
	if want != 0 && r.pid != want {
		return fmt.Errorf("alock: %s: %w: backend %d answered, the session's is %d", op, ErrPooler, r.pid, want)
	}
	if r.start != "" && l.start == "" {
		l.learnServer(r.start)
	}
	if claim && l.start != "" && !claimBackend(l.conn.Key(), backend{l.start, r.pid}) {
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
