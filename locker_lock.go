package alock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pgalock/alock/internal/core"
)

// lockerLock is the state of a Lock made by a Locker: its count, and the
// hold that carries it (its place in the in-process table and a core Lock
// on one of the Locker's sessions).
type lockerLock struct {
	lk   *Locker
	l    *Lock
	tags []core.Tag
	turn *core.Turn // held by the goroutine that takes or gives back the hold

	// cores are the Lock's core Locks, one per session it has used (built
	// once: they hold the statements); guarded by turn.
	cores map[*lockerSession]*core.Lock
	// req is the request of the current or latest hold, reused: a Lock
	// makes one request at a time, given back (left or withdrawn) before
	// the next; guarded by turn.
	req tableRequest

	mu        sync.Mutex
	count     int
	releasing bool
	hold      *lockerHold     // nil while not held
	latest    *core.Lock      // the core Lock of the latest hold, nil before the first
	never     <-chan struct{} // Lost before the first hold: never closed
}

// lockerHold is one hold: from the count going to one to its going to zero.
type lockerHold struct {
	req     *tableRequest
	session *lockerSession
	core    *core.Lock
}

func (lk *Locker) newLock(m Mode, ids []ID) *Lock {
	l := &Lock{mode: m, ids: slices.Clone(ids), tracer: lk.opts.Session.Tracer}
	l.locker = &lockerLock{
		lk: lk, l: l, tags: core.Distinct(tags(ids)),
		turn: core.NewTurn(), never: make(chan struct{}),
	}
	return l
}

// current returns the hold, nil if not held.
func (k *lockerLock) current() *lockerHold {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hold
}

// countOnly counts one more acquisition of a held Lock, without the
// server; done is false when the Lock must be taken.
func (k *lockerLock) countOnly(op string) (done bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.count == 0 || k.releasing {
		return false, nil
	}
	if !k.hold.core.Locked() {
		return true, lostError(k.l.ids, fmt.Errorf("alock: %s %s: %w", op, k.l, k.hold.gone()))
	}
	k.count++
	return true, nil
}

// gone says why a hold's session is gone.
func (h *lockerHold) gone() error { return orLost(h.session.Err()) }

func (k *lockerLock) acquire(ctx context.Context, try bool) (bool, error) {
	op := "acquire"
	if try {
		op = "try acquire"
	}
	if done, err := k.countOnly(op); done {
		return err == nil, err
	}
	k.lk.waiting.Add(1)
	start := time.Now()
	defer func() {
		k.lk.waiting.Add(-1)
		k.lk.waitNanos.Add(int64(time.Since(start)))
	}()
	got, err := true, error(nil)
	if try {
		got, err = k.turn.TakeUnlessWaiting(ctx)
	} else {
		err = k.turn.Take(ctx)
	}
	if err != nil || !got {
		if err != nil {
			err = fmt.Errorf("alock: %s %s: %w", op, k.l, err)
		}
		return false, err
	}
	defer k.turn.Give()
	if !try {
		k.turn.SetWaiting(true)
		defer k.turn.SetWaiting(false)
	}
	if done, err := k.countOnly(op); done {
		return err == nil, err
	}
	h, ok, err := k.take(ctx, op, try)
	if !ok || err != nil {
		return false, err
	}
	k.mu.Lock()
	k.count, k.hold, k.latest = 1, h, h.core
	k.mu.Unlock()
	k.lk.held.Add(1)
	k.lk.acquisitions.Add(1)
	return true, nil
}

// take waits for the ids in the process, then takes them on a session.
func (k *lockerLock) take(ctx context.Context, op string, try bool) (*lockerHold, bool, error) {
	lk := k.lk
	k.req = newRequest(k.l.mode, k.tags)
	req := &k.req
	lk.mu.Lock()
	if lk.closed {
		lk.mu.Unlock()
		return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, errLockerClosed)
	}
	lk.table.request(req)
	granted := isClosed(req.granted)
	if try && !granted { // held or awaited by another Lock of the process
		lk.table.withdraw(req)
		lk.mu.Unlock()
		return nil, false, nil
	}
	var picked *lockerSession // granted at once: choose the session in the same step
	if granted {
		if picked = lk.freeSession(); picked != nil {
			lk.claim(picked, false)
		}
	}
	lk.mu.Unlock()
	if !granted {
		if err := lk.table.await(ctx, &lk.mu, req); err != nil {
			return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, err)
		}
	}
	for attempt := 1; ; attempt++ {
		h, ok, retry, err := k.takeOnSession(ctx, op, try, !try || attempt < maxTryAttempts, req, picked)
		picked = nil
		if !retry {
			return h, ok, err
		}
		// The session was lost while the goroutine waited on it (or
		// tried), holding nothing of it: the wait (or try) goes on, on
		// another session, unless the Locker closed or ctx ended; req is
		// still granted.
		lk.mu.Lock()
		closed := lk.closed
		lk.mu.Unlock()
		if closed {
			k.leave(&lockerHold{req: req})
			return nil, false, err
		}
		if err := core.Sleep(ctx, 10*time.Millisecond); err != nil {
			k.leave(&lockerHold{req: req})
			return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, err)
		}
	}
}

