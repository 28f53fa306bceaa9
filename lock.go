package alock

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// Lock is a set of advisory locks in one mode on one session (a *pgx.Conn),
// acquired and released together and counted like a re-entrant mutex: the
// first Acquire takes the locks on the server, later ones only count, and the
// Release that brings the count back to zero unlocks them.
//
// A Lock belongs to one goroutine at a time, as its *pgx.Conn does; several
// Locks may share a connection as long as one goroutine uses them. Locks on
// one connection do not block each other (PostgreSQL grants a session the
// locks it already holds), and releasing one never drops another's hold: the
// library takes one server-level hold per (session, id, mode) and counts the
// rest itself.
//
// Locks are session-scoped: they survive the end of a transaction and are
// lost with the session. See the package documentation for the hazards.
type Lock struct {
	core    *core.Lock
	mode    Mode
	ids     []ID
	session *Session    // nil on a plain *pgx.Conn
	locker  *lockerLock // set, and core nil, for a Lock made by a Locker
	tracer  Tracer      // nil for none
}

// NewExclusive returns an unheld Lock on conn over ids in Exclusive mode.
// The ids are taken in the order given, any mix of Key, Pair and Name;
// duplicates (Equal ids) are allowed and count once. NewExclusive does not
// contact the server. If conn is nil, Acquire, TryAcquire and Release
// return an error saying so.
func NewExclusive(conn *pgx.Conn, ids ...ID) *Lock { return newLock(conn, Exclusive, ids) }

// NewShare returns an unheld Lock on conn over ids in Share mode, as
// NewExclusive.
func NewShare(conn *pgx.Conn, ids ...ID) *Lock { return newLock(conn, Share, ids) }

func newLock(conn *pgx.Conn, m Mode, ids []ID) *Lock {
	var c core.Conn // nil for a nil conn: the Lock's methods then say so
	if conn != nil {
		c = pgxConn{c: conn}
	}
	return newLockOn(c, m, ids, core.Options{})
}

func newLockOn(c core.Conn, m Mode, ids []ID, opts core.Options) *Lock {
	return &Lock{core: newCoreOn(c, m, ids, opts), mode: m, ids: slices.Clone(ids)}
}

// newCoreOn returns the core Lock of a Lock on c. Its label keeps a copy of
// ids: it is rendered later, for errors.
func newCoreOn(c core.Conn, m Mode, ids []ID, opts core.Options) *core.Lock {
	return core.NewLock(c, describeLock(m, slices.Clone(ids)), core.Mode(m), tags(ids), opts)
}

// describeLock returns the name of a lock in messages, exclusive
// [Key(1) Name("jobs")], built when called: messages are built only for
// errors, so that a long Name costs nothing on success.
func describeLock(m Mode, ids []ID) func() string {
	return func() string { return core.Describe(m.String(), ids) }
}

// Acquire blocks until every id is held, taking them in order in one round
// trip. If the Lock is already held it only increments the count. A Lock
// with no ids counts without contacting the server.
//
// If ctx ends first, Acquire asks the server to cancel the wait, never closes
// the connection, and returns an error for which errors.Is(err, ctx.Err())
// holds, and errors.Is(err, context.Cause(ctx)) too; the connection stays
// usable and the session's other locks stay held. Whatever ends an
// acquisition early (cancellation, a deadlock, which returns an error
// wrapping ErrDeadlock, a lock_timeout or statement_timeout the session set,
// a lost connection), none of this Lock's ids is left held on the server: a
// lock granted as the cancel arrived is given back. If that
// cannot be established within CleanupTimeout the connection is closed,
// which ends every lock on it.
//
// Inside a transaction block Acquire waits under a savepoint, so a failure
// leaves the transaction usable; this costs two more round trips.
//
// If the lock statement ran on another backend than the session's (a
// transaction-mode pooler), Acquire unlocks what it can, closes the
// connection and returns an error wrapping ErrPooler and ErrLost; so does
// Release.
func (l *Lock) Acquire(ctx context.Context) error {
	ctx = l.traceStart(ctx)
	var err error
	if l.locker != nil {
		_, err = l.locker.acquire(ctx, false)
	} else {
		err = lostError(l.ids, l.core.Acquire(ctx))
		acquireSites.note(l, err == nil)
	}
	l.traceEnd(ctx, err == nil, err)
	return err
}

