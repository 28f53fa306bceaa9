package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Release gives back one acquisition; the last one unlocks on the server.
//
// Only the last one uses the connection. On a guarded session it waits for
// the Lock's turn and the session until ctx ends (the Lock then stays
// held), or, if ctx has already ended, for CleanupTimeout; it never waits
// behind a blocked lock wait, which it preempts.
func (l *Lock) Release(ctx context.Context) error {
	op := operation{"release", l.label}
	if l.conn == nil {
		return fmt.Errorf("alock: %s: %w", op, errNilConn)
	}
	if counted, err := l.countDown(op); counted {
		return err
	}
	wait := ctx
	if ctx.Err() != nil && l.guard != nil {
		var cancel context.CancelFunc
		wait, cancel = cleanupContext(ctx)
		defer cancel()
	}
	if _, err := l.takeTurn(wait, false); err != nil {
		return fmt.Errorf("alock: %s: waiting for the session: %w", op, err)
	}
	defer l.giveTurn()
	if counted, err := l.claimLast(op); counted { // counted down by others meanwhile
		return err
	}
	defer l.setReleasing(false)
	if l.isLost() { // nothing to unlock, and a closed session's gate is shut
		err := l.lostErr(op)
		l.setCount(-1, 0)
		return err
	}
	if l.batchable() {
		return l.explainGone(l.releaseBatched(op))
	}
	if err := l.enter(wait); err != nil {
		if l.isLost() {
			err = l.lostErr(op)
			l.setCount(-1, 0)
			return err
		}
		return fmt.Errorf("alock: %s: waiting for the session: %w", op, err)
	}
	defer l.exit()
	var err error
	if l.guard != nil { // the session may have been lost while it waited for it
		err = l.lostErr(op)
	}
	freed := dropHolds(l.conn.Key(), l.mode, l.tags)
	if err == nil {
		err = l.unlock(ctx, freed, true)
	}
	if errors.Is(err, ErrLost) || errors.Is(err, ErrClosed) {
		l.MarkLost()
	}
	l.setCount(-1, 0)
	return l.explainGone(err)
}

// explainGone makes the error of an operation whose session has ended say
// why: ErrClosed (closed by its owner) or ErrLost with the cause.
func (l *Lock) explainGone(err error) error {
	if err == nil || !l.conn.Closed() || errors.Is(err, ErrLost) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, gone(l.conn))
}

// countDown is Release's path that does not use the connection: a Lock not
// held, one held more than once, or one with no ids. counted is false when
// the Release is the last and must unlock on the server.
func (l *Lock) countDown(op operation) (counted bool, err error) {
	return l.countDownOr(op, false)
}

// claimLast is countDown under the Lock's turn, which also marks the last
// Release in progress in the same step, so that no re-entrant Acquire can
// count on the hold while it is unlocked. counted is false when the caller
// must unlock (and then setReleasing(false) when done).
func (l *Lock) claimLast(op operation) (counted bool, err error) {
	return l.countDownOr(op, true)
}

func (l *Lock) countDownOr(op operation, claim bool) (counted bool, err error) {
	l.state.mu.Lock()
	n := l.state.count
	if n == 0 {
		l.state.mu.Unlock()
		return true, fmt.Errorf("alock: %s: %w", op, ErrNotHeld)
	}
	if n == 1 && len(l.tags) > 0 {
		l.state.releasing = l.state.releasing || claim
		l.state.mu.Unlock()
		return false, nil
	}
	l.state.count--
	l.state.mu.Unlock()
	if n == 1 && l.guard != nil {
		l.guard.Released(l)
	}
	if len(l.tags) > 0 {
		err = l.lostErr(op)
	}
	return true, err
}

// lostErr returns an error wrapping ErrLost if the session is known gone,
// and then forgets the session's holds: they are gone with it.
func (l *Lock) lostErr(op operation) error {
	if !l.isLost() {
		return nil
	}
	l.MarkLost()
	if l.conn.Closed() {
		forgetSession(l.conn.Key())
	}
	return fmt.Errorf("alock: %s: %w", op, gone(l.conn))
}

// gone says why a Conn's session is gone: closed by its owner (ErrClosed),
// or lost (ErrLost, with the cause where the Conn knows it).
func gone(c Conn) error {
	if e, ok := c.(interface{ Err() error }); ok {
		if err := e.Err(); errors.Is(err, ErrClosed) {
			return err
		} else if err != nil {
			return err // wraps ErrLost and the cause
		}
	}
	return fmt.Errorf("%w: its session is gone", ErrLost)
}

// unlock releases tags on the server, each of which this session holds once.
// The end of ctx never interrupts it: once ctx has ended it is bounded by
// CleanupTimeout. If the outcome is unknown it closes the session, so the
// locks end with it.
// With strict, an unlock the server answers false (it did not hold the lock)
// is reported as ErrLost.
func (l *Lock) unlock(ctx context.Context, tags []Tag, strict bool) error {
	if len(tags) == 0 {
		return nil
	}
	st := l.unlockAll
	if len(tags) != len(l.tags) {
		st = unlockStatement(l.mode, tags)
	}
	text, err := queryText(ctx, l.conn, finish, st)
	if err != nil {
		return l.abandon(ctx, "unlock", err)
	}
	r, ok := parseReply(text, true, false)
	released, ok2 := parseFlags(r.flags, len(tags))
	if !ok || !ok2 {
		return l.abandon(ctx, "unlock", fmt.Errorf("unexpected result %q", text))
	}
	if err := l.checkBackend(operation{"unlock", l.label}, r, false); err != nil {
		l.unlockOnOwnBackend(ctx, st)
		return l.abandon(ctx, "unlock", err)
	}
	var notHeld []Tag
	for i, t := range tags {
		if !released[i] {
			notHeld = append(notHeld, t)
		}
	}
	if len(notHeld) > 0 && strict {
		return fmt.Errorf("alock: unlock %s: %w: the server did not hold %v", l.label(), ErrLost, notHeld)
	}
	return nil
}

// unlockOnOwnBackend tries unlockTries times, unlockRetry apart.
const (
	unlockTries = 20
	unlockRetry = 50 * time.Millisecond
)

// unlockOnOwnBackend sends st again, a few times, hoping that a pooler
// that moved the unlock to another backend hands the session's own backend
// to one of them: closing the connection does not end the locks of a
// backend that a transaction-mode pooler keeps serving. Best effort, for
// about a second: PgBouncer hands a client the idle backend it used last,
// so once a retry has run on another backend the next ones stay there
// unless the session's backend came free between them.
func (l *Lock) unlockOnOwnBackend(ctx context.Context, st statement) {
	want := l.backendPID()
	for i := range unlockTries {
		if i > 0 && sleep(ctx, unlockRetry) != nil {
			return
		}
		text, err := queryText(ctx, l.conn, finish, st)
		r, ok := parseReply(text, true, false)
		if err != nil || !ok || r.pid == want || want == 0 {
			return
		}
	}
}
