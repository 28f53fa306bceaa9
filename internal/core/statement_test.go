package core

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestStatementsTakeTagsInOrder(t *testing.T) {
	tags := []Tag{KeyTag(-1), PairTag(1, -2), KeyTag(1<<32 | 7)}
	for _, tc := range []struct {
		st   statement
		want string
	}{
		{lockStatement(Exclusive, tags, "", pidStartSQL), "SELECT concat(pg_advisory_lock($1), pg_advisory_lock($2, $3), pg_advisory_lock($4), pg_backend_pid(), '@', date_part('epoch', pg_postmaster_start_time()), ':')"},
		{lockStatement(Exclusive, tags[:1], "f", pidStartSQL), "SELECT concat(pg_backend_pid(), '@', date_part('epoch', pg_postmaster_start_time()), ':', nextval($2::regclass)) FROM (SELECT set_config('synchronous_commit', 'on', true), pg_advisory_lock($1)) AS l"},
		{tryStatement(Share, tags, "", pidSQL), "SELECT concat(pg_try_advisory_lock_shared($1)::int, pg_try_advisory_lock_shared($2, $3)::int, pg_try_advisory_lock_shared($4)::int, ':', pg_backend_pid(), ':')"},
		{tryStatement(Share, tags[:1], "f", pidStartSQL), "SELECT concat(f, ':', pg_backend_pid(), '@', date_part('epoch', pg_postmaster_start_time()), ':', CASE WHEN strpos(f, '0') = 0 THEN nextval($2::regclass) END) FROM (SELECT set_config('synchronous_commit', 'on', true), concat(pg_try_advisory_lock_shared($1)::int) AS f) AS l"},
		{unlockStatement(Exclusive, tags), "SELECT concat(reverse(concat(pg_advisory_unlock($1)::int, pg_advisory_unlock($2, $3)::int, pg_advisory_unlock($4)::int)), ':', pg_backend_pid())"},
	} {
		if tc.st.sql != tc.want {
			t.Errorf("got  %s\nwant %s", tc.st.sql, tc.want)
		}
	}
	if got, want := lockStatement(Exclusive, tags, "", pidStartSQL).args, []any{int64(-1), int32(1), int32(-2), int64(1<<32 | 7)}; !slices.Equal(got, want) {
		t.Errorf("lock args %v, want %v", got, want)
	}
	// The unlock runs in reverse order; its result is reversed back.
	if got, want := unlockStatement(Exclusive, tags).args, []any{int64(1<<32 | 7), int32(1), int32(-2), int64(-1)}; !slices.Equal(got, want) {
		t.Errorf("unlock args %v, want %v", got, want)
	}
}

func TestTagEncodingMatchesPgLocks(t *testing.T) {
	for _, tc := range []struct {
		tag  Tag
		want string
	}{
		{KeyTag(0), "0:0:1"},
		{KeyTag(-1), "4294967295:4294967295:1"},
		{KeyTag(1<<32 | 2), "1:2:1"},
		{PairTag(1, 2), "1:2:2"},
		{PairTag(-1, -7), "4294967295:4294967289:2"},
	} {
		if got := tc.tag.String(); got != tc.want {
			t.Errorf("%+v: got %s, want %s", tc.tag, got, tc.want)
		}
	}
}

func TestParseResults(t *testing.T) {
	if flags, ok := parseFlags("101", 3); !ok || !slices.Equal(flags, []bool{true, false, true}) {
		t.Errorf("parseFlags: %v %v", flags, ok)
	}
	for _, bad := range []string{"10", "1x1", ""} {
		if _, ok := parseFlags(bad, 3); ok {
			t.Errorf("parseFlags(%q, 3) accepted", bad)
		}
	}
	if r, ok := parseReply("101:42@1.5:7", true, true); !ok || r != (reply{"101", 42, "1.5", 7}) {
		t.Errorf("parseReply of a try: %+v %v", r, ok)
	}
	if r, ok := parseReply("42:", false, true); !ok || r != (reply{"", 42, "", 0}) {
		t.Errorf("parseReply of an unfenced lock: %+v %v", r, ok)
	}
	for _, bad := range []string{"42", "x:1", "1:2:3", ""} {
		if _, ok := parseReply(bad, false, true); ok {
			t.Errorf("parseReply(%q) accepted", bad)
		}
	}
	held, err := parseHeld("0:5:1,4294967295:4294967289:2")
	if err != nil || len(held) != 2 || !held[KeyTag(5)] || !held[PairTag(-1, -7)] {
		t.Errorf("parseHeld: %v %v", held, err)
	}
	if _, err := parseHeld("1:2"); err == nil {
		t.Error("parseHeld accepted a malformed entry")
	}
	if held, err := parseHeld(""); err != nil || len(held) != 0 {
		t.Errorf("parseHeld of nothing: %v %v", held, err)
	}
}

// TestBatchStatementParts: rows of every kind, added out of order, become
// one part per kind in kindOrder (unlocks first), and a result that lists
// failures by position within a part maps back to the rows added.
func TestBatchStatementParts(t *testing.T) {
	var r batchRows
	r.add(Exclusive, []Tag{KeyTag(1), PairTag(2, 3)}, false) // rows 0, 1
	r.add(Share, []Tag{KeyTag(4)}, true)                     // row 2
	r.add(Exclusive, []Tag{KeyTag(5)}, false)                // row 3
	r.add(Exclusive, []Tag{KeyTag(6)}, true)                 // row 4
	st, parts := r.statement()
	if want := [][]int{{4}, {2}, {0, 3}, {1}}; !slices.EqualFunc(parts, want, slices.Equal) {
		t.Fatalf("parts %v, want %v", parts, want)
	}
	order := []string{"pg_advisory_unlock(k)", "pg_advisory_unlock_shared(k)", "pg_try_advisory_lock(k)", "pg_try_advisory_lock(k1, k2)"}
	at := -1
	for _, fn := range order {
		i := strings.Index(st.sql, fn)
		if i <= at {
			t.Fatalf("%s not after the previous part in %s", fn, st.sql)
		}
		at = i
	}
	want := []any{[]int64{6}, []int64{4}, []int64{1, 5}, []int32{2}, []int32{3}}
	if fmt.Sprint(st.args) != fmt.Sprint(want) {
		t.Errorf("args %v, want %v", st.args, want)
	}
	flags, ok := parseFailures(";1;2;", parts, 5)
	if !ok || !slices.Equal(flags, []bool{true, true, false, false, true}) {
		t.Errorf("parseFailures: %v %v", flags, ok)
	}
	for _, bad := range []string{";;", ";;;;", "2;;;", ";;0;", ";;1,x;", ";;3;"} {
		if _, ok := parseFailures(bad, parts, 5); ok {
			t.Errorf("parseFailures(%q) accepted", bad)
		}
	}
}
