package alock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgalock/alock"
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
