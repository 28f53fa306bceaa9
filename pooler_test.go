package alock_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgbouncer"
	"github.com/pgalock/alock/internal/pgtest"
)

// startBouncer starts a PgBouncer in pool mode in front of a fresh database
// and returns the database's dsn and the bouncer's.
func startBouncer(t *testing.T, mode string) (dsn, via string) {
	t.Helper()
	return startBouncerSized(t, mode, 0)
}

// startBouncerSized is startBouncer with size server connections (0 for
// the default).
func startBouncerSized(t *testing.T, mode string, size int) (dsn, via string) {
	t.Helper()
	srv := pgtest.Server()
	if srv == nil {
		t.Skip("needs the harness's own server (ALOCK_TEST_DSN is set)")
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

// TestSessionThroughSessionPooler: a session-mode pool pins one backend, so
// a Session works through it, and the server shows its lock.
func TestSessionThroughSessionPooler(t *testing.T) {
	t.Parallel()
	dsn, via := startBouncer(t, "session")
	s := openSession(t, via, &alock.SessionOptions{Fencing: true})
	l := s.NewExclusive(alock.Key(1))
	mustAcquire(t, l)
	if got := locktest.Holds(t, dsn, sessionPID(t, dsn, 1)); len(got) != 1 || got[0] != hold(alock.Key(1), alock.Exclusive) {
		t.Fatalf("server shows %v", got)
	}
	if l.Token() <= 0 {
		t.Fatalf("token %d through a session pool", l.Token())
	}
	mustRelease(t, l)
	mustAcquire(t, s.NewShare(alock.Key(2)))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestPlainConnThroughTransactionPooler: a Lock on a plain connection
// notices that its statements ran on two backends, at its next lock
// statement, and closes the connection.
func TestPlainConnThroughTransactionPooler(t *testing.T) {
	t.Parallel()
	dsn, via := startBouncer(t, "transaction")
	ctx := context.Background()
	a, b := pgtest.Connect(t, via), pgtest.Connect(t, via)
	l := alock.NewExclusive(a, alock.Key(1))
	mustAcquire(t, l)
	holder := sessionPID(t, dsn, 1)
	// b's transaction holds a backend; the pooler prefers the one a just used.
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var pinned uint32
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pinned); err != nil {
		t.Fatal(err)
	}
	if pinned != holder {
		t.Skipf("the pooler gave b backend %d, not a's %d", pinned, holder)
	}
	err = l.Release(ctx)
	if !errors.Is(err, alock.ErrPooler) || !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release through a transaction pooler: %v, want ErrPooler and ErrLost", err)
	}
	if !a.IsClosed() {
		t.Fatal("the connection stays open although its lock state is in doubt")
	}
}

// TestTwoClientsThroughTransactionPooler is the scenario the pid check
// exists for: five clients of a transaction-mode pool take one exclusive
// lock, five rounds each. Without it they all got it at once, without an
// error; now a Lock whose statement ran on another backend than its
// session's, or on the backend whose locks another connection holds, fails
// with ErrPooler, and no two hold at once.
func TestTwoClientsThroughTransactionPooler(t *testing.T) {
	t.Parallel()
	_, via := startBouncer(t, "transaction")
	var (
		mu            sync.Mutex
		holders, most int
		poolerErrs    int
		otherErrs     []error
		wg            sync.WaitGroup
		ctx           = context.Background()
	)
	for range 5 {
		conn := pgtest.Connect(t, via)
		wg.Go(func() {
			l := alock.NewExclusive(conn, alock.Key(1))
			for range 5 {
				err := l.Acquire(ctx)
				if err == nil {
					mu.Lock()
					holders++
					most = max(most, holders)
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					mu.Lock()
					holders--
					mu.Unlock()
					err = l.Release(ctx)
				}
				if err != nil {
					mu.Lock()
					if errors.Is(err, alock.ErrPooler) {
						poolerErrs++
					} else if !errors.Is(err, alock.ErrLost) {
						otherErrs = append(otherErrs, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("at most %d holders at once; %d ErrPooler", most, poolerErrs)
	if poolerErrs == 0 {
		t.Fatalf("no ErrPooler through a transaction pooler (at most %d holders at once)", most)
	}
	if most > 1 {
		t.Errorf("%d clients held the exclusive lock at once", most)
	}
	for _, err := range otherErrs {
		t.Error(err)
	}
}
