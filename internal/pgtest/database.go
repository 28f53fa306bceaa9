package pgtest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// adminTimeout bounds each CREATE/DROP DATABASE round trip.
const adminTimeout = 30 * time.Second

type database struct{ name, dsn string }

// NewDatabase creates a database with a unique name on the shared server
// and returns a connection string to it (as the superuser). It is safe to
// call from parallel tests. The database is dropped WITH (FORCE) in
// t.Cleanup, disconnecting any remaining sessions. Failures call t.Fatal.
func NewDatabase(t testing.TB) string {
	t.Helper()
	db, err := createDatabase()
	if err != nil {
		Fatalf(t, "%v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(db.name); err != nil {
			t.Errorf("%v%s", err, logSection())
		}
	})
	return db.dsn
}

// createDatabase creates a uniquely named database through adminDSN.
func createDatabase() (database, error) {
	if adminDSN == "" {
		return database{}, fmt.Errorf("pgtest: no server: call pgtest.Main from TestMain")
	}
	name := fmt.Sprintf("alock_test_%d_%s_%d", os.Getpid(), runTag, dbSeq.Add(1))
	dsn, err := withDatabase(adminDSN, name)
	if err != nil {
		return database{}, err
	}
	if err := adminExec("CREATE DATABASE " + pgx.Identifier{name}.Sanitize()); err != nil {
		return database{}, err
	}
	return database{name: name, dsn: dsn}, nil
}

// dropDatabase drops name, terminating its sessions.
func dropDatabase(name string) error {
	return adminExec("DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)")
}

// adminExec runs one statement on a short-lived connection to adminDSN,
// with a context that is independent of any test's.
func adminExec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("pgtest: connect to admin database: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

// Connect opens a connection to connString, bounded by 10 s, and closes it
// in t.Cleanup. On failure it calls t.Fatal with the server log.
func Connect(t testing.TB, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		Fatalf(t, "pgtest: connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// AdvisoryLock is one advisory-lock row of pg_locks. For a single bigint
// key k, ClassID is the high and ObjID the low 32 bits and ObjSubID is 1;
// for a pair of int4 keys (a, b) they are a, b and 2.
type AdvisoryLock struct {
	ClassID, ObjID uint32
	ObjSubID       uint16
	Mode           string // "ExclusiveLock" or "ShareLock"
	Granted        bool
}

const advisoryLocksSQL = `
select l.classid::int8, l.objid::int8, l.objsubid::int4, l.mode, l.granted
from pg_locks l
where l.locktype = 'advisory' and l.pid = $1
  and l.database = (select oid from pg_database where datname = current_database())`

// AdvisoryLocks returns the server's view of the advisory locks held or
// awaited by backend pid in the database of connString, read through a
// separate short-lived connection and sorted by (ClassID, ObjID, ObjSubID,
// Mode). Failures call t.Fatal.
func AdvisoryLocks(t testing.TB, connString string, pid uint32) []AdvisoryLock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		Fatalf(t, "pgtest: connect: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, advisoryLocksSQL, int64(pid))
	if err != nil {
		Fatalf(t, "pgtest: query pg_locks: %v", err)
	}
	locks, err := pgx.CollectRows(rows, scanAdvisoryLock)
	if err != nil {
		Fatalf(t, "pgtest: read pg_locks: %v", err)
	}
	slices.SortFunc(locks, compareLocks)
	return locks
}

func scanAdvisoryLock(row pgx.CollectableRow) (AdvisoryLock, error) {
	var classID, objID int64
	var subID int32
	var l AdvisoryLock
	err := row.Scan(&classID, &objID, &subID, &l.Mode, &l.Granted)
	l.ClassID, l.ObjID, l.ObjSubID = uint32(classID), uint32(objID), uint16(subID)
	return l, err
}

func compareLocks(a, b AdvisoryLock) int {
	return cmp.Or(
		cmp.Compare(a.ClassID, b.ClassID),
		cmp.Compare(a.ObjID, b.ObjID),
		cmp.Compare(a.ObjSubID, b.ObjSubID),
		strings.Compare(a.Mode, b.Mode),
	)
}

// WaitFor polls cond every 5 ms until it returns true, and calls Fatalf
// (with the server log) if that has not happened within 10 s. what
// describes the awaited condition for the failure message.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			Fatalf(t, "pgtest: timed out after 10s waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
