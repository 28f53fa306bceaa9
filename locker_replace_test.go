package alock_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestLockerReplacesOnlyClosedSessions: a lost session is told before its
// connection closes; until it closes, the Locker does not open its
// replacement, so that it never has more than MaxSessions connections.
// Here the lost session's connection is kept open (its gate held) while an
// Acquire needs a session: it waits, with one backend on the server, and
// goes on, on a new session, once the old connection closes.
func TestLockerReplacesOnlyClosedSessions(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const app = "alock_locker_replace"
	lk := newLocker(t, dsn, app, &alock.LockerOptions{MaxSessions: 1})
	held := lk.NewExclusive(alock.Key(1))
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	oldPID, exit, err := alock.HoldLockerSession(ctx, lk)
	if err != nil {
		t.Fatal(err)
	}
	alock.TellLost(lk, errors.New("test: told, connection still open"))
	select {
	case <-held.Lost():
	case <-ctx.Done():
		t.Fatal("Lost did not close when the session was told lost")
	}
	next := lk.NewExclusive(alock.Key(2))
	acquired := make(chan error, 1)
	go func() { acquired <- next.Acquire(ctx) }()
	admin := pgtest.Connect(t, dsn)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if sessions, _, _ := backendsOn(t, admin, app); sessions != 1 {
			t.Fatalf("the server sees %d sessions while the lost one is still open, MaxSessions is 1", sessions)
		}
		if n := lk.Stat().Sessions; n != 1 {
			t.Fatalf("Stat says %d sessions while the lost one is still open, MaxSessions is 1", n)
		}
		select {
		case err := <-acquired:
			t.Fatalf("Acquire returned (%v) while the lost session's connection was still open", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	exit() // closes the lost session's connection
	if err := <-acquired; err != nil {
		t.Fatalf("Acquire after the lost session closed: %v", err)
	}
	defer func() {
		if err := next.Release(ctx); err != nil {
			t.Error(err)
		}
	}()
	pgtest.WaitFor(t, "the old backend to leave", func() bool {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, oldPID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	sessions, heldOnServer, _ := backendsOn(t, admin, app)
	if sessions != 1 || heldOnServer != 1 {
		t.Fatalf("the server sees %d sessions holding %d locks, want 1 holding 1 (the new session's)", sessions, heldOnServer)
	}
}

// TestLockerMovesOnFromOpensTheServerEnds: a session that the server ends
// as the Locker opens it (here terminated in AfterConnect) held nothing, so
// an acquisition moves on to another, as from a lost one: a TryAcquire up
// to its three attempts, an Acquire until its ctx ends. Before, the first
// such Open failed the acquisition with the server's FATAL error.
func TestLockerMovesOnFromOpensTheServerEnds(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const app = "alock_locker_open_ended"
	cfg, opens, kill := endingOpens(t, dsn, app)
	lk := newLockerConfig(t, cfg, &alock.LockerOptions{MaxSessions: 1})
	loseSession := func() {
		t.Helper()
		held := lk.NewExclusive(alock.Key(1))
		if err := held.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		terminate(t, dsn, alock.LockerLoads(lk)[0].PID)
		<-held.Lost()
		if err := held.Release(ctx); !errors.Is(err, alock.ErrLost) {
			t.Fatalf("Release of a lost hold: %v", err)
		}
	}
	for _, c := range []struct {
		name  string
		kills int32
		try   bool
	}{{"TryAcquire", 2, true}, {"Acquire", 5, false}} {
		loseSession()
		kill.Store(c.kills)
		before := opens.Load()
		l := lk.NewExclusive(alock.Key(2))
		var err error
		if c.try {
			var ok bool
			if ok, err = l.TryAcquire(ctx); err == nil && !ok {
				err = errors.New("false")
			}
		} else {
			err = l.Acquire(ctx)
		}
		if err != nil {
			t.Fatalf("%s after %d opens the server ended: %v", c.name, c.kills, err)
		}
		if n := opens.Load() - before; n != c.kills+1 {
			t.Errorf("%s: %d opens, want %d", c.name, n, c.kills+1)
		}
		if got := locktest.Holds(t, dsn, alock.LockerLoads(lk)[0].PID); !slices.Equal(got, []string{"Key(2)/exclusive"}) {
			t.Errorf("%s: pg_locks shows %v for the new session", c.name, got)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kill.Store(3)
	loseSession()
	l := lk.NewExclusive(alock.Key(3))
	if ok, err := l.TryAcquire(ctx); ok || err == nil {
		t.Errorf("TryAcquire after 3 opens the server ended: %v, %v; want the last one's error", ok, err)
	}
}

// TestLockerOpenOutlivesTheAcquireThatStartedIt: an Acquire whose ctx ends
// while the Locker opens a session for it returns ctx's error at once; the
// open goes on (it is not abandoned half-open, which would leave the
// server a backend beside the next one), and the session then serves the
// next acquisition without another open. Close ends an open in progress.
func TestLockerOpenOutlivesTheAcquireThatStartedIt(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const app = "alock_locker_open_outlives"
	cfg, opens, stall, release := stallingOpens(t, dsn, app)
	lk := newLockerConfig(t, cfg, &alock.LockerOptions{MaxSessions: 1})
	held := lk.NewExclusive(alock.Key(1))
	if err := held.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Connect(t, dsn)
	// gone waits until the lost session's connection is closed (the
	// Locker opens a replacement only then: an Acquire of 100 ms started
	// before would give up without one) and its backend has left
	// pg_stat_activity (so that the server's count is the new session's).
	gone := func() {
		t.Helper()
		pgtest.WaitFor(t, "the lost session's connection to be closed", func() bool { return lk.Stat().Sessions == 0 })
		pgtest.WaitFor(t, "the lost backend to leave pg_stat_activity", func() bool {
			sessions, _, _ := backendsOn(t, admin, app)
			return sessions == 0
		})
	}
	terminate(t, dsn, alock.LockerLoads(lk)[0].PID)
	<-held.Lost()
	_ = held.Release(ctx)
	gone()
	stall.Store(1)
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	l := lk.NewExclusive(alock.Key(2))
	if err := l.Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while the open stalls: %v, want a deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Acquire returned %v after its 100 ms deadline", d)
	}
	// The open may reach the server after the Acquire gave up: the stall
	// (AfterConnect) is where it has a backend.
	pgtest.WaitFor(t, "the open to reach the stall", func() bool { return opens.Load() == 2 })
	if sessions, _, _ := backendsOn(t, admin, app); sessions != 1 {
		t.Errorf("the server sees %d sessions while one is being opened", sessions)
	}
	close(release)
	pgtest.WaitFor(t, "the open to finish", func() bool { return lk.Stat().Sessions == 1 })
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d opens, want 2: the first session and the one the cancelled Acquire started", n)
	}
	if sessions, held, _ := backendsOn(t, admin, app); sessions != 1 || held != 1 {
		t.Errorf("the server sees %d sessions holding %d locks, want 1 holding 1", sessions, held)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// Close while an open stalls: it ends the open. (release is closed:
	// this stall lasts until the open's ctx ends.)
	terminate(t, dsn, alock.LockerLoads(lk)[0].PID)
	gone()
	stall.Store(2)
	go func() {
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_ = lk.NewExclusive(alock.Key(3)).Acquire(c)
	}()
	pgtest.WaitFor(t, "the stalled open", func() bool { return opens.Load() == 3 })
	closed := make(chan error, 1)
	go func() { closed <- lk.Close(ctx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the stalled open")
	}
	pgtest.WaitFor(t, "the server to list no session after Close", func() bool {
		sessions, _, _ := backendsOn(t, admin, app)
		return sessions == 0
	})
}

// endingOpens returns a ConnConfig for app whose AfterConnect counts the
// opens, and has the server terminate the next *kill of them (it counts
// them down).
func endingOpens(t *testing.T, dsn, app string) (cfg *pgx.ConnConfig, opens, kill *atomic.Int32) {
	t.Helper()
	cfg, err := pgx.ParseConfig(withParam(dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Connect(t, dsn)
	var adminMu sync.Mutex // opens may come together
	opens, kill = new(atomic.Int32), new(atomic.Int32)
	cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		opens.Add(1)
		if kill.Add(-1) < 0 {
			kill.Add(1)
			return nil
		}
		adminMu.Lock()
		defer adminMu.Unlock()
		_, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", c.PID())
		return err
	}
	return cfg, opens, kill
}

// stallingOpens returns a ConnConfig for app whose AfterConnect counts the
// opens and, while *stall is set, holds the next one until release closes
// (or its ctx ends); with *stall 2, until its ctx ends, release or not.
func stallingOpens(t *testing.T, dsn, app string) (cfg *pgx.ConnConfig, opens, stall *atomic.Int32, release chan struct{}) {
	t.Helper()
	cfg, err := pgx.ParseConfig(withParam(dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	opens, stall = new(atomic.Int32), new(atomic.Int32)
	release = make(chan struct{})
	cfg.AfterConnect = func(ctx context.Context, _ *pgconn.PgConn) error {
		opens.Add(1)
		released := release
		switch stall.Swap(0) {
		case 0:
			return nil
		case 2:
			released = nil
		}
		select {
		case <-released:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return cfg, opens, stall, release
}
