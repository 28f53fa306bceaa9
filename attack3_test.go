package alock_test

// Adversarial tests of fencing tokens, pooler detection by behaviour, the
// Session's batch and the Locker, checked against pg_locks.

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgbouncer"
	"github.com/pgalock/alock/internal/pgtest"
)

// a3Bouncer starts a PgBouncer in mode with size server connections in
// front of a fresh database and returns the database's dsn and the bouncer's.
func a3Bouncer(t *testing.T, mode string, size int) (dsn, via string) {
	t.Helper()
	srv := pgtest.Server()
	if srv == nil {
		t.Skip("needs the harness's own server")
	}
	dsn = pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := pgbouncer.Start(ctx, srv, cfg.Database, &pgbouncer.Options{PoolMode: mode, PoolSize: size})
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip("pgbouncer is not installed:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	return dsn, b.ConnString(cfg.Database)
}

// a3BackendOf returns the backend pid behind conn (through a pooler, the
// server's, not the pooler's).
func a3BackendOf(t *testing.T, conn *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestAttack3SessionPoolerReuseAfterCloseWithLocks: behind a session-mode
// PgBouncer with one server connection, a plain connection takes a lock and
// is closed while holding it (the documentation: the locks end with the
// session, whatever ends it). PgBouncer resets the backend (DISCARD ALL
// frees advisory locks) and hands it to the next client of the process. That
// client's first lock must work: its connection is the only one on that
// backend. A stale claim of the backend by the closed connection makes it
// fail with ErrPooler and closes a healthy connection.
func TestAttack3SessionPoolerReuseAfterCloseWithLocks(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "session", 1)
	ctx := context.Background()
	a := pgtest.Connect(t, via)
	backend := a3BackendOf(t, a)
	mustAcquire(t, alock.NewExclusive(a, alock.Key(1)))
	if got := locktest.Holds(t, dsn, backend); len(got) != 1 {
		t.Fatalf("server shows %v for a", got)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := pgtest.Connect(t, via)
	if got := a3BackendOf(t, b); got != backend {
		t.Skipf("the pooler gave b backend %d, not a's %d", got, backend)
	}
	if got := locktest.Holds(t, dsn, backend); len(got) != 0 {
		t.Fatalf("the reset backend still holds %v", got)
	}
	l := alock.NewExclusive(b, alock.Key(2))
	if err := l.Acquire(ctx); err != nil {
		pgtest.Fatalf(t, "b's first lock on its own backend: %v (b closed: %v; server shows %v)",
			err, b.IsClosed(), locktest.Holds(t, dsn, backend))
	}
	if got := locktest.Holds(t, dsn, backend); len(got) != 1 || got[0] != hold(alock.Key(2), alock.Exclusive) {
		t.Fatalf("server shows %v, want only b's Key(2)", got)
	}
	mustRelease(t, l)
}
