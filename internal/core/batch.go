package core

import (
	"context"
	"errors"
	"fmt"
)

// Batching: on a shared session (a Guard) the uncontended operations of
// many goroutines go to the server together. A try of all of a Lock's tags
// and the unlock of a last Release are each one batch op; the first
// goroutine to submit one leads: it waits for the session, takes every op
// submitted meanwhile, and sends them as one statement (unlocks first, then
// tries), so that throughput grows with the number of goroutines rather
// than with the number of connections. A try that does not get every tag
// gives back what it got, in a second statement of the same turn; an
// Acquire then waits as usual (see takeOrWait).
//
// Batching is used by guarded Locks without fencing (a Session is never in
// a transaction block).

// batchOp is one Lock's operation in a batch.
type batchOp struct {
	l      *Lock
	unlock bool
	tags   []Tag // an unlock's freed tags; a try's are l.tags
	first  int   // an unlock's first row
	ok     bool  // the try got every tag, or the unlock found every tag held
	err    error
	done   chan struct{} // the Lock's signal: sent once when the op has run, or when lead is set
	lead   bool          // set by a leader's hand-off: the op's goroutine leads
}

// newOp returns the Lock's batch op, reset, for one operation; the caller
// has the Lock's turn. A Lock has at most one op in flight, so it reuses
// one op and one signal channel (buffered, one send per submission: see
// signal) instead of making them for every operation.
func (l *Lock) newOp(unlock bool) *batchOp {
	if l.batch.done == nil {
		l.batch.done = make(chan struct{}, 1)
	}
	l.batch = batchOp{l: l, unlock: unlock, done: l.batch.done}
	return &l.batch
}

// signal tells op's goroutine that op has run or that it leads. It is the
// last touch of op by anyone but its goroutine, and happens once per
// submission, so it never blocks.
func (op *batchOp) signal() { op.done <- struct{}{} }

// batchScratch is what a leader's round fills and the next round reuses,
// so that a round does not allocate them: a session's batches have one
// leader at a time, which has the session (its gate) while it uses them.
type batchScratch struct {
	kinds []rowKind // of the round's batchRows
	tags  []Tag
	sent  map[holdKey]int
	used  []bool
}

// maxScratchMap bounds the rows of a sent map kept for the next round:
// clearing a map costs its capacity, which a rare huge batch would leave
// to every later round.
const maxScratchMap = 1024

// sentMap returns an empty map for the round's tries.
func (sc *batchScratch) sentMap() map[holdKey]int {
	if sc.sent == nil || len(sc.sent) > maxScratchMap {
		sc.sent = make(map[holdKey]int)
	} else {
		clear(sc.sent)
	}
	return sc.sent
}

// usedFlags returns n false flags.
func (sc *batchScratch) usedFlags(n int) []bool {
	if cap(sc.used) < n {
		sc.used = make([]bool, n)
	}
	sc.used = sc.used[:n]
	clear(sc.used)
	return sc.used
}

// batchable reports whether l's operations may be batched.
func (l *Lock) batchable() bool { return l.guard != nil && l.fence == "" && len(l.tags) > 0 }

// batched submits op (the Lock's, from newOp) and waits for its result;
// the caller has the Lock's turn, so no other operation of l runs
// meanwhile. The goroutine may be made to lead the session's batches
// meanwhile (see leadBatches). If ctx
// ends before a leader has taken op into a batch, op is withdrawn and
// fails with ctx's error; once taken, it runs. (An unlock's ctx never
// ends: a Release completes or closes the session.)
func (l *Lock) batched(ctx context.Context, op *batchOp) {
	g := l.guard.Gate()
	lead := g.submit(op)
	for {
		if lead {
			l.leadBatches(ctx, op)
		}
		if ended := ctx.Done(); ended == nil { // a ctx that cannot end (a Release's): a plain receive
			<-op.done
		} else {
			select {
			case <-op.done:
			case <-ended:
				if g.withdraw(op) {
					op.err = ctxErr(ctx)
					return
				}
				<-op.done
			}
		}
		if !op.lead {
			return
		}
		// Handed the leadership before op ran: lead, op first; or, if ctx
		// has ended meanwhile, pass it on.
		op.lead = false // its signal was received: the channel is empty again
		if ctx.Err() != nil {
			op.err = ctxErr(ctx)
			g.handOff()
			return
		}
		g.resubmit(op)
		lead = true
	}
}

