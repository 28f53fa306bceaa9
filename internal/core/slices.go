package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// sliceTimeout is how long one server-side wait lasts when the driver cannot
// cancel a statement: the most a cancelled context waits to be noticed.
const sliceTimeout = 100 * time.Millisecond

// takeInSlices waits for send on a Conn that cannot cancel a statement (lib/pq
// through database/sql). It waits in slices bounded by the server's
// lock_timeout, never longer than ctx's deadline, keeps what each slice was
// granted and waits again for the rest until all is held or ctx ends. The
// waiter loses its place in the server's queue between slices, so it is less
// fair than a single wait. The session's own lock_timeout and
// statement_timeout bound the whole wait (see budget), read once the first
// slice has run out. Between slices it asks whether it is suspected of a
// deadlock, and if so waits long enough for the server to check (see
// nextSlice).
func (l *Lock) takeInSlices(ctx context.Context, op operation, sp savepoint, send []Tag) (bool, reply, error) {
	rest, slice := send, shortSlice()
	start, b, read := time.Now(), budget{}, false
	fail := func(err error) (bool, reply, error) { // gives back what the slices took
		return false, reply{}, errors.Join(err, l.giveBack(ctx, sp, send, true))
	}
	for {
		wait := slice
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		wait, _ = b.bound(wait)
		st := lockWithinStatement(l.mode, rest, wait, l.fence, l.who())
		text, err := l.conn.QueryText(context.WithoutCancel(ctx), st.sql, st.args)
		if err == nil {
			r, ok := parseReply(text, false, true)
			if !ok {
				return fail(fmt.Errorf("alock: %s: unexpected result %q", op, text))
			}
			if err := l.checkBackend(op, r, true); err != nil {
				return false, reply{}, l.distrust(ctx, err, send)
			}
			return true, r, sp.release(ctx, l.conn)
		}
		if SQLState(err) != stateLockTimeout || ctx.Err() != nil {
			if ctx.Err() != nil && SQLState(err) == stateLockTimeout {
				err = fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
			} else {
				err = describe(op, ctx, false, l.conn, l.fenceErr(err))
			}
			return fail(err)
		}
		if rest, err = l.stillMissing(ctx, sp, rest); err != nil {
			return fail(fmt.Errorf("alock: %s: %w", op, err))
		}
		if len(rest) == 0 { // granted as the slice ran out: no pid, no token
			return true, reply{}, sp.release(ctx, l.conn)
		}
		if !read {
			if b, err = readBudget(ctx, l.conn, start); err != nil {
				return fail(fmt.Errorf("alock: %s: %w", op, err))
			}
			read = true
		}
		if _, over := b.bound(0); over {
			return fail(fmt.Errorf("alock: %s: %w", op, b.err))
		}
		if slice, err = nextSlice(ctx, l.conn, rest); err != nil {
			return fail(fmt.Errorf("alock: %s: %w", op, err))
		}
	}
}

// stillMissing returns the tags of rest that the slice that ran out did not
// take (see heldPrefix), restarting the savepoint the failure aborted. A
// tag the session held with plain SQL stays in it: the next slice takes it
// at once, once more, and the Lock's release gives back only that once.
func (l *Lock) stillMissing(ctx context.Context, sp savepoint, rest []Tag) ([]Tag, error) {
	if err := sp.rollback(ctx, l.conn); err != nil {
		return nil, err
	}
	if _, err := beginSavepoint(ctx, l.conn); err != nil {
		return nil, err
	}
	held, err := l.held(ctx)
	if err != nil {
		return nil, err
	}
	return rest[len(heldPrefix(rest, held)):], nil
}