// TryAcquire takes every id without waiting, or none: if any id is held
// elsewhere in a conflicting mode it returns false and this Lock holds
// nothing on the server (ids it took on the way are given back, in a second
// round trip). If the Lock is already held it increments the count and
// returns true. Cancellation and failures are handled as for Acquire. On a
// Lock shared by goroutines (a Session's or a Locker's), a TryAcquire while
// another goroutine waits to acquire the same Lock returns false at once.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	ctx = l.traceStart(ctx)
	var ok bool
	var err error
	if l.locker != nil {
		ok, err = l.locker.acquire(ctx, true)
	} else {
		ok, err = l.core.TryAcquire(ctx)
		err = lostError(l.ids, err)
		acquireSites.note(l, ok && err == nil)
	}
	l.traceEnd(ctx, ok, err)
	return ok, err
}

// Release undoes one Acquire or successful TryAcquire. The Release that
// brings the count to zero unlocks the ids on the server, in reverse order,
// in one round trip. The end of ctx never stops the unlock: it is sent even
// if ctx is already done, and once ctx has ended it is bounded by
// CleanupTimeout. (Under a context that can never end it waits as long as
// the network does, like any pgx call.)
//
// Release returns an error wrapping ErrNotHeld if the count is already zero,
// and one wrapping ErrLost if the session is gone or the server reported an
// id not held; either way the Lock is no longer held. If the outcome of the
// unlock is unknown (for example inside a failed transaction block, or on a
// timeout) Release closes the connection, so that nothing stays locked, and
// returns an error wrapping ErrLost.
func (l *Lock) Release(ctx context.Context) error {
	var err error
	if l.locker != nil {
		err = l.locker.release(ctx)
	} else {
		err = lostError(l.ids, l.core.Release(ctx))
		if poolGuards.Load() > 0 {
			acquireSites.note(l, l.core.Locked())
		}
	}
	if t, ok := l.tracer.(ReleaseTracer); ok {
		t.Release(ctx, l, err)
	}
	return err
}

// Locked reports whether the Lock is held: its count is above zero and, as
// far as it knows, its session is alive. A session killed while idle is
// noticed at its next statement.
func (l *Lock) Locked() bool {
	if l.locker != nil {
		h := l.locker.current()
		return h != nil && h.core.Locked()
	}
	return l.core.Locked()
}

// Do acquires the Lock, runs fn and releases the Lock, also when fn panics
// (the panic then goes on). It returns the Acquire error, or fn's error
// joined with the Release error. The Release does not use ctx's cancellation
// and is bounded by CleanupTimeout.
//
// On a Lock made by a Session, fn's ctx also ends when the hold is lost:
// context.Cause then returns an error wrapping ErrLost and the loss's cause
// (or ErrClosed if the Session was closed). fn should stop acting on the
// protected resource then; what it already did may overlap the next holder
// (see Token).
func (l *Lock) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	return core.Do(ctx, l.Acquire, l.Release, func(ctx context.Context) error {
		if l.session == nil && l.locker == nil {
			return fn(ctx)
		}
		fctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := make(chan struct{})
		defer close(stop)
		lost := l.Lost()
		go func() {
			select {
			case <-lost:
				cancel(lostError(l.ids, fmt.Errorf("alock: %s: %w", l, orLost(l.sessionErr()))))
			case <-stop:
			}
		}()
		return fn(fctx)
	})
}

