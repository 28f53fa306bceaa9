package alock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// Session is one dedicated database session that watches over its locks.
//
// Open connects it; NewExclusive and NewShare make Locks on it. Unlike Locks
// on a plain *pgx.Conn, a Session's Locks are safe for use by many
// goroutines at once. The connection serves one statement at a time, in
// the order the goroutines came, and never waits behind a lock wait: an
// Acquire that must wait for a lock held elsewhere waits on the server only
// while nobody else needs the connection; another goroutine's operation
// interrupts the wait (a cancel request, the statement's grants given
// back), runs, and the wait starts again. One Lock of the Session waits on
// the server at a time; others that must wait meanwhile retry with
// try-locks every 5 to 200 ms. Re-entrant Acquires and Releases that only
// count do not use the connection at all. The first try and the last
// unlock of Locks without fencing that goroutines submit while the
// connection is busy go to the server together, in one statement, led by
// one of those goroutines (for at most 16 statements in a row). All Locks of a Session share one
// database session, so they never block each other: a Session gives mutual
// exclusion between sessions (processes, machines), not between the
// goroutines that share it.
//
// Because an interrupted wait starts again, the server detects a deadlock
// (after deadlock_timeout of uninterrupted waiting) only while the Session
// has no other traffic. A Lock that retries with try-locks is invisible to
// the server's detection, so every 4 polls (polls come every 5 to 200 ms,
// backing off: the first check within about 75 ms, later ones at most 0.8 s
// apart) it asks the server whether a session that holds what it wants
// waits, directly or not, for this session, and after two such answers in
// a row it fails with ErrDeadlock.
// A waiter that retries with try-locks can also be overtaken by sessions
// that queue on the server.
//
// While the connection is idle a watchdog parks a read on it, which wakes at
// once when the server ends the session (pg_terminate_backend, restart,
// crash) or the socket closes, and probes the server after KeepaliveInterval
// of idleness (or a third of the server's idle_session_timeout, if shorter),
// which also defeats idle_session_timeout and idle reapers. When the session
// is lost, Done closes, Err says why, every held Lock's Lost channel closes,
// Locked turns false and Release returns an error wrapping ErrLost. A
// Session never reconnects: open a new one, and acquire again, which yields
// a new fencing token.
type Session struct {
	conn *pgx.Conn
	opts SessionOptions
	pid  uint32 // the backend, from Open: every lock statement and probe must match it

	gate       core.Gate     // orders the users of conn: Locks, the watchdog, Close
	lastUse    atomic.Int64  // unix nanoseconds of the last statement's end
	probeEvery time.Duration // how long the session may stay idle; 0 for ever

	held      heldSet // the Locks that hold on the session (sharded: see heldSet)
	keysByRef bool    // conn's exec mode lets batches pass keys by reference (see pgxConn)

	mu      sync.Mutex
	err     error
	done    chan struct{}
	closing chan struct{}
	watched chan struct{} // closed when the watchdog has ended
	closed  chan struct{} // closed when Close has done its work
	linked  chan struct{} // closed when the link watch has ended

	ended        atomic.Bool // set by tell, with err: see lost
	disconnect   sync.Once
	disconnected chan struct{} // closed once the connection is closed (see lose)
}

// SessionOptions are a Session's optional settings; the zero value (or a nil
// *SessionOptions) gives the defaults.
type SessionOptions struct {
	// KeepaliveInterval is how long the session may stay idle before the
	// watchdog probes it with a round trip. Default 5 s; negative disables
	// the probes (the parked read still notices a closed session at once).
	KeepaliveInterval time.Duration
	// KeepaliveTimeout bounds a probe; a probe that does not return within it
	// means the session is lost. A silently cut network is therefore
	// signalled within KeepaliveInterval + KeepaliveTimeout of the last
	// round trip (10 s with the defaults). Default 5 s. It also sets the TCP
	// keepalive of the connection, which bounds the same failure while an
	// Acquire waits.
	KeepaliveTimeout time.Duration
	// ServerTimeout is how long the server keeps the session, and its
	// locks, once it hears nothing more from this client over TCP (a cut
	// network, a dead host): Open sets the session's tcp_user_timeout,
	// tcp_keepalives_* and client_connection_check_interval from it. It must
	// exceed the client's bound (KeepaliveInterval + KeepaliveTimeout, at
	// least 3 s) by at least a second, so that the server releases only
	// after this process has been told (Lost, Done, Do's ctx); Open fails
	// otherwise. Default: the client's bound plus 40% of it, at least 2 s
	// more (14 s with the defaults; see "Partitions" in the package
	// documentation). Negative leaves the server's settings alone (the
	// operating system's keepalive, over two hours on Linux). Unused over a
	// unix socket.
	ServerTimeout time.Duration
	// Fencing makes every acquisition draw a fencing token (see Lock.Token)
	// from the sequence FenceSequence. Open creates the sequence if it is
	// missing (which on PostgreSQL 15 and later an ordinary role may not do
	// in the schema public: see the package documentation), and refuses one
	// that can hand out tokens out of order (CACHE above 1, CYCLE, or an
	// INCREMENT that is not positive).
	Fencing bool
	// FenceSequence names the sequence of fencing tokens. A name without a
	// schema is in the schema public, never resolved through the role's
	// search_path: every holder of a lock must draw from the same sequence.
	// Default "alock_fence", that is public.alock_fence.
	FenceSequence string
	// AllowStandby lets the session take locks on a hot standby, whose locks
	// the primary never sees. Default false: Open returns ErrStandby.
	AllowStandby bool
	// Logger, if set, receives the session's events: loss at Warn, Close at
	// Info, acquisitions at Debug, with the operation's ctx.
	Logger *slog.Logger
	// Tracer, if set, is told of every acquisition of the session's Locks;
	// of every release too if it is a ReleaseTracer, and of the session's
	// loss if it is a LostTracer.
	Tracer Tracer
}

