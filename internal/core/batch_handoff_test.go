package core

// Deterministic tests of the batch leader's rounds and hand-off (batch.go,
// gate.go): a Guard whose Exit lets the test act at the end of each round,
// over a Conn that grants every row, so that the interleavings the random
// tests of package alock reach only by chance happen every time.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// grantConn is a session that grants every lock and unlock it is sent.
type grantConn struct {
	statements atomic.Int64
	closed     atomic.Bool
}

const grantPID = 42

func (c *grantConn) Key() any                                  { return c }
func (c *grantConn) Exec(context.Context, string, []any) error { return nil }
func (c *grantConn) CanCancel() bool                           { return false }
func (c *grantConn) Cancel(context.Context) error              { return nil }
func (c *grantConn) Closed() bool                              { return c.closed.Load() }
func (c *grantConn) Close(context.Context)                     { c.closed.Store(true) }
func (c *grantConn) TxStatus() byte                            { return 'I' }
func (c *grantConn) QueryText(_ context.Context, sql string, args []any) (string, error) {
	c.statements.Add(1)
	if parts := strings.Count(sql, "FILTER"); parts > 0 { // a batch: no failures
		return strings.Repeat(";", parts-1) + ":42", nil
	}
	n := 0 // one Lock's try or unlock: an int64 per key, two int32 per pair
	for _, a := range args {
		switch a.(type) {
		case int64:
			n += 2
		case int32:
			n++
		}
	}
	return strings.Repeat("1", n/2) + ":42", nil
}

// roundGuard is a Guard over a Gate whose Exit first calls onExit with the
// number of the exit (from 1).
type roundGuard struct {
	gate   Gate
	exits  atomic.Int64
	onExit func(n int64)
}

func (g *roundGuard) Enter(ctx context.Context) error { return g.gate.Enter(ctx) }
func (g *roundGuard) Gate() *Gate                     { return &g.gate }
func (g *roundGuard) Held(*Lock)                      {}
func (g *roundGuard) Released(*Lock)                  {}
func (g *roundGuard) Exit() {
	if n := g.exits.Add(1); g.onExit != nil {
		g.onExit(n)
	}
	g.gate.Exit()
}

// pending reports how many ops wait in the gate's batch.
func (g *Gate) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.batch)
}

// idle reports whether nobody leads and nothing is pending.
func (g *Gate) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.leading && len(g.batch) == 0
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
	}
}

// handOffRun has one goroutine lead, and at the end of each of its rounds
// submits `more(round)` tries of new Locks, each from a goroutine of its
// own, before the round's Exit returns; so the leader finds ops pending at
// each of its maxLeadRounds rounds and then hands over. atHandOff, if set,
// runs at the end of the last round, after its ops are pending. It returns
// the results of every try, in the order submitted (the leader's first).
func handOffRun(t *testing.T, more func(round int64) int, atHandOff func(g *roundGuard, c *grantConn)) ([]error, *roundGuard, *grantConn) {
	t.Helper()
	c := &grantConn{}
	g := &roundGuard{}
	var mu sync.Mutex
	var results []chan error
	var wg sync.WaitGroup
	try := func(i int) {
		l := NewLock(c, func() string { return "test" }, Exclusive, []Tag{KeyTag(int64(i))}, Options{Guard: g, PID: grantPID})
		res := make(chan error, 1)
		mu.Lock()
		results = append(results, res)
		mu.Unlock()
		wg.Go(func() {
			ok, err := l.TryAcquire(context.Background())
			if err == nil && !ok {
				err = errors.New("not taken")
			}
			if err == nil && l.Count() != 1 {
				err = errors.New("taken, but not counted")
			}
			res <- err
		})
	}
	next := 1
	g.onExit = func(n int64) {
		if n > maxLeadRounds {
			return
		}
		for range more(n) {
			want := g.gate.pending() + 1
			try(next)
			next++
			waitUntil(t, "the op pending", func() bool { return g.gate.pending() == want })
		}
		if n == maxLeadRounds && atHandOff != nil {
			atHandOff(g, c)
		}
	}
	try(0)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the tries have not all returned within 10 s (%d exits)", g.exits.Load())
	}
	waitUntil(t, "the leadership to end", g.gate.idle)
	errs := make([]error, len(results))
	for i, r := range results {
		errs[i] = <-r
	}
	return errs, g, c
}

