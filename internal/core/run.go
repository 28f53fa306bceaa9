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

// How run reacts when ctx ends while the statement runs.
const (
	interrupt = true  // cancel the statement (a lock wait)
	finish    = false // let it finish within CleanupTimeout (clean-up work)
)

// run executes stmt on c so that the end of ctx never makes the driver close
// the session.
//
// stmt gets a context that ctx's end does not cancel (drivers close the
// connection on cancellation). When ctx ends first and cancel is interrupt,
// run sends the server a cancel request and waits until both the statement
// has ended and the server has taken the request: a cancel that lands late
// then finds the session idle, where PostgreSQL ignores it, and cannot hit a
// later statement. While the statement goes on it repeats the request every
// cancelRetry. If a request cannot be delivered, or the statement runs on
// for CleanupTimeout after ctx ended, run aborts: it cancels stmt's
// context, which makes the driver close the connection, and closes the
// session. A Conn that cannot send cancel requests lets the statement run
// on within that bound. cancelled reports whether a cancel was sent; the
// statement may still have succeeded (it raced the cancel).
//
// A ctx that can never end costs nothing: no goroutine, timer or channel.
func run(ctx context.Context, c Conn, cancel bool, stmt func(context.Context) error) (cancelled bool, err error) {
	if ctx.Done() == nil {
		return false, stmt(ctx)
	}
	quiet, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	var aborted bool
	ended := make(chan struct{})
	watched := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(watched)
		bound, stopBound := context.WithTimeout(quiet, CleanupTimeout)
		defer stopBound()
		if !cancel || !c.CanCancel() {
			select {
			case <-ended:
			case <-bound.Done():
				aborted = true
				abort()
			}
			return
		}
		cancelled = true
		aborted = !cancelUntilEnded(bound, c, ended)
		if aborted {
			abort()
		}
	})
	err = stmt(quiet)
	close(ended)
	if stop() {
		return false, err
	}
	<-watched
	if aborted {
		c.Close(context.WithoutCancel(ctx))
	}
	return cancelled, err
}

// cancelRetry is how often run repeats a cancel request while the statement
// goes on: PostgreSQL ignores one that arrives while the backend is between
// the messages of a statement, before it starts to execute.
const cancelRetry = 100 * time.Millisecond

// cancelUntilEnded sends cancel requests until the statement has ended, each
// one awaited, so none is still in flight when run returns. It returns false
// if a request could not be delivered or bound ended first.
func cancelUntilEnded(bound context.Context, c Conn, ended <-chan struct{}) bool {
	retry := time.NewTicker(cancelRetry)
	defer retry.Stop()
	for {
		if c.Cancel(bound) != nil {
			return false
		}
		select {
		case <-ended:
			return true
		case <-bound.Done():
			return false
		case <-retry.C:
		}
	}
}

// cleanupContext is the context for clean-up after a failure: ctx's values,
// no cancellation, CleanupTimeout.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}

// CleanupContext is cleanupContext for the front ends.
func CleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return cleanupContext(ctx)
}

// queryText runs st on c through run and returns its text.
func queryText(ctx context.Context, c Conn, cancel bool, st statement) (string, error) {
	var text string
	_, err := run(ctx, c, cancel, func(q context.Context) (err error) {
		text, err = c.QueryText(q, st.sql, st.args)
		return err
	})
	return text, err
}
