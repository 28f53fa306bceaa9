package core

import (
	"container/list"
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// Gate gives one connection to one user at a time, in the order they came.
// A user that only waits on the connection (a lock wait, the watchdog's
// parked read) declares itself preemptible: when another user comes, its
// preempt function is called, and it ends its statement, exits and queues
// again. So an operation never waits behind another goroutine's blocked
// wait, only behind statements that run.
//
// One Lock of the connection at a time may wait on the server (the wait
// slot); the others poll with try statements, each of which preempts the
// slot's wait for one round trip.
type Gate struct {
	mu       sync.Mutex
	busy     bool
	preempt  func()               // the current user's, while it only waits
	queue    list.List            // of *gateWaiter, first come first
	slot     atomic.Pointer[Lock] // the Lock that may wait on the server, nil for none
	closeErr error                // set by Shut: Enter fails with it
	drained  chan struct{}

	batch   []*batchOp // submitted, not yet taken by a leader
	spare   []*batchOp // a taken batch's slice, given back empty, for batch
	leading bool       // a leader will take the batch

	scratch batchScratch // the leader's, reused from batch to batch (see runBatch)
}

type gateWaiter struct {
	ready chan struct{} // closed when the gate is handed over, or shut
	err   error         // set before ready closes if the gate was shut
}

// Enter waits for the connection until ctx ends, preempting a user that
// only waits. It fails with the gate's close error once it is shut.
func (g *Gate) Enter(ctx context.Context) error {
	g.mu.Lock()
	if g.closeErr != nil {
		g.mu.Unlock()
		return g.closeErr
	}
	if !g.busy && g.queue.Len() == 0 {
		g.busy = true
		g.mu.Unlock()
		return nil
	}
	w := &gateWaiter{ready: make(chan struct{})}
	elem := g.queue.PushBack(w)
	g.preemptLocked()
	g.mu.Unlock()
	select {
	case <-w.ready:
		return w.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w.ready: // handed over meanwhile: pass it on
		if w.err == nil {
			g.exitLocked()
		}
	default:
		g.queue.Remove(elem)
	}
	return ctxErr(ctx)
}

// EnterIdle enters only if nobody uses the connection or waits for it, and
// the gate is not shut.
func (g *Gate) EnterIdle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy || g.queue.Len() > 0 || g.closeErr != nil {
		return false
	}
	g.busy = true
	return true
}

// Exit hands the connection to the first waiter, or frees it.
func (g *Gate) Exit() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.exitLocked()
}

func (g *Gate) exitLocked() {
	g.preempt = nil
	if front := g.queue.Front(); front != nil {
		g.queue.Remove(front)
		close(front.Value.(*gateWaiter).ready) // still busy: handed over
		return
	}
	g.busy = false
	if g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
}

// Preemptible declares that the current user only waits: preempt is called,
// once, as soon as another user comes (at once if one already waits or the
// gate is shut). preempt must not block. The declaration ends at Exit or
// when withdraw is called.
func (g *Gate) Preemptible(preempt func()) (withdraw func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.queue.Len() > 0 || g.closeErr != nil {
		preempt()
		return func() {}
	}
	g.preempt = preempt
	return func() {
		g.mu.Lock()
		g.preempt = nil
		g.mu.Unlock()
	}
}

func (g *Gate) preemptLocked() {
	if f := g.preempt; f != nil {
		g.preempt = nil
		f()
	}
}

// TakeSlot makes owner the one user that may wait on the server, and
// reports whether it is (it may already be). FreeSlot gives the slot back.
// The slot is an atomic of its own, off the gate's mutex: a Locker reads
// it for every hold it places (SlotFree).
func (g *Gate) TakeSlot(owner *Lock) bool {
	return g.slot.CompareAndSwap(nil, owner) || g.slot.Load() == owner
}

// SlotFree reports whether nobody waits on the server (the wait slot is
// free).
func (g *Gate) SlotFree() bool { return g.slot.Load() == nil }

// HasSlot reports whether owner has the wait slot.
func (g *Gate) HasSlot(owner *Lock) bool { return g.slot.Load() == owner }

// FreeSlot gives back the wait slot if owner has it.
func (g *Gate) FreeSlot(owner *Lock) { g.slot.CompareAndSwap(owner, nil) }

// Shut makes every later Enter fail with cause, fails the queued ones,
// preempts the current user, and waits until the connection is free, or ctx
// ends (then it returns false and the user is still inside). After a true
// the caller owns the connection for good.
func (g *Gate) Shut(ctx context.Context, cause error) bool {
	g.mu.Lock()
	if g.closeErr == nil {
		g.closeErr = cause
	}
	for e := g.queue.Front(); e != nil; e = g.queue.Front() {
		w := g.queue.Remove(e).(*gateWaiter)
		w.err = g.closeErr
		close(w.ready)
	}
	g.preemptLocked()
	g.mu.Unlock()
	return g.EnterShut(ctx)
}

// EnterShut waits, until ctx ends, for the connection of a shut gate.
func (g *Gate) EnterShut(ctx context.Context) bool {
	for {
		g.mu.Lock()
		if !g.busy {
			g.busy = true
			g.mu.Unlock()
			return true
		}
		if g.drained == nil {
			g.drained = make(chan struct{})
		}
		drained := g.drained
		g.mu.Unlock()
		select {
		case <-drained:
		case <-ctx.Done():
			return false
		}
	}
}

// submit adds op to the batch and reports whether the caller must lead it.
func (g *Gate) submit(op *batchOp) (lead bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.batch = append(g.batch, op)
	if g.leading {
		return false
	}
	g.leading = true
	return true
}

// takeBatch takes the batch for a leader's round. When there is none the
// leadership ends, and the next submit elects a new leader. done, if not
// nil, is the leader's previous batch, every op of which has been
// signalled: its slice is kept for a later batch to fill, so that
// submitting does not allocate.
func (g *Gate) takeBatch(done []*batchOp) []*batchOp {
	clear(done)
	g.mu.Lock()
	defer g.mu.Unlock()
	if done != nil {
		g.spare = done[:0]
	}
	ops := g.batch
	if len(ops) == 0 {
		g.leading = false
		return nil
	}
	g.batch, g.spare = g.spare, nil
	return ops
}

// handOff passes the leadership to the goroutine of the first pending op,
// which it takes out of the batch and wakes with lead set; with none
// pending the leadership ends.
func (g *Gate) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.batch) == 0 {
		g.leading = false
		return
	}
	op := g.batch[0]
	g.batch = g.batch[1:]
	op.lead = true
	op.signal()
}

// withdraw takes op out of the batch if no leader has taken it yet, and
// reports whether it did.
func (g *Gate) withdraw(op *batchOp) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.batch, op)
	if i < 0 {
		return false
	}
	g.batch = slices.Delete(g.batch, i, i+1)
	return true
}

// resubmit puts back, first, the op of a goroutine handed the leadership.
func (g *Gate) resubmit(op *batchOp) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.batch = append([]*batchOp{op}, g.batch...)
}
