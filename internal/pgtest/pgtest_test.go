package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestAdvisoryLocks(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			conn := pgtest.Connect(t, dsn)
			ctx := context.Background()
			if _, err := conn.Exec(ctx, "select pg_advisory_lock(5)"); err != nil {
				pgtest.Fatalf(t, "lock: %v", err)
			}
			pid := conn.PgConn().PID()
			want := pgtest.AdvisoryLock{ClassID: 0, ObjID: 5, ObjSubID: 1, Mode: "ExclusiveLock", Granted: true}
			got := pgtest.AdvisoryLocks(t, dsn, pid)
			if len(got) != 1 || got[0] != want {
				pgtest.Fatalf(t, "AdvisoryLocks = %+v, want [%+v]", got, want)
			}
			if _, err := conn.Exec(ctx, "select pg_advisory_unlock(5)"); err != nil {
				pgtest.Fatalf(t, "unlock: %v", err)
			}
			pgtest.WaitFor(t, "lock release", func() bool {
				return len(pgtest.AdvisoryLocks(t, dsn, pid)) == 0
			})
		})
	}
}

func TestSortedAndShared(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	conn := pgtest.Connect(t, dsn)
	ctx := context.Background()
	const sql = "select pg_advisory_lock_shared(3, 4), pg_advisory_lock(1, 2), pg_advisory_lock_shared(1, 2), pg_advisory_lock(7)"
	if _, err := conn.Exec(ctx, sql); err != nil {
		pgtest.Fatalf(t, "lock: %v", err)
	}
	got := pgtest.AdvisoryLocks(t, dsn, conn.PgConn().PID())
	want := []pgtest.AdvisoryLock{
		{ClassID: 0, ObjID: 7, ObjSubID: 1, Mode: "ExclusiveLock", Granted: true},
		{ClassID: 1, ObjID: 2, ObjSubID: 2, Mode: "ExclusiveLock", Granted: true},
		{ClassID: 1, ObjID: 2, ObjSubID: 2, Mode: "ShareLock", Granted: true},
		{ClassID: 3, ObjID: 4, ObjSubID: 2, Mode: "ShareLock", Granted: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		pgtest.Fatalf(t, "AdvisoryLocks =\n%+v, want\n%+v", got, want)
	}
}

func TestServer(t *testing.T) {
	if os.Getenv("ALOCK_TEST_DSN") != "" {
		if pgtest.Server() != nil || pgtest.ServerLog() != "" {
			t.Error("external server: want Server()==nil and ServerLog()==\"\"")
		}
		return
	}
	if pgtest.Server() == nil || pgtest.Server().Port() == 0 {
		t.Fatal("Server() is nil or has no port")
	}
}

// Example shows DATABASE_URL being set by Main for runnable examples.
func Example() {
	conn, err := pgxConnect(os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(context.Background())
	var one int
	_ = conn.QueryRow(context.Background(), "select 1").Scan(&one)
	fmt.Println(one)
	// Output: 1
}

func pgxConnect(dsn string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}
