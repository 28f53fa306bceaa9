package alock_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgalock/alock"
)

// expectNilConnErr fails the test unless err says the connection is nil.
func expectNilConnErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "nil") {
		t.Errorf("%s: %v, want an error saying the connection is nil", what, err)
	}
}

func TestLockNilConnReturnsError(t *testing.T) {
	ctx := context.Background()
	l := alock.NewExclusive(nil, alock.Key(1))
	expectNilConnErr(t, "Acquire", l.Acquire(ctx))
	ok, err := l.TryAcquire(ctx)
	if ok {
		t.Error("TryAcquire on a nil connection succeeded")
	}
	expectNilConnErr(t, "TryAcquire", err)
	expectNilConnErr(t, "Release", l.Release(ctx))
	expectNilConnErr(t, "Do", l.Do(ctx, func(context.Context) error { return errors.New("fn ran") }))
	if l.Locked() {
		t.Error("Locked on a nil connection")
	}
	if l.Token() != 0 {
		t.Error("Token on a nil connection")
	}
}

func TestLockTxNilTxReturnsError(t *testing.T) {
	ctx := context.Background()
	expectNilConnErr(t, "LockTx", alock.LockTx(ctx, nil, alock.Exclusive, alock.Key(1)))
	ok, err := alock.TryLockTx(ctx, nil, alock.Exclusive, alock.Key(1))
	if ok {
		t.Error("TryLockTx on a nil transaction succeeded")
	}
	expectNilConnErr(t, "TryLockTx", err)
}
