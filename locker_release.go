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
	if _, done, err := k.countDown(false); done {
		return err
	}
	wait := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wait, cancel = core.CleanupContext(ctx)
		defer cancel()
	}
	if err := k.turn.Take(wait); err != nil {
		return fmt.Errorf("alock: release %s: waiting for the Lock: %w", k.l, err)
	}
	defer k.turn.Give()
	h, done, err := k.countDown(true)
	if done { // counted meanwhile
		return err
	}
	err = lostError(k.l.ids, h.core.Release(ctx))
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
// not held, or held more than once (done). For the last Release it returns
// the hold, and with claim also marks the Release in progress in the same
// step, so that no re-entrant Acquire counts on the hold while it is given
// back.
func (k *lockerLock) countDown(claim bool) (h *lockerHold, done bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.count == 0:
		return nil, true, fmt.Errorf("alock: release %s: %w", k.l, ErrNotHeld)
	case k.count == 1:
		k.releasing = k.releasing || claim
		return k.hold, false, nil
	}
	k.count--
	if !k.hold.core.Locked() {
		return nil, true, lostError(k.l.ids, fmt.Errorf("alock: release %s: %w", k.l, k.hold.gone()))
	}
	return nil, true, nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
