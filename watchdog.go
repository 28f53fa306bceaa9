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
// and probes it every KeepaliveInterval, until the session is closed or
// lost.
func (s *Session) watch() {
	defer close(s.watched)
	for {
		if !s.takeIdle() {
			return
		}
		err := s.parkOrProbe()
		if err != nil {
			s.lose(err) // with the connection in hand: lose closes it
		}
		<-s.busy
		if err != nil {
			return
		}
	}
}

// takeIdle takes the connection once it has been idle for parkDelay with
// no operation waiting. It returns false when the session is closing.
func (s *Session) takeIdle() bool {
	for {
		wait := time.Until(time.Unix(0, s.lastUse.Load()).Add(parkDelay))
		if wait <= 0 {
			select {
			case <-s.closing:
				return false
			case s.busy <- struct{}{}:
			}
			if s.waiting.Load() == 0 && time.Since(time.Unix(0, s.lastUse.Load())) >= parkDelay {
				return true
			}
			<-s.busy
			wait = parkDelay
		}
		select {
		case <-s.closing:
			return false
		case <-time.After(wait):
		}
	}
}

// parkOrProbe parks a read until an operation wants the connection or a
// probe is due, then probes if it is. It returns an error when the session
// is lost.
func (s *Session) parkOrProbe() error {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if s.opts.KeepaliveInterval > 0 {
		due := time.Unix(0, s.lastUse.Load()).Add(s.opts.KeepaliveInterval)
		ctx, cancel = context.WithDeadline(ctx, due)
	}
	ctx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	defer cancel()
	s.setPark(interrupt)
	defer s.setPark(nil)
	if s.waiting.Load() > 0 {
		return nil // an operation came between takeIdle and setPark
	}
	err := s.conn.PgConn().WaitForNotification(ctx)
	switch {
	case s.conn.IsClosed():
		return fmt.Errorf("connection closed: %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		return s.probe()
	}
	return nil // interrupted, or a notification nobody asked for
}

// probe makes one round trip, bounded by KeepaliveTimeout, and checks that
// the same backend answers: a transaction-mode pooler would hand the
// statement to another one.
func (s *Session) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.KeepaliveTimeout)
	defer cancel()
	var pid uint32
	if err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return fmt.Errorf("keepalive probe: %w", err)
	}
	s.lastUse.Store(time.Now().UnixNano())
	if pid != s.conn.PgConn().PID() {
		return fmt.Errorf("keepalive probe: %w", errPooler(pid, s.conn.PgConn().PID()))
	}
	return nil
}

func (s *Session) setPark(cancel context.CancelFunc) {
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	s.park = cancel
}
