package alock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// Locker gives a process's goroutines locks that exclude each other as well
// as other processes, over at most MaxSessions database sessions whatever
// the number of goroutines, locks and waiters.
//
// Its Locks (NewExclusive, NewShare) have the whole Lock API and are safe
// for concurrent use. Two Locks of a Locker whose ids conflict exclude each
// other inside the process (share and share never conflict); one Lock's
// re-entrant count stays its own, and all of a Lock's ids are held or none.
//
// Waiting costs no connection: a goroutine first waits in the process, in
// a queue per id, first come first served; only the first of them competes
// at the server, on one of the Locker's Sessions, where it waits as a
// Session's Lock does (see Session): a wait never keeps the session from
// other goroutines' operations. Another process's release is therefore seen
// at once by a waiter that waits on the server, and within 200 ms by one
// that polls because its session already carries another wait (every
// session does): as soon as a session carries no wait, one such poller
// moves there and waits on the server.
//
// A new hold goes to the first session on which no Lock waits at the
// server. So the uncontended operations of many goroutines share one
// session, where they go to the server together, many in one statement
// (see Session), while waits spread over the sessions. The server sees
// sessions, not goroutines: a wait on a session that carries another
// goroutine's hold can close a cycle with another process that is not a
// deadlock of the goroutines, and the server then fails one of the waits
// (with ErrDeadlock if it is the Locker's): retry, as for any deadlock.
//
// When a session is lost, every Lock it carried reports it (Lost closes,
// Release returns an error wrapping ErrLost, Do's ctx ends), and later
// acquisitions go to a new session; nothing is re-acquired behind the
// caller's back. An acquisition whose session is lost before it holds
// anything, or whose new session the server ends as it opens
// (terminated, shutting down, starting up), goes on on another: an
// Acquire until its ctx ends, a TryAcquire on up to three. A server that
// cannot be reached or refuses the login fails it. Close ends everything.
type Locker struct {
	cfg  *pgx.ConnConfig
	opts LockerOptions

	// life ends at Close: it bounds the opens (see open), which opens
	// counts.
	life      context.Context
	end       context.CancelFunc
	opens     sync.WaitGroup
	openBound time.Duration // how long an open may take: the sessions' client bound

	mu       sync.Mutex
	sessions []*lockerSession
	opening  int // sessions being opened, counted against MaxSessions
	table    table
	closed   bool
	movers   []*mover // Locks sent to wait beside another wait (see watch)

	// The counters, which every hold updates, on cache lines of their own:
	// off the lines of mu and of what it guards.
	_            [64]byte
	held         atomic.Int64
	waiting      atomic.Int64
	acquisitions atomic.Int64
	losses       atomic.Int64
	waitNanos    atomic.Int64
	_            [64]byte
}

// lockerSession is one of a Locker's Sessions and how many holds and waits
// it carries.
type lockerSession struct {
	*Session
	load  int // holds and waits on it; guarded by the Locker's mu
	waits int // Locks sent to it to wait; guarded by the Locker's mu
}

// mover is a Lock sent to wait on a session that already carried a wait:
// unless that wait ends first, it polls there, and a hot id can stay held
// through every poll. So when another session comes to carry no wait, it
// is moved there (its wait is ended with errMoved, and chosen again), to
// wait on the server.
type mover struct {
	session *lockerSession
	core    *core.Lock
	move    context.CancelCauseFunc
	moved   bool
}

// errMoved ends the wait of a mover sent to a session free of waits.
var errMoved = errors.New("alock: moved to a session free of waits")

// LockerOptions are a Locker's optional settings; the zero value (or a nil
// *LockerOptions) gives the defaults.
type LockerOptions struct {
	// MaxSessions is the most database sessions the Locker opens at once.
	// Default 2. It opens one more only when a Lock waits at the server on
	// every open one, and replaces lost ones once their connection is
	// closed. The server may still list a closed connection's backend for
	// a few milliseconds, as it exits, beside its replacement.
	MaxSessions int
	// Session configures every session: keepalive, fencing, logger, tracer.
	Session SessionOptions
}

// errLockerClosed: the Locker was closed. It wraps ErrClosed.
var errLockerClosed = fmt.Errorf("alock: locker closed: %w", ErrClosed)