// maxLeadRounds bounds the batches one goroutine leads in a row, and so the
// time its own caller waits for it: then it hands the leadership over.
const maxLeadRounds = 16

// leadBatches runs the session's batches, one statement each, for as long
// as operations keep coming: the leader goes on without a hand-over (each
// costs the next leader's wake-up, while the connection idles). After
// maxLeadRounds it hands the leadership to the goroutine of the first
// operation still pending. Between batches it leaves the gate, so other
// users of the session keep their place. own is the leader's own op, still
// pending, if any: if ctx ends while the leader waits for the session the
// first time, own is withdrawn (done, with ctx's error) and the leadership
// handed over.
func (l *Lock) leadBatches(ctx context.Context, own *batchOp) {
	g := l.guard.Gate()
	var prev []*batchOp // the previous round's ops, all signalled
	for round := 0; ; round++ {
		if round == maxLeadRounds {
			g.handOff()
			return
		}
		enter := context.Background()
		if round == 0 && own != nil {
			enter = ctx
		}
		if err := g.Enter(enter); err != nil {
			if enter.Err() != nil { // the leader's ctx, not the others'
				if g.withdraw(own) {
					own.err = ctxErr(enter)
					own.signal()
				}
				g.handOff()
				return
			}
			for ops := g.takeBatch(nil); len(ops) > 0; ops = g.takeBatch(nil) {
				for _, op := range ops {
					op.err = err
					op.signal()
				}
			}
			return
		}
		ops := g.takeBatch(prev)
		if len(ops) == 0 {
			l.exit()
			return
		}
		l.runBatch(ops)
		l.exit()
		for _, op := range ops {
			op.signal()
		}
		prev = ops
	}
}

// runBatch sends ops in one statement; the caller has the session.
func (l *Lock) runBatch(ops []*batchOp) {
	key := l.conn.Key()
	if l.conn.Closed() {
		forgetSession(key)
		for _, op := range ops {
			op.err = gone(l.conn)
		}
		return
	}
	sc := &l.guard.Gate().scratch
	rows := batchRows{kinds: sc.kinds[:0], tags: sc.tags[:0]}
	sent := sc.sentMap()     // tag and mode → its row
	holds.Lock()             // once for the whole batch
	for _, op := range ops { // unlocks first: a try in the same batch may want what they free
		if op.unlock {
			op.tags = dropHoldsLocked(key, op.l.mode, op.l.tags)
			op.first = rows.add(op.l.mode, op.tags, true)
		}
	}
	for _, op := range ops {
		if op.unlock {
			continue
		}
		for _, t := range unheldLocked(key, op.l.mode, op.l.tags) {
			if _, ok := sent[keyOf(t, op.l.mode)]; !ok {
				sent[keyOf(t, op.l.mode)] = rows.add(op.l.mode, []Tag{t}, false)
			}
		}
	}
	holds.Unlock()
	sc.kinds, sc.tags = rows.kinds, rows.tags
	flags, rep, err := l.runRows(rows, singleStatement(ops, rows))
	if err != nil && SQLState(err) != "" && !l.conn.Closed() {
		l.reconcile(ops, sent, err) // e.g. a full lock table (53200)
		return
	}
	if err == nil && rows.len() > 0 {
		if err = l.checkBackend(batchOperation("batch"), rep, true); err != nil {
			// The tries may have taken locks on a backend that is not the
			// session's: unlock them wherever the unlock lands, then close.
			err = l.distrustRows(err, sent)
			for _, op := range ops {
				op.err = err
			}
			return
		}
	}
	if err != nil {
		err = l.abandonAs(context.Background(), batchOperation("batch"), err)
		for _, op := range ops {
			op.err = err
		}
		return
	}
	l.settle(ops, rows, sent, flags, rep.pid)
}

