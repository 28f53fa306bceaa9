package alock

import (
	"context"
	"errors"
	"time"

	"github.com/pgalock/alock/internal/core"
)

// sessionGuard is the Session as its Locks' core.Guard.
type sessionGuard struct{ *Session }

// Enter waits for the session's connection until ctx ends, preempting the
// watchdog's parked read or another goroutine's lock wait.
func (s sessionGuard) Enter(ctx context.Context) error { return s.gate.Enter(ctx) }

// Exit frees the connection after an operation, which used it: the
// watchdog parks and probes counting from now.
func (s sessionGuard) Exit() {
	if s.conn.IsClosed() || s.lost() { // closed, or told lost by the link watch
		s.lose(errors.New("connection closed"))
	}
	s.lastUse.Store(time.Now().UnixNano())
	s.gate.Exit()
}

// Gate returns the session's gate.
func (s sessionGuard) Gate() *core.Gate { return &s.gate }

// Held records a Lock that holds on the session. A grant that completes
// after the session was told lost (by the link watch, say) is marked lost
// at once: tell's list of held Locks was taken before it.
func (s sessionGuard) Held(l *core.Lock) {
	s.held.add(l)
	if s.lost() { // read after the add: see heldSet
		l.MarkLost()
	}
}

// Released forgets a Lock that no longer holds.
func (s sessionGuard) Released(l *core.Lock) { s.held.remove(l) }
