// Package pgbouncer starts a throwaway PgBouncer in front of a pgserver
// cluster, for tests that need a connection pooler between client and
// server. It does not depend on package testing.
//
// Each Bouncer owns a private directory (under os.TempDir) holding its
// configuration and log. It listens on a free 127.0.0.1 TCP port (no unix
// socket), trusts every client, and serves a single database. When the
// process runs as root, pgbouncer runs as the "postgres" OS user, since it
// refuses to run as root.
package pgbouncer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgalock/alock/internal/pgserver"
)

// ErrNotInstalled is returned (wrapped) by Start when no pgbouncer binary is
// found on PATH or at /usr/sbin/pgbouncer. Test with errors.Is.
var ErrNotInstalled = errors.New("pgbouncer: pgbouncer binary not found")

// Options configures Start. A nil *Options means the defaults.
type Options struct {
	// PoolMode is pgbouncer's pool_mode: "transaction" (the default when
	// empty), "session" or "statement".
	PoolMode string
	// PoolSize is default_pool_size, the number of server connections per
	// database/user pair; 0 means 2.
	PoolSize int
}

// Bouncer is a running pgbouncer started by Start. Its methods are safe for
// concurrent use. Call Stop to shut it down and delete its files.
type Bouncer struct {
	dir     string
	logFile string
	port    int
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited

	mu       sync.Mutex // guards stopped and finalLog
	stopped  bool
	finalLog string
}

const (
	// readyTimeout bounds Start's wait for the first connection when ctx
	// has no earlier deadline.
	readyTimeout = 30 * time.Second
	// stopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	stopTimeout = 10 * time.Second
)

var dbnamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Start runs pgbouncer in front of target, serving the single database
// dbname (a plain identifier: letters, digits and '_'), which it reaches
// over TCP at 127.0.0.1:target.Port(). Clients connect to ConnString; they
// are trusted (any user listed in its auth file, which holds "postgres"),
// and pgbouncer logs in to target as that user. Pool mode and size come
// from opts; server_reset_query keeps pgbouncer's default (DISCARD ALL,
// used in session mode only) and server_login_retry is 1 second, so a
// restarted target is reachable again quickly.
//
// Start returns once a client can connect through pgbouncer and run
// SELECT 1 (so target must be running and dbname must exist). If the binary
// is missing the error wraps ErrNotInstalled. On any other failure the
// error includes pgbouncer's log, and no process or directory is left
// behind. ctx bounds the startup.
func Start(ctx context.Context, target *pgserver.Server, dbname string, opts *Options) (*Bouncer, error) {
	if opts == nil {
		opts = &Options{}
	}
	cfg := config{dbname: dbname, poolMode: opts.PoolMode, poolSize: opts.PoolSize}
	if cfg.poolMode == "" {
		cfg.poolMode = "transaction"
	}
	if cfg.poolSize == 0 {
		cfg.poolSize = 2
	}
	switch {
	case target == nil:
		return nil, errors.New("pgbouncer: nil target server")
	case !dbnamePattern.MatchString(dbname):
		return nil, fmt.Errorf("pgbouncer: invalid database name %q (want letters, digits and '_')", dbname)
	case cfg.poolMode != "transaction" && cfg.poolMode != "session" && cfg.poolMode != "statement":
		return nil, fmt.Errorf("pgbouncer: unknown pool mode %q (want transaction, session or statement)", cfg.poolMode)
	case cfg.poolSize < 0:
		return nil, fmt.Errorf("pgbouncer: negative pool size %d", cfg.poolSize)
	}
	cfg.targetPort = target.Port()
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	cred, err := pgserver.Credential()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	b, err := launch(ctx, bin, dir, cred, cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

// launch writes the configuration and starts pgbouncer in dir, retrying
// with a new port if the chosen one was taken meanwhile. On failure the
// process is gone; the caller removes dir.
func launch(ctx context.Context, bin, dir string, cred *syscall.Credential, cfg config) (*Bouncer, error) {
	const attempts = 3
	for i := 1; ; i++ {
		b, err := startProcess(bin, dir, cred, cfg)
		if err != nil {
			return nil, err
		}
		err = b.waitReady(ctx, cfg.dbname)
		if err == nil {
			return b, nil
		}
		b.kill()
		inUse := strings.Contains(strings.TrimSpace(pgserver.LogTail(b.logFile)), "Address already in use")
		if i == attempts || ctx.Err() != nil || !inUse {
			return nil, err
		}
	}
}

// waitReady polls until a client can run SELECT 1 through b, failing early
// if the process exits or answers with an error.
func (b *Bouncer) waitReady(ctx context.Context, dbname string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-b.done:
			return fmt.Errorf("pgbouncer: exited during startup (%v)\n--- pgbouncer log ---\n%s",
				b.cmd.ProcessState, strings.TrimSpace(pgserver.LogTail(b.logFile)))
		default:
		}
		last = ping(ctx, b.ConnString(dbname))
		if last == nil {
			return nil
		}
		// An error reply means pgbouncer is up and the server (or
		// pgbouncer's own checks) refused: retrying will not help.
		if pgErr := (*pgconn.PgError)(nil); errors.As(last, &pgErr) {
			return fmt.Errorf("pgbouncer: SELECT 1 through pgbouncer: %w\n--- pgbouncer log ---\n%s",
				last, strings.TrimSpace(pgserver.LogTail(b.logFile)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgbouncer: not accepting connections: %w (last error: %v)\n--- pgbouncer log ---\n%s",
				ctx.Err(), last, strings.TrimSpace(pgserver.LogTail(b.logFile)))
		case <-b.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping connects to connString and runs SELECT 1.
func ping(ctx context.Context, connString string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// ConnString returns a keyword/value connection string for database dbname
// through the bouncer, as user postgres. It includes pgx's
// default_query_exec_mode=simple_protocol, because prepared statements
// cached per connection break behind transaction and statement pooling; it
// is therefore meant for pgx (lib/pq would send that keyword to the server
// as a run-time parameter, which pgbouncer rejects).
func (b *Bouncer) ConnString(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable "+
		"default_query_exec_mode=simple_protocol", b.port, pgserver.QuoteValue(dbname))
}

// Port returns the 127.0.0.1 TCP port the bouncer listens on.
func (b *Bouncer) Port() int { return b.port }

// Log returns the last ~16 KiB of pgbouncer's log. After Stop it returns
// the log as it was when the bouncer stopped.
func (b *Bouncer) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return b.finalLog
	}
	return strings.TrimSpace(pgserver.LogTail(b.logFile))
}

// Stop shuts pgbouncer down (SIGTERM, then SIGKILL if it has not exited
// within 10 seconds), closing all client and server connections, and removes
// its directory. The log stays available through Log. Calling Stop again is
// a no-op returning nil.
func (b *Bouncer) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	b.stopped = true
	var stopErr error
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		stopErr = fmt.Errorf("pgbouncer: send SIGTERM: %w", err)
	}
	select {
	case <-b.done:
	case <-time.After(stopTimeout):
		b.kill()
	}
	b.finalLog = strings.TrimSpace(pgserver.LogTail(b.logFile))
	if err := os.RemoveAll(b.dir); err != nil {
		return errors.Join(stopErr, fmt.Errorf("pgbouncer: remove %s: %w", b.dir, err))
	}
	return stopErr
}

// kill sends SIGKILL and waits for the process to exit.
func (b *Bouncer) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}
