package core

import (
	"context"
	"errors"
)

// A savepoint protects the caller's transaction block from a failed
// acquisition: without one, a lock_timeout, deadlock or cancel would abort
// the whole transaction and leave no way to check what the statement took.
// Outside a transaction block it does nothing and costs nothing.
type savepoint struct{ active bool }

const savepointName = "alock_acquire"

// beginSavepoint starts a savepoint if c is in a transaction block, and
// refuses to work in a failed one.
func beginSavepoint(ctx context.Context, c Conn) (savepoint, error) {
	switch c.TxStatus() {
	case 'T':
		_, err := run(ctx, c, finish, func(q context.Context) error {
			return c.Exec(q, "SAVEPOINT "+savepointName, nil)
		})
		return savepoint{active: err == nil}, err
	case 'E':
		return savepoint{}, errors.New("the session's transaction is aborted; roll it back first")
	}
	return savepoint{}, nil
}

// release ends a savepoint whose work is kept.
func (sp savepoint) release(ctx context.Context, c Conn) error {
	return sp.exec(ctx, c, "RELEASE SAVEPOINT "+savepointName)
}

// rollback undoes a failed statement's transaction state (session locks are
// not affected) and ends the savepoint.
func (sp savepoint) rollback(ctx context.Context, c Conn) error {
	return sp.exec(ctx, c, "ROLLBACK TO SAVEPOINT "+savepointName+"; RELEASE SAVEPOINT "+savepointName)
}

func (sp savepoint) exec(ctx context.Context, c Conn, sql string) error {
	if !sp.active {
		return nil
	}
	_, err := run(ctx, c, finish, func(q context.Context) error { return c.Exec(q, sql, nil) })
	return err
}
