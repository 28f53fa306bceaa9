package alock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
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
// exists for: five clients of a transaction-mode pool (two backends) take
// one exclusive lock, five rounds each. Without it they all got it at once,
// without an error; now a Lock whose statement ran on another backend than
// its session's, or on the backend whose locks another connection holds,
// fails with ErrPooler, and no two hold at once. The clients connect first
// and start together, and the first to hold keeps the lock until every other
// client's first Acquire has returned or waits on the server: at most one
// can wait (on the other backend), so the rest must have run on the holder's
// backend while it held, which the check must refuse.
func TestTwoClientsThroughTransactionPooler(t *testing.T) {
	t.Parallel()
	const clients = 5
	dsn, via := startBouncer(t, "transaction")
	admin := pgtest.Connect(t, dsn) // the first holder's, to see the waits
	// A hang guard: a hold left on a pooled backend (which only a defect, or
	// Release's best effort failing, leaves) would make the others wait for ever.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		mu            sync.Mutex
		holders, most int
		poolerErrs    int
		otherErrs     []error
		wg            sync.WaitGroup
		start         = make(chan struct{})
		firstDone     atomic.Int32 // clients whose first Acquire has returned
		held          atomic.Bool  // set by the first client to hold
		overlap       string       // what the first holder saw before it let go
	)
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = pgtest.Connect(t, via)
	}
	// othersReached holds until every client's first Acquire has returned
	// or waits on the server (pg_locks: an ungranted advisory lock in the
	// database), 10 s at most.
	othersReached := func() string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting int32
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
				return fmt.Sprintf("pg_locks: %v", err)
			}
			done := firstDone.Load()
			if done+waiting >= clients {
				return ""
			}
			if time.Now().After(deadline) {
				return fmt.Sprintf("after 10 s, %d first Acquires had returned and %d waited on the server, of %d", done, waiting, clients)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, conn := range conns {
		wg.Go(func() {
			l := alock.NewExclusive(conn, alock.Key(1))
			<-start
			for round := range 5 {
				err := l.Acquire(ctx)
				if round == 0 {
					firstDone.Add(1)
				}
				if err == nil {
					mu.Lock()
					holders++
					most = max(most, holders)
					mu.Unlock()
					if held.CompareAndSwap(false, true) {
						overlap = othersReached()
					} else {
						time.Sleep(5 * time.Millisecond)
					}
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
	close(start)
	wg.Wait()
	t.Logf("at most %d holders at once; %d ErrPooler", most, poolerErrs)
	if overlap != "" {
		t.Errorf("the first holder waited for the others' first Acquire: %s", overlap)
	}
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
