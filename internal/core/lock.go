package core

import (
	"context"
	"errors"
	"fmt"
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
	pid   uint32 // the session's backend, 0 until known (see checkBackend)
	start string // its server's start time, "" until known
	// label names the Lock in errors; it is rendered only for them.
	label func() string
	mode  Mode
	tags  []Tag // distinct, in the order given

	// The statements for the whole of tags, built once.
	lockAll, tryAll, unlockAll statement

	state hold
	polls polling // of the acquisition in progress (guarded by turn, or a Serial Lock's caller)
	turn  *Turn   // held by the goroutine that takes or releases the hold (guarded Locks not Serial; else nil)
	batch batchOp // the op of a batched operation, reused (see newOp; guarded as polls)
}

// Options are a Lock's optional parts.
type Options struct {
	Guard Guard  // serialises the session's users; nil for none
	Fence string // sequence for fencing tokens, schema-qualified; "" for none
	PID   uint32 // the session's backend pid, if known: every statement must match it
	// Serial says that the caller gives the Lock one operation at a time
	// (a Locker's Lock, under its own turn): a guarded Lock then takes no
	// turn of its own.
	Serial bool
}

// NewLock returns an unheld Lock on c over tags (duplicates are dropped, the
// order is kept); label names it in error messages. A nil c makes a Lock
// whose Acquire, TryAcquire and Release return an error saying so.
func NewLock(c Conn, label func() string, m Mode, tags []Tag, opts Options) *Lock {
	distinct := distinct(tags)
	l := &Lock{
		conn: c, guard: opts.Guard, fence: opts.Fence, pid: opts.PID, label: label, mode: m, tags: distinct,
		lockAll:   lockStatement(m, distinct, opts.Fence, pidStartSQL),
		tryAll:    tryStatement(m, distinct, opts.Fence, pidStartSQL),
		unlockAll: unlockStatement(m, distinct),
	}
	if opts.Guard != nil && !opts.Serial { // shared, and not ordered by its caller
		l.turn = NewTurn()
	}
	return l
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
	if got, err := l.takeTurn(ctx, try); err != nil || !got {
		if err != nil {
			err = fmt.Errorf("alock: %s: %w", op, err)
		}
		return false, err
	}
	defer l.giveTurn()
	l.polls = polling{}
	defer l.freeSlot()
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
		case soon:
			if err := sleep(ctx, pollMin); err != nil {
				return false, fmt.Errorf("alock: %s: %w", op, err)
			}
		}
	}
}

// What acquire does after one attempt.
const (
	done  = iota // return its result
	again        // preempted: try again at once
	poll         // another Lock of the session waits on the server: try again later
	soon         // the session was busy as the wait slot's Lock came: try again after pollMin
)

// Bounds of the pause between the tries of a Lock that polls.
const (
	pollMin = 5 * time.Millisecond
	pollMax = 200 * time.Millisecond
)

