package core

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	done   chan struct{}
}

// batchable reports whether l's operations may be batched.
func (l *Lock) batchable() bool { return l.guard != nil && l.fence == "" && len(l.tags) > 0 }

// batched submits op and waits for its result; the caller has the Lock's
// turn, so no other operation of l runs meanwhile.
func (l *Lock) batched(op *batchOp) {
	op.l, op.done = l, make(chan struct{})
	g := l.guard.Gate()
	if g.submit(op) {
		l.leadBatches()
	}
	<-op.done
}

// leadBatches runs batches until none is left to lead.
func (l *Lock) leadBatches() {
	g := l.guard.Gate()
	if err := g.Enter(context.Background()); err != nil {
		for _, op := range g.takeBatch() {
			op.err = err
			close(op.done)
		}
		return
	}
	ops := g.takeBatch()
	l.runBatch(ops)
	l.exit()
	for _, op := range ops {
		close(op.done)
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
	var rows batchRows
	for _, op := range ops { // unlocks first: a try in the same batch may want what they free
		if op.unlock {
			op.tags = dropHolds(key, op.l.mode, op.l.tags)
			op.first = rows.add(op.l.mode, op.tags, true)
		}
	}
	sent := make(map[holdKey]int) // tag and mode → its row
	for _, op := range ops {
		if op.unlock {
			continue
		}
		for _, t := range unheld(key, op.l.mode, op.l.tags) {
			if _, ok := sent[holdKey{t, op.l.mode}]; !ok {
				sent[holdKey{t, op.l.mode}] = rows.add(op.l.mode, []Tag{t}, false)
			}
		}
	}
	flags, rep, err := l.runRows(rows, singleStatement(ops, rows))
	if err != nil && SQLState(err) != "" && !l.conn.Closed() {
		l.reconcile(ops, sent, err) // e.g. a full lock table (53200)
		return
	}
	if err == nil && len(rows.ops) > 0 {
		err = l.checkBackend(operation{"batch", l.label}, rep, true)
	}
	if err != nil {
		err = l.abandon(context.Background(), "batch", err)
		for _, op := range ops {
			op.err = err
		}
		return
	}
	l.settle(ops, sent, flags, rep.pid)
	dropIfEmpty(key) // the claim of a batch that took nothing
}

// settle hands out a batch's results: an unlock is ok if every tag was
// held; a try is ok if each of its tags was held before or taken now. Tags
// taken for tries that failed, and that no successful try uses, are given
// back.
func (l *Lock) settle(ops []*batchOp, sent map[holdKey]int, flags []bool, pid uint32) {
	key := l.conn.Key()
	used := make(map[int]bool)
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
			if i, ok := sent[holdKey{t, op.l.mode}]; ok && !flags[i] {
				op.ok = false
			}
		}
		if op.ok {
			for _, t := range op.l.tags {
				if i, ok := sent[holdKey{t, op.l.mode}]; ok {
					used[i] = true
				}
			}
			addHolds(key, op.l.mode, op.l.tags, pid, 0) // batched Locks are unfenced
		}
	}
	var back batchRows
	for hk, i := range sent {
		if flags[i] && !used[i] {
			back.add(hk.mode, []Tag{hk.tag}, true)
		}
	}
	if len(back.ops) == 0 {
		return
	}
	if _, _, err := l.runRows(back, nil); err != nil {
		err = l.abandon(context.Background(), "batch give back", err)
		for _, op := range ops {
			if !op.ok && !op.unlock {
				op.err = err
			}
		}
	}
}

// batchRows are the rows of a batch statement: one lock function call per
// tag.
type batchRows struct {
	ops      []int16 // see batchSQL
	keys     []int64
	k1s, k2s []int32
}

// add appends a row per tag and returns the index of the first.
func (r *batchRows) add(m Mode, tags []Tag, unlock bool) int {
	first := len(r.ops)
	for _, t := range tags {
		var code int16
		if unlock {
			code |= 1
		}
		if m == Share {
			code |= 2
		}
		if t.IsPair() {
			code |= 4
			k1, k2 := t.Pair()
			r.keys, r.k1s, r.k2s = append(r.keys, 0), append(r.k1s, k1), append(r.k2s, k2)
		} else {
			r.keys, r.k1s, r.k2s = append(r.keys, t.Key()), append(r.k1s, 0), append(r.k2s, 0)
		}
		r.ops = append(r.ops, code)
	}
	return first
}

// batchSQL runs one lock function per row, chosen by its op code (bit 0:
// unlock, bit 1: share, bit 2: pair), and returns their results as '1'/'0'
// characters in row order, then the backend pid, as unlockStatement does:
// "flags:pid". CASE evaluates only the branch it picks.
const batchSQL = `SELECT concat(string_agg((CASE op
  WHEN 0 THEN pg_try_advisory_lock(k)          WHEN 1 THEN pg_advisory_unlock(k)
  WHEN 2 THEN pg_try_advisory_lock_shared(k)   WHEN 3 THEN pg_advisory_unlock_shared(k)
  WHEN 4 THEN pg_try_advisory_lock(k1, k2)     WHEN 5 THEN pg_advisory_unlock(k1, k2)
  WHEN 6 THEN pg_try_advisory_lock_shared(k1, k2) WHEN 7 THEN pg_advisory_unlock_shared(k1, k2)
  END)::int::text, '' ORDER BY o), ':', pg_backend_pid())
FROM unnest($1::int2[], $2::int8[], $3::int4[], $4::int4[]) WITH ORDINALITY AS t(op, k, k1, k2, o)`

