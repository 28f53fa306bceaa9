package alock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
)

// soakSession is a Session a worker opened: its id is also its
// application_name, by which the nemesis terminates its backend.
type soakSession struct {
	ID     string    `json:"id"`
	Worker string    `json:"worker"`
	Link   string    `json:"link,omitempty"` // the proxy or network namespace it goes through
	Opened time.Time `json:"opened"`         // before Open was called
	Ready  time.Time `json:"ready"`          // Open returned
}

// soakSection is one hold of a lock: one critical section.
type soakSection struct {
	Worker  string    `json:"worker"`
	Session string    `json:"session"`
	Key     int       `json:"key"`
	Token   int64     `json:"token"`
	Acq     time.Time `json:"acq"`      // Acquire returned
	End     time.Time `json:"end"`      // Release called
	LostAt  time.Time `json:"lost_at"`  // Lost seen closed; zero if never
	Claimed bool      `json:"claimed"`  // the fenced read claimed the row
	ClaimAt time.Time `json:"claim_at"` // the claim returned
	Skipped bool      `json:"skipped"`  // Lost fired before the write: not written
	Wrote   bool      `json:"wrote"`    // the fenced write changed the row
	WriteAt time.Time `json:"write_at"` // the write was sent
	Clean   bool      `json:"clean"`    // Release returned nil
	Closed  bool      `json:"closed"`   // the Lost channel was closed after Release
}

func (s soakSection) lost() bool { return !s.LostAt.IsZero() }

// soakStats counts a worker's outcomes.
type soakStats struct {
	Attempts, Acquired, Timeouts, Cancels, AcquireLost, OtherErrs, Reopens, OpenErrs int
}

func (a *soakStats) add(b soakStats) {
	a.Attempts += b.Attempts
	a.Acquired += b.Acquired
	a.Timeouts += b.Timeouts
	a.Cancels += b.Cancels
	a.AcquireLost += b.AcquireLost
	a.OtherErrs += b.OtherErrs
	a.Reopens += b.Reopens
	a.OpenErrs += b.OpenErrs
}

// soakEvent is what a worker reports; a child prints it as a JSON line.
type soakEvent struct {
	Session *soakSession `json:"session,omitempty"`
	Section *soakSection `json:"section,omitempty"`
	Stats   *soakStats   `json:"stats,omitempty"`
	Error   string       `json:"error,omitempty"`
}

// soakWorker is one loop of lock, read, sleep, write, release.
type soakWorker struct {
	name       string
	direct     string // DSN for the counter connection
	sessionDSN string // DSN for its Sessions (maybe through a proxy or a namespace's link)
	link       string // the proxy's or namespace's name, "" if direct
	rng        *rand.Rand
	report     func(soakEvent)

	cancel atomic.Pointer[context.CancelFunc] // the wait in progress, for the nemesis
	stats  soakStats
	errs   int // unexpected errors reported (bounded)
}

// run loops until deadline. It returns an error only when the run cannot
// be trusted any more (the counter connection failed, so a write's outcome
// is unknown).
func (w *soakWorker) run(deadline time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline)+30*time.Second)
	defer cancel()
	resource, err := pgx.Connect(ctx, w.direct)
	if err != nil {
		return fmt.Errorf("%s: counter connection: %w", w.name, err)
	}
	defer resource.Close(context.Background())
	var s *alock.Session
	var opened []*alock.Session // kept reachable until their backends are seen gone
	defer func() {
		if s != nil {
			_ = s.Close(context.Background())
		}
	}()
	var cur soakSession
	for gen := 0; time.Now().Before(deadline); {
		if s != nil && isDone(s.Done()) {
			_ = s.Close(ctx)
			s = nil
			w.stats.Reopens++
		}
		if s == nil {
			cur = soakSession{ID: fmt.Sprintf("alock_soak_%s_%d", w.name, gen), Worker: w.name, Link: w.link, Opened: time.Now()}
			gen++
			octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
			s, err = alock.Open(octx, withParam(w.sessionDSN, "application_name", cur.ID),
				&alock.SessionOptions{Fencing: true, KeepaliveInterval: time.Second, KeepaliveTimeout: 2 * time.Second})
			ocancel()
			if err != nil {
				if cur.Link == "" {
					w.unexpected("open: %v", err)
				}
				w.stats.OpenErrs++ // a reset or cut during Open
				s = nil
				time.Sleep(10 * time.Millisecond)
				continue
			}
			cur.Ready = time.Now()
			opened = append(opened, s)
			w.report(soakEvent{Session: &cur})
		}
		if err := w.once(ctx, s, cur.ID, resource); err != nil {
			return err
		}
	}
	// Between acquisitions the worker holds nothing: neither may the server.
	if s != nil && !isDone(s.Done()) {
		var ghosts int
		err := resource.QueryRow(ctx, `
			SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND a.application_name = $1`, cur.ID).Scan(&ghosts)
		if err != nil {
			return fmt.Errorf("%s: pg_locks: %w", w.name, err)
		}
		if ghosts > 0 && !isDone(s.Done()) {
			w.unexpected("session %s holds nothing, but pg_locks shows %d advisory locks for it", cur.ID, ghosts)
		}
	}
	// Once closed, a Session's backend ends (soon: the server sees the
	// connection close).
	if s != nil {
		_ = s.Close(ctx)
		s = nil
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		var left int
		err := resource.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name ~ $1",
			"^alock_soak_"+w.name+"_[0-9]+$").Scan(&left)
		if err != nil {
			return fmt.Errorf("%s: pg_stat_activity: %w", w.name, err)
		}
		if left == 0 {
			break
		}
		if time.Since(start) > 3*time.Second {
			w.unexpected("%d of its sessions still have a backend 3 s after Close", left)
			break
		}
	}
	runtime.KeepAlive(opened)
	w.report(soakEvent{Stats: &w.stats})
	return nil
}

