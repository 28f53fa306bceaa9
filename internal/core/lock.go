package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Lock is the state machine behind alock.Lock and alocksql.Lock: a re-entrant
// hold of several advisory locks in one mode on one session. The contracts are
// documented on alock.Lock.
type Lock struct {
	conn  Conn
	guard Guard  // nil for a plain connection
	fence string // the sequence of fencing tokens, "" for none
	// label names the Lock in errors; it is rendered only for them.
	label func() string
	mode  Mode
	tags  []Tag // distinct, in the order given

	// The statements for the whole of tags, built once.
	lockAll, tryAll, unlockAll statement

	state hold
	polls polling       // of the acquisition in progress (guarded by turn)
	turn  chan struct{} // held by the goroutine that takes or releases the hold (guarded Locks)
}

// Options are a Lock's optional parts.
type Options struct {
	Guard Guard  // serialises the session's users; nil for none
	Fence string // sequence for fencing tokens (nextval after each grant); "" for none
}

// NewLock returns an unheld Lock on c over tags (duplicates are dropped, the
// order is kept); label names it in error messages. A nil c makes a Lock
// whose Acquire, TryAcquire and Release return an error saying so.
func NewLock(c Conn, label func() string, m Mode, tags []Tag, opts Options) *Lock {
	distinct := distinct(tags)
	return &Lock{
		conn: c, guard: opts.Guard, fence: opts.Fence, label: label, mode: m, tags: distinct,
		lockAll:   lockStatement(m, distinct),
		tryAll:    tryStatement(m, distinct),
		unlockAll: unlockStatement(m, distinct),
		state:     hold{lost: make(chan struct{})},
		turn:      make(chan struct{}, 1),
	}
}

// ConnKey returns the Key of the Lock's Conn, nil if it has none.
func (l *Lock) ConnKey() any {
	if l.conn == nil {
		return nil
	}
	return l.conn.Key()
}

// Acquire waits until every tag is held.
func (l *Lock) Acquire(ctx context.Context) error {
	_, err := l.acquire(ctx, operation{"acquire", l.label}, false)
	return err
}

// TryAcquire takes every tag or none, without waiting.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	return l.acquire(ctx, operation{"try acquire", l.label}, true)
}

func (l *Lock) acquire(ctx context.Context, op operation, try bool) (bool, error) {
	if l.conn == nil {
		return false, fmt.Errorf("alock: %s: %w", op, errNilConn)
	}
	if counted, err := l.countOnly(op); counted {
		return err == nil, err
	}
	if got, err := l.takeTurnUnlessWaiting(ctx, try); err != nil || !got {
		if err != nil {
			err = fmt.Errorf("alock: %s: %w", op, err)
		}
		return false, err
	}
	defer l.giveTurn()
	if l.guard != nil {
		defer l.guard.Gate().FreeSlot(l)
	}
	l.polls = polling{}
	if l.batchable() && l.count() == 0 {
		if ok, done, err := l.acquireBatched(ctx, op, try); done {
			return ok, l.explainGone(err)
		}
	}
	if !try {
		l.setWaiting(true)
		defer l.setWaiting(false)
	}
	pause := pollMin
	for {
		ok, next, err := l.acquireOnce(ctx, op, try)
		switch next {
		case done:
			return ok, l.explainGone(err)
		case poll:
			if err := sleep(ctx, pause); err != nil {
				return false, fmt.Errorf("alock: %s: %w", op, err)
			}
			pause = min(2*pause, pollMax)
		}
	}
}

// What acquire does after one attempt.
const (
	done  = iota // return its result
	again        // preempted: try again at once
	poll         // another Lock of the session waits on the server: try again later
)

// Bounds of the pause between the tries of a Lock that polls.
const (
	pollMin = 5 * time.Millisecond
	pollMax = 200 * time.Millisecond
)

