package locktest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgalock/alock"
)

// errCause is the cause given to the contexts of the cause tests.
var errCause = errors.New("the caller's cause")

// causeCase is one way a context with a cause ends.
type causeCase struct {
	name string
	// ctx returns a context that ends with errCause: at once when pre,
	// else within about 100 ms.
	ctx func(pre bool) (context.Context, context.CancelFunc)
}

var causeCases = []causeCase{
	{"WithCancelCause", func(pre bool) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancelCause(context.Background())
		if pre {
			cancel(errCause)
		} else {
			time.AfterFunc(100*time.Millisecond, func() { cancel(errCause) })
		}
		return ctx, func() { cancel(nil) }
	}},
	{"WithTimeoutCause", func(pre bool) (context.Context, context.CancelFunc) {
		d := 100 * time.Millisecond
		if pre {
			d = 0
		}
		return context.WithTimeoutCause(context.Background(), d, errCause)
	}},
}

// expectCtxErr fails the test unless err matches both ctx.Err() and its
// cause with errors.Is.
func expectCtxErr(t *testing.T, what string, ctx context.Context, err error) {
	t.Helper()
	if ctx.Err() == nil || !errors.Is(err, ctx.Err()) || !errors.Is(err, errCause) {
		t.Fatalf("%s: %v; want an error matching ctx.Err() (%v) and its cause", what, err, ctx.Err())
	}
}

// contextCause checks that Acquire (blocked, and with a context already
// done) and TryAcquire return errors matching both ctx.Err() and the
// context's cause, and leave nothing held.
func contextCause(t *testing.T, e *env) {
	for _, c := range causeCases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, e.b)
			s, other := e.session(), e.other()
			e.exec(other, "SELECT pg_advisory_lock(2)")
			l := s.NewLock(alock.Exclusive, alock.Key(1), alock.Key(2))

			ctx, cancel := c.ctx(false)
			err := l.Acquire(ctx)
			cancel()
			expectCtxErr(t, "blocked Acquire", ctx, err)
			e.expectHolds(s)

			ctx, cancel = c.ctx(true)
			defer cancel()
			expectCtxErr(t, "Acquire with a done context", ctx, l.Acquire(ctx))
			ok, err := l.TryAcquire(ctx)
			if ok {
				t.Fatal("TryAcquire with a done context succeeded")
			}
			expectCtxErr(t, "TryAcquire with a done context", ctx, err)
			e.expectHolds(s)
			e.expectUsable(s)
		})
	}
}

// txContextCause is contextCause for LockTx: blocked, and with a context
// already done; the transaction stays usable and holds nothing.
func txContextCause(t *testing.T, e *env, b TxBackend) {
	begin, pid := b.Begin(t, e.dsn)
	other := e.other()
	e.exec(other, "SELECT pg_advisory_lock(2)")
	for _, c := range causeCases {
		for _, pre := range []bool{false, true} {
			txCauseOnce(t, e, begin(), pid, c, pre)
		}
	}
}

// txCauseOnce runs one LockTx of txContextCause in tx, and rolls tx back
// (also when the test fails: database/sql cannot close a connection with an
// open transaction).
func txCauseOnce(t *testing.T, e *env, tx Tx, pid uint32, c causeCase, pre bool) {
	defer func() { _ = tx.Rollback() }()
	ctx, cancel := c.ctx(pre)
	err := tx.LockTx(ctx, alock.Key(1), alock.Key(2))
	cancel()
	expectCtxErr(t, c.name+" LockTx", ctx, err)
	if got := Holds(t, e.dsn, pid); len(got) != 0 {
		t.Fatalf("%s LockTx: the transaction holds %v", c.name, got)
	}
	if err := tx.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("transaction unusable after LockTx: %v", err)
	}
}
