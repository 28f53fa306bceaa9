package alock

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgalock/alock/internal/core"
)

// release is a Locker Lock's Release: the last one gives back the hold on
// its session and then the Lock's place in the process.
func (k *lockerLock) release(ctx context.Context) error {
	op := "release"
	if done, err := k.countDown(op); done {
		return err
	}
	wait := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wait, cancel = core.CleanupContext(ctx)
		defer cancel()
	}
	if err := k.turn.Take(wait); err != nil {
		return fmt.Errorf("alock: %s %s: waiting for the Lock: %w", op, k.l, err)
	}
	defer k.turn.Give()
	if done, err := k.countDownOr(op, true); done { // counted meanwhile
		return err
	}
	k.mu.Lock()
	h := k.hold
	k.mu.Unlock()
	err := lostError(k.l.ids, h.core.Release(ctx))
	if err != nil && h.core.Count() > 0 { // not released (the session was busy): still held
		k.mu.Lock()
		k.releasing = false
		k.mu.Unlock()
		return err
	}
	if errors.Is(err, ErrLost) {
		k.lk.losses.Add(1)
	}
	k.leave(h)
	k.mu.Lock()
	k.count, k.hold, k.releasing = 0, nil, false
	k.mu.Unlock()
	k.lk.held.Add(-1)
	return err
}

// countDown is the part of Release that does not use the server: a Lock
// not held, or held more than once. done is false for the last Release.
func (k *lockerLock) countDown(op string) (done bool, err error) {
	return k.countDownOr(op, false)
}

// countDownOr is countDown; with claim, a last Release is also marked in
// progress in the same step, so that no re-entrant Acquire counts on the
// hold while it is given back.
func (k *lockerLock) countDownOr(op string, claim bool) (done bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.count == 0:
		return true, fmt.Errorf("alock: %s %s: %w", op, k.l, ErrNotHeld)
	case k.count == 1:
		k.releasing = k.releasing || claim
		return false, nil
	}
	k.count--
	if !k.hold.core.Locked() {
		return true, lostError(k.l.ids, fmt.Errorf("alock: %s %s: %w", op, k.l, k.hold.gone()))
	}
	return true, nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