// maxTryAttempts bounds the sessions a TryAcquire tries on when they are
// lost under it: a try does not wait for ever on sessions that keep dying.
const maxTryAttempts = 3

// takeOnSession takes the ids, granted in the process by req, on a session.
// On failure it gives back req, unless the failure was a session lost
// (before the Lock held anything of it) while ctx is alive and moveOn
// allows another attempt: then req stays granted and retry is true, for
// the caller to try again. An Acquire always moves on, a TryAcquire up to
// maxTryAttempts sessions. picked, if not nil, is the session to try on,
// already chosen and counted.
func (k *lockerLock) takeOnSession(ctx context.Context, op string, try, moveOn bool, req *tableRequest, picked *lockerSession) (h *lockerHold, ok, retry bool, err error) {
	h = &lockerHold{req: req, session: picked}
	if picked == nil {
		if retry, err = k.sessionFor(ctx, op, false, moveOn, h); err != nil {
			return nil, false, retry, err
		}
	}
	h.core = k.coreOn(h.session)
	ok, err = h.core.TryAcquire(ctx)
	if err == nil && !ok && !try {
		// Held elsewhere: wait, on a session where no other Lock waits;
		// if there is none, beside another wait until one comes free.
		k.lk.unload(h.session)
		for {
			if retry, err = k.sessionFor(ctx, op, true, moveOn, h); err != nil {
				return nil, false, retry, err
			}
			h.core = k.coreOn(h.session)
			wctx, m := k.lk.watch(ctx, h.session, h.core)
			err = h.core.Acquire(wctx)
			ok = err == nil
			// Go on only if the wait ended because it was moved, not on
			// an error of its own that came as it was being moved.
			if moved := k.lk.unwatch(h.session, m); ok || !moved || !errors.Is(err, errMoved) {
				break
			}
			if ctx.Err() != nil { // moved as ctx ended: say why it ended
				err = fmt.Errorf("alock: %s %s: %w", op, k.l, core.CtxErr(ctx))
				break
			}
			k.lk.unload(h.session) // moved: choose again
		}
	}
	if ok && err == nil {
		return h, true, false, nil
	}
	if moveOn && errors.Is(err, ErrLost) && ctx.Err() == nil {
		k.lk.unload(h.session)
		return nil, false, true, err
	}
	k.leave(h)
	return nil, false, false, lostError(k.l.ids, err)
}

// sessionFor chooses h's session (see Locker.session), for a hold or a
// wait. If that fails, h's place in the process is given back, unless the
// server ended the session opened for it and moveOn allows another
// attempt: then retry is true, as for a session lost before it held
// anything, and req stays granted.
func (k *lockerLock) sessionFor(ctx context.Context, op string, wait, moveOn bool, h *lockerHold) (retry bool, err error) {
	if h.session, err = k.lk.session(ctx, wait); err == nil {
		return false, nil
	}
	err = fmt.Errorf("alock: %s %s: %w", op, k.l, err)
	if moveOn && endedByServer(err) && ctx.Err() == nil {
		return true, err
	}
	k.leave(h)
	return false, err
}

// endedByServer reports whether err is an Open's whose connection the
// server ended, or that was ended once established: terminated
// (pg_terminate_backend), shut down, or not accepting connections yet. A
// session lost so, before it held anything, is moved on from as a lost one
// is: an Acquire tries another, and a TryAcquire up to maxTryAttempts. A
// server that cannot be reached, or refuses the login, fails the
// acquisition.
func endedByServer(err error) bool {
	var ended *openEndedError
	if errors.As(err, &ended) {
		return true
	}
	switch core.SQLState(err) {
	case "57P01", "57P02", "57P03":
		return true
	}
	return false
}

// coreOn returns the Lock's core Lock on s; the caller has the turn.
func (k *lockerLock) coreOn(s *lockerSession) *core.Lock {
	c := k.cores[s]
	if c == nil {
		if k.cores == nil {
			k.cores = make(map[*lockerSession]*core.Lock)
		}
		for old := range k.cores { // forget the sessions that ended
			if old.lost() {
				delete(k.cores, old)
			}
		}
		c = s.newCoreLock(k.l.mode, k.l.ids, true) // under the Lock's turn
		k.cores[s] = c
	}
	return c
}

// leave gives back a hold's place in the process and its load on its
// session.
func (k *lockerLock) leave(h *lockerHold) {
	k.lk.mu.Lock()
	if h.session != nil {
		h.session.load--
	}
	k.lk.table.release(h.req)
	k.lk.mu.Unlock()
}

// lostChan returns the Lost channel of the current or latest hold (one that
// is never closed before the first).
func (k *lockerLock) lostChan() <-chan struct{} {
	k.mu.Lock()
	latest := k.latest
	k.mu.Unlock()
	if latest == nil {
		return k.never
	}
	return latest.Lost()
}
