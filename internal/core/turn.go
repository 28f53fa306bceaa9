package core

import (
	"context"
	"sync/atomic"
	"time"
)

// Turn lets one goroutine at a time take or give back a shared Lock's hold
// (a Session's or a Locker's Lock); the others wait for it. The zero value
// is not usable: make one with NewTurn.
type Turn struct {
	ch      chan struct{}
	waiting atomic.Bool // the goroutine that has the turn waits for the lock
}

// NewTurn returns a free Turn.
func NewTurn() *Turn { return &Turn{ch: make(chan struct{}, 1)} }

// Take waits for the turn until ctx ends.
func (t *Turn) Take(ctx context.Context) error {
	select { // the usual case, free: no select over ctx
	case t.ch <- struct{}{}:
		return nil
	default:
	}
	select {
	case t.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	}
}

// TakeUnlessWaiting is Take for a try: it gives up (got false) as soon as
// the goroutine that has the turn waits for the lock, so that a try never
// waits behind a blocked wait, even of its own Lock.
func (t *Turn) TakeUnlessWaiting(ctx context.Context) (got bool, err error) {
	select {
	case t.ch <- struct{}{}:
		return true, nil
	default:
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case t.ch <- struct{}{}:
			return true, nil
		case <-ctx.Done():
			return false, ctxErr(ctx)
		case <-tick.C:
			if t.waiting.Load() {
				return false, nil
			}
		}
	}
}

// SetWaiting marks whether the goroutine that has the turn waits for the
// lock.
func (t *Turn) SetWaiting(on bool) { t.waiting.Store(on) }

// Give ends the caller's turn.
func (t *Turn) Give() { <-t.ch }