// Lost returns a channel that is closed when the current hold is lost: its
// session ended (closed, terminated, server restart, network) or the server
// no longer held it, although it was not released. On a Lock made by a
// [Session] the session's watchdog closes it within its documented bounds;
// on a plain *pgx.Conn it closes when the Lock itself sees the loss, at its
// next operation. Release does not close it. Each hold (count going from
// zero to one) gets a new channel; a Lock never held returns one that is
// never closed. Safe for concurrent use.
//
// Acquire can return a lock that is already lost: its session died while
// the grant's success was on its way, and another session may hold the lock
// by the time Acquire returns. Lost fires within the bound; only a fence
// (see Token) protects a write in that window.
func (l *Lock) Lost() <-chan struct{} {
	if l.locker != nil {
		return l.locker.lostChan()
	}
	return l.core.Lost()
}

// Token returns the fencing token of the current hold: 0 unless the Lock is
// held and was made by a Session with Fencing. Tokens come from one
// sequence, drawn durably in the statement that takes the locks, after the
// grant, so a later grant of the same lock, by any holder and across server
// restarts, has a larger token. The token belongs to the server-level hold:
// Locks of one Session that share a hold of an id share its token, and a
// Lock over several ids has the largest of its ids' grant tokens (its own
// statement's if it took any). A re-entrant Acquire keeps the token. A
// protected resource that remembers the largest token it has accepted, and
// rejects smaller ones, turns away a holder that lost its lock without
// noticing (paused, partitioned, or told of a grant that was already lost
// when Acquire returned; see Lost). Limits: a failover to an asynchronous
// standby can lose the last tokens drawn and hand them out again; the
// sequence must live on the primary. Safe for concurrent use.
func (l *Lock) Token() int64 {
	if l.locker != nil {
		if h := l.locker.current(); h != nil {
			return h.core.Token()
		}
		return 0
	}
	return l.core.Token()
}

// Mode returns the Lock's mode.
func (l *Lock) Mode() Mode { return l.mode }

// String describes the Lock by mode and ids, as error messages do:
// exclusive [Key(1) Name("jobs")].
func (l *Lock) String() string { return describeLock(l.mode, l.ids)() }

// IDs returns a copy of the ids the Lock was made with, duplicates included.
func (l *Lock) IDs() []ID { return slices.Clone(l.ids) }

// plainConn returns the *pgx.Conn of a Lock made by NewExclusive or
// NewShare, nil for a Session's or a Locker's.
func (l *Lock) plainConn() *pgx.Conn {
	if l.session != nil || l.locker != nil {
		return nil
	}
	if c, ok := l.core.ConnKey().(*pgx.Conn); ok {
		return c
	}
	return nil
}

// sessionErr is the Err of the Lock's session, if it has one.
func (l *Lock) sessionErr() error {
	if l.locker != nil {
		if h := l.locker.current(); h != nil {
			return h.session.Err()
		}
		return nil
	}
	return l.session.Err()
}

// Trace makes t the Lock's tracer and returns l; call it before the Lock is
// used. A Lock made by a Session has the Session's tracer already.
func (l *Lock) Trace(t Tracer) *Lock {
	l.tracer = t
	return l
}

func (l *Lock) traceStart(ctx context.Context) context.Context {
	if l.tracer != nil {
		return l.tracer.AcquireStart(ctx, l)
	}
	return ctx
}

func (l *Lock) traceEnd(ctx context.Context, acquired bool, err error) {
	if l.tracer != nil {
		l.tracer.AcquireEnd(ctx, l, acquired, err)
	}
	if l.session != nil {
		l.session.log(ctx, slog.LevelDebug, "alock: acquire", "lock", lockValue{l}, "acquired", acquired, "err", err)
	}
}

// lockValue logs a Lock as its String, built only if a handler logs it.
type lockValue struct{ l *Lock }

func (v lockValue) LogValue() slog.Value { return slog.StringValue(v.l.String()) }
