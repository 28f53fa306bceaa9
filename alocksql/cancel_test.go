package alocksql

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/core"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestCancelOnly checks the cancel requests of a Lock on a *sql.Conn over
// pgx's stdlib driver, which come from copies taken inside Raw: one
// interrupts the statement running on the connection, through database/sql,
// and the connection and its session stay.
func TestCancelOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("pgx", pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var pid int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	s := newSQLConn(conn)
	if !s.CanCancel() {
		t.Fatal("CanCancel is false over pgx's stdlib driver")
	}
	done := make(chan error, 1)
	go func() { done <- s.Exec(ctx, "SELECT pg_sleep(30)", nil) }()
	stop := time.AfterFunc(10*time.Second, func() { s.Close(ctx) })
	defer stop.Stop()
	var ended error
	for ended == nil {
		if err := s.Cancel(ctx); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		select {
		case ended = <-done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if core.SQLState(ended) != "57014" {
		t.Fatalf("the statement ended with %v, want a cancel (57014)", ended)
	}
	var again int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&again); err != nil || again != pid || s.Closed() {
		t.Fatalf("after the cancel: pid %d (was %d), %v, closed %v; want the same session", again, pid, err, s.Closed())
	}
}
