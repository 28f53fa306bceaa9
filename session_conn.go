package alock

import (
	"context"
	"errors"
)

// sessionConn is the Session's connection as its Locks see it: closed once
// the session is lost, and a close for doubt ends the session.
type sessionConn struct {
	pgxConn
	s *Session
}

// Closed reports the session lost. Locked calls it from any goroutine, so it
// must not read the *pgx.Conn (whose IsClosed is not safe for concurrent
// use); Exit and the watchdog turn a closed connection into a lost session.
func (c sessionConn) Closed() bool { return c.s.lost() }

func (c sessionConn) Close(ctx context.Context) {
	c.pgxConn.Close(ctx)
	c.s.lose(errors.New("closed because its lock state was in doubt"))
}

// Exec and QueryText end the session with the driver's error when it closed
// the connection, so that Err tells the real cause (the server's FATAL
// error, a reset connection).
func (c sessionConn) Exec(ctx context.Context, sql string, args []any) error {
	return c.check(c.pgxConn.Exec(ctx, sql, args))
}

func (c sessionConn) QueryText(ctx context.Context, sql string, args []any) (string, error) {
	text, err := c.pgxConn.QueryText(ctx, sql, args)
	return text, c.check(err)
}

func (c sessionConn) check(err error) error {
	if err != nil && c.pgxConn.c.IsClosed() {
		c.s.lose(err)
	}
	return err
}

// Err tells why the session ended, for the errors of its Locks.
func (c sessionConn) Err() error { return c.s.Err() }

// PID returns the process id of the session's backend, as pg_stat_activity
// and pg_locks show it (pg_backend_pid() when Open checked the session, which
// behind a session-mode pooler is not the pid the pooler reports).
func (s *Session) PID() uint32 { return s.pid }
