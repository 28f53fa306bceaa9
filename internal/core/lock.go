package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Lock is the state machine behind alock.Lock and alocksql.Lock: a re-entrant
// hold of several advisory locks in one mode on one session. The contracts are
// documented on alock.Lock.
type Lock struct {
	conn  Conn
	label string // names the Lock in errors
	mode  Mode
	tags  []Tag // distinct, in the order given
	count int

	// The statements for the whole of tags, built once.
	lockAll, tryAll, unlockAll statement
}

// NewLock returns an unheld Lock on c over tags (duplicates are dropped, the
// order is kept); label names it in error messages.
func NewLock(c Conn, label string, m Mode, tags []Tag) *Lock {
	distinct := distinct(tags)
	return &Lock{
		conn: c, label: label, mode: m, tags: distinct,
		lockAll:   lockStatement(m, distinct),
		tryAll:    tryStatement(m, distinct),
		unlockAll: unlockStatement(m, distinct),
	}
}

// Locked reports whether the Lock is held, as far as it knows.
func (l *Lock) Locked() bool { return l.count > 0 && !l.conn.Closed() }

// Acquire waits until every tag is held.
func (l *Lock) Acquire(ctx context.Context) error {
	_, err := l.acquire(ctx, "acquire "+l.label, false)
	return err
}

// TryAcquire takes every tag or none, without waiting.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	return l.acquire(ctx, "try acquire "+l.label, true)
}

func (l *Lock) acquire(ctx context.Context, op string, try bool) (bool, error) {
	if l.count > 0 {
		if err := l.lostErr(op); err != nil {
			return false, err
		}
		l.count++
		return true, nil
	}
	if ctx.Err() != nil {
		return false, fmt.Errorf("alock: %s: %w", op, context.Cause(ctx))
	}
	if len(l.tags) > MaxIDs {
		return false, fmt.Errorf("alock: %s: %w (%d given)", op, ErrTooManyIDs, len(l.tags))
	}
	if send := unheld(l.conn.Key(), l.mode, l.tags); len(send) > 0 {
		ok, err := l.take(ctx, op, try, send)
		if !ok || err != nil {
			return false, err
		}
	}
	addHolds(l.conn.Key(), l.mode, l.tags)
	l.count = 1
	return true, nil
}

// take takes send, the tags this session does not hold yet, in one statement.
// On failure it gives back whatever the statement took before returning.
func (l *Lock) take(ctx context.Context, op string, try bool, send []Tag) (bool, error) {
	st := l.lockAll
	if try {
		st = l.tryAll
	}
	if len(send) != len(l.tags) {
		st = lockStatement(l.mode, send)
		if try {
			st = tryStatement(l.mode, send)
		}
	}
	sp, err := beginSavepoint(ctx, l.conn)
	if err != nil {
		return false, describe(op, ctx, false, l.conn, err)
	}
	if !try && ctx.Done() != nil && !l.conn.CanCancel() {
		return l.takeInSlices(ctx, op, sp, send)
	}
	var flags string
	cancelled, err := run(ctx, l.conn, interrupt, func(q context.Context) (err error) {
		if try {
			flags, err = l.conn.QueryText(q, st.sql, st.args)
			return err
		}
		return l.conn.Exec(q, st.sql, st.args)
	})
	if err != nil || cancelled {
		if err == nil {
			err = errGrantedLate
		}
		return false, errors.Join(describe(op, ctx, cancelled, l.conn, err), l.giveBack(ctx, sp, send))
	}
	if try {
		return l.keepAllOrNone(ctx, op, sp, send, flags)
	}
	return true, sp.release(ctx, l.conn)
}

// keepAllOrNone finishes a try: if any tag was not taken, it unlocks the ones
// that were, so that a false leaves nothing held.
func (l *Lock) keepAllOrNone(ctx context.Context, op string, sp savepoint, send []Tag, flags string) (bool, error) {
	taken, ok := parseFlags(flags, len(send))
	if !ok {
		err := fmt.Errorf("alock: %s: unexpected result %q", op, flags)
		return false, errors.Join(err, l.giveBack(ctx, sp, send))
	}
	if !slices.Contains(taken, false) {
		return true, sp.release(ctx, l.conn)
	}
	var got []Tag
	for i, t := range send {
		if taken[i] {
			got = append(got, t)
		}
	}
	return false, errors.Join(l.unlock(ctx, got), sp.release(ctx, l.conn))
}

