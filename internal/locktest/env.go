package locktest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// env is one test's database, with the backend under test and plain pgx
// connections as the other parties.
type env struct {
	t   *testing.T
	dsn string
	b   Backend
}

func newEnv(t *testing.T, b Backend) *env {
	return &env{t: t, dsn: pgtest.NewDatabase(t), b: b}
}

// session opens a session of the backend under test.
func (e *env) session() Session { return e.b.Open(e.t, e.dsn) }

// other opens a plain pgx connection: another party.
func (e *env) other() *pgx.Conn { return pgtest.Connect(e.t, e.dsn) }

// hold renders a server hold as "Key(1)/exclusive".
func hold(id alock.ID, m alock.Mode) string { return Hold(id, m) }

// Hold renders a server hold as "Key(1)/exclusive", as Holds does.
func Hold(id alock.ID, m alock.Mode) string { return id.String() + "/" + m.String() }

// holds asks the server what pid holds.
func (e *env) holds(pid uint32) []string { return Holds(e.t, e.dsn, pid) }

// Holds asks the server what backend pid holds in dsn's database (pg_locks),
// rendered like Hold, with waiting rows marked "(waiting)", sorted.
func Holds(t testing.TB, dsn string, pid uint32) []string {
	t.Helper()
	var out []string
	for _, l := range pgtest.AdvisoryLocks(t, dsn, pid) {
		id, ok := alock.FromLockTag(l.ClassID, l.ObjID, l.ObjSubID)
		if !ok {
			t.Fatalf("unexpected objsubid in %+v", l)
		}
		m := alock.Exclusive
		if l.Mode == "ShareLock" {
			m = alock.Share
		}
		h := Hold(id, m)
		if !l.Granted {
			h += "(waiting)"
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// WaitWaiting waits until pid waits on the server for an advisory lock (a
// sliced wait shows it only during its slices).
func WaitWaiting(t testing.TB, dsn string, pid uint32) {
	t.Helper()
	pgtest.WaitFor(t, fmt.Sprintf("pid %d waiting on the server", pid), func() bool {
		for _, h := range Holds(t, dsn, pid) {
			if strings.HasSuffix(h, "(waiting)") {
				return true
			}
		}
		return false
	})
}

// expectHolds fails the test unless the server shows exactly want for s.
func (e *env) expectHolds(s Session, want ...string) {
	e.t.Helper()
	got := e.holds(s.PID())
	slices.Sort(want)
	if !slices.Equal(got, want) {
		pgtest.Fatalf(e.t, "pg_locks for pid %d: got %v, want %v", s.PID(), got, want)
	}
}

// waitHolds waits until the server shows exactly want for s.
func (e *env) waitHolds(s Session, want ...string) {
	e.t.Helper()
	slices.Sort(want)
	pgtest.WaitFor(e.t, fmt.Sprintf("pg_locks for pid %d to be %v", s.PID(), want), func() bool {
		return slices.Equal(e.holds(s.PID()), want)
	})
}

// expectUsable fails the test unless s is open and runs a statement.
func (e *env) expectUsable(s Session) {
	e.t.Helper()
	if s.Closed() {
		pgtest.Fatalf(e.t, "session closed")
	}
	if err := s.Exec(context.Background(), "SELECT 1"); err != nil {
		pgtest.Fatalf(e.t, "session not usable: %v", err)
	}
}

func (e *env) mustAcquire(l Lock) {
	e.t.Helper()
	if err := l.Acquire(context.Background()); err != nil {
		pgtest.Fatalf(e.t, "Acquire %v: %v", l.IDs(), err)
	}
}

func (e *env) mustRelease(l Lock) {
	e.t.Helper()
	if err := l.Release(context.Background()); err != nil {
		pgtest.Fatalf(e.t, "Release %v: %v", l.IDs(), err)
	}
}

// exec runs sql on a plain pgx connection or fails the test.
func (e *env) exec(c *pgx.Conn, sql string, args ...any) {
	e.t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		pgtest.Fatalf(e.t, "%s: %v", strings.Fields(sql)[0], err)
	}
}
