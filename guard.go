package alock

import (
	"context"
	"fmt"
	"time"

	"github.com/pgalock/alock/internal/core"
)

// sessionGuard is the Session as its Locks' core.Guard.
type sessionGuard struct{ *Session }

// Enter waits for the session's connection (interrupting the watchdog's
// parked read) until ctx ends.
func (s sessionGuard) Enter(ctx context.Context) error {
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	s.interruptPark()
	select {
	case s.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Exit frees the connection after an operation.
func (s sessionGuard) Exit() {
	if s.conn.IsClosed() {
		s.lose(fmt.Errorf("connection closed"))
	}
	s.lastUse.Store(time.Now().UnixNano())
	<-s.busy
}

// Held records a Lock that holds on the session.
func (s sessionGuard) Held(l *core.Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[l] = struct{}{}
}

// Released forgets a Lock that no longer holds.
func (s sessionGuard) Released(l *core.Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, l)
}

// interruptPark wakes the watchdog's parked read, if any.
func (s *Session) interruptPark() {
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	if s.park != nil {
		s.park()
	}
}
