package alock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgalock/alock/internal/core"
	"github.com/pgalock/alock/internal/pgxtext"
)

var (
	// ErrStandby: Open refused a hot standby (pg_is_in_recovery). A standby
	// grants advisory locks that the primary, and every other standby, knows
	// nothing about. Connect to the primary (target_session_attrs=read-write).
	ErrStandby = errors.New("alock: the server is a hot standby; its locks are invisible to the primary")

	// ErrPooler: the statements of one connection ran on different backends,
	// as behind PgBouncer in transaction or statement mode, where session
	// locks are shared with other clients and unlocks go astray. Open
	// refuses such a pooler; a Lock that sees a lock statement answered by
	// another backend than the session's returns an error wrapping
	// ErrPooler and ErrLost, after closing the connection (its lock state is
	// in doubt). Use transaction-scoped locks there (LockTx), or a
	// session-mode pool, which works.
	ErrPooler = core.ErrPooler
)

// Open connects a Session. connString is a libpq-style URL or keyword/value
// string, completed from the PG* environment variables, as pgx.ParseConfig
// reads it; every setting of it is kept (application_name included). opts
// may be nil for the defaults.
//
// Open refuses a hot standby (ErrStandby, unless opts.AllowStandby) and a
// pooler that does not pin one backend (ErrPooler); a session-mode pooler
// is accepted. Behind a pooler Open opens a second, short-lived connection
// to find out (see ErrPooler), bounded by 2 s. With opts.Fencing it
// creates the fencing sequence if it is missing. On failure nothing stays
// open.
func Open(ctx context.Context, connString string, opts *SessionOptions) (*Session, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("alock: open: %w", err)
	}
	return OpenConfig(ctx, cfg, opts)
}

// OpenConfig connects a Session as Open does, with a configuration the
// caller built (TLS, BeforeConnect, a custom DialFunc, tracers). cfg is not
// modified, and must not be nil; the Session uses a copy. Open's TCP
// keepalive is set on the connection after it is established (through
// AfterNetConnect, after the caller's own), so a DialFunc of the caller's is
// used as it is.
func OpenConfig(ctx context.Context, cfg *pgx.ConnConfig, opts *SessionOptions) (*Session, error) {
	if cfg == nil {
		return nil, errors.New("alock: open: nil *pgx.ConnConfig")
	}
	var o SessionOptions
	if opts != nil {
		o = *opts
	}
	o = o.defaults()
	b, err := deriveBounds(o)
	if err != nil {
		return nil, err
	}
	cfg = cfg.Copy()
	keepalive(cfg, b)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("alock: open: %w", err)
	}
	pid, idle, err := check(ctx, conn, cfg, o)
	if err == nil {
		err = setServerTimeout(ctx, conn, b)
	}
	if err == nil && o.Fencing {
		o.FenceSequence, err = prepareFence(ctx, conn, o.FenceSequence)
	}
	if err != nil {
		if conn.IsClosed() && ctx.Err() == nil { // the server or the network ended it
			err = &openEndedError{err}
		}
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	s := &Session{
		conn: conn, opts: o, pid: pid, probeEvery: probeInterval(o.KeepaliveInterval, idle),
		done: make(chan struct{}), closing: make(chan struct{}), watched: make(chan struct{}), closed: make(chan struct{}),
		linked: make(chan struct{}), disconnected: make(chan struct{}),
		keysByRef: pgxtext.Describes(cfg.DefaultQueryExecMode),
	}
	s.lastUse.Store(time.Now().UnixNano())
	go s.watch()
	go s.watchLink(conn.PgConn().Conn(), b)
	return s, nil
}

// openEndedError is the error of an Open whose connection was ended (by
// the server or the network) after it was established, before it held
// anything: a Locker tries another (see endedByServer).
type openEndedError struct{ err error }

func (e *openEndedError) Error() string { return e.err.Error() }
func (e *openEndedError) Unwrap() error { return e.err }

