package alock_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// fencedToken acquires a fresh Lock on s over ids, returns its token and
// releases it.
func fencedToken(t *testing.T, s *alock.Session, ids ...alock.ID) int64 {
	t.Helper()
	l := s.NewExclusive(ids...)
	mustAcquire(t, l)
	defer mustRelease(t, l)
	return l.Token()
}

// TestFencingSequenceIgnoresSearchPath opens fenced Sessions whose
// search_paths name different schemas: every holder must still draw from
// one sequence, so tokens grow across them.
func TestFencingSequenceIgnoresSearchPath(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.Connect(t, dsn)
	if _, err := admin.Exec(context.Background(), "CREATE SCHEMA svc_a; CREATE SCHEMA svc_b"); err != nil {
		t.Fatal(err)
	}
	a := openSession(t, dsn+" options='-c search_path=svc_a'", &alock.SessionOptions{Fencing: true})
	b := openSession(t, dsn+" options='-c search_path=svc_b'", &alock.SessionOptions{Fencing: true})
	var tokens []int64
	for range 2 {
		tokens = append(tokens, fencedToken(t, a, alock.Key(1)), fencedToken(t, b, alock.Key(1)))
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("tokens %v across two search_paths, want them growing", tokens)
		}
	}
	var schema string
	if err := admin.QueryRow(context.Background(),
		"SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'alock_fence'").Scan(&schema); err != nil || schema != "public" {
		t.Fatalf("the default sequence is in %q (%v), want public", schema, err)
	}
}

// TestFencingRefusesUnorderedSequence refuses sequences whose settings can
// hand out tokens out of order.
func TestFencingRefusesUnorderedSequence(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.Connect(t, dsn)
	for _, tc := range []struct{ options, want string }{
		{"CACHE 20", "CACHE 20"},
		{"CYCLE", "CYCLE"},
		{"INCREMENT -1", "INCREMENT -1"},
	} {
		name := "public.bad_" + strings.ToLower(strings.Fields(tc.options)[0])
		if _, err := admin.Exec(context.Background(), "CREATE SEQUENCE "+name+" "+tc.options); err != nil {
			t.Fatal(err)
		}
		s, err := alock.Open(context.Background(), dsn, &alock.SessionOptions{Fencing: true, FenceSequence: name})
		if err == nil {
			_ = s.Close(context.Background())
			t.Errorf("Open accepted a sequence with %s", tc.options)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open with a sequence with %s: %v, want it named", tc.options, err)
		}
	}
}