// acquireOnce is one attempt of acquire, with the session entered.
func (l *Lock) acquireOnce(ctx context.Context, op operation, try bool) (bool, int, error) {
	if err := l.enter(ctx); err != nil {
		return false, done, fmt.Errorf("alock: %s: waiting for the session: %w", op, err)
	}
	defer l.exit()
	if ctx.Err() != nil {
		return false, done, fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	if l.count() > 0 { // another goroutine's acquisition, before our turn
		if err := l.lostErr(op); err != nil {
			return false, done, err
		}
		l.setCount(1, 0)
		return true, done, nil
	}
	if len(l.tags) > MaxIDs {
		return false, done, fmt.Errorf("alock: %s: %w (%d given)", op, ErrTooManyIDs, len(l.tags))
	}
	if len(l.tags) > 0 && l.conn.Closed() {
		return false, done, l.lostErr(op)
	}
	if send := unheld(l.conn.Key(), l.mode, l.tags); len(send) > 0 {
		ok, next, err := l.takeOrWait(ctx, op, try, send)
		if !ok || err != nil || next != done {
			return false, next, err
		}
	}
	addHolds(l.conn.Key(), l.mode, l.tags)
	token, err := l.nextToken(ctx)
	if err != nil {
		freed := dropHolds(l.conn.Key(), l.mode, l.tags) // not another Lock's holds
		return false, done, errors.Join(fmt.Errorf("alock: %s: fencing token: %w", op, err), l.unlock(ctx, freed, true))
	}
	l.setCount(1, token)
	return true, done, nil
}

// takeOrWait takes send. On a shared session a blocking take must not keep
// the connection from the session's other users: the one Lock that has the
// session's wait slot waits on the server, preemptibly (another user
// interrupts the wait, which gives back what it took and starts again);
// any other polls with a try.
func (l *Lock) takeOrWait(ctx context.Context, op operation, try bool, send []Tag) (bool, int, error) {
	if try || l.guard == nil {
		ok, err := l.take(ctx, op, try, send)
		return ok, done, err
	}
	gate := l.guard.Gate()
	if !gate.TakeSlot(l) {
		ok, err := l.take(ctx, op, true, send)
		if err == nil && !ok {
			if l.pollDeadlocked(ctx, send) {
				return false, done, fmt.Errorf("alock: %s: %w: a session that holds what it polls for waits for this session", op, ErrDeadlock)
			}
			return false, poll, nil
		}
		return ok, done, err
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	withdraw := gate.Preemptible(func() { cancel(errPreempted) })
	defer withdraw()
	ok, err := l.take(wctx, op, false, send)
	if err != nil && ctx.Err() == nil && l.conn.Closed() { // terminated, or closed by Close
		return false, done, fmt.Errorf("alock: %s: %w", op, gone(l.conn))
	}
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errPreempted) {
		if !errors.Is(err, errPreempted) { // failed on its own, and was also preempted
			return false, done, err
		}
		return false, again, nil
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, errPreempted) {
		err = fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	return ok, done, err
}

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

// nextToken draws the fencing token of a new hold, if the Lock is fenced:
// nextval of the fence sequence, on the session that holds the lock, after
// the grant. A later grant's token is therefore larger.
func (l *Lock) nextToken(ctx context.Context) (int64, error) {
	if l.fence == "" {
		return 0, nil
	}
	var text string
	// Interrupted when ctx ends: the grant is then given back anyway.
	cancelled, err := run(ctx, l.conn, interrupt, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, "SELECT nextval($1::regclass)::text", []any{l.fence})
		return err
	})
	if cancelled && ctx.Err() != nil {
		return 0, ctxErr(ctx) // drawn or not, the grant is given back
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(text, 10, 64)
}

// take takes send, the tags this session does not hold yet, in one statement.
// On failure it gives back whatever the statement took before returning.
func (l *Lock) take(ctx context.Context, op operation, try bool, send []Tag) (bool, error) {
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
	if ctx.Err() != nil {
		return false, errors.Join(fmt.Errorf("alock: %s: %w", op, ctxErr(ctx)), sp.rollback(ctx, l.conn))
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
	return l.keep(ctx, op, sp, send)
}

// keep ends the savepoint of a successful take. If that fails, the grant is
// given back: the session locks would otherwise outlive the error.
func (l *Lock) keep(ctx context.Context, op operation, sp savepoint, send []Tag) (bool, error) {
	if err := sp.release(ctx, l.conn); err != nil {
		return false, errors.Join(describe(op, ctx, false, l.conn, err), l.giveBack(ctx, sp, send))
	}
	return true, nil
}

// keepAllOrNone finishes a try: if any tag was not taken, it unlocks the ones
// that were, so that a false leaves nothing held.
func (l *Lock) keepAllOrNone(ctx context.Context, op operation, sp savepoint, send []Tag, flags string) (bool, error) {
	taken, ok := parseFlags(flags, len(send))
	if !ok {
		err := fmt.Errorf("alock: %s: unexpected result %q", op, flags)
		return false, errors.Join(err, l.giveBack(ctx, sp, send))
	}
	if !slices.Contains(taken, false) {
		return l.keep(ctx, op, sp, send)
	}
	var got []Tag
	for i, t := range send {
		if taken[i] {
			got = append(got, t)
		}
	}
	return false, errors.Join(l.unlock(ctx, got, true), sp.release(ctx, l.conn))
}
