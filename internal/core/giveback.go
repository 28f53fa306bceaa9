package core

import (
	"context"
	"fmt"
)

// giveBack unlocks whatever of send a failed statement left held, as the
// server reports it. Send held no Lock's hold before, so a held tag is one
// the failed statement took, or one the program took on the session with
// plain SQL. A blocking lock statement (ordered) takes its tags in order and
// stops at the first it must wait for, so it took only the held prefix of
// send (see heldPrefix); a try statement goes through every tag, so for it
// every held tag is taken. If the session's state cannot be established,
// giveBack closes it.
func (l *Lock) giveBack(ctx context.Context, sp savepoint, send []Tag, ordered bool) error {
	if l.conn.Closed() {
		return nil // the session, and everything it took, is gone
	}
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	if err := sp.rollback(cctx, l.conn); err != nil {
		return l.abandon(cctx, "give back", err)
	}
	held, err := l.held(cctx)
	if err != nil {
		return l.abandon(cctx, "give back", err)
	}
	var took []Tag
	if ordered {
		took = heldPrefix(send, held)
	} else {
		for _, t := range send {
			if held[t] {
				took = append(took, t)
			}
		}
	}
	// A false from the unlock means the hold was not the statement's (a
	// transaction lock on the same key shows as the same pg_locks row).
	return l.unlock(cctx, took, false)
}

// heldPrefix returns the longest prefix of send whose tags the session
// holds: what a blocking lock statement over send took before it failed. It
// stops only at a tag it must wait for, which is not held; a held tag after
// that one the session held before (taken with plain SQL: no Lock held it),
// and it stays held.
func heldPrefix(send []Tag, held map[Tag]bool) []Tag {
	for i, t := range send {
		if !held[t] {
			return send[:i]
		}
	}
	return send
}

// held returns the tags this session holds in the Lock's mode, per pg_locks.
func (l *Lock) held(ctx context.Context) (map[Tag]bool, error) {
	st := heldStatement(l.mode)
	text, err := queryText(ctx, l.conn, finish, st)
	if err != nil {
		return nil, err
	}
	return parseHeld(text)
}

// abandon closes a session whose lock state is unknown, which ends every
// lock on it, and says so.
func (l *Lock) abandon(ctx context.Context, verb string, cause error) error {
	return l.abandonAs(ctx, operation{verb, l.label}, cause)
}

// abandonAs is abandon for an operation named op.
func (l *Lock) abandonAs(ctx context.Context, op operation, cause error) error {
	lost := l.conn.Closed()
	l.conn.Close(ctx)
	forgetSession(l.conn.Key())
	if lost {
		return fmt.Errorf("alock: %s: %w: %w", op, gone(l.conn), cause)
	}
	return fmt.Errorf("alock: %s: %w: the session was closed because its lock state was in doubt: %w", op, ErrLost, cause)
}