// once makes one attempt: acquire a random key under a random short
// timeout (sometimes cancelled early), and if that succeeds run the
// critical section and release.
func (w *soakWorker) once(ctx context.Context, s *alock.Session, session string, resource *pgx.Conn) error {
	key := 1 + w.rng.IntN(soakKeys)
	l := s.NewExclusive(alock.Key(int64(key)))
	actx, cancel := context.WithTimeout(ctx, time.Duration(10+w.rng.IntN(300))*time.Millisecond)
	defer cancel()
	if w.rng.IntN(8) == 0 {
		early := time.AfterFunc(time.Duration(w.rng.IntN(4000))*time.Microsecond, cancel)
		defer early.Stop()
	}
	w.cancel.Store(&cancel)
	w.stats.Attempts++
	err := l.Acquire(actx)
	acq := time.Now()
	w.cancel.Store(nil)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		w.stats.Timeouts++
		return nil
	case errors.Is(err, context.Canceled):
		w.stats.Cancels++
		return nil
	case errors.Is(err, alock.ErrLost):
		w.stats.AcquireLost++
		return nil
	default:
		// The backend was terminated or the proxy reset during the wait:
		// the session must then be lost.
		w.stats.OtherErrs++
		if !isDone(s.Done()) {
			w.unexpected("acquire failed but the session lives: %v", err)
		}
		return nil
	}
	w.stats.Acquired++
	sec := soakSection{Worker: w.name, Session: session, Key: key, Token: l.Token(), Acq: acq}

	// Record when Lost fires.
	lost := l.Lost()
	lostAt := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-lost:
			lostAt <- time.Now()
		case <-stop:
			lostAt <- time.Time{}
		}
	}()

	// The critical section: fenced read, sleep, fenced write.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	var value int64
	err = resource.QueryRow(rctx,
		"UPDATE counters SET token = $1 WHERE id = $2 AND token < $1 RETURNING value", sec.Token, key).Scan(&value)
	switch {
	case err == nil:
		sec.Claimed, sec.ClaimAt = true, time.Now()
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: claim: %w", w.name, err)
	}
	if sec.Claimed {
		time.Sleep(time.Duration(w.rng.IntN(3001)) * time.Microsecond)
		if isDone(lost) {
			sec.Skipped = true // as a careful holder would
		} else {
			sec.WriteAt = time.Now()
			tag, err := resource.Exec(rctx, "UPDATE counters SET value = $1 WHERE id = $2 AND token = $3", value+1, key, sec.Token)
			if err != nil {
				return fmt.Errorf("%s: write: %w", w.name, err)
			}
			sec.Wrote = tag.RowsAffected() == 1
		}
	}

	sec.End = time.Now()
	err = l.Release(ctx)
	sec.Clean = err == nil
	if err != nil && !errors.Is(err, alock.ErrLost) {
		w.unexpected("release: %v", err)
	}
	close(stop)
	sec.LostAt = <-lostAt
	sec.Closed = isDone(lost)
	if sec.LostAt.IsZero() && (isDone(lost) || errors.Is(err, alock.ErrLost)) {
		sec.LostAt = time.Now() // fired as Release returned: no earlier than this
	}
	if sec.Clean && sec.lost() {
		w.unexpected("Release succeeded but Lost fired at %v", sec.LostAt)
	}
	w.report(soakEvent{Section: &sec})
	return nil
}

// unexpected reports an error that the checks will count (the first few in
// full).
func (w *soakWorker) unexpected(format string, args ...any) {
	w.errs++
	if w.errs <= 5 {
		w.report(soakEvent{Error: w.name + ": " + fmt.Sprintf(format, args...)})
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// withParam sets a connection parameter in a URL or keyword/value DSN.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value // the last occurrence wins
}
