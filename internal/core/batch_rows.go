package core

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
)

// batchRows are the rows of a batch statement: one lock function call per
// tag, in the order added.
type batchRows struct {
	kinds []rowKind
	tags  []Tag
}

// A rowKind says which lock function a row calls: bit 0 unlock, bit 1
// share, bit 2 pair.
type rowKind uint8

const numRowKinds = 8

func kindOf(m Mode, t Tag, unlock bool) rowKind {
	var k rowKind
	if unlock {
		k |= 1
	}
	if m == Share {
		k |= 2
	}
	if t.IsPair() {
		k |= 4
	}
	return k
}

// mode returns the mode of a row of kind k.
func (k rowKind) mode() Mode {
	if k&2 != 0 {
		return Share
	}
	return Exclusive
}

// add appends a row per tag and returns the index of the first.
func (r *batchRows) add(m Mode, tags []Tag, unlock bool) int {
	first := len(r.tags)
	for _, t := range tags {
		r.kinds = append(r.kinds, kindOf(m, t, unlock))
		r.tags = append(r.tags, t)
	}
	return first
}

// len is the number of rows.
func (r *batchRows) len() int { return len(r.tags) }

// kindOrder is the order of a batch statement's parts: unlocks first, so
// that a try in the same batch may have what they free.
var kindOrder = [numRowKinds]rowKind{1, 3, 5, 7, 0, 2, 4, 6}

// batchSQL returns the batch statement for the kinds in set (bit k for
// kind k), built the first time a batch needs it. Each kind present is one part, in kindOrder: a scalar subquery
// that calls the kind's function on every row of its arrays and lists the
// 1-based positions of the calls that returned false. The parts are joined
// by ';', followed by ':' and the backend pid:
//
//	SELECT concat((SELECT string_agg(o::text, ',') FILTER (WHERE NOT pg_advisory_unlock(k))
//	  FROM unnest($1::int8[]) WITH ORDINALITY AS t(k, o)), ';',
//	  (SELECT ... pg_try_advisory_lock(k1, k2) ... FROM unnest($2::int4[], $3::int4[]) WITH ORDINALITY AS t(k1, k2, o)),
//	  ':', pg_backend_pid())
//
// The server evaluates concat's arguments in order, and each uncorrelated
// subquery when its argument is, so the parts run in order. A result that
// lists failures only is the same whatever order the aggregate saw its
// rows in, and short when (as is usual) every call succeeds: one function
// per part and no sort cost the server about half of what one CASE over
// every kind with an ordered aggregate did.
func batchSQL(set int) string {
	e := &batchSQLs[set]
	e.once.Do(func() { e.sql = buildBatchSQL(set) })
	return e.sql
}

var batchSQLs [1 << numRowKinds]struct {
	once sync.Once
	sql  string
}

func buildBatchSQL(set int) string {
	var b strings.Builder
	b.WriteString("SELECT concat(")
	n := 0
	for _, k := range kindOrder {
		if set&(1<<k) == 0 {
			continue
		}
		if n > 0 {
			b.WriteString(", ';', ")
		}
		fn := "pg_try_advisory_lock"
		if k&1 != 0 {
			fn = "pg_advisory_unlock"
		}
		if k&2 != 0 {
			fn += "_shared"
		}
		n++
		if k&4 != 0 {
			b.WriteString("(SELECT string_agg(o::text, ',') FILTER (WHERE NOT " + fn + "(k1, k2)) FROM unnest($" +
				strconv.Itoa(n) + "::int4[], $" + strconv.Itoa(n+1) + "::int4[]) WITH ORDINALITY AS t(k1, k2, o))")
			n++
		} else {
			b.WriteString("(SELECT string_agg(o::text, ',') FILTER (WHERE NOT " + fn + "(k)) FROM unnest($" +
				strconv.Itoa(n) + "::int8[]) WITH ORDINALITY AS t(k, o))")
		}
	}
	b.WriteString(", ':', pg_backend_pid())")
	return b.String()
}

