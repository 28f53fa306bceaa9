package core

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The sentinels re-exported by alock; see their documentation there.
var (
	ErrNotHeld = errors.New("alock: lock not held")
	ErrLost    = errors.New("alock: lock lost")
	ErrClosed  = errors.New("alock: session closed")

	ErrLockTimeout      = errors.New("alock: lock_timeout expired")
	ErrStatementTimeout = errors.New("alock: statement_timeout expired")
	ErrDeadlock         = errors.New("alock: deadlock detected")
	ErrTooManyIDs       = fmt.Errorf("alock: more than %d ids in one lock", MaxIDs)
)

// errPreempted is the cause with which a Session's lock wait is
// interrupted when another goroutine needs the connection: the wait gives
// back what it took and starts again after that operation.
var errPreempted = errors.New("preempted by another operation on the session")

// ctxErr returns the error for an ended ctx: ctx.Err(), and its cause if
// that differs, so that errors.Is matches both.
func ctxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || cause == err {
		return err
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// errGrantedLate stands for the success of a lock statement that the
// caller's cancellation overtook: the lock is given back.
var errGrantedLate = errors.New("granted as the cancel arrived, and given back")

// MaxIDs is the most distinct ids one Lock may hold. Every id is an entry in
// the server's shared lock table, sized for max_locks_per_transaction ×
// (max_connections + other backends) entries for the whole cluster (7,808
// with PostgreSQL 15's defaults; it can borrow spare shared memory beyond
// that); when it is full, no session can take any lock.
const MaxIDs = 64

// SQLSTATE codes the library maps to errors.
const (
	stateDeadlock    = "40P01"
	stateLockTimeout = "55P03"
	stateCanceled    = "57014"
	stateOutOfMemory = "53200"
	stateTxAborted   = "25P02"
)

// errNilConn is the error of a Lock or transaction lock made over a nil
// connection or transaction.
var errNilConn = errors.New("the connection is nil")

// An operation names what failed in error messages, "acquire exclusive
// [Key(1)]": a verb and the label of the Lock. The label is rendered only
// when an error is, so that a long one (a Name of a megabyte) costs nothing
// on success.
type operation struct {
	verb  string
	label func() string
}

func (o operation) String() string {
	if o.label == nil {
		return o.verb
	}
	return o.verb + " " + o.label()
}

// batchOperation names a batch's work, which is not the leader's Lock's alone.
func batchOperation(verb string) operation { return operation{verb: verb} }

// describe wraps a failed acquisition's error so that it says what happened
// and matches the right sentinel or context error with errors.Is.
func describe(op operation, ctx context.Context, cancelled bool, c Conn, err error) error {
	if cancelled && ctx.Err() != nil {
		if errors.Is(err, errGrantedLate) || SQLState(err) == stateCanceled {
			return fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
		}
		return fmt.Errorf("alock: %s: %w (and: %w)", op, ctxErr(ctx), err)
	}
	switch SQLState(err) {
	case stateDeadlock:
		return fmt.Errorf("alock: %s: %w: %w", op, ErrDeadlock, err)
	case stateLockTimeout:
		return fmt.Errorf("alock: %s: %w: %w", op, ErrLockTimeout, err)
	case stateCanceled:
		if strings.Contains(err.Error(), "statement timeout") {
			return fmt.Errorf("alock: %s: %w: %w", op, ErrStatementTimeout, err)
		}
		return fmt.Errorf("alock: %s: cancelled by the server (a cancel request from elsewhere): %w", op, err)
	case stateOutOfMemory:
		return fmt.Errorf("alock: %s: the server's shared lock table is full (raise max_locks_per_transaction or hold fewer locks): %w", op, err)
	case stateTxAborted:
		return fmt.Errorf("alock: %s: the session's transaction is aborted; roll it back first: %w", op, err)
	}
	if c.Closed() {
		if errors.Is(gone(c), ErrClosed) {
			return fmt.Errorf("alock: %s: %w (and: %w)", op, ErrClosed, err)
		}
		return fmt.Errorf("alock: %s: session lost: %w: %w", op, ErrLost, err)
	}
	return fmt.Errorf("alock: %s: %w", op, err)
}

// CtxErr is ctxErr for the front ends: ctx.Err(), and its cause if that
// differs.
func CtxErr(ctx context.Context) error { return ctxErr(ctx) }
