package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgserver"
)

// demoDSNEnv names the environment variable that gives demo's default -dsn.
const demoDSNEnv = "ALOCK_DEMO_DSN"

// closeTimeout bounds closing the demo's connections, which runs even after
// an interrupt.
const closeTimeout = 5 * time.Second

// demoCommand runs `alock demo [-dsn DSN]`: it starts a throwaway PostgreSQL
// unless given a DSN, runs the walk-through and always stops the server it
// started, also when ctx ends.
func demoCommand(ctx context.Context, std stdio, args []string) (err error) {
	fs := newFlagSet("demo")
	dsn := dsnFlag(fs)
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected argument %q", rest[0])
	}
	stdout := std.out
	if *dsn == "" {
		*dsn = os.Getenv(demoDSNEnv) // not the flag default, which -h would print
	}
	if *dsn != "" {
		return runDemo(ctx, stdout, *dsn)
	}
	fmt.Fprintln(stdout, "Starting a throwaway PostgreSQL server...")
	srv, err := pgserver.Start(ctx, nil)
	if errors.Is(err, pgserver.ErrNotInstalled) {
		return fmt.Errorf("alock: demo: the PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found.\n"+
			"Install the PostgreSQL server package (e.g. `apt-get install postgresql`, or run `make test`, "+
			"which installs it), or pass -dsn with the connection string of a database to use.\n(%w)", err)
	}
	if err != nil {
		return fmt.Errorf("alock: demo: start PostgreSQL: %w", err)
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("alock: demo: stop PostgreSQL: %w", stopErr))
			return
		}
		fmt.Fprintln(stdout, "Stopped the throwaway PostgreSQL server and removed its files.")
	}()
	return runDemo(ctx, stdout, srv.ConnString("postgres"))
}

// session is one database session of the demo, named by a letter.
type session struct {
	label string
	conn  *pgx.Conn
}

// pid returns the session's backend process id.
func (s *session) pid() uint32 { return s.conn.PgConn().PID() }

// demo is one run of the walk-through: where it writes, the sessions that
// take locks, and the observer session that reads pg_locks and takes none.
type demo struct {
	out      io.Writer
	observer *pgx.Conn
	a, b, c  *session
	names    map[alock.ID]alock.ID // Key(NameKey(n)) -> Name(n), for display
	cfg      *pgx.ConnConfig       // for the Locker's sessions
	held     []*alock.Lock         // locks still held when a step ends
}

// runDemo connects to dsn and runs every step of the walk-through, writing
// the narration to out. It closes its connections before returning, which
// ends any lock still held if a step failed.
func runDemo(ctx context.Context, out io.Writer, dsn string) error {
	cfg, err := connConfig(dsn)
	if err != nil {
		return err
	}
	d, err := connectDemo(ctx, out, cfg)
	if err != nil {
		return err
	}
	defer d.close()
	steps := []func(context.Context) error{
		d.intro, d.stepExclusive, d.stepShare, d.stepAllOrNothing, d.stepCancelledWait, d.stepLocker, d.finish,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// connectDemo opens the observer and the three sessions A, B and C.
func connectDemo(ctx context.Context, out io.Writer, cfg *pgx.ConnConfig) (*demo, error) {
	conns := make([]*pgx.Conn, 0, 4)
	for range 4 {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			closeConns(conns)
			return nil, relabel("alock: demo: connect: ", err)
		}
		conns = append(conns, c)
	}
	return &demo{
		cfg:      cfg,
		out:      out,
		observer: conns[0],
		a:        &session{"A", conns[1]},
		b:        &session{"B", conns[2]},
		c:        &session{"C", conns[3]},
		names:    make(map[alock.ID]alock.ID),
	}, nil
}

// sessions returns the lock-taking sessions A, B and C.
func (d *demo) sessions() []*session { return []*session{d.a, d.b, d.c} }

// close closes every connection of the demo.
func (d *demo) close() {
	closeConns([]*pgx.Conn{d.a.conn, d.b.conn, d.c.conn, d.observer})
}

// closeConns closes conns, with a bound that does not depend on the caller's
// (possibly interrupted) context. Closing a session ends its locks.
func closeConns(conns []*pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	for _, c := range conns {
		_ = c.Close(ctx)
	}
}

// intro prints the database and the sessions taking part.
func (d *demo) intro(ctx context.Context) error {
	var db string
	if err := d.observer.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return fmt.Errorf("alock: demo: %w", err)
	}
	var pids []string
	for _, s := range d.sessions() {
		pids = append(pids, fmt.Sprintf("%s (pid %d)", s.label, s.pid()))
	}
	d.say("Database %q. Sessions %s, each its own *pgx.Conn;", db, strings.Join(pids, ", "))
	d.say("pg_locks is read from a fourth session that takes no locks.")
	return nil
}

// heading starts a step.
func (d *demo) heading(title string) { fmt.Fprintf(d.out, "\n== %s ==\n\n", title) }

// say prints one line of narration.
func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }
