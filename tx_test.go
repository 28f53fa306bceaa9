package alock_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestLockTxLastsUntilTransactionEnds(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	ctx := context.Background()
	ids := []alock.ID{alock.Key(math.MinInt64), alock.Pair(math.MinInt32, -1), alock.Name("tx")}
	for _, how := range []string{"commit", "rollback"} {
		tx := begin(t, s)
		if err := alock.LockTx(ctx, tx, alock.Share, ids...); err != nil {
			t.Fatalf("LockTx: %v", err)
		}
		expectHolds(t, s, hold(alock.Key(math.MinInt64), alock.Share), hold(alock.Pair(math.MinInt32, -1), alock.Share),
			hold(alock.Key(alock.NameKey("tx")), alock.Share))
		end := tx.Rollback
		if how == "commit" {
			end = tx.Commit
		}
		if err := end(ctx); err != nil {
			t.Fatal(err)
		}
		expectHolds(t, s)
	}
}

func TestLockTxEndsWithItsSavepoint(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	ctx := context.Background()
	tx := begin(t, s)
	defer tx.Rollback(ctx)
	if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(1)); err != nil {
		t.Fatal(err)
	}
	nested := begin(t, tx)
	if err := alock.LockTx(ctx, nested, alock.Exclusive, alock.Key(2)); err != nil {
		t.Fatal(err)
	}
	expectHolds(t, s, hold(alock.Key(1), alock.Exclusive), hold(alock.Key(2), alock.Exclusive))
	if err := nested.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	expectHolds(t, s, hold(alock.Key(1), alock.Exclusive))
}

func TestLockTxOutsideTransactionIsRefused(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 1)[0]
	ctx := context.Background()
	tx := begin(t, s)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(1)); !errors.Is(err, alock.ErrNoTransaction) {
		t.Fatalf("LockTx after commit: %v, want ErrNoTransaction", err)
	}
	if ok, err := alock.TryLockTx(ctx, tx, alock.Exclusive, alock.Key(1)); ok || !errors.Is(err, alock.ErrNoTransaction) {
		t.Fatalf("TryLockTx after commit: %v %v, want ErrNoTransaction", ok, err)
	}
	expectHolds(t, s)
}

func TestTryLockTxAllOrNothing(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	ctx := context.Background()
	tx := begin(t, s[0])
	defer tx.Rollback(ctx)
	if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(9)); err != nil {
		t.Fatal(err)
	}
	ok, err := alock.TryLockTx(ctx, tx, alock.Exclusive, alock.Key(1), alock.Key(2), alock.Key(3))
	if ok || err != nil {
		t.Fatalf("TryLockTx with id 2 held elsewhere: %v %v, want false nil", ok, err)
	}
	expectHolds(t, s[0], hold(alock.Key(9), alock.Exclusive))
	ok, err = alock.TryLockTx(ctx, tx, alock.Exclusive, alock.Key(1), alock.Key(3))
	if !ok || err != nil {
		t.Fatalf("TryLockTx of free ids: %v %v", ok, err)
	}
	expectHolds(t, s[0], hold(alock.Key(1), alock.Exclusive), hold(alock.Key(3), alock.Exclusive), hold(alock.Key(9), alock.Exclusive))
}

func TestLockTxFailureKeepsTransactionUsable(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	exec(t, s[1], "SELECT pg_advisory_lock(2)")
	ctx := context.Background()
	for _, how := range []string{"deadline", "lock_timeout"} {
		tx := begin(t, s[0])
		if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(9)); err != nil {
			t.Fatal(err)
		}
		wait, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		if how == "lock_timeout" {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '100ms'"); err != nil {
				t.Fatal(err)
			}
			wait = ctx
		}
		err := alock.LockTx(wait, tx, alock.Exclusive, alock.Key(1), alock.Key(2))
		cancel()
		if how == "deadline" && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LockTx past its deadline: %v", err)
		}
		if how == "lock_timeout" && (err == nil || errors.Is(err, context.DeadlineExceeded)) {
			t.Fatalf("LockTx past lock_timeout: %v", err)
		}
		var one int
		if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			pgtest.Fatalf(t, "%s: transaction unusable after a failed LockTx: %v", how, err)
		}
		expectHolds(t, s[0], hold(alock.Key(9), alock.Exclusive))
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLockTxDeadlock(t *testing.T) {
	t.Parallel()
	s := newSessions(t, 2)
	ctx := context.Background()
	exec(t, s[0], "SET deadlock_timeout = '50ms'")
	exec(t, s[1], "SET deadlock_timeout = '50ms'")
	tx0 := begin(t, s[0])
	defer tx0.Rollback(ctx)
	tx1 := begin(t, s[1])
	defer tx1.Rollback(ctx)
	if err := errors.Join(alock.LockTx(ctx, tx0, alock.Exclusive, alock.Key(1)), alock.LockTx(ctx, tx1, alock.Exclusive, alock.Key(2))); err != nil {
		t.Fatal(err)
	}
	type result struct {
		who int
		err error
	}
	txs := []pgx.Tx{tx0, tx1}
	results := make(chan result, 2)
	go func() { results <- result{0, alock.LockTx(ctx, tx0, alock.Exclusive, alock.Key(2))} }()
	go func() { results <- result{1, alock.LockTx(ctx, tx1, alock.Exclusive, alock.Key(1))} }()
	victim := <-results
	if !errors.Is(victim.err, alock.ErrDeadlock) {
		t.Fatalf("first result: %v, want ErrDeadlock", victim.err)
	}
	// The victim's transaction is usable and still holds its first lock, so
	// the winner waits until the victim's transaction ends.
	var one int
	if err := txs[victim.who].QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("victim's transaction unusable: %v", err)
	}
	select {
	case r := <-results:
		t.Fatalf("winner returned %v while the victim's transaction holds its lock", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := txs[victim.who].Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil {
		t.Fatalf("winner: %v", r.err)
	}
}
