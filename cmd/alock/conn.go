package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// errNoDatabase says that no database is configured; it exits with
// exitUsage.
var errNoDatabase = errors.New("alock: no database configured: pass --dsn, or set DATABASE_URL " +
	"or the PG* variables (PGHOST, PGDATABASE, PGUSER...); `alock demo` needs none")

// pgEnv are the libpq variables that say which database to use; any of
// them set counts as a configuration.
var pgEnv = []string{"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"}

// defaultConnectTimeout bounds connecting when the configuration sets no
// connect_timeout.
const defaultConnectTimeout = 15 * time.Second

// connConfig returns the connection configuration from dsn, else from
// DATABASE_URL, else from the PG* variables, as libpq reads them, or
// errNoDatabase if none is set; a malformed one is a usage error. Its
// errors never show a password.
func connConfig(dsn string) (*pgx.ConnConfig, error) {
	if dsn == "" {
		dsn = os.Getenv("DATABASE_URL")
	}
	if dsn == "" && !anyEnv(pgEnv) {
		return nil, errNoDatabase
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, usageError{badConnString(err)}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	return cfg, nil
}

// badConnString says why a connection string could not be parsed, without
// the string: pgx quotes it, and its redaction of the password is best
// effort (it misses "password = x", for one).
func badConnString(err error) error {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `STRING`: why": the last "`: " is past the string,
		// whatever it holds.
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+len("`: "):]
		} else {
			msg = "malformed"
		}
	}
	return &labelledError{"bad connection string (not shown: it may hold a password): " + msg, err}
}

// anyEnv reports whether any of the environment variables names is set and
// not empty.
func anyEnv(names []string) bool {
	for _, n := range names {
		if os.Getenv(n) != "" {
			return true
		}
	}
	return false
}

// connect opens a plain connection with cfg, naming the server (never the
// password) if it fails.
func connect(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, relabel("alock: connect: ", err)
	}
	return conn, nil
}

// labelledError is an error with a message of alock's own.
type labelledError struct {
	msg string
	err error
}

func (e *labelledError) Error() string { return e.msg }
func (e *labelledError) Unwrap() error { return e.err }

// relabel returns err, which it wraps, with its message behind prefix
// instead of the library's "alock: " or "alock: open: ".
func relabel(prefix string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "alock: ")
	return &labelledError{prefix + strings.TrimPrefix(msg, "open: "), err}
}

// closeConn closes conn within closeTimeout, whatever became of the
// caller's context.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}