// defaults fills in the documented defaults.
func (o SessionOptions) defaults() SessionOptions {
	if o.KeepaliveInterval == 0 {
		o.KeepaliveInterval = 5 * time.Second
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = 5 * time.Second
	}
	if o.FenceSequence == "" {
		o.FenceSequence = "alock_fence"
	}
	return o
}

// NewExclusive returns an unheld Lock in Exclusive mode over ids on the
// session, as alock.NewExclusive, safe for concurrent use.
func (s *Session) NewExclusive(ids ...ID) *Lock { return s.newLock(Exclusive, ids) }

// NewShare returns an unheld Lock in Share mode over ids on the session, as
// alock.NewShare, safe for concurrent use.
func (s *Session) NewShare(ids ...ID) *Lock { return s.newLock(Share, ids) }

func (s *Session) newLock(m Mode, ids []ID) *Lock {
	l := &Lock{core: s.newCoreLock(m, ids, false), mode: m, ids: slices.Clone(ids)}
	l.session, l.tracer = s, s.opts.Tracer
	return l
}

// newCoreLock returns the core of a Lock on the session; serial, for a
// Locker's Lock, which gives it one operation at a time (see
// core.Options.Serial).
func (s *Session) newCoreLock(m Mode, ids []ID, serial bool) *core.Lock {
	opts := core.Options{Guard: sessionGuard{s}, PID: s.pid, Serial: serial}
	if s.opts.Fencing {
		opts.Fence = s.opts.FenceSequence
	}
	return newCoreOn(sessionConn{pgxConn{s.conn, s.keysByRef}, s}, m, ids, opts)
}

// Done returns a channel closed when the session has ended, and with it
// every lock it held: lost, or closed by Close.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session is alive, and then why it ended: an
// error wrapping ErrClosed after Close, or else one wrapping ErrLost and the
// cause (e.g. the server's FATAL error, a *pgconn.PgError with SQLSTATE
// 57P01 for pg_terminate_backend).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: the server releases every lock it holds, and
// every held Lock's Lost channel closes; Err then returns an error wrapping
// ErrClosed (not ErrLost), and Tracer.Lost is not called. Close interrupts
// a lock wait or the watchdog at once, and waits for a statement in
// progress until ctx ends; then it breaks that statement off (it fails).
// Safe to call twice, and from any goroutine.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.closing: // another Close does the work
		s.mu.Unlock()
		select {
		case <-s.closed:
		case <-ctx.Done():
			return fmt.Errorf("alock: close: %w", core.CtxErr(ctx))
		}
		return nil
	default:
		close(s.closing)
	}
	s.mu.Unlock()
	if !s.gate.Shut(ctx, errSessionClosed) {
		// Break off the statement in progress: its read fails and it ends.
		_ = s.conn.PgConn().Conn().SetDeadline(time.Now())
		s.gate.EnterShut(context.Background())
	}
	s.tell(errSessionClosed) // before the server can release anything
	err := s.conn.Close(context.WithoutCancel(ctx))
	s.lose(errSessionClosed)
	core.ForgetSession(s.conn) // its holds ended with it
	<-s.watched
	<-s.linked
	close(s.closed)
	s.log(ctx, slog.LevelInfo, "alock: session closed")
	return err
}

var errSessionClosed = fmt.Errorf("%w", ErrClosed)

// lose ends the session for cause: it tells (see tell), then closes the
// connection. Only the goroutine that has the connection (the gate) may call
// it; it may be called again, e.g. after tell, to close the connection.
func (s *Session) lose(cause error) {
	s.tell(cause)
	_ = s.conn.Close(context.Background())
	s.disconnect.Do(func() { close(s.disconnected) })
}

// tell marks the session lost for cause (the first cause wins): every held
// Lock's Lost closes, the hooks are told, and Done closes. It does not touch
// the connection, so any goroutine may call it; telling comes before
// anything that could make the server release the locks (closing the
// connection), so the program always learns of a loss first.
func (s *Session) tell(cause error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	select {
	case <-s.closing: // whatever failed, Close made it fail
		cause = errSessionClosed
	default:
	}
	if cause != errSessionClosed && !errors.Is(cause, ErrLost) {
		cause = fmt.Errorf("alock: session lost: %w: %w", ErrLost, cause)
	}
	s.err = cause
	s.ended.Store(true) // before any Lock or hook hears of it (see lost), and before the list (see heldSet)
	s.mu.Unlock()
	held := s.held.list()
	for _, l := range held {
		l.MarkLost()
	}
	if cause != errSessionClosed {
		s.log(context.Background(), slog.LevelWarn, "alock: session lost", "err", cause, "locks", len(held))
		if t, ok := s.opts.Tracer.(LostTracer); ok {
			t.Lost(s, cause)
		}
	}
	close(s.done)
}

// lost reports whether the session has ended: from the moment tell
// starts, so that whoever has heard of the loss (a Lock's Lost closed, a
// hook called) finds it ended, though Done closes only once they have.
func (s *Session) lost() bool { return s.ended.Load() }

// gone reports whether the session has ended and its connection is closed:
// a lost session's connection is closed soon after the loss is told (by
// whoever has it, within parkDelay or the statement in progress's failure),
// and until then it still counts as one of the connections a Locker opened.
func (s *Session) gone() bool {
	select {
	case <-s.disconnected:
		return true
	default:
		return false
	}
}

// log logs an event of the session; ctx is the operation's, if any.
func (s *Session) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if s.opts.Logger != nil {
		s.opts.Logger.Log(ctx, level, msg, args...)
	}
}
