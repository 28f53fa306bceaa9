package alocksql

import (
	"strconv"
	"strings"
)

// withLiterals returns query with its parameters written in as typed
// literals ($1 becomes int8 '42') when every argument is an int64 or an
// int32, as in the statements that take, try and release ids; ok is false
// otherwise (a fencing sequence's name, a lock_timeout), and the statement
// keeps its parameters. A statement without parameters goes to the server
// in the simple query protocol, in one round trip; lib/pq sends one with
// parameters in two (it asks the server to describe the statement first),
// which made a lock statement through lib/pq cost about 14 µs more than the
// same statement written by hand with one parameter. No statement that
// sqlConn.QueryText runs has a '$' other than its parameters' (no dollar
// quoting, no '$' in its string literals).
func withLiterals(query string, args []any) (string, bool) {
	if len(args) == 0 {
		return query, false
	}
	lits := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case int64:
			lits[i] = "int8 '" + strconv.FormatInt(v, 10) + "'"
		case int32:
			lits[i] = "int4 '" + strconv.FormatInt(int64(v), 10) + "'"
		default:
			return query, false
		}
	}
	var b strings.Builder
	b.Grow(len(query) + 8*len(args))
	for {
		i := strings.IndexByte(query, '$')
		if i < 0 {
			b.WriteString(query)
			return b.String(), true
		}
		j := i + 1
		for j < len(query) && query[j] >= '0' && query[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(query[i+1 : j])
		if err != nil || n < 1 || n > len(args) {
			return query, false
		}
		b.WriteString(query[:i])
		b.WriteString(lits[n-1])
		query = query[j:]
	}
}
