package pgbouncer_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock/internal/pgbouncer"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// start starts a bouncer in front of the shared server for a fresh
// database, or skips (fails in CI) when it cannot.
func start(t *testing.T, opts *pgbouncer.Options) (*pgbouncer.Bouncer, string) {
	t.Helper()
	srv := pgtest.Server()
	if srv == nil {
		t.Skipf("pgbouncer tests need the private server, not %s", pgtest.DSNEnv)
	}
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	dbname := cfg.Database
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	begin := time.Now()
	b, err := pgbouncer.Start(ctx, srv, dbname, opts)
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		pgtest.Fatalf(t, "%v", err)
	}
	t.Logf("Start took %v (port %d)", time.Since(begin), b.Port())
	t.Cleanup(func() {
		begin := time.Now()
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
		t.Logf("Stop took %v", time.Since(begin))
	})
	return b, dbname
}

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %q: %v", connString, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func backendPID(t *testing.T, conn *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatalf("pg_backend_pid: %v", err)
	}
	return pid
}

// TestFabricatedPID shows what the library must detect: behind PgBouncer
// the pid in BackendKeyData is not the pid of the backend running the
// queries, and (with one server connection) two clients share a backend.
func TestFabricatedPID(t *testing.T) {
	b, dbname := start(t, &pgbouncer.Options{PoolMode: "transaction", PoolSize: 1})
	c1 := connect(t, b.ConnString(dbname))
	c2 := connect(t, b.ConnString(dbname))
	p1, p2 := backendPID(t, c1), backendPID(t, c2)
	t.Logf("client 1: BackendKeyData pid %d, pg_backend_pid %d", c1.PgConn().PID(), p1)
	t.Logf("client 2: BackendKeyData pid %d, pg_backend_pid %d", c2.PgConn().PID(), p2)
	if c1.PgConn().PID() == p1 || c2.PgConn().PID() == p2 {
		t.Error("BackendKeyData pid equals pg_backend_pid() behind pgbouncer")
	}
	if c1.PgConn().PID() == c2.PgConn().PID() {
		t.Error("two clients got the same BackendKeyData pid")
	}
	if p1 != p2 {
		t.Errorf("with pool size 1 the clients ran on different backends %d and %d", p1, p2)
	}
}

// TestSessionModeDistinctBackends checks the pool mode reaches pgbouncer:
// in session mode two open clients hold two backends.
func TestSessionModeDistinctBackends(t *testing.T) {
	b, dbname := start(t, &pgbouncer.Options{PoolMode: "session"})
	c1 := connect(t, b.ConnString(dbname))
	c2 := connect(t, b.ConnString(dbname))
	if p1, p2 := backendPID(t, c1), backendPID(t, c2); p1 == p2 {
		t.Errorf("session mode: both clients on backend %d", p1)
	}
	var mode string
	admin := connect(t, strings.Replace(b.ConnString(dbname), "dbname="+dbname, "dbname=pgbouncer", 1))
	rows, err := admin.Query(context.Background(), "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		if vals[0] == "pool_mode" {
			mode, _ = vals[1].(string)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if mode != "session" {
		t.Errorf("pool_mode = %q, want session", mode)
	}
}

func TestStopTwiceRemovesDir(t *testing.T) {
	tmp := pgtest.TempDir(t)
	b, _ := start(t, nil)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("Stop left entries behind in %s: %v", tmp, entries)
	}
	if b.Log() == "" {
		t.Error("Log is empty after Stop")
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	srv := pgtest.Server()
	if srv == nil {
		t.Skipf("needs the private server, not %s", pgtest.DSNEnv)
	}
	tmp := pgtest.TempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgbouncer.Start(ctx, srv, "no_such_database", nil)
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err == nil {
		t.Fatal("Start for a missing database succeeded")
	}
	if !strings.Contains(err.Error(), "no_such_database") {
		t.Errorf("error does not mention the database: %v", err)
	}
	t.Logf("error: %.300s", err)
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("Start left entries behind in %s: %v", tmp, entries)
	}
	for _, opts := range []*pgbouncer.Options{{PoolMode: "bogus"}, {PoolSize: -1}} {
		if _, err := pgbouncer.Start(ctx, srv, "postgres", opts); err == nil || !strings.HasPrefix(err.Error(), "pgbouncer: ") {
			t.Errorf("Start(%+v) = %v, want a pgbouncer: error", opts, err)
		}
	}
	if _, err := pgbouncer.Start(ctx, srv, "bad name", nil); err == nil {
		t.Error("Start with an invalid database name succeeded")
	}
}