// TestBatchHandOffToTheOnlyOp: after maxLeadRounds rounds the leader hands
// over to the goroutine of the one op pending, which leads its own op and
// ends the leadership: every op runs once, one statement a round.
func TestBatchHandOffToTheOnlyOp(t *testing.T) {
	errs, g, c := handOffRun(t, func(int64) int { return 1 }, nil)
	if len(errs) != maxLeadRounds+1 {
		t.Fatalf("%d ops", len(errs))
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("op %d: %v", i, err)
		}
	}
	// 16 rounds of the first leader, 1 of the next; each leader's last
	// round finds the batch empty (its exit is counted, no statement).
	if n := c.statements.Load(); n != maxLeadRounds+1 {
		t.Errorf("%d statements, want %d", n, maxLeadRounds+1)
	}
	if n := g.exits.Load(); n != maxLeadRounds+2 {
		t.Errorf("%d rounds, want %d", n, maxLeadRounds+2)
	}
}

// TestBatchHandOffWithSeveral: the goroutine handed the leadership puts its
// op back first and runs it with those pending behind it, in one statement.
func TestBatchHandOffWithSeveral(t *testing.T) {
	errs, _, c := handOffRun(t, func(round int64) int {
		if round == maxLeadRounds {
			return 3
		}
		return 1
	}, nil)
	for i, err := range errs {
		if err != nil {
			t.Errorf("op %d: %v", i, err)
		}
	}
	if n := c.statements.Load(); n != maxLeadRounds+1 {
		t.Errorf("%d statements, want %d", n, maxLeadRounds+1)
	}
}

// TestBatchHandOffThenShut: the gate is shut (the session closed) between
// the hand-off and the new leader's Enter: the new leader fails its own op
// and every other pending one with the gate's error, and the leadership
// ends; a later op fails at once the same way.
func TestBatchHandOffThenShut(t *testing.T) {
	shut := errors.New("shut for the test")
	var shutDone chan bool
	errs, g, _ := handOffRun(t, func(round int64) int {
		if round == maxLeadRounds {
			return 2
		}
		return 1
	}, func(g *roundGuard, _ *grantConn) {
		shutDone = make(chan bool, 1)
		go func() { shutDone <- g.gate.Shut(context.Background(), shut) }()
		waitUntil(t, "the gate shut", func() bool {
			g.gate.mu.Lock()
			defer g.gate.mu.Unlock()
			return g.gate.closeErr != nil
		})
	})
	if !<-shutDone {
		t.Fatal("Shut did not get the connection")
	}
	for i, err := range errs {
		switch {
		case i < maxLeadRounds && err != nil:
			t.Errorf("op %d, run before the shut: %v", i, err)
		case i >= maxLeadRounds && !errors.Is(err, shut):
			t.Errorf("op %d, pending at the shut: %v, want the gate's error", i, err)
		}
	}
	c := &grantConn{}
	l := NewLock(c, func() string { return "late" }, Exclusive, []Tag{KeyTag(99)}, Options{Guard: g, PID: grantPID})
	if ok, err := l.TryAcquire(context.Background()); ok || !errors.Is(err, shut) {
		t.Errorf("a try after the shut: %v %v", ok, err)
	}
	if !g.gate.idle() {
		t.Error("a leadership or ops left after the shut")
	}
}

// TestBatchHandOffThenLoss: the session is lost (its connection closed)
// between the hand-off and the new leader's round: the new leader enters
// (a loss does not shut the gate), finds the connection closed, fails its
// own op and the others pending with ErrLost, and the leadership ends.
func TestBatchHandOffThenLoss(t *testing.T) {
	errs, g, c := handOffRun(t, func(round int64) int {
		if round == maxLeadRounds {
			return 3
		}
		return 1
	}, func(_ *roundGuard, c *grantConn) { c.closed.Store(true) })
	for i, err := range errs {
		switch {
		case i < maxLeadRounds && err != nil:
			t.Errorf("op %d, run before the loss: %v", i, err)
		case i >= maxLeadRounds && !errors.Is(err, ErrLost):
			t.Errorf("op %d, pending at the loss: %v, want ErrLost", i, err)
		}
	}
	if n := c.statements.Load(); n != maxLeadRounds {
		t.Errorf("%d statements, want %d (none after the loss)", n, maxLeadRounds)
	}
	if !g.gate.idle() {
		t.Error("a leadership or ops left after the loss")
	}
}

// failConn fails every statement as a broken connection would.
type failConn struct{ grantConn }