// singleStatement returns, for a batch of one op, the op's own statement,
// whose flags follow the same rows: cheaper for the server than batchSQL.
func singleStatement(ops []*batchOp, rows batchRows) *statement {
	if len(ops) != 1 || len(rows.ops) == 0 {
		return nil
	}
	op := ops[0]
	var st statement
	switch {
	case op.unlock && len(op.tags) == len(op.l.tags):
		st = op.l.unlockAll
	case op.unlock:
		st = unlockStatement(op.l.mode, op.tags)
	case len(rows.ops) == len(op.l.tags):
		st = op.l.tryAll
	default:
		st = tryStatement(op.l.mode, unheldRows(rows), "", op.l.who())
	}
	return &st
}

// unheldRows returns the tags of try rows, in order.
func unheldRows(r batchRows) []Tag {
	tags := make([]Tag, len(r.ops))
	for i, code := range r.ops {
		if code&4 != 0 {
			tags[i] = PairTag(r.k1s[i], r.k2s[i])
		} else {
			tags[i] = KeyTag(r.keys[i])
		}
	}
	return tags
}

// runRows sends the rows (or single, a statement with the same flags) and
// returns one flag per row and the reply (its backend).
func (l *Lock) runRows(r batchRows, single *statement) ([]bool, reply, error) {
	if len(r.ops) == 0 {
		return nil, reply{}, nil
	}
	// No deadline, as for an operation under a context that cannot end: a
	// batch serves several callers, and a Session's TCP keepalive bounds a
	// dead network.
	ctx := context.Background()
	var text string
	st := statement{sql: batchSQL, args: []any{r.ops, r.keys, r.k1s, r.k2s}}
	if single != nil {
		st = *single
	}
	_, err := run(ctx, l.conn, finish, func(q context.Context) (err error) {
		text, err = l.conn.QueryText(q, st.sql, st.args)
		return err
	})
	if err != nil {
		return nil, reply{}, err
	}
	// A try statement ends with an (empty) token: "flags:pid:".
	rep, ok := parseReply(strings.TrimSuffix(text, ":"), true, false)
	flags, ok2 := parseFlags(rep.flags, len(r.ops))
	if !ok || !ok2 {
		return nil, reply{}, errors.New("unexpected batch result " + strconv.Quote(text))
	}
	return flags, rep, nil
}

// acquireBatched is an acquisition's first try, batched. done reports that
// acquire must return ok and err; otherwise the Lock must wait.
func (l *Lock) acquireBatched(ctx context.Context, op operation, try bool) (ok, done bool, err error) {
	if ctx.Err() != nil {
		return false, true, fmt.Errorf("alock: %s: %w", op, ctxErr(ctx))
	}
	if len(l.tags) > MaxIDs {
		return false, true, fmt.Errorf("alock: %s: %w (%d given)", op, ErrTooManyIDs, len(l.tags))
	}
	b := &batchOp{}
	l.batched(b)
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
	b := &batchOp{unlock: true}
	l.batched(b)
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

// reconcile brings the server back to the registry's view after a batch
// statement failed with a server error part-way (session locks taken or
// released before the error stay so): it reads what the session holds,
// unlocks what the batch's unlocks freed and its tries took, and fails
// every try with the server's error. If that cannot be done, the session
// is closed.
func (l *Lock) reconcile(ops []*batchOp, sent map[holdKey]int, cause error) {
	ctx := context.Background()
	held := make(map[Mode]map[Tag]bool)
	for _, m := range []Mode{Exclusive, Share} {
		h, err := l.heldIn(ctx, m)
		if err != nil {
			err = l.abandon(ctx, "batch", errors.Join(cause, err))
			for _, op := range ops {
				op.err = err
			}
			return
		}
		held[m] = h
	}
	var back batchRows
	for _, op := range ops {
		if op.unlock {
			op.ok = true
			for _, t := range op.tags {
				if held[op.l.mode][t] {
					back.add(op.l.mode, []Tag{t}, true)
				}
			}
		}
	}
	for hk := range sent {
		if held[hk.mode][hk.tag] {
			back.add(hk.mode, []Tag{hk.tag}, true)
		}
	}
	var err error
	if _, _, err = l.runRows(back, nil); err != nil {
		err = l.abandon(ctx, "batch give back", errors.Join(cause, err))
	}
	for _, op := range ops {
		switch {
		case err != nil:
			op.err = err
		case !op.unlock:
			op.err = describe(operation{"batch", op.l.label}, ctx, false, l.conn, cause)
		}
	}
}
