package alock

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// Bounds returns the client's bound and the server's timeout that Open
// derives from opts (nil for the defaults).
func Bounds(opts *SessionOptions) (client, server time.Duration) {
	var o SessionOptions
	if opts != nil {
		o = *opts
	}
	b, err := deriveBounds(o.defaults())
	if err != nil {
		panic(err)
	}
	return b.client, b.server
}

// NewFencedExclusive returns a Lock on a plain connection that draws fencing
// tokens from sequence, as a Session's do: the tests count its round trips
// with a tracer on the connection.
func NewFencedExclusive(conn *pgx.Conn, sequence string, ids ...ID) *Lock {
	return newLockOn(pgxConn{c: conn}, Exclusive, ids, core.Options{Fence: sequence})
}

// SessionExec runs sql on the Session's own connection, as one user of its
// gate: the tests unlock behind its Locks' back, or keep the connection
// busy so that operations submitted meanwhile go in one batch.
func SessionExec(ctx context.Context, s *Session, sql string, args ...any) error {
	if err := s.gate.Enter(ctx); err != nil {
		return err
	}
	defer sessionGuard{s}.Exit()
	_, err := s.conn.Exec(ctx, sql, args...)
	return err
}

// LockerLoad is what a Locker counts on one of its open sessions.
type LockerLoad struct {
	PID   uint32
	Load  int
	Waits int
}

// LockerOpening returns how many sessions the Locker is opening.
func LockerOpening(lk *Locker) int {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.opening
}

// LockerLoads returns the counts of the Locker's open sessions.
func LockerLoads(lk *Locker) []LockerLoad {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	var out []LockerLoad
	for _, s := range lk.sessions {
		if !s.lost() {
			out = append(out, LockerLoad{s.PID(), s.load, s.waits})
		}
	}
	return out
}

// HoldLockerSession takes the gate of the Locker's first open session, as
// one user of it, and returns the session's pid and a func that gives the
// gate back (closing the connection if the session was told lost, as any
// user's exit does): the tests keep a lost session's connection open.
func HoldLockerSession(ctx context.Context, lk *Locker) (pid uint32, exit func(), err error) {
	lk.mu.Lock()
	s := lk.sessions[0].Session
	lk.mu.Unlock()
	if err := s.gate.Enter(ctx); err != nil {
		return 0, nil, err
	}
	return s.PID(), sessionGuard{s}.Exit, nil
}

// TellLost marks the Locker's first open session lost for cause without
// closing its connection: the moment between a loss told and the close.
func TellLost(lk *Locker, cause error) {
	lk.mu.Lock()
	s := lk.sessions[0].Session
	lk.mu.Unlock()
	s.tell(cause)
}

// HoldLockerSessionAt is HoldLockerSession for the Locker's i-th session
// (in the order they were opened, lost ones included).
func HoldLockerSessionAt(ctx context.Context, lk *Locker, i int) (pid uint32, exit func(), err error) {
	lk.mu.Lock()
	s := lk.sessions[i].Session
	lk.mu.Unlock()
	if err := s.gate.Enter(ctx); err != nil {
		return 0, nil, err
	}
	return s.PID(), sessionGuard{s}.Exit, nil
}

// TellLostAt is TellLost for the Locker's i-th session.
func TellLostAt(lk *Locker, i int, cause error) {
	lk.mu.Lock()
	s := lk.sessions[i].Session
	lk.mu.Unlock()
	s.tell(cause)
}

// SetOpenedHook makes f run in the goroutine that asked a Locker for an
// open once the open ended, before it takes its result (see openedHook),
// until the returned func is called. Not for parallel tests.
func SetOpenedHook(f func()) (restore func()) {
	openedHook.Store(&f)
	return func() { openedHook.Store(nil) }
}
