package core

import (
	"context"
	"errors"
	"sync"
)

// A Guard shares a session among goroutines (a Session's, and its
// watchdog) and learns which Locks hold, so that it can announce their loss.
// A plain connection has none. Its Gate orders the users of the connection
// (see Gate); Enter and Exit wrap the Gate's, with the session's own checks.
type Guard interface {
	// Enter waits until the session is free for one operation, or ctx ends;
	// it preempts a user that only waits.
	Enter(ctx context.Context) error
	// Exit frees the session after the operation.
	Exit()
	// Gate is the session's gate, for the wait slot and preemption.
	Gate() *Gate
	// Held is told when l's count goes from zero to one.
	Held(l *Lock)
	// Released is told when l's count goes back to zero (or its hold is lost).
	Released(l *Lock)
}

// hold is a Lock's state, read by Locked, Lost and Token from any goroutine.
type hold struct {
	mu        sync.Mutex
	count     int
	releasing bool          // the last Release is unlocking: no count-only Acquire
	lost      chan struct{} // closed when the current hold is lost; made by Lost, nil until asked for
	gone      bool          // the current hold is lost
	token     int64         // fencing token of the current hold
}

// Locked reports whether the Lock is held, as far as it knows.
func (l *Lock) Locked() bool {
	l.state.mu.Lock()
	held := l.state.count > 0 && !l.state.gone
	l.state.mu.Unlock()
	return held && !l.conn.Closed()
}

// Lost returns a channel closed when the current hold is lost: its session
// ended, or the server no longer held it. It is not closed by Release. Each
// hold gets a new channel (see setCount); a Lock never held returns one that
// is never closed. The channel is made when first asked for, so that a
// hold nobody watches costs none.
func (l *Lock) Lost() <-chan struct{} {
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	if l.state.lost == nil {
		l.state.lost = make(chan struct{})
		if l.state.gone {
			close(l.state.lost)
		}
	}
	return l.state.lost
}

// Token returns the fencing token of the current hold, 0 if the Lock is not
// held or not fenced.
func (l *Lock) Token() int64 {
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	if l.state.count == 0 {
		return 0
	}
	return l.state.token
}

// MarkLost records that the current hold is lost and closes Lost. It does
// nothing if the Lock is not held or already marked.
func (l *Lock) MarkLost() {
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	if l.state.count > 0 && !l.state.gone {
		l.state.gone = true
		if l.state.lost != nil {
			close(l.state.lost)
		}
	}
}

// isLost reports whether the current hold is known lost.
func (l *Lock) isLost() bool {
	l.state.mu.Lock()
	gone := l.state.gone
	l.state.mu.Unlock()
	return gone || l.conn.Closed()
}

// Count returns the acquisition count.
func (l *Lock) Count() int { return l.count() }

// count returns the acquisition count.
func (l *Lock) count() int {
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	return l.state.count
}

// setCount changes the count by delta and starts a new hold (with a new
// Lost channel, made when asked for, and token) when it goes from zero to
// one.
func (l *Lock) setCount(delta int, token int64) {
	l.state.mu.Lock()
	was := l.state.count
	l.state.count += delta
	if was == 0 && l.state.count > 0 {
		l.state.lost, l.state.gone, l.state.token = nil, false, token
	}
	now := l.state.count
	l.state.mu.Unlock()
	if l.guard == nil {
		return
	}
	if was == 0 && now > 0 {
		l.guard.Held(l)
	} else if was > 0 && now == 0 {
		l.guard.Released(l)
	}
}

// countOnly is the fast path of a re-entrant Acquire: if the Lock is held
// (and not being released) it counts one more acquisition without using
// the connection, or reports the loss. counted is false when the Lock must go
// to the server.
func (l *Lock) countOnly(op operation) (counted bool, err error) {
	l.state.mu.Lock()
	held := l.state.count > 0 && !l.state.releasing
	l.state.mu.Unlock()
	if !held {
		return false, nil
	}
	if err := l.lostErr(op); err != nil {
		return true, err
	}
	l.state.mu.Lock()
	defer l.state.mu.Unlock()
	if l.state.count == 0 || l.state.releasing {
		return false, nil // released meanwhile
	}
	l.state.count++
	return true, nil
}

// takeTurn makes the caller the one goroutine that takes or releases the
// Lock's hold on the server (see Turn); for a try it gives up (got false)
// while the goroutine that has the turn waits for the lock. A Lock on a
// plain connection belongs to one goroutine, and a Serial one's caller
// gives it one operation at a time: neither has a turn.
func (l *Lock) takeTurn(ctx context.Context, try bool) (got bool, err error) {
	switch {
	case l.turn == nil:
		return true, nil
	case try:
		return l.turn.TakeUnlessWaiting(ctx)
	}
	if err := l.turn.Take(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// setWaiting marks whether the goroutine that has the turn waits for the
// lock.
func (l *Lock) setWaiting(on bool) {
	if l.turn != nil {
		l.turn.SetWaiting(on)
	}
}

// setReleasing marks the last Release in progress (or over).
func (l *Lock) setReleasing(on bool) {
	l.state.mu.Lock()
	l.state.releasing = on
	l.state.mu.Unlock()
}

// giveTurn ends the caller's turn.
func (l *Lock) giveTurn() {
	if l.turn != nil {
		l.turn.Give()
	}
}

// enter takes the session for one operation.
func (l *Lock) enter(ctx context.Context) error {
	if l.guard == nil {
		return nil
	}
	return l.guard.Enter(ctx)
}

// exit frees the session after an operation.
func (l *Lock) exit() {
	if l.guard != nil {
		l.guard.Exit()
	}
}

// Do runs fn between acquire and release: the body of every front end's
// Lock.Do. release also runs when fn panics, and the panic goes on; it gets
// ctx's values without its cancellation, bounded by CleanupTimeout. Do
// returns acquire's error, or fn's joined with release's.
func Do(ctx context.Context, acquire, release func(context.Context) error, fn func(context.Context) error) (err error) {
	if err := acquire(ctx); err != nil {
		return err
	}
	releaseBounded := func() error {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		return release(cctx)
	}
	released := false
	defer func() {
		if !released {
			_ = releaseBounded()
		}
	}()
	err = fn(ctx)
	released = true
	return errors.Join(err, releaseBounded())
}
