package alock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
)

// connect opens a connection to the database named by DATABASE_URL.
func connect(ctx context.Context) *pgx.Conn {
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	return conn
}

// Only one worker at a time runs the nightly report, whichever process or
// machine it runs on.
func Example() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	report := alock.NewExclusive(conn, alock.Name("nightly-report"))
	err = report.Do(ctx, func(ctx context.Context) error {
		fmt.Println("running the report; no other worker can")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: running the report; no other worker can
}

// TryAcquire takes every id or none, without waiting.
func ExampleLock_TryAcquire() {
	ctx := context.Background()
	a, b := connect(ctx), connect(ctx)
	defer a.Close(ctx)
	defer b.Close(ctx)

	held := alock.NewExclusive(a, alock.Key(2))
	if err := held.Acquire(ctx); err != nil {
		log.Fatal(err)
	}
	defer held.Release(ctx)

	batch := alock.NewExclusive(b, alock.Key(1), alock.Key(2), alock.Key(3))
	ok, err := batch.TryAcquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("got the batch:", ok, "- holding any of it:", batch.Locked())
	// Output: got the batch: false - holding any of it: false
}

// A wait that times out leaves the connection open and its other locks held.
func ExampleLock_Acquire_timeout() {
	ctx := context.Background()
	a, b := connect(ctx), connect(ctx)
	defer a.Close(ctx)
	defer b.Close(ctx)

	other := alock.NewExclusive(b, alock.Key(20))
	if err := other.Acquire(ctx); err != nil {
		log.Fatal(err)
	}
	defer other.Release(ctx)

	mine := alock.NewExclusive(a, alock.Key(10))
	if err := mine.Acquire(ctx); err != nil {
		log.Fatal(err)
	}
	defer mine.Release(ctx)

	wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := alock.NewExclusive(a, alock.Key(20)).Acquire(wait)
	fmt.Println("timed out:", errors.Is(err, context.DeadlineExceeded))
	fmt.Println("connection open:", !a.IsClosed(), "- still holding Key(10):", mine.Locked())
	// Output:
	// timed out: true
	// connection open: true - still holding Key(10): true
}

// Share holds coexist; an exclusive hold waits for all of them.
func ExampleNewShare() {
	ctx := context.Background()
	a, b, c := connect(ctx), connect(ctx), connect(ctx)
	defer a.Close(ctx)
	defer b.Close(ctx)
	defer c.Close(ctx)

	for _, conn := range []*pgx.Conn{a, b} {
		reader := alock.NewShare(conn, alock.Key(42))
		if err := reader.Acquire(ctx); err != nil {
			log.Fatal(err)
		}
		defer reader.Release(ctx)
	}
	ok, err := alock.NewExclusive(c, alock.Key(42)).TryAcquire(ctx)
	fmt.Println("writer got it beside two readers:", ok, err)
	// Output: writer got it beside two readers: false <nil>
}

// A transaction lock needs no release: it ends with the transaction, which
// is the only kind of lock that works behind a transaction-mode pooler.
func ExampleLockTx() {
	ctx := context.Background()
	conn := connect(ctx)
	defer conn.Close(ctx)

	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := alock.LockTx(ctx, tx, alock.Exclusive, alock.Key(42)); err != nil {
			return err
		}
		fmt.Println("account 42 is ours until the transaction ends")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: account 42 is ours until the transaction ends
}

// A fencing token lets the protected resource turn away a holder that lost
// its lock without noticing (paused, partitioned): each write carries the
// token, and the resource accepts none older than the newest it has seen.
func ExampleLock_Token() {
	ctx := context.Background()
	s, err := alock.Open(ctx, os.Getenv("DATABASE_URL"), &alock.SessionOptions{Fencing: true})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	db := connect(ctx) // where the protected resource lives
	defer db.Close(ctx)
	_, err = db.Exec(ctx, `CREATE TABLE IF NOT EXISTS report (id int PRIMARY KEY, body text, token bigint NOT NULL);
		INSERT INTO report VALUES (1, '', 0) ON CONFLICT (id) DO NOTHING`)
	if err != nil {
		log.Fatal(err)
	}

	l := s.NewExclusive(alock.Name("report"))
	if err := l.Acquire(ctx); err != nil {
		log.Fatal(err)
	}
	defer l.Release(ctx)

	const guarded = `UPDATE report SET body = $1, token = $2 WHERE id = 1 AND token <= $2`
	tag, err := db.Exec(ctx, guarded, "fresh", l.Token())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("holder's write accepted:", tag.RowsAffected() == 1)

	// A holder that lost the lock earlier has an older token.
	tag, err = db.Exec(ctx, guarded, "stale", l.Token()-1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stale write accepted:", tag.RowsAffected() == 1)
	// Output:
	// holder's write accepted: true
	// stale write accepted: false
}

// A Session notices a lost session while idle, and says so on Done and on
// each held Lock's Lost channel.
func ExampleSession() {
	ctx := context.Background()
	s, err := alock.Open(ctx, os.Getenv("DATABASE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	leader := s.NewExclusive(alock.Name("leader"))
	ok, err := leader.TryAcquire(ctx)
	if err != nil || !ok {
		log.Fatal("not the leader: ", err)
	}
	fmt.Println("leading")

	// Elsewhere, an administrator ends the session.
	admin := connect(ctx)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objid = $1::bigint & 4294967295
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, alock.NameKey("leader"))
	if err != nil {
		log.Fatal(err)
	}

	select {
	case <-leader.Lost():
		fmt.Println("lost the lead:", errors.Is(s.Err(), alock.ErrLost))
	case <-time.After(5 * time.Second):
		fmt.Println("still leading?")
	}
	// Output:
	// leading
	// lost the lead: true
}
