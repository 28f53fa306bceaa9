package alocksql

import "testing"

func TestWithLiterals(t *testing.T) {
	for _, tc := range []struct {
		query string
		args  []any
		want  string
		ok    bool
	}{
		{"SELECT pg_advisory_lock($1)", []any{int64(-1 << 63)}, "SELECT pg_advisory_lock(int8 '-9223372036854775808')", true},
		{"SELECT concat(pg_try_advisory_lock($1, $2)::int, pg_try_advisory_lock($3)::int)", []any{int32(-1 << 31), int32(7), int64(1<<63 - 1)},
			"SELECT concat(pg_try_advisory_lock(int4 '-2147483648', int4 '7')::int, pg_try_advisory_lock(int8 '9223372036854775807')::int)", true},
		{"SELECT $10, $1", []any{int64(1), int64(2), int64(3), int64(4), int64(5), int64(6), int64(7), int64(8), int64(9), int64(10)},
			"SELECT int8 '10', int8 '1'", true},
		{"SELECT nextval($1::regclass)", []any{"seq"}, "SELECT nextval($1::regclass)", false}, // not an id: left as a parameter
		{"SELECT 1", nil, "SELECT 1", false},
		{"SELECT $2", []any{int64(1)}, "SELECT $2", false},
		{"SELECT $$x$$", []any{int64(1)}, "SELECT $$x$$", false},
	} {
		got, ok := withLiterals(tc.query, tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("withLiterals(%q, %v) = %q, %v; want %q, %v", tc.query, tc.args, got, ok, tc.want, tc.ok)
		}
	}
}
