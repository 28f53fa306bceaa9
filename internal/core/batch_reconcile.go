package core

import (
	"context"
	"errors"
)

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
