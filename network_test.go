package alock_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/netproxy"
	"github.com/pgalock/alock/internal/pgtest"
)

// throughProxy starts a proxy to dsn's server and returns it with a DSN that
// connects through it.
func throughProxy(t *testing.T, dsn string) (*netproxy.Proxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "127.0.0.1"
	}
	proxy, err := netproxy.Start(fmt.Sprintf("%s:%d", host, cfg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	port := strconv.Itoa(proxy.Addr().Port)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = "127.0.0.1:" + port
		q := u.Query()
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
		return proxy, u.String()
	}
	return proxy, dsn + " host=127.0.0.1 port=" + port
}

// connectThrough opens a connection to dsn's database through a TCP proxy
// that the test can cut.
func connectThrough(t *testing.T, dsn string) (*pgx.Conn, *netproxy.Proxy) {
	t.Helper()
	proxy, via := throughProxy(t, dsn)
	return pgtest.Connect(t, via), proxy
}

// TestCutNetworkWhileWaiting cancels a wait whose connection has gone
// silent: the cancel cannot be confirmed, so after CleanupTimeout the
// connection is closed (its lock state is in doubt), the error still wraps
// the context's, and every Lock on it reports the loss.
func TestCutNetworkWhileWaiting(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	conn, proxy := connectThrough(t, s[0].dsn)
	keep := alock.NewExclusive(conn, alock.Key(1))
	mustAcquire(t, keep)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	pid := conn.PgConn().PID()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	start := time.Now()
	go func() { done <- alock.NewExclusive(conn, alock.Key(2)).Acquire(ctx) }()
	waitForPid(t, s[1], pid, "Key(2) waiting", "SELECT count(*) FROM pg_locks WHERE pid = $1 AND objid = 2 AND NOT granted")
	proxy.Blackhole()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire: %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 3*alock.CleanupTimeout {
		t.Fatalf("Acquire took %v, want it bounded by CleanupTimeout (%v)", took, alock.CleanupTimeout)
	}
	if !conn.IsClosed() {
		t.Fatal("connection left open with its lock state in doubt")
	}
	if keep.Locked() {
		t.Fatal("Locked on a closed connection")
	}
	if err := keep.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release: %v, want ErrLost", err)
	}
	// Once the network comes back with a reset, the server ends the session
	// and nothing stays locked. (A backend waiting for a lock notices its
	// client is gone only when it has something to send: let it have Key(2).)
	proxy.Reset()
	exec(t, s[1], "SELECT pg_advisory_unlock(2)")
	waitForPid(t, s[1], pid, "the backend to end", "SELECT 1 - count(*) FROM pg_stat_activity WHERE pid = $1")
}

// waitForPid waits until query, given pid, returns a count above zero.
func waitForPid(t *testing.T, s session, pid uint32, what, query string) {
	t.Helper()
	pgtest.WaitFor(t, what, func() bool {
		var n int
		return s.QueryRow(context.Background(), query, pid).Scan(&n) == nil && n > 0
	})
}
