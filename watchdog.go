package alock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// parkDelay is how long the connection must stay idle before the watchdog
// parks a read on it: operations in quick succession never pay for waking
// it, and a loss is still seen well within a second.
const parkDelay = 50 * time.Millisecond

// watch is the watchdog: while the connection is idle it parks a read on it
// and probes it every probe interval, until the session is closed or lost.
// The parked read is preemptible: any operation of the session's Locks
// interrupts it at once, and Close does.
func (s *Session) watch() {
	defer close(s.watched)
	for s.idleTurn() {
		err := s.parkOrProbe()
		if err == nil && s.lost() { // told by the link watch
			err = s.Err()
		}
		if err != nil {
			s.lose(err) // with the connection in hand: lose closes it
		}
		s.gate.Exit() // not a use: the idle time goes on counting
		if err != nil {
			return
		}
	}
}

// idleTurn takes the connection once it has been idle for parkDelay with no
// operation waiting. It returns false when the session is closing.
func (s *Session) idleTurn() bool {
	for {
		wait := time.Until(s.lastUsed().Add(parkDelay))
		if wait <= 0 {
			if s.gate.EnterIdle() {
				if time.Since(s.lastUsed()) >= parkDelay {
					return true
				}
				s.gate.Exit()
			}
			wait = parkDelay
		}
		t := time.NewTimer(wait)
		select {
		case <-s.closing:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

func (s *Session) lastUsed() time.Time { return time.Unix(0, s.lastUse.Load()) }

// parkOrProbe parks a read until an operation wants the connection or a
// probe is due, then probes if it is. It returns an error when the session
// is lost.
func (s *Session) parkOrProbe() error {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if s.probeEvery > 0 {
		ctx, cancel = context.WithDeadline(ctx, s.lastUsed().Add(s.probeEvery))
	}
	defer cancel()
	ctx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	withdraw := s.gate.Preemptible(interrupt)
	defer withdraw()
	err := s.conn.PgConn().WaitForNotification(ctx)
	switch {
	case s.conn.IsClosed():
		return fmt.Errorf("connection closed: %w", err)
	case errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return s.probe()
	}
	return nil // interrupted, or a notification nobody asked for
}

// probe makes one round trip, bounded by KeepaliveTimeout, and checks that
// the session's backend (recorded by Open) answers: a transaction-mode
// pooler would hand the statement to another one. When the bound runs out it
// tells of the loss first, and only then breaks the read off (which makes pgx
// close the connection): the server cannot release the locks before the
// program knows.
func (s *Session) probe() error {
	timeout := fmt.Errorf("keepalive probe: no answer within %v", s.opts.KeepaliveTimeout)
	bound := time.AfterFunc(s.opts.KeepaliveTimeout, func() {
		s.tell(timeout)
		_ = s.conn.PgConn().Conn().SetDeadline(time.Now())
	})
	defer bound.Stop()
	var pid uint32
	if err := s.conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return fmt.Errorf("keepalive probe: %w", err)
	}
	if !bound.Stop() {
		return timeout
	}
	s.lastUse.Store(time.Now().UnixNano())
	if pid != s.pid {
		return fmt.Errorf("keepalive probe: %w", errPooler(pid, s.pid))
	}
	return nil
}
