package alock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestFullLockTableIsReportedAndGivenBack fills the shared lock table of a
// private server with a small max_locks_per_transaction. The Lock that runs
// out gets an error naming the setting, holds none of its ids, and once the
// others let go the cluster takes locks again.
func TestFullLockTableIsReportedAndGivenBack(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, &pgserver.Options{Settings: map[string]string{
		"max_locks_per_transaction": "10", "max_connections": "10",
	}})
	if errors.Is(err, pgserver.ErrNotInstalled) && pgtest.Server() == nil {
		t.Skip("no PostgreSQL binaries for a private server:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dsn := srv.ConnString("postgres")
	s := session{pgtest.Connect(t, dsn), dsn}
	watcher := session{pgtest.Connect(t, dsn), dsn}

	var held []*alock.Lock
	var full *alock.Lock
	var fullErr error
	for i := int64(0); full == nil && i < 1000; i++ {
		ids := make([]alock.ID, alock.MaxIDs)
		for j := range ids {
			ids[j] = alock.Key(i*alock.MaxIDs + int64(j))
		}
		l := alock.NewExclusive(s.Conn, ids...)
		if fullErr = l.Acquire(ctx); fullErr != nil {
			full = l
			break
		}
		held = append(held, l)
	}
	if full == nil {
		t.Fatalf("took %d locks without filling the lock table", len(held)*alock.MaxIDs)
	}
	if !strings.Contains(fullErr.Error(), "max_locks_per_transaction") {
		t.Fatalf("error on a full lock table: %v, want one naming max_locks_per_transaction", fullErr)
	}
	t.Logf("lock table full after %d Locks of %d ids: %v", len(held), alock.MaxIDs, fullErr)
	if s.IsClosed() {
		t.Fatal("the session was closed; its other Locks are lost")
	}
	holds := serverHoldsOf(t, watcher, s.PgConn().PID())
	if want := len(held) * alock.MaxIDs; len(holds) != want {
		t.Fatalf("server shows %d holds, want the %d of the Locks that succeeded", len(holds), want)
	}
	for _, h := range holds {
		for _, id := range full.IDs() {
			if h == hold(id, alock.Exclusive) {
				t.Fatalf("the failed Lock still holds %s", h)
			}
		}
	}
	for _, l := range held {
		mustRelease(t, l)
	}
	if err := full.Acquire(ctx); err != nil {
		pgtest.Fatalf(t, "after release the cluster should take locks again: %v", err)
	}
}

// serverHoldsOf lists pid's granted advisory locks as seen from s, which
// must already be connected (a full lock table refuses new connections).
func serverHoldsOf(t *testing.T, s session, pid uint32) []string {
	t.Helper()
	rows, err := s.Query(context.Background(), `SELECT classid, objid, objsubid FROM pg_locks
		WHERE locktype = 'advisory' AND pid = $1 AND granted AND mode = 'ExclusiveLock'`, pid)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var c, o uint32
	var sub int16
	_, err = pgx.ForEachRow(rows, []any{&c, &o, &sub}, func() error {
		id, _ := alock.FromLockTag(c, o, uint16(sub))
		out = append(out, hold(id, alock.Exclusive))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
