package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgalock/alock"
)

// stepExclusive shows two workers taking turns on one exclusive lock: B's
// Acquire waits (granted = false in pg_locks) until A releases.
func (d *demo) stepExclusive(ctx context.Context) error {
	d.heading("Step 1: two workers, one exclusive lock")
	job := alock.Name("nightly-report")
	d.names[alock.Key(alock.NameKey("nightly-report"))] = job
	d.say(`Workers A and B each make alock.NewExclusive(conn, alock.Name("nightly-report")).`)
	if err := d.sayNameKey(ctx, "nightly-report"); err != nil {
		return err
	}
	lockA, lockB := alock.NewExclusive(d.a.conn, job), alock.NewExclusive(d.b.conn, job)
	if err := lockA.Acquire(ctx); err != nil {
		return err
	}
	d.say("A: Acquire -> ok, A holds the lock.")
	d.say("B: Acquire -> blocks (running in the background); pg_locks shows B waiting:")
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- lockB.Acquire(bctx) }()
	err := d.waitForLocks(ctx, "B waiting", func(rows []lockRow) bool { return hasRow(rows, d.b.pid(), false) })
	if err == nil {
		err = lockA.Release(ctx)
	}
	if err != nil {
		cancel()
		return errors.Join(err, <-done)
	}
	d.say("A: Release -> ok.")
	if err := <-done; err != nil {
		return err
	}
	d.say("B: Acquire returns -> ok, B holds the lock (Locked() = %t):", lockB.Locked())
	if err := d.showLocks(ctx); err != nil {
		return err
	}
	if err := lockB.Release(ctx); err != nil {
		return err
	}
	d.say("B: Release -> ok.")
	return nil
}

// sayNameKey prints the key of Name(name) and checks it against the
// server's hashtextextended.
func (d *demo) sayNameKey(ctx context.Context, name string) error {
	var server int64
	if err := d.observer.QueryRow(ctx, "SELECT hashtextextended($1, 0)", name).Scan(&server); err != nil {
		return fmt.Errorf("alock: demo: hashtextextended: %w", err)
	}
	agree := "agrees"
	if server != alock.NameKey(name) {
		agree = fmt.Sprintf("DISAGREES: %d", server)
	}
	d.say("Name(%q) is Key(%d); the server's hashtextextended('%s', 0) %s.", name, alock.NameKey(name), name, agree)
	return nil
}

// stepShare shows share holds coexisting and keeping an exclusive out.
func (d *demo) stepShare(ctx context.Context) error {
	d.heading("Step 2: share locks coexist")
	shareA, shareB := alock.NewShare(d.a.conn, alock.Key(42)), alock.NewShare(d.b.conn, alock.Key(42))
	for _, l := range []*alock.Lock{shareA, shareB} {
		if err := l.Acquire(ctx); err != nil {
			return err
		}
	}
	d.say("A and B: alock.NewShare(conn, alock.Key(42)).Acquire -> ok for both; they hold it together.")
	ok, err := alock.NewExclusive(d.c.conn, alock.Key(42)).TryAcquire(ctx)
	if err != nil {
		return err
	}
	d.say("C: alock.NewExclusive(conn, alock.Key(42)).TryAcquire -> %t (an exclusive conflicts with shares).", ok)
	if err := d.showLocks(ctx); err != nil {
		return err
	}
	return d.release(ctx, "A and B: Release -> ok.", shareA, shareB)
}

// stepAllOrNothing shows a multi-id TryAcquire taking none of its ids when
// one is held elsewhere.
func (d *demo) stepAllOrNothing(ctx context.Context) error {
	d.heading("Step 3: all or nothing")
	holdB := alock.NewExclusive(d.b.conn, alock.Key(2))
	if err := holdB.Acquire(ctx); err != nil {
		return err
	}
	d.say("B: alock.NewExclusive(conn, alock.Key(2)).Acquire -> ok.")
	multi := alock.NewExclusive(d.a.conn, alock.Key(1), alock.Key(2), alock.Key(3))
	ok, err := multi.TryAcquire(ctx)
	if err != nil {
		return err
	}
	d.say("A: alock.NewExclusive(conn, alock.Key(1), alock.Key(2), alock.Key(3)).TryAcquire -> %t.", ok)
	d.say("A holds none of them: ids granted on the way (Key(1), Key(3)) were given back in a second round trip.")
	rows, err := d.pgLocks(ctx)
	if err != nil {
		return err
	}
	d.printLocks(rows)
	d.say("Rows for A (pid %d) among Key(1), Key(2), Key(3): %d.", d.a.pid(), countHeld(rows, d.a.pid(),
		alock.Key(1), alock.Key(2), alock.Key(3)))
	return d.release(ctx, "B: Release -> ok.", holdB)
}

// countHeld counts the rows of pid for ids.
func countHeld(rows []lockRow, pid uint32, ids ...alock.ID) int {
	n := 0
	for _, r := range rows {
		for _, id := range ids {
			if r.pid == pid && r.id == id {
				n++
			}
		}
	}
	return n
}

// stepCancelledWait shows a wait ended by its context leaving the session
// open and its other locks held.
func (d *demo) stepCancelledWait(ctx context.Context) error {
	d.heading("Step 4: a cancelled wait keeps the session and its other locks")
	hold10, hold20 := alock.NewExclusive(d.a.conn, alock.Key(10)), alock.NewExclusive(d.b.conn, alock.Key(20))
	for _, l := range []*alock.Lock{hold10, hold20} {
		if err := l.Acquire(ctx); err != nil {
			return err
		}
		d.held = append(d.held, l)
	}
	d.say("A: alock.NewExclusive(conn, alock.Key(10)).Acquire -> ok.")
	d.say("B: alock.NewExclusive(conn, alock.Key(20)).Acquire -> ok.")
	d.say("A: alock.NewExclusive(conn, alock.Key(20)).Acquire with context.WithTimeout(ctx, 500*time.Millisecond):")
	wait, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := alock.NewExclusive(d.a.conn, alock.Key(20)).Acquire(wait)
	cancel()
	switch {
	case ctx.Err() != nil:
		return err
	case err == nil:
		return errors.New("alock: demo: Key(20) was granted although B holds it")
	}
	d.say("   err = %v", err)
	d.say("   errors.Is(err, context.DeadlineExceeded) = %t", errors.Is(err, context.DeadlineExceeded))
	d.say("   conn.IsClosed() = %t", d.a.conn.IsClosed())
	var one int
	if err := d.a.conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("alock: demo: SELECT 1 after the cancelled wait: %w", err)
	}
	d.say("   SELECT 1 -> %d, so the connection is still usable", one)
	d.say("   the Key(10) lock: Locked() = %t, and pg_locks still shows it for A:", hold10.Locked())
	if err := d.showLocks(ctx); err != nil {
		return err
	}
	d.say("With plain pgx, cancelling a waiting SELECT pg_advisory_lock(20) closes the connection,")
	d.say("which ends the session and silently drops every lock it held, Key(10) included.")
	return nil
}

// finish releases what is still held and shows pg_locks empty.
func (d *demo) finish(ctx context.Context) error {
	d.heading("Done: release everything")
	held := d.held
	d.held = nil
	if err := d.release(ctx, "A: Release Key(10), B: Release Key(20) -> ok.", held...); err != nil {
		return err
	}
	return d.showLocks(ctx)
}

// release releases locks in order and, if all succeed, says msg.
func (d *demo) release(ctx context.Context, msg string, locks ...*alock.Lock) error {
	for _, l := range locks {
		if err := l.Release(ctx); err != nil {
			return err
		}
	}
	d.say("%s", msg)
	return nil
}
