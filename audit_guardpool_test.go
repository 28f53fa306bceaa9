package alock_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestAuditGuardPoolDoSite: GuardPool's doc says the log names "the
// file:line of their Acquire". For a Lock taken by Do, the site recorded
// is inside the library (internal/core's Do), not the caller's Do.
func TestAuditGuardPoolDoSite(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
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
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := alock.NewExclusive(pc.Conn(), alock.Key(7))
	_ = l.Do(ctx, func(context.Context) error {
		pc.Release()                       // the mistake GuardPool catches: given back while held
		time.Sleep(300 * time.Millisecond) // pgxpool runs AfterRelease in a goroutine
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if out := logged.String(); !strings.Contains(out, "audit_guardpool_test.go:") {
		t.Fatalf("log does not name the Do call's site:\n%s", out)
	}
}