// NewLocker returns a Locker for the database of connString (read as Open
// reads it), after opening its first session to check the connection. opts
// may be nil for the defaults.
func NewLocker(ctx context.Context, connString string, opts *LockerOptions) (*Locker, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("alock: new locker: %w", err)
	}
	return NewLockerConfig(ctx, cfg, opts)
}

// NewLockerConfig is NewLocker with a configuration the caller built (see
// OpenConfig). cfg is not modified and must not be nil.
func NewLockerConfig(ctx context.Context, cfg *pgx.ConnConfig, opts *LockerOptions) (*Locker, error) {
	if cfg == nil {
		return nil, errors.New("alock: new locker: nil *pgx.ConnConfig")
	}
	var o LockerOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 2
	}
	lk := &Locker{cfg: cfg.Copy(), opts: o, table: newTable()}
	s, err := OpenConfig(ctx, lk.cfg, &o.Session)
	if err != nil {
		return nil, err
	}
	if b, err := deriveBounds(o.Session.defaults()); err == nil { // checked by OpenConfig
		lk.openBound = b.client
	}
	lk.life, lk.end = context.WithCancel(context.Background())
	lk.sessions = append(lk.sessions, &lockerSession{Session: s})
	return lk, nil
}

// NewExclusive returns an unheld Lock in Exclusive mode over ids on the
// Locker. It does not contact the server.
func (lk *Locker) NewExclusive(ids ...ID) *Lock { return lk.newLock(Exclusive, ids) }

// NewShare returns an unheld Lock in Share mode over ids on the Locker.
func (lk *Locker) NewShare(ids ...ID) *Lock { return lk.newLock(Share, ids) }

// session returns a live session for one more hold, or for a Lock that
// must wait (wait), and counts it on the session (see unload). It picks the
// first session (in the order they were opened) on which no Lock waits at
// the server, so that the uncontended operations of many goroutines share
// one session and go to the server in large batches, while waits spread
// over the sessions (one Lock per session waits on the server, the others
// poll). When every open session has a wait it opens one more, up to
// MaxSessions, and past that takes the least loaded one (holds and waits;
// for a wait, the fewest waits: see watch for what follows).
func (lk *Locker) session(ctx context.Context, wait bool) (s *lockerSession, err error) {
	lk.mu.Lock()
	for s == nil {
		if lk.closed {
			lk.mu.Unlock()
			return nil, errLockerClosed
		}
		if s = lk.freeSession(); s != nil {
			break
		}
		if len(lk.sessions)+lk.opening < lk.opts.MaxSessions {
			if s, err = lk.open(ctx, wait); err == nil {
				lk.mu.Unlock() // counted by open
				return s, nil
			}
		}
		// A wait goes beside another one only if no session can be added:
		// if a lost session's connection is closing, its replacement will
		// be allowed once it has closed, and nothing else would open it.
		if !(wait && lk.replacing()) {
			if s = lk.leastLoaded(wait); s != nil {
				break
			}
		}
		if err != nil && lk.opening == 0 {
			lk.mu.Unlock()
			return nil, err
		}
		// Every session allowed is being opened, or lost and closing (or a
		// wait will have the replacement of one): wait for one.
		lk.mu.Unlock()
		if err := core.Sleep(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
		lk.mu.Lock()
	}
	lk.claim(s, wait)
	lk.mu.Unlock()
	return s, nil
}

// freeSession forgets the lost sessions and returns the first open one free
// of waits (see pick), nil if there is none; the caller holds lk.mu.
func (lk *Locker) freeSession() *lockerSession {
	lk.dropLost()
	return lk.pick()
}

// claim counts a chosen session's new load (and wait); the caller holds
// lk.mu.
func (lk *Locker) claim(s *lockerSession, wait bool) {
	s.load++
	if wait {
		s.waits++
	}
	if len(lk.movers) > 0 { // s may have just been opened, free of waits
		lk.moveWaiters()
	}
}

// watch returns the ctx of a wait on s (of core, counted by session), and
// registers it as a mover: moveWaiters moves it if it comes to poll beside
// another wait (whether s carried one when it was chosen or not: two waits
// that come together race for the slot).
func (lk *Locker) watch(ctx context.Context, s *lockerSession, c *core.Lock) (context.Context, *mover) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	wctx, move := context.WithCancelCause(ctx)
	m := &mover{session: s, core: c, move: move}
	lk.movers = append(lk.movers, m)
	lk.moveWaiters() // a session may have come free since the choice
	return wctx, m
}