// precheck fails an acquisition whose ctx has ended or whose Lock has more
// than MaxIDs ids (such a Lock is never held).
func (l *Lock) precheck(ctx context.Context, op operation) error {
	if ctx.Err() != nil {
		return fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	if len(l.tags) > MaxIDs {
		return fmt.Errorf("alock: %s: %w (%d given)", op, ErrTooManyIDs, len(l.tags))
	}
	return nil
}

// acquireOnce is one attempt of acquire, with the session entered.
func (l *Lock) acquireOnce(ctx context.Context, op operation, try bool) (bool, int, error) {
	if err := l.enter(ctx); err != nil {
		return false, done, fmt.Errorf("alock: %s: waiting for the session: %w", op, err)
	}
	defer l.exit()
	if err := l.precheck(ctx, op); err != nil {
		return false, done, err
	}
	if l.count() > 0 { // another goroutine's acquisition, before our turn
		if err := l.lostErr(op); err != nil {
			return false, done, err
		}
		l.setCount(1, 0)
		return true, done, nil
	}
	if len(l.tags) > 0 && l.conn.Closed() {
		return false, done, l.lostErr(op)
	}
	var got reply
	if send := unheld(l.conn.Key(), l.mode, l.tags); len(send) > 0 {
		ok, r, next, err := l.takeOrWait(ctx, op, try, send)
		if !ok || err != nil || next != done {
			dropIfEmpty(l.conn.Key()) // the statement's claim of its backend
			return false, next, err
		}
		if got = r; l.fence != "" && got.token == 0 { // a sliced wait: no statement drew
			if got.token, err = l.nextToken(ctx); err != nil {
				return false, done, errors.Join(fmt.Errorf("alock: %s: fencing token: %w", op, err), l.unlock(ctx, send, true))
			}
		}
	}
	l.setCount(1, addHolds(l.conn.Key(), l.mode, l.tags, got.pid, got.token))
	return true, done, nil
}

// nextToken draws the fencing token of a grant in a statement of its own,
// durably (see durable), on the session that holds the lock, after the
// grant. Only a sliced wait needs it: the lock statements draw their own.
func (l *Lock) nextToken(ctx context.Context) (int64, error) {
	var text string
	// Interrupted when ctx ends: the grant is then given back anyway.
	cancelled, err := run(ctx, l.conn, interrupt, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, "SELECT nextval($1::regclass)::text FROM (SELECT "+durable(l.fence)+"1) AS l", []any{l.fence})
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

// take takes send, the tags this session does not hold yet, in one statement
// that also reports the backend and draws the token. On failure it gives
// back whatever the statement took before returning.
func (l *Lock) take(ctx context.Context, op operation, try bool, send []Tag) (bool, reply, error) {
	st := l.lockAll
	if try {
		st = l.tryAll
	}
	if len(send) != len(l.tags) {
		st = lockStatement(l.mode, send, l.fence, l.who())
		if try {
			st = tryStatement(l.mode, send, l.fence, l.who())
		}
	}
	sp, err := beginSavepoint(ctx, l.conn)
	if err != nil {
		return false, reply{}, describe(op, ctx, false, l.conn, err)
	}
	if ctx.Err() != nil {
		return false, reply{}, errors.Join(fmt.Errorf("alock: %s: %w", op, ctxErr(ctx)), sp.rollback(ctx, l.conn))
	}
	if !try && ctx.Done() != nil && !l.conn.CanCancel() {
		return l.takeInSlices(ctx, op, sp, send)
	}
	var text string
	cancelled, err := run(ctx, l.conn, interrupt, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, st.sql, st.args)
		return err
	})
	if err != nil || cancelled {
		if err == nil {
			err = errGrantedLate
		}
		return false, reply{}, errors.Join(describe(op, ctx, cancelled, l.conn, l.fenceErr(err)), l.giveBack(ctx, sp, send, !try))
	}
	r, ok := parseReply(text, try, true)
	if !ok {
		err := fmt.Errorf("alock: %s: unexpected result %q", op, text)
		return false, reply{}, errors.Join(err, l.giveBack(ctx, sp, send, !try))
	}
	if err := l.checkBackend(op, r, true); err != nil {
		return false, reply{}, l.distrust(ctx, err, send)
	}
	if try {
		return l.keepAllOrNone(ctx, op, sp, send, r)
	}
	return l.keep(ctx, op, sp, send, r)
}

// keep ends the savepoint of a successful take. If that fails, the grant is
// given back: the session locks would otherwise outlive the error.
func (l *Lock) keep(ctx context.Context, op operation, sp savepoint, send []Tag, r reply) (bool, reply, error) {
	if err := sp.release(ctx, l.conn); err != nil {
		return false, reply{}, errors.Join(describe(op, ctx, false, l.conn, err), l.giveBack(ctx, sp, send, false)) // all taken
	}
	return true, r, nil
}

// keepAllOrNone finishes a try: if any tag was not taken, it unlocks the ones
// that were, so that a false leaves nothing held.
func (l *Lock) keepAllOrNone(ctx context.Context, op operation, sp savepoint, send []Tag, r reply) (bool, reply, error) {
	taken, ok := parseFlags(r.flags, len(send))
	if !ok {
		err := fmt.Errorf("alock: %s: unexpected result %q", op, r.flags)
		return false, reply{}, errors.Join(err, l.giveBack(ctx, sp, send, false))
	}
	if !slices.Contains(taken, false) {
		return l.keep(ctx, op, sp, send, r)
	}
	var got []Tag
	for i, t := range send {
		if taken[i] {
			got = append(got, t)
		}
	}
	return false, reply{}, errors.Join(l.unlock(ctx, got, true), sp.release(ctx, l.conn))
}

// fenceErr says that a failed lock statement failed to draw its token when
// the error is one only the draw can raise: the sequence is missing, not
// permitted, or exhausted.
func (l *Lock) fenceErr(err error) error {
	switch SQLState(err) {
	case "42P01", "42501", "2200H":
		if l.fence != "" {
			return fmt.Errorf("fencing token from %s: %w", l.fence, err)
		}
	}
	return err
}
