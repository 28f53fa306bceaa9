package locktest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// Tx is one open transaction of the backend under test.
type Tx interface {
	// LockTx takes ids exclusively until the transaction ends.
	LockTx(ctx context.Context, ids ...alock.ID) error
	// Exec runs SQL in the transaction.
	Exec(ctx context.Context, sql string) error
	// Rollback ends the transaction.
	Rollback() error
}

// TxBackend begins transactions of one kind.
type TxBackend struct {
	Name string
	// Begin opens a session to dsn's database, closed at the end of t, and
	// returns a function that begins a transaction on it, and its pid.
	Begin func(t *testing.T, dsn string) (begin func() Tx, pid uint32)
}

// RunTx runs the transaction-lock suite against b.
func RunTx(t *testing.T, b TxBackend) {
	t.Run("GrantCancelRaceLeavesNoGhosts", func(t *testing.T) {
		t.Parallel()
		txGrantCancelRace(t, newEnv(t, Backend{Name: b.Name}), b)
	})
	t.Run("DeadlockVictimKeepsOtherHolds", func(t *testing.T) {
		t.Parallel()
		txDeadlockVictim(t, newEnv(t, Backend{Name: b.Name}), b)
	})
	t.Run("ContextCauseErrors", func(t *testing.T) {
		t.Parallel()
		txContextCause(t, newEnv(t, Backend{Name: b.Name}), b)
	})
}

// txGrantCancelRace is grantCancelRace for LockTx: an error means the
// transaction holds nothing and is usable; success means it holds the lock.
func txGrantCancelRace(t *testing.T, e *env, b TxBackend) {
	iterations := 100
	if testing.Short() {
		iterations = 20
	}
	begin, pid := b.Begin(t, e.dsn)
	holder := e.other()
	const patience = 20 * time.Millisecond
	var won, lost int
	for range iterations {
		tx := begin()
		e.exec(holder, "SELECT pg_advisory_lock(40)")
		unlocked := make(chan error, 1)
		// A cancel request takes a few milliseconds to land (the postmaster
		// forks for it), so the window reaches further past the deadline.
		delay := patience + time.Duration(rand.IntN(10000)-2000)*time.Microsecond
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		go func() {
			time.Sleep(delay)
			_, err := holder.Exec(context.Background(), "SELECT pg_advisory_unlock(40)")
			unlocked <- err
		}()
		err := tx.LockTx(ctx, alock.Key(40))
		cancel()
		if uerr := <-unlocked; uerr != nil {
			t.Fatal(uerr)
		}
		held := heldBy(t, holder, pid)
		switch {
		case err == nil && !held:
			pgtest.Fatalf(t, "LockTx succeeded but the server does not hold the lock")
		case err != nil && held:
			pgtest.Fatalf(t, "ghost lock: LockTx failed (%v) but the transaction holds the lock", err)
		case err == nil:
			won++
		default:
			lost++
		}
		if err := tx.Exec(context.Background(), "SELECT 1"); err != nil {
			pgtest.Fatalf(t, "transaction unusable after LockTx: %v", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d iterations: %d acquired, %d gave up", iterations, won, lost)
}