// unwatch ends a wait on s: its count, and its mover. It reports whether
// the mover was moved; then movers are moved to a session free of waits,
// if there is one now (s, or one a mover moved to was granted before it
// could go).
func (lk *Locker) unwatch(s *lockerSession, m *mover) (moved bool) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	s.waits--
	lk.movers = slices.DeleteFunc(lk.movers, func(o *mover) bool { return o == m })
	m.move(nil)
	moved = m.moved
	if len(lk.movers) > 0 {
		lk.moveWaiters()
	}
	return moved
}

// moveWaiters moves the movers that poll beside another wait (another Lock
// has their session's wait slot), first come first, one to each open
// session free of waits; the caller holds lk.mu. The others stay listed:
// one that waits on the server, or has not come to the slot yet.
func (lk *Locker) moveWaiters() {
	free := 0
	for _, c := range lk.sessions {
		if c.waits == 0 && c.gate.SlotFree() && !c.lost() {
			free++
		}
	}
	for i := 0; i < len(lk.movers) && free > 0; {
		m := lk.movers[i]
		if g := &m.session.gate; g.SlotFree() || g.HasSlot(m.core) {
			i++
			continue
		}
		lk.movers = slices.Delete(lk.movers, i, i+1)
		m.moved = true
		m.move(errMoved)
		free--
	}
}

// unload gives back what session counted on s.
func (lk *Locker) unload(s *lockerSession) {
	lk.mu.Lock()
	s.load--
	lk.mu.Unlock()
}

// pick returns the first open session on which no Lock waits (nor was sent
// to wait), nil if there is none; the caller holds lk.mu.
func (lk *Locker) pick() *lockerSession {
	for _, c := range lk.sessions {
		if c.waits == 0 && c.gate.SlotFree() && !c.lost() {
			return c
		}
	}
	return nil
}

// leastLoaded returns the open session with the least load (holds and
// waits), or with the fewest waits, nil if none is open; the caller holds
// lk.mu.
func (lk *Locker) leastLoaded(waits bool) (s *lockerSession) {
	n := func(c *lockerSession) int {
		if waits {
			return c.waits
		}
		return c.load
	}
	for _, c := range lk.sessions {
		if !c.lost() && (s == nil || n(c) < n(s)) {
			s = c
		}
	}
	return s
}

// openedHook, if set (by a test), runs in the goroutine that asked for an
// open once the open ended: it stands for that goroutine running late.
var openedHook atomic.Pointer[func()]

// open opens one more session for a hold, or for a wait (wait), and counts
// it for the caller as session does; the caller holds lk.mu, which open
// releases while it waits. The session is counted in the step that lists
// it, so that no other Lock takes a session opened for a wait first and
// sends this one beside it, to poll there with no session left to open.
// The session is opened in a goroutine of its own, bounded by the
// sessions' client bound and by Close but not by ctx: if ctx ends first,
// open returns ctx's error and the session, once open, serves later
// acquisitions. So the Locker never abandons a connection half-open (whose
// backend the server would list a moment after the Locker opened
// another), and a short deadline does not waste a connection.
func (lk *Locker) open(ctx context.Context, wait bool) (*lockerSession, error) {
	lk.opening++
	// The open's outcome, guarded by lk.mu: once it ended, the session
	// (counted for the caller) or the error, whichever it gave; gone if
	// the caller left first.
	var (
		opened  *lockerSession
		openErr error
		gone    bool
	)
	ended := make(chan struct{})
	lk.opens.Go(func() {
		defer close(ended)
		octx, cancel := context.WithTimeout(lk.life, lk.openBound)
		defer cancel()
		s, err := OpenConfig(octx, lk.cfg, &lk.opts.Session)
		lk.mu.Lock()
		lk.opening--
		closed := lk.closed
		if err == nil && !closed {
			ls := &lockerSession{Session: s}
			lk.sessions = append(lk.sessions, ls)
			if !gone {
				opened = ls
				lk.claim(ls, wait)
			} else if len(lk.movers) > 0 {
				// A session free of waits: a Lock that came to poll
				// beside another wait while it was opened moves there.
				lk.moveWaiters()
			}
		}
		if closed { // the open failed because Close ended it, or it is not needed
			err = errLockerClosed
		}
		openErr = err
		lk.mu.Unlock()
		if closed && s != nil {
			_ = s.Close(context.Background())
		}
	})
	lk.mu.Unlock()
	select {
	case <-ended:
	case <-ctx.Done():
	}
	if hook := openedHook.Load(); hook != nil {
		(*hook)()
	}
	lk.mu.Lock()
	if opened == nil && openErr == nil { // ctx ended first
		gone = true
		return nil, core.CtxErr(ctx)
	}
	return opened, openErr
}