func (c *failConn) QueryText(context.Context, string, []any) (string, error) {
	return "", errors.New("write: broken pipe")
}

// TestBatchErrorNamesEachOpsLock: when a batch fails, each op's error names
// its own Lock, not the leader's.
func TestBatchErrorNamesEachOpsLock(t *testing.T) {
	c := &failConn{}
	g := &roundGuard{}
	if err := g.Enter(context.Background()); err != nil { // hold the session while both submit
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"LockA", "LockB"} {
		l := NewLock(c, func() string { return name }, Exclusive, []Tag{KeyTag(int64(i))}, Options{Guard: g, PID: grantPID})
		wg.Go(func() { _, errs[i] = l.TryAcquire(context.Background()) })
		waitUntil(t, "the op pending", func() bool { return g.gate.pending() == i+1 })
	}
	g.Exit()
	wg.Wait()
	for i, err := range errs {
		own, other := []string{"LockA", "LockB"}[i], []string{"LockB", "LockA"}[i]
		if err == nil || !strings.Contains(err.Error(), own) || strings.Contains(err.Error(), other) {
			t.Errorf("op of %s: %v", own, err)
		}
	}
}

// batchCtxRun holds the session while a leader's try and another
// goroutine's try are pending in one batch, each with a ctx of its own,
// then ends the leader's ctx (cancelLeader) or the other's and lets the
// session go. It returns both Locks, the statements sent and both results.
func batchCtxRun(t *testing.T, cancelLeader bool) (leader, other *Lock, statements int64, leaderErr, otherErr error) {
	t.Helper()
	c := &grantConn{}
	g := &roundGuard{}
	if err := g.Enter(context.Background()); err != nil { // hold the session
		t.Fatal(err)
	}
	ctxs := make([]context.Context, 2)
	cancels := make([]context.CancelFunc, 2)
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithCancel(context.Background())
		defer cancels[i]()
	}
	locks := make([]*Lock, 2)
	errs := make([]chan error, 2)
	for i := range locks {
		locks[i] = NewLock(c, func() string { return "test" }, Exclusive, []Tag{KeyTag(int64(i))}, Options{Guard: g, PID: grantPID})
		errs[i] = make(chan error, 1)
		go func() {
			ok, err := locks[i].TryAcquire(ctxs[i])
			if err == nil && !ok {
				err = errors.New("not taken")
			}
			errs[i] <- err
		}()
		waitUntil(t, "the try pending", func() bool { return g.gate.pending() == i+1 })
	}
	gone := 1 // the goroutine whose ctx ends
	if cancelLeader {
		gone = 0
	}
	cancels[gone]()
	select {
	case err := <-errs[gone]:
		errs[gone] <- err
	case <-time.After(5 * time.Second):
		t.Fatal("a pending try did not return when its ctx ended, while the session was busy")
	}
	g.Exit()
	leaderErr, otherErr = <-errs[0], <-errs[1]
	return locks[0], locks[1], c.statements.Load(), leaderErr, otherErr
}

// TestBatchPendingTryEndsWithItsCtx: a try pending in a batch while the
// session is busy returns when its ctx ends, withdrawn: the leader's try
// still runs, alone.
func TestBatchPendingTryEndsWithItsCtx(t *testing.T) {
	leader, other, n, leaderErr, otherErr := batchCtxRun(t, false)
	if leaderErr != nil || leader.Count() != 1 {
		t.Errorf("the leader's try: %v, count %d", leaderErr, leader.Count())
	}
	if !errors.Is(otherErr, context.Canceled) || other.Count() != 0 {
		t.Errorf("the withdrawn try: %v, count %d", otherErr, other.Count())
	}
	if n != 1 {
		t.Errorf("%d statements, want 1", n)
	}
}

// TestBatchLeaderCtxEndsWaitingForTheSession: a leader whose ctx ends while
// it waits for the session returns at once; the leadership passes to the
// other pending try, which runs once the session is free.
func TestBatchLeaderCtxEndsWaitingForTheSession(t *testing.T) {
	leader, other, n, leaderErr, otherErr := batchCtxRun(t, true)
	if !errors.Is(leaderErr, context.Canceled) || leader.Count() != 0 {
		t.Errorf("the leader's try: %v, count %d", leaderErr, leader.Count())
	}
	if otherErr != nil || other.Count() != 1 {
		t.Errorf("the other try: %v, count %d", otherErr, other.Count())
	}
	if n != 1 {
		t.Errorf("%d statements, want 1", n)
	}
}
