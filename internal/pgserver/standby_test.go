package pgserver_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestStandbyReplicatesAndPromotes(t *testing.T) {
	primary := start(t, nil)
	for _, q := range []string{"SHOW wal_level", "SHOW max_wal_senders"} {
		t.Logf("primary %s = %s", q, queryString(t, primary.ConnString("postgres"), q))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	standby, err := primary.StartStandby(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartStandby took %v (port %d, data %s)", time.Since(begin), standby.Port(), standby.DataDir())
	t.Cleanup(func() {
		if err := standby.Stop(); err != nil {
			t.Error(err)
		}
	})
	if standby.Port() == primary.Port() || standby.DataDir() == primary.DataDir() {
		t.Fatalf("standby shares port or data dir with primary: %d %s", standby.Port(), standby.DataDir())
	}
	if got := queryString(t, standby.ConnString("postgres"), "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("standby pg_is_in_recovery = %s, want true", got)
	}
	if got := queryString(t, primary.ConnString("postgres"), "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Fatalf("primary pg_is_in_recovery = %s, want false", got)
	}

	execSQL(t, primary.ConnString("postgres"), "CREATE TABLE replicated AS SELECT 42 AS v")
	begin = time.Now()
	waitRows(t, standby.TCPConnString("postgres"), "SELECT v::text FROM replicated", "42")
	t.Logf("table visible on standby after %v", time.Since(begin))

	if err := standby.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, standby.ConnString("postgres"), "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("after Restart standby pg_is_in_recovery = %s, want true", got)
	}
	if standby.Log() == "" {
		t.Error("standby Log is empty")
	}

	begin = time.Now()
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Promote took %v", time.Since(begin))
	if got := queryString(t, standby.ConnString("postgres"), "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Fatalf("after Promote pg_is_in_recovery = %s, want false", got)
	}
	execSQL(t, standby.ConnString("postgres"), "CREATE TABLE after_promote (v int)")
	if err := primary.Promote(ctx); err == nil {
		t.Error("Promote of a primary succeeded")
	}
}

// waitRows polls sql on connString until it returns want, failing after 30s.
func waitRows(t *testing.T, connString, sql, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %q: %v", connString, err)
	}
	defer conn.Close(context.Background())
	var last error
	for ctx.Err() == nil {
		var got string
		last = conn.QueryRow(ctx, sql).Scan(&got)
		if last == nil && got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never returned %q (last error %v)", sql, want, last)
}

func execSQL(t *testing.T, connString, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %q: %v", connString, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestStartStandbyFailureCleansUp(t *testing.T) {
	tmp := pgtest.TempDir(t)
	primary := start(t, &pgserver.Options{Settings: map[string]string{"max_wal_senders": "0"}})
	_, err := primary.StartStandby(context.Background())
	if err == nil {
		t.Fatal("StartStandby from a primary without WAL senders succeeded")
	}
	if !strings.HasPrefix(err.Error(), "pgserver: pg_basebackup") {
		t.Errorf("err = %v, want a pgserver: pg_basebackup error", err)
	}
	t.Logf("error: %.300s", err)
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Errorf("StartStandby left entries behind in %s: %v", tmp, entries)
	}
	if err := primary.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.StartStandby(context.Background()); err == nil {
		t.Error("StartStandby from a stopped primary succeeded")
	}
}
