package locktest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func deadlineKeepsSession(t *testing.T, e *env) {
	s, other := e.session(), e.other()
	e.mustAcquire(s.NewLock(alock.Exclusive, alock.Key(10)))
	e.exec(other, "SELECT pg_advisory_lock(20)")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l := s.NewLock(alock.Exclusive, alock.Key(20))
	if err := l.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past its deadline: %v, want DeadlineExceeded", err)
	}
	e.expectUsable(s)
	e.expectHolds(s, hold(alock.Key(10), alock.Exclusive))
	// Once the holder lets go, the same Lock works on the same session.
	e.exec(other, "SELECT pg_advisory_unlock(20)")
	e.mustAcquire(l)
	e.expectHolds(s, hold(alock.Key(10), alock.Exclusive), hold(alock.Key(20), alock.Exclusive))
}

func cancelledSendsNothing(t *testing.T, e *env) {
	s := e.session()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := s.NewLock(alock.Exclusive, alock.Key(1))
	if err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire: %v", err)
	}
	if ok, err := l.TryAcquire(ctx); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	e.expectHolds(s)
	e.expectUsable(s)
}

func serverTimeouts(t *testing.T, e *env) {
	for setting, sentinel := range map[string]error{"lock_timeout": alock.ErrLockTimeout, "statement_timeout": alock.ErrStatementTimeout} {
		t.Run(setting, func(t *testing.T) {
			e := newEnv(t, e.b)
			s, other := e.session(), e.other()
			e.exec(other, "SELECT pg_advisory_lock(2)")
			keep := s.NewLock(alock.Share, alock.Key(1))
			e.mustAcquire(keep)
			if err := s.Exec(context.Background(), "SET "+setting+" = '100ms'"); err != nil {
				t.Fatal(err)
			}
			err := s.NewLock(alock.Exclusive, alock.Key(1), alock.Key(2)).Acquire(context.Background())
			if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), setting) {
				t.Fatalf("Acquire: %v, want an error wrapping %v", err, sentinel)
			}
			e.expectHolds(s, hold(alock.Key(1), alock.Share))
			e.expectUsable(s)
		})
	}
}

func killedWhileWaiting(t *testing.T, e *env) {
	s, other, admin := e.session(), e.other(), e.other()
	keep := s.NewLock(alock.Exclusive, alock.Key(1))
	e.mustAcquire(keep)
	e.exec(other, "SELECT pg_advisory_lock(2)")
	done := make(chan error)
	go func() { done <- s.NewLock(alock.Exclusive, alock.Key(2)).Acquire(context.Background()) }()
	e.waitHolds(s, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive)+"(waiting)")
	e.exec(admin, "SELECT pg_terminate_backend($1)", s.PID())
	if err := <-done; err == nil {
		t.Fatal("Acquire on a terminated backend succeeded")
	}
	if keep.Locked() {
		t.Fatal("Locked after the session was terminated")
	}
	if err := keep.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release on a lost session: %v, want ErrLost", err)
	}
}

func releaseReportsLoss(t *testing.T, e *env) {
	for _, how := range []string{"terminated", "closed", "unlocked behind its back"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, e.b)
			s := e.session()
			l := s.NewLock(alock.Exclusive, alock.Key(1))
			e.mustAcquire(l)
			switch how {
			case "terminated":
				e.exec(e.other(), "SELECT pg_terminate_backend($1)", s.PID())
			case "closed":
				s.Close()
				if l.Locked() {
					t.Fatal("Locked on a closed session")
				}
			default:
				if err := s.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
				t.Fatalf("Release: %v, want ErrLost", err)
			}
			if l.Locked() {
				t.Fatal("Locked after a lost Release")
			}
			if how == "unlocked behind its back" {
				e.expectUsable(s)
			}
		})
	}
}

func releaseCancelledCtx(t *testing.T, e *env) {
	s := e.session()
	keep := s.NewLock(alock.Exclusive, alock.Key(2))
	e.mustAcquire(keep)
	l := s.NewLock(alock.Exclusive, alock.Key(1))
	e.mustAcquire(l)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Release(ctx); err != nil {
		pgtest.Fatalf(t, "Release with a cancelled ctx: %v", err)
	}
	e.expectHolds(s, hold(alock.Key(2), alock.Exclusive))
	e.expectUsable(s)
}