// keepalive makes the client's TCP probe an idle or waiting connection
// every second after b.keepIdle, which feeds the link watch, and give up
// after b.kernel. It is set once the connection is made, after the caller's
// AfterNetConnect.
func keepalive(cfg *pgx.ConnConfig, b bounds) {
	ka := net.KeepAliveConfig{Enable: true, Idle: b.keepIdle, Interval: time.Second,
		Count: max(int((b.kernel-b.keepIdle)/time.Second), 1)}
	after := cfg.AfterNetConnect
	cfg.AfterNetConnect = func(ctx context.Context, pc *pgconn.Config, c net.Conn) (net.Conn, error) {
		if after != nil {
			var err error
			if c, err = after(ctx, pc, c); err != nil {
				return nil, err
			}
		}
		if tc, ok := tcpConn(c); ok {
			_ = tc.SetKeepAliveConfig(ka)
			setUserTimeout(tc, b.kernel)
		}
		return c, nil
	}
}

// tcpConn finds the TCP connection under c (a TLS one, say), if any.
func tcpConn(c net.Conn) (*net.TCPConn, bool) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil, false
		}
	}
}

// check refuses standbys and transaction-mode poolers, and returns the
// session's backend pid and idle_session_timeout (0 for none).
func check(ctx context.Context, conn *pgx.Conn, cfg *pgx.ConnConfig, o SessionOptions) (uint32, time.Duration, error) {
	var pid uint32
	var standby bool
	var idleMillis *int64 // NULL before PostgreSQL 14
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid(), pg_is_in_recovery(),
		(SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout')`).Scan(&pid, &standby, &idleMillis); err != nil {
		return 0, 0, fmt.Errorf("alock: open: %w", err)
	}
	if pid != conn.PgConn().PID() {
		// A pooler relays the session; it may pin one backend (session mode).
		if err := checkPinned(ctx, conn, cfg, pid); err != nil {
			return 0, 0, err
		}
	}
	if standby && !o.AllowStandby {
		return 0, 0, fmt.Errorf("alock: open: %w", ErrStandby)
	}
	var idle time.Duration
	if idleMillis != nil {
		idle = time.Duration(*idleMillis) * time.Millisecond
	}
	return pid, idle, nil
}

// pinnedCheckTimeout bounds checkPinned's second connection.
const pinnedCheckTimeout = 2 * time.Second

// checkPinned finds out whether the pooler in front of conn pins its
// backend: it cannot tell from the pids alone (PgBouncer reports its own
// in every mode), so it watches what the pooler does. A second client opens
// a transaction, which holds a backend. If that is conn's backend, or if
// conn's next statement runs on another one, the pooler moves conn between
// backends: ErrPooler. A session-mode pool with no free backend leaves the
// second client waiting: then nothing is proved, and the pid each lock
// statement reports is still checked.
func checkPinned(ctx context.Context, conn *pgx.Conn, cfg *pgx.ConnConfig, pid uint32) error {
	bound, cancel := context.WithTimeout(ctx, pinnedCheckTimeout)
	defer cancel()
	other, err := pgx.ConnectConfig(bound, cfg.Copy())
	if err != nil {
		return nil
	}
	defer other.Close(context.WithoutCancel(ctx))
	tx, err := other.Begin(bound)
	if core.SQLState(err) != "" || (err != nil && strings.Contains(err.Error(), "statement pooling")) {
		// A pooler that refuses transaction blocks pools statements.
		return fmt.Errorf("alock: open: %w: a second client could not open a transaction: %w", ErrPooler, err)
	}
	if err != nil {
		return nil
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var held, again uint32
	if err := tx.QueryRow(bound, "SELECT pg_backend_pid()").Scan(&held); err != nil {
		return nil
	}
	if held == pid {
		return fmt.Errorf("alock: open: %w", errPooler(held, pid))
	}
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&again); err != nil {
		return fmt.Errorf("alock: open: %w", err)
	}
	if again != pid {
		return fmt.Errorf("alock: open: %w", errPooler(again, pid))
	}
	return nil
}

// probeInterval is how long the watchdog lets the session stay idle before
// it probes: the KeepaliveInterval, or a third of the server's
// idle_session_timeout if that is shorter, so that probes keep the session
// alive. 0 (no probes) if KeepaliveInterval is negative.
func probeInterval(keepalive, idleTimeout time.Duration) time.Duration {
	if keepalive < 0 {
		return 0
	}
	if idleTimeout > 0 {
		keepalive = min(keepalive, idleTimeout/3)
	}
	return keepalive
}

// errPooler says which backend answered for which.
func errPooler(got, want uint32) error {
	return fmt.Errorf("%w: backend %d answered for the session's %d", ErrPooler, got, want)
}