// giveBack unlocks whatever of send a failed statement left held, as the
// server reports it. Send held no Lock's hold before, so a held tag is one
// the failed statement took. If the session's state cannot be established,
// giveBack closes it.
func (l *Lock) giveBack(ctx context.Context, sp savepoint, send []Tag) error {
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
	for _, t := range send {
		if held[t] {
			took = append(took, t)
		}
	}
	return l.unlock(cctx, took)
}

// held returns the tags this session holds in the Lock's mode, per pg_locks.
func (l *Lock) held(ctx context.Context) (map[Tag]bool, error) {
	st := heldStatement(l.mode)
	var text string
	_, err := run(ctx, l.conn, finish, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, st.sql, st.args)
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseHeld(text)
}

// Release gives back one acquisition; the last one unlocks on the server.
func (l *Lock) Release(ctx context.Context) error {
	op := "release " + l.label
	if l.count == 0 {
		return fmt.Errorf("alock: %s: %w", op, ErrNotHeld)
	}
	if l.count--; len(l.tags) == 0 {
		return nil
	}
	if l.count > 0 {
		return l.lostErr(op)
	}
	freed := dropHolds(l.conn.Key(), l.mode, l.tags)
	if err := l.lostErr(op); err != nil {
		return err
	}
	return l.unlock(ctx, freed)
}

// lostErr returns an error wrapping ErrLost if the session is known gone,
// and then forgets the session's holds: they are gone with it.
func (l *Lock) lostErr(op string) error {
	if !l.conn.Closed() {
		return nil
	}
	forgetSession(l.conn.Key())
	return fmt.Errorf("alock: %s: %w: its session is gone", op, ErrLost)
}

// unlock releases tags on the server, each of which this session holds once.
// The end of ctx never interrupts it: once ctx has ended it is bounded by
// CleanupTimeout. If the outcome is unknown it closes the session, so the
// locks end with it.
func (l *Lock) unlock(ctx context.Context, tags []Tag) error {
	if len(tags) == 0 {
		return nil
	}
	st := l.unlockAll
	if len(tags) != len(l.tags) {
		st = unlockStatement(l.mode, tags)
	}
	var text string
	_, err := run(ctx, l.conn, finish, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, st.sql, st.args)
		return err
	})
	if err != nil {
		return l.abandon(ctx, "unlock", err)
	}
	released, ok := parseFlags(text, len(tags))
	if !ok {
		return l.abandon(ctx, "unlock", fmt.Errorf("unexpected result %q", text))
	}
	var notHeld []Tag
	for i, t := range tags {
		if !released[i] {
			notHeld = append(notHeld, t)
		}
	}
	if len(notHeld) > 0 {
		return fmt.Errorf("alock: unlock %s: %w: the server did not hold %v", l.label, ErrLost, notHeld)
	}
	return nil
}

// abandon closes a session whose lock state is unknown, which ends every
// lock on it, and says so.
func (l *Lock) abandon(ctx context.Context, op string, cause error) error {
	lost := l.conn.Closed()
	l.conn.Close(ctx)
	forgetSession(l.conn.Key())
	op += " " + l.label
	if lost {
		return fmt.Errorf("alock: %s: %w: session lost: %w", op, ErrLost, cause)
	}
	return fmt.Errorf("alock: %s: %w: the session was closed because its lock state was in doubt: %w", op, ErrLost, cause)
}

// Do runs fn while holding the Lock: Acquire, fn, Release. The Release also
// runs when fn panics, and the panic goes on. It returns fn's error joined
// with the Release's.
func (l *Lock) Do(ctx context.Context, fn func(context.Context) error) (err error) {
	if err := l.Acquire(ctx); err != nil {
		return err
	}
	released := false
	defer func() {
		if !released {
			_ = l.Release(context.WithoutCancel(ctx))
		}
	}()
	err = fn(ctx)
	released = true
	return errors.Join(err, l.Release(context.WithoutCancel(ctx)))
}
