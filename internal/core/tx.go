package core

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrNoTransaction is re-exported by alock; see its documentation there.
var ErrNoTransaction = errors.New("alock: not in a transaction block")

const txSavepoint = "alock_tx"

// LockTx takes tags in mode m until the end of c's transaction (or of the
// savepoint it runs in); label names the ids in error messages, and a nil c
// is an error. The wait runs under a savepoint of its own, in one
// round trip when no error occurs:
//
//	SAVEPOINT alock_tx; SELECT pg_advisory_xact_lock(1), ...; RELEASE SAVEPOINT alock_tx
//
// On any failure it rolls back to that savepoint, which releases whatever the
// statement took and leaves the transaction usable.
func LockTx(ctx context.Context, c Conn, m Mode, tags []Tag, label func() string) error {
	op := operation{"lock in transaction", label}
	if c == nil {
		return fmt.Errorf("alock: %s: %w", op, errNilConn)
	}
	tags = distinct(tags)
	if err := checkTx(ctx, c, op, tags); err != nil || len(tags) == 0 {
		return err
	}
	// Without cancel, the wait runs in slices, each under a lock_timeout of
	// its own: restore is the transaction's, and b what it and the
	// statement_timeout allow the whole wait (see budget).
	restore, b := "", budget{}
	if ctx.Done() != nil && !c.CanCancel() {
		start := time.Now()
		text, err := c.QueryText(context.WithoutCancel(ctx), "SELECT concat(current_setting('lock_timeout'), ';', ("+budgetSQL+"))", nil)
		if err != nil {
			return describe(op, ctx, false, c, err)
		}
		restore, text, _ = strings.Cut(text, ";")
		if b, err = parseBudget(text, start); err != nil {
			return fmt.Errorf("alock: %s: %w", op, err)
		}
	}
	slice := shortSlice()
	for {
		wait := time.Duration(0)
		if restore != "" {
			wait = slice
			if deadline, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(deadline))
			}
			if wait <= 0 { // the deadline has passed; its timer is about to fire
				<-ctx.Done()
				return fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
			}
			var over bool
			if wait, over = b.bound(wait); over {
				return fmt.Errorf("alock: %s: %w", op, b.err)
			}
		}
		sql := xactLockSQL(m, tags, wait, restore)
		var cancelled bool
		var err error
		if wait > 0 {
			// A slice ends by its own lock_timeout, as takeInSlices's do: run
			// would abort it after CleanupTimeout, as it cannot cancel it,
			// and a slice that waits for the server's deadlock check
			// (deadlock_timeout, 1 s by default) can be longer; the abort
			// closes the connection, and the transaction with it.
			err = c.Exec(context.WithoutCancel(ctx), sql, nil)
		} else {
			cancelled, err = run(ctx, c, interrupt, func(q context.Context) error { return c.Exec(q, sql, nil) })
		}
		if err == nil {
			return nil // granted, even if as ctx ended: it cannot be given back
		}
		rerr := rollbackTx(ctx, c)
		sliceOver := wait > 0 && SQLState(err) == stateLockTimeout
		switch {
		case rerr != nil:
			return fmt.Errorf("alock: %s: %w; the transaction is aborted (roll it back): %w", op, err, rerr)
		case sliceOver && ctx.Err() == nil:
			if slice, err = nextSlice(ctx, c, tags); err != nil {
				return fmt.Errorf("alock: %s: %w", op, err)
			}
			continue
		case sliceOver:
			return fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
		}
		return describe(op, ctx, cancelled, c, err)
	}
}

