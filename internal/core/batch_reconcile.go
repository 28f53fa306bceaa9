package core

import (
	"context"
	"errors"
	"fmt"
)

// reconcile brings the server back to the registry's view after a batch
// statement failed with a server error part-way (session locks taken or
// released before the error stay so): it reads what the session holds,
// unlocks what the batch's unlocks freed and its tries took, and fails
// every try with the server's error. If that cannot be done, the session
// is closed.
func (l *Lock) reconcile(ops []*batchOp, sent map[holdKey]int, cause error) {
	ctx := context.Background()
	text, err := queryText(ctx, l.conn, finish, statement{sql: backendHoldsSQL})
	_, held, ok := parseBackendHolds(text)
	if err == nil && !ok {
		err = fmt.Errorf("unexpected result %q", text)
	}
	if err != nil {
		err = l.abandonAs(ctx, batchOperation("batch"), errors.Join(cause, err))
		for _, op := range ops {
			op.err = err
		}
		return
	}
	var back batchRows
	for _, op := range ops {
		if op.unlock {
			op.ok = true
			for _, t := range op.tags {
				if held[keyOf(t, op.l.mode)] {
					back.add(op.l.mode, []Tag{t}, true)
				}
			}
		}
	}
	for hk := range sent {
		if held[hk] {
			back.add(hk.lockMode(), []Tag{hk.lockTag()}, true)
		}
	}
	if _, _, err = l.runRows(back, nil); err != nil {
		err = l.abandonAs(ctx, batchOperation("batch give back"), errors.Join(cause, err))
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
