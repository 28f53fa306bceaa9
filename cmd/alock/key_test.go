package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pgalock/alock/internal/pgtest"
)

func testKey(t *testing.T, bin string) {
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	names := []string{"nightly-report", "a", "", "deploy prod", "ünïcödé ✓", `quote"back\slash`}
	r := cli{bin: bin}.run(t, append([]string{"key"}, names...)...)
	r.expect(t, "key", 0)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != len(names)+1 || !strings.HasPrefix(lines[0], "NAME ") {
		t.Fatalf("alock key: want a header and %d lines:\n%s", len(names), r.stdout)
	}
	for i, n := range names {
		var key int64
		var classID, objID uint32
		err := conn.QueryRow(context.Background(), `SELECT k, (k >> 32) & 4294967295, k & 4294967295
			FROM (SELECT hashtextextended($1, 0) AS k) s`, n).Scan(&key, &classID, &objID)
		if err != nil {
			t.Fatalf("hashtextextended: %v", err)
		}
		want := fmt.Sprintf("%q %d %d %d 1", n, key, classID, objID)
		if got := strings.Join(strings.Fields(lines[i+1]), " "); got != want {
			t.Errorf("alock key %q: got %q, want %q (the server's)", n, got, want)
		}
	}
}
