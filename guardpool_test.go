package alock_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestGuardPool: a pooled connection given back with a held Lock is
// destroyed (its locks end with it), and the log names the Lock and where
// it was acquired; one given back clean is reused.
func TestGuardPool(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool, logged := guardedPool(t, dsn)
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := pc.Conn().PgConn().PID()
	clean := alock.NewExclusive(pc.Conn(), alock.Key(1))
	if err := clean.Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	pc.Release()
	if pc, err = pool.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pc.Conn().PgConn().PID(); got != pid {
		t.Fatalf("a clean connection was not reused: pid %d then %d", pid, got)
	}
	leaked := alock.NewExclusive(pc.Conn(), alock.Key(2), alock.Name("jobs"))
	if err := leaked.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	pc.Release()
	pgtest.WaitFor(t, "the connection's backend gone", func() bool {
		return len(pgtest.AdvisoryLocks(t, dsn, pid)) == 0
	})
	if pc, err = pool.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	defer pc.Release()
	if got := pc.Conn().PgConn().PID(); got == pid {
		t.Fatal("a connection given back holding a lock was reused")
	}
	if out := logged(); !strings.Contains(out, `exclusive [Key(2) Name(\"jobs\")] acquired at`) || !strings.Contains(out, "guardpool_test.go:") {
		t.Fatalf("log does not name the Lock and its Acquire site:\n%s", out)
	}
}

// TestGuardPoolNamesTheSiteOfDo: for a Lock taken by Do, the log names the
// program's Do call, not the library's Acquire inside it.
func TestGuardPoolNamesTheSiteOfDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, log := guardedPool(t, pgtest.NewDatabase(t))
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := alock.NewExclusive(pc.Conn(), alock.Key(7))
	_ = l.Do(ctx, func(context.Context) error { // its release fails: the connection is gone
		pc.Release() // given back while held
		// Until the pool has closed the connection (it does in a goroutine
		// of its own, then counts it gone), the Do's release must not
		// touch it.
		pgtest.WaitFor(t, "the connection destroyed", func() bool { return pool.Stat().TotalConns() == 0 })
		return nil
	})
	if out := log(); !strings.Contains(out, "guardpool_test.go:") {
		t.Fatalf("log does not name the Do call's site:\n%s", out)
	}
}

// guardedPool returns a pool of one connection to dsn under GuardPool, closed
// when t ends, and a function that returns what GuardPool logged so far.
func guardedPool(t *testing.T, dsn string) (*pgxpool.Pool, func() string) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	var mu sync.Mutex
	var logged strings.Builder
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	alock.GuardPool(cfg, logger)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, func() string {
		mu.Lock()
		defer mu.Unlock()
		return logged.String()
	}
}
