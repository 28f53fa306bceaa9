package alock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// failover is a primary with a streaming standby, and a multi-host
// connection string that finds whichever accepts writes.
type failover struct {
	primary, standby *pgserver.Server
	dsn              string
}

// newFailover starts the pair with synchronous_commit = on; with sync, the
// standby is synchronous (synchronous_standby_names = '*').
func newFailover(t *testing.T, sync bool) *failover {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	settings := map[string]string{"synchronous_commit": "on"} // the default, which pgserver turns off
	if sync {
		settings["synchronous_standby_names"] = "*"
	}
	primary, err := pgserver.Start(ctx, &pgserver.Options{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Stop() })
	standby, err := primary.StartStandby(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = standby.Stop() })
	dsn := fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write",
		primary.Port(), standby.Port())
	return &failover{primary: primary, standby: standby, dsn: dsn}
}

// drawTokens acquires and releases Key(7) n times on s and returns the
// largest token drawn.
func drawTokens(t *testing.T, s *alock.Session, n int) int64 {
	t.Helper()
	l := s.NewExclusive(alock.Key(7))
	var top int64
	for range n {
		mustAcquire(t, l)
		top = max(top, l.Token())
		mustRelease(t, l)
	}
	return top
}

// sqlOn runs statements on the server at connString.
func sqlOn(t *testing.T, connString string, statements ...string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, st := range statements {
		if _, err := conn.Exec(context.Background(), st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
}

// failOver stops the primary at once (-m immediate) and promotes the
// standby; the Session on the old primary must signal the loss of its
// lock. It returns a Session on the new primary, found by the multi-host
// connection string.
func (f *failover) failOver(t *testing.T, old *alock.Session, held *alock.Lock, sync bool) *alock.Session {
	t.Helper()
	stopped := time.Now()
	if err := f.primary.Stop(); err != nil {
		t.Fatal(err)
	}
	took := expectLost(t, old, held, 10*time.Second)
	t.Logf("the Session on the old primary was told %v after the stop (%v)", took, old.Err())
	if !errors.Is(old.Err(), alock.ErrLost) {
		t.Fatalf("old session: %v, want ErrLost", old.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if sync { // no standby is left to wait for
		sqlOn(t, f.standby.ConnString("postgres"), "ALTER SYSTEM SET synchronous_standby_names = ''", "SELECT pg_reload_conf()")
	}
	s := openSession(t, f.dsn, &alock.SessionOptions{Fencing: true})
	t.Logf("a new Session opened on the promoted standby %v after the stop", time.Since(stopped).Round(time.Millisecond))
	return s
}

// checkNoLockSurvived checks that the new primary knows nothing of the old
// holder's lock: Key(7) is free.
func checkNoLockSurvived(t *testing.T, s *alock.Session) {
	t.Helper()
	l := s.NewExclusive(alock.Key(7))
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("Key(7) on the new primary: %v %v, want it free (advisory locks are not replicated)", ok, err)
	}
	mustRelease(t, l)
}

// TestFailoverSynchronous: with a synchronous standby, every token drawn
// after the failover is larger than every token drawn before it.
func TestFailoverSynchronous(t *testing.T) {
	t.Parallel()
	f := newFailover(t, true)
	s := openSession(t, f.dsn, &alock.SessionOptions{Fencing: true})
	before := drawTokens(t, s, 100)
	held := s.NewExclusive(alock.Key(7))
	mustAcquire(t, held)
	before = max(before, held.Token())
	s2 := f.failOver(t, s, held, true)
	if port := portOf(t, f.dsn); port != f.standby.Port() {
		t.Fatalf("the multi-host string landed on port %d, want the promoted standby's %d", port, f.standby.Port())
	}
	checkNoLockSurvived(t, s2)
	after := drawTokens(t, s2, 1)
	t.Logf("synchronous standby: largest token before the failover %d, first after %d", before, after)
	if after <= before {
		t.Fatalf("token %d drawn after the failover is not larger than %d drawn before", after, before)
	}
}

// TestFailoverAsynchronous measures how far back the tokens can go with an
// asynchronous standby: once as it is (streaming, a few milliseconds
// behind), and once with the standby cut off from the primary while n
// tokens are drawn, which is what a lagging standby looks like when the
// primary dies.
func TestFailoverAsynchronous(t *testing.T) {
	t.Parallel()
	for _, lag := range []int{0, 100} {
		t.Run(fmt.Sprintf("lag=%d", lag), func(t *testing.T) {
			t.Parallel()
			f := newFailover(t, false)
			s := openSession(t, f.dsn, &alock.SessionOptions{Fencing: true})
			before := drawTokens(t, s, 100)
			if lag > 0 { // stop the WAL receiver: what follows never reaches the standby
				sqlOn(t, f.standby.ConnString("postgres"), "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
				waitNoWALReceiver(t, f.standby.ConnString("postgres"))
				before = max(before, drawTokens(t, s, lag))
			}
			held := s.NewExclusive(alock.Key(7))
			mustAcquire(t, held)
			before = max(before, held.Token())
			s2 := f.failOver(t, s, held, false)
			checkNoLockSurvived(t, s2)
			after := drawTokens(t, s2, 1)
			t.Logf("asynchronous standby, %d tokens drawn while it was cut off: largest token before the failover %d, first after %d (went back by %d)",
				lag, before, after, max(0, before-after+1))
			if lag > 0 && after > before {
				t.Errorf("with the standby cut off, the token went on (%d > %d): the test did not cut it off", after, before)
			}
		})
	}
}

// waitNoWALReceiver waits until the standby at connString has no WAL
// receiver (pg_stat_wal_receiver lists a running one only): after a reload
// that empties primary_conninfo, its startup process stops the receiver in
// its own time.
func waitNoWALReceiver(t *testing.T, connString string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pgtest.WaitFor(t, "the standby's WAL receiver to stop", func() bool {
		var n int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// portOf returns the port of the server that connString reaches.
func portOf(t *testing.T, connString string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var port int
	if err := conn.QueryRow(context.Background(), "SELECT current_setting('port')::int").Scan(&port); err != nil {
		t.Fatal(err)
	}
	return port
}