// statement returns the batch statement for r and, for each of its parts,
// the rows (indexes into r) it covers. The parts' rows and keys are cut
// from one array each, sized by a first count: a batch's statement
// allocates a handful of times, not per row.
func (r *batchRows) statement() (statement, [][]int) {
	var count [numRowKinds]int
	var set, keyRows, pairRows, nargs, nparts int
	for _, k := range r.kinds {
		if count[k] == 0 {
			set |= 1 << k
			nparts++
			nargs++
			if k&4 != 0 {
				nargs++
			}
		}
		count[k]++
		if k&4 != 0 {
			pairRows++
		} else {
			keyRows++
		}
	}
	rowsAll := make([]int, 0, len(r.kinds))
	keysAll := make([]int64, 0, keyRows)
	k1sAll, k2sAll := make([]int32, 0, pairRows), make([]int32, 0, pairRows)
	args := make([]any, 0, nargs)
	parts := make([][]int, 0, nparts)
	for _, k := range kindOrder {
		if count[k] == 0 {
			continue
		}
		first, firstKey, firstPair := len(rowsAll), len(keysAll), len(k1sAll)
		for i, kind := range r.kinds {
			if kind != k {
				continue
			}
			rowsAll = append(rowsAll, i)
			if k&4 != 0 {
				k1, k2 := r.tags[i].Pair()
				k1sAll, k2sAll = append(k1sAll, k1), append(k2sAll, k2)
			} else {
				keysAll = append(keysAll, r.tags[i].Key())
			}
		}
		if k&4 != 0 {
			args = append(args, k1sAll[firstPair:len(k1sAll):len(k1sAll)], k2sAll[firstPair:len(k2sAll):len(k2sAll)])
		} else {
			args = append(args, keysAll[firstKey:len(keysAll):len(keysAll)])
		}
		parts = append(parts, rowsAll[first:len(rowsAll):len(rowsAll)])
	}
	return statement{sql: batchSQL(set), args: args}, parts
}

// parseFailures turns a batch statement's result (without the pid) into one
// flag per row: false for the rows its parts list. ok is false if the text
// does not match parts.
func parseFailures(text string, parts [][]int, n int) (flags []bool, ok bool) {
	flags = make([]bool, n)
	for i := range flags {
		flags[i] = true
	}
	lists := strings.Split(text, ";")
	if len(lists) != len(parts) {
		return nil, false
	}
	for p, list := range lists {
		if list == "" {
			continue
		}
		for item := range strings.SplitSeq(list, ",") {
			o, err := strconv.Atoi(item)
			if err != nil || o < 1 || o > len(parts[p]) {
				return nil, false
			}
			flags[parts[p][o-1]] = false
		}
	}
	return flags, true
}

// singleStatement returns, for a batch of one op, the op's own statement,
// whose flags follow the same rows: cheaper for the server than a batch
// statement.
func singleStatement(ops []*batchOp, rows batchRows) *statement {
	if len(ops) != 1 || rows.len() == 0 {
		return nil
	}
	op := ops[0]
	var st statement
	switch {
	case op.unlock && len(op.tags) == len(op.l.tags):
		st = op.l.unlockAll
	case op.unlock:
		st = unlockStatement(op.l.mode, op.tags)
	case rows.len() == len(op.l.tags):
		st = op.l.tryAll
	default:
		st = tryStatement(op.l.mode, rows.tags, "", op.l.who())
	}
	return &st
}

// runRows sends the rows (or single, a statement with the same flags) and
// returns one flag per row and the reply (its backend).
func (l *Lock) runRows(r batchRows, single *statement) ([]bool, reply, error) {
	if r.len() == 0 {
		return nil, reply{}, nil
	}
	// No deadline, as for an operation under a context that cannot end: a
	// batch serves several callers, and a Session's TCP keepalive bounds a
	// dead network.
	ctx := context.Background()
	var st statement
	var parts [][]int
	if single != nil {
		st = *single
	} else {
		st, parts = r.statement()
	}
	text, err := queryText(ctx, l.conn, finish, st)
	if err != nil {
		return nil, reply{}, err
	}
	// A try statement ends with an (empty) token: "flags:pid:".
	rep, ok := parseReply(strings.TrimSuffix(text, ":"), true, false)
	var flags []bool
	var ok2 bool
	if single != nil {
		flags, ok2 = parseFlags(rep.flags, r.len())
	} else {
		flags, ok2 = parseFailures(rep.flags, parts, r.len())
	}
	if !ok || !ok2 {
		return nil, reply{}, errors.New("unexpected batch result " + strconv.Quote(text))
	}
	return flags, rep, nil
}
