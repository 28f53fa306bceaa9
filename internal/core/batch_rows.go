package core

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

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
	text, err := queryText(ctx, l.conn, finish, st)
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
