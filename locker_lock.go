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
	turn chan struct{} // held by the goroutine that takes or gives back the hold

	// cores are the Lock's core Locks, one per session it has used (built
	// once: they hold the statements); guarded by turn.
	cores map[*lockerSession]*core.Lock

	mu        sync.Mutex
	count     int
	releasing bool
	waiting   bool            // the goroutine that has the turn acquires without trying
	hold      *lockerHold     // nil while not held
	lost      <-chan struct{} // the Lost channel of the latest hold
}

// lockerHold is one hold: from the count going to one to its going to zero.
type lockerHold struct {
	req     *tableRequest
	session *lockerSession
	core    *core.Lock
	unload  func()
}

func (lk *Locker) newLock(m Mode, ids []ID) *Lock {
	l := &Lock{mode: m, ids: slices.Clone(ids), tracer: lk.opts.Session.Tracer}
	l.locker = &lockerLock{
		lk: lk, l: l, tags: distinctTags(tags(ids)),
		turn: make(chan struct{}, 1), lost: make(chan struct{}),
	}
	return l
}

// distinctTags drops repeated tags, keeping the first order.
func distinctTags(ts []core.Tag) []core.Tag {
	out := ts[:0:0]
	for _, t := range ts {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
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
func (h *lockerHold) gone() error {
	if err := h.session.Err(); err != nil {
		return err
	}
	return ErrLost
}

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
	if got, err := k.takeTurn(ctx, try); err != nil || !got {
		if err != nil {
			err = fmt.Errorf("alock: %s %s: %w", op, k.l, err)
		}
		return false, err
	}
	defer func() { <-k.turn }()
	if !try {
		k.setWaiting(true)
		defer k.setWaiting(false)
	}
	if done, err := k.countOnly(op); done {
		return err == nil, err
	}
	h, ok, err := k.take(ctx, op, try)
	if !ok || err != nil {
		return false, err
	}
	k.mu.Lock()
	k.count, k.hold, k.lost = 1, h, h.core.Lost()
	k.mu.Unlock()
	k.lk.held.Add(1)
	k.lk.acquisitions.Add(1)
	return true, nil
}

// take waits for the ids in the process, then takes them on a session.
func (k *lockerLock) take(ctx context.Context, op string, try bool) (*lockerHold, bool, error) {
	lk := k.lk
	lk.mu.Lock()
	if lk.closed {
		lk.mu.Unlock()
		return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, errLockerClosed)
	}
	req := lk.table.request(k.l.mode, k.tags)
	lk.mu.Unlock()
	if try && !isClosed(req.granted) {
		lk.mu.Lock()
		lk.table.withdraw(req)
		lk.mu.Unlock()
		return nil, false, nil
	}
	if err := lk.table.await(ctx, lk.mu.Lock, lk.mu.Unlock, req); err != nil {
		return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, err)
	}
	for {
		h, ok, err := k.takeOnSession(ctx, op, try, req)
		// A session lost while the goroutine waited on it took nothing of
		// it: the wait goes on, on another session.
		if !errors.Is(err, ErrLost) || try || ctx.Err() != nil {
			return h, ok, err
		}
		lk.mu.Lock()
		closed := lk.closed
		lk.mu.Unlock()
		if closed {
			return h, ok, err
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			k.leave(&lockerHold{req: req})
			return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, err)
		}
	}
}

// takeOnSession takes the ids, granted in the process by req, on a session.
// On failure it gives back req, unless the failure was a session lost
// during an Acquire: then req stays granted, for the caller to try again.
func (k *lockerLock) takeOnSession(ctx context.Context, op string, try bool, req *tableRequest) (*lockerHold, bool, error) {
	h := &lockerHold{req: req}
	var err error
	if h.session, h.unload, err = k.lk.session(ctx); err != nil {
		k.leave(h)
		return nil, false, fmt.Errorf("alock: %s %s: %w", op, k.l, err)
	}
	h.core = k.coreOn(h.session)
	ok := true
	if try {
		ok, err = h.core.TryAcquire(ctx)
	} else {
		err = h.core.Acquire(ctx)
	}
	if ok && err == nil {
		return h, true, nil
	}
	if !try && errors.Is(err, ErrLost) && ctx.Err() == nil {
		h.unload()
		return nil, false, err
	}
	k.leave(h)
	return nil, false, lostError(k.l.ids, err)
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return core.CtxErr(ctx)
	}
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
		c = s.newCoreLock(k.l.mode, k.l.ids)
		k.cores[s] = c
	}
	return c
}

// leave gives back a hold's place in the process and on its session.
func (k *lockerLock) leave(h *lockerHold) {
	if h.unload != nil {
		h.unload()
	}
	k.lk.mu.Lock()
	k.lk.table.release(h.req)
	k.lk.mu.Unlock()
}

// lostChan returns the Lost channel of the current or latest hold (one that
// is never closed before the first).
func (k *lockerLock) lostChan() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost
}

// takeTurn waits for the Lock's turn until ctx ends; for a try it gives up
// (got false) as soon as the goroutine that has the turn is acquiring the
// Lock by waiting: a try never waits behind a blocked wait, even of its own
// Lock.
func (k *lockerLock) takeTurn(ctx context.Context, try bool) (got bool, err error) {
	var tick <-chan time.Time
	if try {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case k.turn <- struct{}{}:
			return true, nil
		case <-ctx.Done():
			return false, core.CtxErr(ctx)
		case <-tick:
			k.mu.Lock()
			waiting := k.waiting
			k.mu.Unlock()
			if waiting {
				return false, nil
			}
		}
	}
}

// setWaiting marks whether the goroutine that has the turn acquires by
// waiting.
func (k *lockerLock) setWaiting(on bool) {
	k.mu.Lock()
	k.waiting = on
	k.mu.Unlock()
}