// TryLockTx takes every tag in mode m until the end of c's transaction, or
// none, without waiting: SAVEPOINT, the tries, then RELEASE SAVEPOINT if all
// were taken or ROLLBACK TO SAVEPOINT (which releases them) if not.
func TryLockTx(ctx context.Context, c Conn, m Mode, tags []Tag, label func() string) (bool, error) {
	op := operation{"try lock in transaction", label}
	if c == nil {
		return false, fmt.Errorf("alock: %s: %w", op, errNilConn)
	}
	tags = distinct(tags)
	if err := checkTx(ctx, c, op, tags); err != nil || len(tags) == 0 {
		return err == nil, err
	}
	if _, err := run(ctx, c, finish, func(q context.Context) error {
		return c.Exec(q, "SAVEPOINT "+txSavepoint, nil)
	}); err != nil {
		return false, describe(op, ctx, false, c, err)
	}
	st := build("SELECT concat(", "pg_try_advisory_xact_lock"+m.suffix(), "::int, ", "::int)", tags, false, nil)
	var flags string
	cancelled, err := run(ctx, c, interrupt, func(q context.Context) (err error) {
		flags, err = c.QueryText(q, st.sql, st.args)
		return err
	})
	_, ok := parseFlags(flags, len(tags))
	if err == nil && ok && !strings.Contains(flags, "0") {
		_, err = run(ctx, c, finish, func(q context.Context) error {
			return c.Exec(q, "RELEASE SAVEPOINT "+txSavepoint, nil)
		})
		if err == nil {
			return true, nil
		}
	}
	if rerr := rollbackTx(ctx, c); rerr != nil {
		return false, fmt.Errorf("alock: %s: %w; the transaction is aborted (roll it back)", op, errors.Join(err, rerr))
	}
	if err != nil {
		return false, describe(op, ctx, cancelled, c, err)
	}
	if !ok {
		return false, fmt.Errorf("alock: %s: unexpected result %q for %d ids", op, flags, len(tags))
	}
	return false, nil
}

// checkTx refuses to take transaction locks outside a transaction block,
// where they would end with the statement.
func checkTx(ctx context.Context, c Conn, op operation, tags []Tag) error {
	switch c.TxStatus() {
	case 'I':
		return fmt.Errorf("alock: %s: %w: a transaction lock would end with its statement; begin a transaction first", op, ErrNoTransaction)
	case 'E':
		return fmt.Errorf("alock: %s: the transaction is aborted; roll it back first", op)
	}
	if len(tags) > MaxIDs {
		return fmt.Errorf("alock: %s: %w (%d given)", op, ErrTooManyIDs, len(tags))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	return nil
}

// rollbackTx undoes a failed transaction-lock statement: the transaction
// locks it took go with the savepoint, and the transaction is usable again.
func rollbackTx(ctx context.Context, c Conn) error {
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	_, err := run(cctx, c, finish, func(q context.Context) error {
		return c.Exec(q, "ROLLBACK TO SAVEPOINT "+txSavepoint+"; RELEASE SAVEPOINT "+txSavepoint, nil)
	})
	return err
}

// xactLockSQL is the one-round-trip statement of LockTx, with the keys as
// literals (integers only) so that the simple protocol can carry several
// statements. They are quoted and cast: a bare -9223372036854775808 would
// be read as minus a numeric. With wait > 0 the server's lock_timeout is set to wait for the
// locks and then back to restore.
func xactLockSQL(m Mode, tags []Tag, wait time.Duration, restore string) string {
	var b strings.Builder
	b.WriteString("SAVEPOINT " + txSavepoint + "; SELECT ")
	if wait > 0 {
		b.WriteString("set_config('lock_timeout', '" + strconv.FormatInt(max(wait.Milliseconds(), 1), 10) + "ms', true), ")
	}
	for i, t := range tags {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("pg_advisory_xact_lock" + m.suffix() + "(")
		if t.IsPair() {
			k1, k2 := t.Pair()
			b.WriteString("'" + strconv.Itoa(int(k1)) + "'::int4, '" + strconv.Itoa(int(k2)) + "'::int4")
		} else {
			b.WriteString("'" + strconv.FormatInt(t.Key(), 10) + "'::int8")
		}
		b.WriteString(")")
	}
	if wait > 0 {
		b.WriteString(", set_config('lock_timeout', " + quoteLiteral(restore) + ", true)")
	}
	b.WriteString("; RELEASE SAVEPOINT " + txSavepoint)
	return b.String()
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
