// Package pgtest is test support for packages that need a PostgreSQL
// server: one shared throwaway server per test binary (see Main), a fresh
// database per test (NewDatabase), and helpers to inspect the server's view
// of advisory locks.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgalock/alock/internal/pgserver"
)

// DSNEnv names the environment variable that, when set, points Main at an
// existing server instead of starting one: a connection string to a
// database, as a superuser (needed to create and force-drop databases).
const DSNEnv = "ALOCK_TEST_DSN"

var (
	server   *pgserver.Server // nil when DSNEnv is used
	adminDSN string           // connection string used for CREATE/DROP DATABASE
	dbSeq    atomic.Int64
	runTag   = randomTag()
)

// Main is the TestMain of every package that needs a server:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// It uses the server named by ALOCK_TEST_DSN, or else starts one private
// server for the whole test binary. If PostgreSQL is not installed it exits
// 1 when env CI is non-empty (a missing server fails CI) and otherwise
// prints a skip message and exits 0. Before running the tests it creates a
// database for runnable examples and sets DATABASE_URL to its connection
// string. After the tests it stops the server and checks for leaked
// goroutines, exiting 1 if any remain; otherwise it exits with m.Run's code.
// Main never returns.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if code, ok := setup(); !ok {
		return code
	}
	exampleDB, err := createDatabase()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n%s", err, logSection())
		_ = teardown("")
		return 1
	}
	if err := os.Setenv("DATABASE_URL", exampleDB.dsn); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: set DATABASE_URL: %v\n", err)
		_ = teardown(exampleDB.name)
		return 1
	}
	code := m.Run()
	if err := teardown(exampleDB.name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = max(code, 1)
	}
	if err := checkLeaks(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// setup selects or starts the shared server. If ok is false the binary
// must exit with code.
func setup() (code int, ok bool) {
	if dsn := os.Getenv(DSNEnv); dsn != "" {
		if _, err := pgx.ParseConfig(dsn); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: invalid %s: %v\n", DSNEnv, err)
			return 1, false
		}
		adminDSN = dsn
		return 0, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := pgserver.Start(ctx, nil)
	switch {
	case errors.Is(err, pgserver.ErrNotInstalled) && os.Getenv("CI") == "":
		fmt.Fprintf(os.Stderr, "pgtest: skipping tests: %v (set %s to use an existing server)\n", err, DSNEnv)
		return 0, false
	case err != nil:
		fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL: %v\n", err)
		return 1, false
	}
	server = s
	adminDSN = s.ConnString("postgres")
	return 0, true
}

// teardown drops the examples database (only needed on an external server)
// and stops the shared server.
func teardown(exampleDB string) error {
	if server == nil {
		if exampleDB == "" {
			return nil
		}
		return dropDatabase(exampleDB)
	}
	if err := server.Stop(); err != nil {
		return fmt.Errorf("pgtest: stop server: %w", err)
	}
	return nil
}

// checkLeaks reports goroutines still running after the tests, retrying a
// few times to let closing connections finish.
func checkLeaks() error {
	var err error
	for range 3 {
		if err = goleak.Find(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pgtest: goroutines leaked by the tests: %w", err)
}

// Server returns the shared server started by Main, or nil when
// ALOCK_TEST_DSN is used (or Main has not run).
func Server() *pgserver.Server { return server }

// ServerLog returns the tail of the shared server's log, or "" when the
// server is external.
func ServerLog() string {
	if server == nil {
		return ""
	}
	return server.Log()
}

func logSection() string {
	return "\n--- server log ---\n" + ServerLog()
}

// Fatalf is t.Fatalf with the shared server's log appended after a
// "--- server log ---" line.
func Fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Fatal(fmt.Sprintf(format, args...) + logSection())
}

// withDatabase returns dsn (URL or keyword/value form) pointed at dbname.
func withDatabase(dsn, dbname string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("pgtest: parse %s: %w", DSNEnv, err)
		}
		u.Path = "/" + dbname
		u.RawPath = ""
		return u.String(), nil
	}
	// In keyword/value form the last occurrence of a keyword wins.
	return dsn + " dbname=" + dbname, nil
}

func randomTag() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