// dropLost forgets the sessions that have ended and closed their
// connection; their Locks have been told. A lost session whose connection is
// not closed yet stays, unused, counted against MaxSessions, so that the
// Locker never has more than MaxSessions connections open: its replacement
// waits for the close. With none ended (the usual case) it only reads.
func (lk *Locker) dropLost() {
	if !slices.ContainsFunc(lk.sessions, (*lockerSession).gone) {
		return
	}
	live := lk.sessions[:0]
	for _, s := range lk.sessions {
		if !s.gone() {
			live = append(live, s)
		}
	}
	clear(lk.sessions[len(live):])
	lk.sessions = live
}

// replacing reports whether a session may be opened once the lost
// sessions whose connection is still open have closed it (see dropLost);
// the caller holds lk.mu.
func (lk *Locker) replacing() bool {
	closing := 0
	for _, s := range lk.sessions {
		if s.lost() && !s.gone() {
			closing++
		}
	}
	return closing > 0 && len(lk.sessions)+lk.opening-closing < lk.opts.MaxSessions
}

// LockerStat is a snapshot of a Locker's state and counters.
type LockerStat struct {
	Sessions     int           // sessions open now
	Held         int           // Locks held now
	Waiting      int           // goroutines in Acquire or TryAcquire, in the process or at the server
	Acquisitions int64         // holds taken (count going from zero to one)
	Losses       int64         // holds found lost
	WaitTime     time.Duration // total time goroutines spent in Acquire
}

// Stat returns a snapshot of the Locker's state. Safe for concurrent use.
func (lk *Locker) Stat() LockerStat {
	lk.mu.Lock()
	lk.dropLost()
	n := len(lk.sessions)
	lk.mu.Unlock()
	return LockerStat{
		Sessions: n, Held: int(lk.held.Load()), Waiting: int(lk.waiting.Load()),
		Acquisitions: lk.acquisitions.Load(), Losses: lk.losses.Load(),
		WaitTime: time.Duration(lk.waitNanos.Load()),
	}
}

// Close ends the Locker: every waiting Acquire fails with an error wrapping
// ErrClosed, every session is closed (the server releases every lock, and
// held Locks' Lost channels close), and later acquisitions fail. Close
// ends the opens in progress, and waits for them and for each session's
// Close, which honours ctx. Safe to call twice.
func (lk *Locker) Close(ctx context.Context) error {
	lk.mu.Lock()
	lk.closed = true
	lk.table.fail(errLockerClosed)
	sessions := lk.sessions
	lk.sessions = nil
	lk.mu.Unlock()
	lk.end()        // ends the opens in progress,
	lk.opens.Wait() // which close what they opened
	var errs []error
	for _, s := range sessions {
		errs = append(errs, s.Close(ctx))
	}
	return errors.Join(errs...)
}

// Lead campaigns for the leadership of id: it waits until it holds id
// exclusively (or ctx ends: then it returns an error for which
// errors.Is(err, ctx.Err()) holds), then runs fn with a ctx that ends when
// ctx ends or the leadership is lost, and the term's fencing token (0
// without SessionOptions.Fencing). When fn returns it resigns (releases id)
// and returns fn's error, joined with an error wrapping ErrLost if the
// leadership was lost while fn ran. A resigned or lost leader lets a waiting
// campaigner in as any release does.
func (lk *Locker) Lead(ctx context.Context, id ID, fn func(ctx context.Context, token int64) error) error {
	l := lk.NewExclusive(id)
	return l.Do(ctx, func(ctx context.Context) error { return fn(ctx, l.Token()) })
}
