package main

import (
	"context"
	"errors"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
)

// errConflict means that the lock was held elsewhere and alock run was told
// not to wait (longer).
var errConflict = errors.New("alock: the lock is held elsewhere")

// waiter connects and takes the lock of `alock run`, giving up when one of
// the forwarded signals arrives.
type waiter struct {
	opts   *runOptions
	sigs   <-chan os.Signal
	signal os.Signal // the signal that stopped the wait, if any
}

// lock opens a Session with cfg and takes the ids on it as the options say.
// It returns the Session (nil if it could not open one, else to be closed
// by the caller) and the Lock; the error is errConflict if the lock is
// held elsewhere. If a signal arrives first, w.signal is set and nothing is
// held.
func (w *waiter) lock(ctx context.Context, cfg *pgx.ConnConfig) (*alock.Session, *alock.Lock, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case w.signal = <-w.sigs:
			cancel()
		case <-stopped:
		}
	}()
	s, l, err := w.open(ctx, cfg)
	close(stopped)
	<-done
	if w.signal != nil && err == nil { // the signal came as the lock was granted
		closeSession(s)
		return nil, l, nil
	}
	return s, l, err
}

// open connects the Session and acquires its Lock.
func (w *waiter) open(ctx context.Context, cfg *pgx.ConnConfig) (*alock.Session, *alock.Lock, error) {
	s, err := alock.OpenConfig(ctx, cfg, &alock.SessionOptions{Fencing: w.opts.fencing})
	if err != nil {
		return nil, nil, relabel("alock: connect: ", err)
	}
	l := s.NewExclusive(w.opts.ids...)
	if w.opts.share {
		l = s.NewShare(w.opts.ids...)
	}
	if err := w.acquire(ctx, l); err != nil {
		return s, l, err
	}
	return s, l, nil
}

// acquire takes l without waiting (-n, -w 0), for at most -w, or for as
// long as it takes; a wait that ends by -w or by the session's
// lock_timeout is errConflict.
func (w *waiter) acquire(ctx context.Context, l *alock.Lock) error {
	o := w.opts
	if o.noWait || (o.wait.set && o.wait.d == 0) {
		ok, err := l.TryAcquire(ctx)
		if err == nil && !ok {
			err = errConflict
		}
		return wrapAcquire(err)
	}
	wctx := ctx
	if o.wait.set {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.wait.d)
		defer cancel()
	}
	err := l.Acquire(wctx)
	// A wait given up, by -w or by the session's own lock_timeout (set
	// with PGOPTIONS, say), is a lock held elsewhere too.
	if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, alock.ErrLockTimeout)) {
		return errConflict
	}
	return wrapAcquire(err)
}

// wrapAcquire says that err happened while taking the lock.
func wrapAcquire(err error) error {
	if err == nil || errors.Is(err, errConflict) {
		return err
	}
	return relabel("alock: take the lock: ", err)
}
