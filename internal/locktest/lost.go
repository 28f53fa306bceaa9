package locktest

import (
	"context"
	"errors"
	"testing"

	"github.com/pgalock/alock"
)

// lostChannelPerHold checks Lost's contract: each hold (count from zero to
// one) gets a new channel, closed when that hold is lost; a Lock never held
// returns one that is never closed, and a later hold's channel does not
// close with an earlier hold's loss.
func lostChannelPerHold(t *testing.T, e *env) {
	s := e.session()
	l := s.NewLock(alock.Exclusive, alock.Key(1))
	never := l.Lost()
	e.mustAcquire(l)
	first := l.Lost()
	e.mustAcquire(l) // counting only: the same hold
	if l.Lost() != first {
		t.Fatal("Lost changed within one hold")
	}
	e.mustRelease(l)
	e.mustRelease(l)
	e.mustAcquire(l)
	second := l.Lost()
	if first == never || second == first {
		t.Fatal("a new hold reuses the channel of an earlier one (or of the unheld Lock)")
	}
	// Lose the second hold: unlocked behind the Lock's back, noticed at Release.
	if err := s.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release of a lost hold: %v, want ErrLost", err)
	}
	expectClosed(t, "the lost hold's channel", second, true)
	expectClosed(t, "the released first hold's channel", first, false)
	expectClosed(t, "the unheld Lock's channel", never, false)
	e.mustAcquire(l)
	third := l.Lost()
	expectClosed(t, "the next hold's channel", third, false)
	e.mustRelease(l)
	expectClosed(t, "a released hold's channel", third, false)
	// A lost hold whose channel nobody asked for before its Release: asked
	// for after, it is closed; the next hold's is open.
	e.mustAcquire(l)
	if err := s.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release of a lost hold: %v, want ErrLost", err)
	}
	expectClosed(t, "the channel of a lost hold asked for after its Release", l.Lost(), true)
	e.mustAcquire(l)
	expectClosed(t, "the channel of the hold after a lost one", l.Lost(), false)
	e.mustRelease(l)
	expectClosed(t, "that hold's channel after its Release", l.Lost(), false)
	e.expectHolds(s)
}

func expectClosed(t *testing.T, what string, ch <-chan struct{}, closed bool) {
	t.Helper()
	select {
	case <-ch:
		if !closed {
			t.Fatalf("%s is closed", what)
		}
	default:
		if closed {
			t.Fatalf("%s is not closed", what)
		}
	}
}