// settle hands out a batch's results: an unlock is ok if every tag was
// held; a try is ok if each of its tags was held before or taken now. Tags
// taken for tries that failed, and that no successful try uses, are given
// back. rows are the batch's rows: its unlocks', then its tries' (sent).
func (l *Lock) settle(ops []*batchOp, rows batchRows, sent map[holdKey]int, flags []bool, pid uint32) {
	key := l.conn.Key()
	sc := &l.guard.Gate().scratch
	used := sc.usedFlags(len(flags)) // by row
	holds.Lock()                     // once for the whole batch
	for _, op := range ops {
		if op.unlock {
			op.ok = true
			for i := range op.tags {
				op.ok = op.ok && flags[op.first+i]
			}
			continue
		}
		op.ok = true
		for _, t := range op.l.tags {
			if i, ok := sent[keyOf(t, op.l.mode)]; ok && !flags[i] {
				op.ok = false
			}
		}
		if op.ok {
			for _, t := range op.l.tags {
				if i, ok := sent[keyOf(t, op.l.mode)]; ok {
					used[i] = true
				}
			}
			addHoldsLocked(key, op.l.mode, op.l.tags, pid, 0) // batched Locks are unfenced
		}
	}
	dropIfEmptyLocked(key) // the claim of a batch that took nothing
	holds.Unlock()
	var back batchRows
	for i, k := range rows.kinds {
		if k&1 == 0 && flags[i] && !used[i] { // a try's row, taken for nothing
			back.add(k.mode(), rows.tags[i:i+1], true)
		}
	}
	if back.len() == 0 {
		return
	}
	if _, _, err := l.runRows(back, nil); err != nil {
		err = l.abandonAs(context.Background(), batchOperation("batch give back"), err)
		for _, op := range ops {
			if !op.ok && !op.unlock {
				op.err = err
			}
		}
	}
}

// acquireBatched is an acquisition's first try, batched. done reports that
// acquire must return ok and err; otherwise the Lock must wait.
func (l *Lock) acquireBatched(ctx context.Context, op operation, try bool) (ok, done bool, err error) {
	if err := l.precheck(ctx, op); err != nil {
		return false, true, err
	}
	b := l.newOp(false)
	l.batched(ctx, b)
	switch {
	case b.err != nil:
		return false, true, fmt.Errorf("alock: %s: %w", op, b.err)
	case b.ok:
		l.setCount(1, 0)
		return true, true, nil
	}
	return false, try, nil
}

// releaseBatched is the unlock of a last Release, batched.
func (l *Lock) releaseBatched(op operation) error {
	b := l.newOp(true)
	l.batched(context.Background(), b)
	err := b.err
	if err == nil && !b.ok {
		err = fmt.Errorf("%w: the server did not hold every id", ErrLost)
	}
	if err != nil {
		err = fmt.Errorf("alock: %s: %w", op, err)
	}
	if errors.Is(err, ErrLost) {
		l.MarkLost()
	}
	l.setCount(-1, 0)
	return err
}

// distrustRows is distrust for the tries of a batch, in their modes.
func (l *Lock) distrustRows(cause error, sent map[holdKey]int) error {
	var back batchRows
	for hk := range sent {
		back.add(hk.lockMode(), []Tag{hk.lockTag()}, true)
	}
	var err error
	if back.len() > 0 {
		_, _, err = l.runRows(back, nil)
	}
	if !l.conn.Closed() {
		err = errors.Join(err, l.abandonAs(context.Background(), batchOperation("check the backend of a batch"), cause))
	}
	return errors.Join(cause, err)
}
