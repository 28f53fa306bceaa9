package alock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgbouncer"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// privateServer starts a server of the test's own, which it may restart.
// synchronous_commit is on: fencing tokens must survive a crash.
func privateServer(t *testing.T) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, &pgserver.Options{Settings: map[string]string{"synchronous_commit": "on"}})
	if errors.Is(err, pgserver.ErrNotInstalled) && pgtest.Server() == nil {
		t.Skip("no PostgreSQL binaries for a private server:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

// TestSessionSignalsRestart restarts a server under a Session that holds a
// fenced lock: the loss is signalled at once, by the watchdog's parked
// read (package documentation: "at once for ... a closed socket"; with the
// keepalive probes off nothing else could notice, so the 10 s bound is a
// hang guard and slack for a loaded machine), and the next acquisition, on
// a new Session, gets a larger token.
func TestSessionSignalsRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := privateServer(t)
			dsn := srv.ConnString("postgres")
			opts := &alock.SessionOptions{Fencing: true, KeepaliveInterval: -1}
			s := openSession(t, dsn, opts)
			l := s.NewExclusive(alock.Key(1))
			if err := l.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
			before := l.Token()
			time.Sleep(100 * time.Millisecond)
			restarted := make(chan error, 1)
			go func() { restarted <- srv.Restart(context.Background(), mode) }()
			took := expectLost(t, s, l, 10*time.Second)
			t.Logf("restart -m %s signalled after %v", mode, took)
			if err := <-restarted; err != nil {
				t.Fatal(err)
			}
			again := openSession(t, dsn, opts)
			l2 := again.NewExclusive(alock.Key(1))
			if err := l2.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
			if l2.Token() <= before {
				t.Fatalf("token after restart %d, want more than %d", l2.Token(), before)
			}
		})
	}
}

// TestSessionSignalsCutNetwork cuts the network under an idle Session: a
// silent partition is signalled within the keepalive bound, and while the
// server still sees the session nobody else gets the lock; a reset is
// signalled at once and frees the lock.
func TestSessionSignalsCutNetwork(t *testing.T) {
	t.Parallel()
	const interval, timeout = 300 * time.Millisecond, 300 * time.Millisecond
	for _, cut := range []string{"blackhole", "reset"} {
		t.Run(cut, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			proxy, via := throughProxy(t, dsn)
			s := openSession(t, via, &alock.SessionOptions{KeepaliveInterval: interval, KeepaliveTimeout: timeout})
			l := s.NewExclusive(alock.Key(1))
			if err := l.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			other := openSession(t, dsn, nil).NewExclusive(alock.Key(1))
			if cut == "blackhole" {
				proxy.Blackhole()
				took := expectLost(t, s, l, interval+timeout+time.Second)
				t.Logf("blackhole signalled after %v (bound %v)", took, interval+timeout)
				if ok, err := other.TryAcquire(context.Background()); ok || err != nil {
					t.Fatalf("another session got the lock while the server still holds it: %v %v", ok, err)
				}
				proxy.Reset()
			} else {
				proxy.Reset()
				took := expectLost(t, s, l, time.Second)
				t.Logf("reset signalled after %v", took)
			}
			pgtest.WaitFor(t, "the lock to be free", func() bool {
				ok, err := other.TryAcquire(context.Background())
				return ok && err == nil
			})
		})
	}
}

// TestSessionKeepaliveDefeatsIdleSessionTimeout holds a lock across several
// idle_session_timeouts: the keepalive keeps the session; without it the
// server ends the session and the loss is signalled. The kept session's
// probes (every 100 ms) leave 900 ms of its 1 s idle_session_timeout for a
// stall of this process; when it ends after a stall of over half that, the
// test is skipped, not failed (see fatalUnlessStalled).
func TestSessionKeepaliveDefeatsIdleSessionTimeout(t *testing.T) {
	t.Parallel()
	const idle, probe = time.Second, 100 * time.Millisecond
	dsn := pgtest.NewDatabase(t)
	stalled := watchStalls(t)
	options := fmt.Sprintf(" options='-c idle_session_timeout=%dms'", idle.Milliseconds())
	kept := openSession(t, dsn+options, &alock.SessionOptions{KeepaliveInterval: probe})
	dropped := openSession(t, dsn+options, &alock.SessionOptions{KeepaliveInterval: -1})
	a, b := kept.NewExclusive(alock.Key(1)), dropped.NewExclusive(alock.Key(2))
	if err := errors.Join(a.Acquire(context.Background()), b.Acquire(context.Background())); err != nil {
		t.Fatal(err)
	}
	took := expectLost(t, dropped, b, idle+2*time.Second)
	t.Logf("idle_session_timeout signalled after %v", took)
	time.Sleep(2 * idle)
	if !a.Locked() || kept.Err() != nil {
		fatalUnlessStalled(t, stalled, (idle-probe)/2, "kept session lost its lock: %v", kept.Err())
	}
	if got := len(pgtest.AdvisoryLocks(t, dsn, kept.PID())); got != 1 {
		fatalUnlessStalled(t, stalled, (idle-probe)/2, "server shows %d locks for the kept session", got)
	}
	t.Logf("longest stall of this process: %v", stalled())
}

func TestSessionRefusesStandby(t *testing.T) {
	t.Parallel()
	primary := pgtest.Server()
	if primary == nil {
		t.Skip("needs the harness's own server (ALOCK_TEST_DSN is set)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	standby, err := primary.StartStandby(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Stop()
	_, err = alock.Open(ctx, standby.ConnString("postgres"), nil)
	if !errors.Is(err, alock.ErrStandby) {
		t.Fatalf("Open on a standby: %v, want ErrStandby", err)
	}
	s, err := alock.Open(ctx, standby.ConnString("postgres"), &alock.SessionOptions{AllowStandby: true})
	if err != nil {
		t.Fatalf("Open on a standby with AllowStandby: %v", err)
	}
	_ = s.Close(ctx)
}

func TestSessionRefusesTransactionPooler(t *testing.T) {
	t.Parallel()
	srv := pgtest.Server()
	if srv == nil {
		t.Skip("needs the harness's own server (ALOCK_TEST_DSN is set)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bouncer, err := pgbouncer.Start(ctx, srv, "postgres", nil)
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip("pgbouncer is not installed:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer bouncer.Stop()
	_, err = alock.Open(ctx, bouncer.ConnString("postgres"), nil)
	if !errors.Is(err, alock.ErrPooler) {
		t.Fatalf("Open through PgBouncer in transaction mode: %v, want ErrPooler", err)
	}
	// Transaction locks work through it.
	conn := pgtest.Connect(t, bouncer.ConnString("postgres"))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(1)); err != nil {
		t.Fatalf("LockTx through PgBouncer: %v", err)
	}
}
