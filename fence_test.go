package alock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgserver"
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

// TestFencingTokensSurviveCrashWithAsyncCommit draws tokens on a session
// that runs with synchronous_commit=off, crashes the server before the WAL
// writer flushes, and checks that the next token is larger.
func TestFencingTokensSurviveCrashWithAsyncCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The WAL writer waits 10 s: only a commit that flushes saves the draws.
	srv, err := pgserver.Start(ctx, &pgserver.Options{Settings: map[string]string{
		"synchronous_commit": "off", "wal_writer_delay": "10s",
	}})
	if errors.Is(err, pgserver.ErrNotInstalled) && pgtest.Server() == nil {
		t.Skip("no PostgreSQL binaries for a private server:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	dsn := srv.ConnString("postgres") + " options='-c synchronous_commit=off'"
	s, err := alock.Open(ctx, dsn, &alock.SessionOptions{Fencing: true})
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for range 5 {
		last = fencedToken(t, s, alock.Key(1))
	}
	if err := srv.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(ctx)
	again := openSession(t, dsn, &alock.SessionOptions{Fencing: true})
	if next := fencedToken(t, again, alock.Key(1)); next <= last {
		t.Fatalf("token after a crash %d, want more than %d", next, last)
	}
}

// TestFencingTokenPerServerHold checks that Locks of one Session sharing a
// server-level hold share its token, and that a Lock over ids some of
// which were newly granted has the newest token.
func TestFencingTokenPerServerHold(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openSession(t, dsn, &alock.SessionOptions{Fencing: true})
	first, second := s.NewExclusive(alock.Key(1)), s.NewExclusive(alock.Key(1))
	mustAcquire(t, first)
	mustAcquire(t, second)
	shared := first.Token()
	if second.Token() != shared {
		t.Fatalf("two Locks on one server hold: tokens %d and %d, want one", shared, second.Token())
	}
	both := s.NewExclusive(alock.Key(1), alock.Key(2))
	mustAcquire(t, both)
	if both.Token() <= shared {
		t.Fatalf("Lock with a newly granted id: token %d, want more than %d", both.Token(), shared)
	}
	again := s.NewExclusive(alock.Key(2), alock.Key(1))
	mustAcquire(t, again)
	if again.Token() != both.Token() {
		t.Fatalf("Lock over held ids: token %d, want the newest grant's %d", again.Token(), both.Token())
	}
	mustRelease(t, again)
	mustRelease(t, first)
	if second.Token() != shared {
		t.Fatalf("second's token %d after first's release, want %d", second.Token(), shared)
	}
	mustRelease(t, second)
	newest := both.Token()
	mustRelease(t, both)
	if next := fencedToken(t, s, alock.Key(1)); next <= newest {
		t.Fatalf("a new grant's token %d, want more than %d", next, newest)
	}
}
