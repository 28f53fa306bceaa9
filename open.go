package alock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

var (
	// ErrStandby: Open refused a hot standby (pg_is_in_recovery). A standby
	// grants advisory locks that the primary, and every other standby, knows
	// nothing about. Connect to the primary (target_session_attrs=read-write).
	ErrStandby = errors.New("alock: the server is a hot standby; its locks are invisible to the primary")

	// ErrPooler: Open refused a connection whose statements do not all run on
	// one backend, as behind PgBouncer in transaction or statement mode, where
	// session locks are shared with other clients and unlocks go astray. Use
	// transaction-scoped locks there (LockTx), or a session-mode pool.
	ErrPooler = errors.New("alock: a transaction-mode pooler is in the way; session locks cannot work through it (use LockTx)")
)

// Open connects a Session. connString is a libpq-style URL or keyword/value
// string, completed from the PG* environment variables, as pgx.ParseConfig
// reads it. opts may be nil for the defaults.
//
// Open refuses a hot standby (ErrStandby, unless opts.AllowStandby) and a
// pooler that does not pin one backend (ErrPooler). With opts.Fencing it
// creates the fencing sequence if it is missing. On failure nothing stays
// open.
func Open(ctx context.Context, connString string, opts *SessionOptions) (*Session, error) {
	var o SessionOptions
	if opts != nil {
		o = *opts
	}
	o = o.defaults()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("alock: open: %w", err)
	}
	keepalive(cfg, o)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("alock: open: %w", err)
	}
	if err := check(ctx, conn, o); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	s := &Session{
		conn: conn, opts: o,
		busy: make(chan struct{}, 1), held: make(map[*core.Lock]struct{}),
		done: make(chan struct{}), closing: make(chan struct{}), watched: make(chan struct{}),
	}
	s.lastUse.Store(time.Now().UnixNano())
	go s.watch()
	return s, nil
}

// keepalive makes TCP notice a silent network within about
// KeepaliveInterval + KeepaliveTimeout, also while an Acquire waits.
func keepalive(cfg *pgx.ConnConfig, o SessionOptions) {
	idle := o.KeepaliveInterval
	if idle <= 0 {
		idle = 5 * time.Second
	}
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: idle, Interval: time.Second, Count: max(int(o.KeepaliveTimeout/time.Second), 1),
	}}
	cfg.DialFunc = dialer.DialContext
}

// check refuses standbys and poolers, and creates the fencing sequence.
func check(ctx context.Context, conn *pgx.Conn, o SessionOptions) error {
	var pid uint32
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid(), pg_is_in_recovery()").Scan(&pid, &standby); err != nil {
		return fmt.Errorf("alock: open: %w", err)
	}
	if pid != conn.PgConn().PID() {
		return fmt.Errorf("alock: open: %w", errPooler(pid, conn.PgConn().PID()))
	}
	if standby && !o.AllowStandby {
		return fmt.Errorf("alock: open: %w", ErrStandby)
	}
	if o.Fencing {
		return createFence(ctx, conn, o.FenceSequence)
	}
	return nil
}

// createFence creates the fencing sequence if it is missing. CREATE SEQUENCE
// IF NOT EXISTS is not safe against a concurrent creator, which makes it
// fail with a unique violation (23505) or "already exists" (42P07) once the
// other has committed: then it exists, as a second try confirms.
func createFence(ctx context.Context, conn *pgx.Conn, sequence string) error {
	name := pgx.Identifier(strings.Split(sequence, ".")).Sanitize()
	var err error
	for range 3 {
		if _, err = conn.Exec(ctx, "CREATE SEQUENCE IF NOT EXISTS "+name); err == nil {
			return nil
		}
		if state := core.SQLState(err); state != "23505" && state != "42P07" {
			break
		}
	}
	return fmt.Errorf("alock: open: create the fencing sequence %s: %w", name, err)
}

// errPooler says which backend answered for which.
func errPooler(got, want uint32) error {
	return fmt.Errorf("%w: backend %d answered for %d", ErrPooler, got, want)
}
