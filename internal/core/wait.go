package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// takeOrWait takes send. On a shared session a blocking take must not keep
// the connection from the session's other users: the one Lock that has the
// session's wait slot waits on the server, preemptibly (another user
// interrupts the wait, which gives back what it took and starts again);
// any other polls with a try. The slot's Lock tries too when another user
// already queues for the session as it comes (its wait would be preempted
// before it is sent, and under steady traffic it would never try at all),
// and comes back soon, keeping the slot.
func (l *Lock) takeOrWait(ctx context.Context, op operation, try bool, send []Tag) (bool, reply, int, error) {
	if try || l.guard == nil {
		ok, r, err := l.take(ctx, op, try, send)
		return ok, r, done, err
	}
	gate := l.guard.Gate()
	if !gate.TakeSlot(l) {
		return l.pollOnce(ctx, op, send)
	}
	l.polls.slot = true
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	withdraw := gate.Preemptible(func() { cancel(errPreempted) })
	defer withdraw()
	if wctx.Err() != nil && ctx.Err() == nil { // preempted at once: others queue
		ok, r, err := l.take(ctx, op, true, send)
		if err == nil && !ok {
			return false, reply{}, soon, nil
		}
		return ok, r, done, err
	}
	ok, r, err := l.take(wctx, op, false, send)
	if err != nil && ctx.Err() == nil && l.conn.Closed() { // terminated, or closed by Close
		return false, reply{}, done, fmt.Errorf("alock: %s: %w", op, gone(l.conn))
	}
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errPreempted) {
		if !errors.Is(err, errPreempted) { // failed on its own, and was also preempted
			return false, reply{}, done, err
		}
		return false, reply{}, again, nil
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, errPreempted) {
		err = fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	return ok, r, done, err
}

// pollOnce is one try of a Lock that does not wait on the server: poll
// when it fails, unless the Lock is found to be in a deadlock.
func (l *Lock) pollOnce(ctx context.Context, op operation, send []Tag) (bool, reply, int, error) {
	ok, r, err := l.take(ctx, op, true, send)
	if err == nil && !ok {
		if l.pollDeadlocked(ctx, send) {
			return false, reply{}, done, fmt.Errorf("alock: %s: %w: a session that holds what it polls for waits for this session", op, ErrDeadlock)
		}
		return false, reply{}, poll, nil
	}
	return ok, r, done, err
}

// freeSlot gives back the session's wait slot if the acquisition took it.
func (l *Lock) freeSlot() {
	if l.polls.slot {
		l.guard.Gate().FreeSlot(l)
	}
}

// Sleep is sleep for the front ends.
func Sleep(ctx context.Context, d time.Duration) error { return sleep(ctx, d) }

// sleep waits for d, jittered by up to half, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	}
}
