package core

import (
	"context"
	"time"
)

// CleanupTimeout bounds the work done after the caller's context has ended:
// delivering a cancel request, waiting for the cancelled statement, and the
// unlocks that give back what a failed acquisition took. A session that
// cannot be brought back to a known state within it is closed.
const CleanupTimeout = 5 * time.Second

// run executes stmt on c so that cancelling ctx never closes the session.
//
// stmt gets a context that is never cancelled (drivers close the connection
// on cancellation). When ctx ends first, run sends the server a cancel
// request and waits until both the statement has ended and the server has
// taken the request: a cancel that lands late then finds the session idle,
// where PostgreSQL ignores it, and cannot hit a later statement. If the
// request cannot be delivered, or the statement outlives it by
// CleanupTimeout, run aborts the session. cancelled reports whether a cancel
// was sent; the statement may still have succeeded (it raced the cancel).
func run(ctx context.Context, c Conn, stmt func(context.Context) error) (cancelled bool, err error) {
	quiet := context.WithoutCancel(ctx)
	if ctx.Done() == nil {
		return false, stmt(quiet)
	}
	ended := make(chan struct{})
	watched := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(watched)
		bound, cancel := context.WithTimeout(quiet, CleanupTimeout)
		defer cancel()
		if c.Cancel(bound) != nil {
			c.Abort()
			return
		}
		select {
		case <-ended:
		case <-bound.Done():
			c.Abort()
		}
	})
	err = stmt(quiet)
	close(ended)
	if stop() {
		return false, err
	}
	<-watched
	return true, err
}

// cleanupContext is the context for clean-up work after ctx has ended or
// failed: ctx's values, no cancellation, CleanupTimeout.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}
