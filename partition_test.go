package alock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/netns"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// The partition tests put a Session in its own process and network
// namespace, joined to the host (and a private server listening on the
// host's end) by a veth pair, and cut the pair silently with tc blackhole.
// They check the order the package promises: the cut-off process is told
// (Lost) within the client's bound, and only then, within the server's
// bound, does a process outside get its locks. Times are the machine's
// wall clock, read in both processes.

// partKey is the lock the tests fight over.
const partKey = 4242

// fastPartition are the options of the quick runs: a 3 s client bound and
// a 5 s server timeout.
var fastPartition = &alock.SessionOptions{KeepaliveInterval: time.Second, KeepaliveTimeout: 2 * time.Second}

// TestHelperPartitioned is the process in the namespace. Mode "hold" holds
// partKey; mode "wait" holds Key(1) and waits for partKey; mode "release"
// holds partKey and releases it once a line comes on stdin. Each reports its
// backend, then the moment the held Lock's Lost fires.
func TestHelperPartitioned(t *testing.T) {
	dsn := os.Getenv("ALOCK_PART_DSN")
	if dsn == "" {
		t.Skip("helper process for the partition tests")
	}
	var opts *alock.SessionOptions
	if os.Getenv("ALOCK_PART_FAST") != "" {
		opts = fastPartition
	}
	s := openSession(t, dsn, opts)
	held := s.NewExclusive(alock.Key(partKey))
	if os.Getenv("ALOCK_PART_MODE") == "wait" {
		held = s.NewExclusive(alock.Key(1))
	}
	mustAcquire(t, held)
	waited := make(chan error, 1)
	switch os.Getenv("ALOCK_PART_MODE") {
	case "wait":
		go func() { waited <- s.NewExclusive(alock.Key(partKey)).Acquire(context.Background()) }()
	case "release": // releases when told to (once the link is cut): the unlock is in flight
		go func() {
			var cmd string
			_, _ = fmt.Fscanln(os.Stdin, &cmd)
			err := held.Release(context.Background())
			if errors.Is(err, alock.ErrLost) {
				err = nil
			}
			waited <- err
		}()
	default:
		waited <- nil
	}
	helperPrintf("ready backend=%d", s.PID())
	select {
	case <-held.Lost():
		helperPrintf("told at=%d err=%v", time.Now().UnixNano(), s.Err())
	case <-time.After(2 * time.Minute):
		t.Fatal("never told")
	}
	if err := <-waited; err != nil && !errors.Is(err, alock.ErrLost) {
		t.Errorf("the wait ended with %v, want nil or ErrLost", err)
	}
}

// partition is a namespace with a private server reachable from inside.
type partition struct {
	link   *netns.Link
	server *pgserver.Server
	admin  *pgx.Conn
}

// newPartition makes the namespace and the server, or skips the test where
// namespaces cannot be made (never in CI).
func newPartition(t *testing.T) *partition {
	t.Helper()
	needNetns(t)
	link, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := link.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server, err := pgserver.Start(ctx, &pgserver.Options{
		ListenAddresses: []string{link.Host.String()},
		TrustedNetworks: []string{link.Network()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Stop() })
	p := &partition{link: link, server: server}
	p.admin = pgtest.Connect(t, server.ConnString("postgres"))
	return p
}

// needNetns skips the test where network namespaces cannot be made, or
// fails it there when env CI is set.
func needNetns(t *testing.T) {
	t.Helper()
	if err := netns.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("network namespaces are required in CI: %v", err)
		}
		t.Skipf("skipping: network namespaces unavailable: %v", err)
	}
}

// startInside starts the helper in the namespace in mode, and returns it
// with its backend's pid.
func (p *partition) startInside(t *testing.T, mode string, fast bool) (*helperProc, uint32) {
	t.Helper()
	env := []string{"ALOCK_PART_DSN=" + p.server.ConnStringAt(p.link.Host.String(), "postgres"), "ALOCK_PART_MODE=" + mode}
	if fast {
		env = append(env, "ALOCK_PART_FAST=1")
	}
	child := startHelperWith(t, p.link.Command, "TestHelperPartitioned", env...)
	var backend uint32
	line := child.next(t, 30*time.Second)
	if _, err := fmt.Sscanf(line, "ready backend=%d", &backend); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	return child, backend
}

// told waits for the helper's report of its loss and returns its time.
func (p *partition) told(t *testing.T, child *helperProc, within time.Duration) time.Time {
	t.Helper()
	var at int64
	line := child.next(t, within)
	if _, err := fmt.Sscanf(line, "told at=%d", &at); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	t.Logf("helper: %s", line)
	return time.Unix(0, at)
}

// takeOver starts an Acquire of key by a Session outside the namespace and
// returns a channel that gets the moment it succeeded.
func (p *partition) takeOver(t *testing.T, key int64) <-chan time.Time {
	t.Helper()
	l := openSession(t, p.server.ConnString("postgres"), nil).NewExclusive(alock.Key(key))
	got := make(chan time.Time, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	go func() {
		if err := l.Acquire(ctx); err != nil {
			t.Errorf("outside Acquire Key(%d): %v", key, err)
			close(got)
			return
		}
		got <- time.Now()
	}()
	p.waitFor(t, "the outside Acquire to queue", `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted`, key)
	return got
}

// waitFor polls query (a count, given arg) until it is above zero.
func (p *partition) waitFor(t *testing.T, what, query string, arg any) {
	t.Helper()
	pgtest.WaitFor(t, what, func() bool {
		var n int
		return p.admin.QueryRow(context.Background(), query, arg).Scan(&n) == nil && n > 0
	})
}

// took waits for a takeover on got and returns its time.
func (p *partition) took(t *testing.T, got <-chan time.Time, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at, ok := <-got:
		if !ok {
			t.FailNow()
		}
		return at
	case <-time.After(within):
		t.Fatalf("%s: no takeover within %v\n--- server log ---\n%s", what, within, p.server.Log())
	}
	return time.Time{}
}

// checkOrder fails unless the helper was told before the takeover, and
// within the bounds (measured from the cut), and logs the figures.
func checkOrder(t *testing.T, what string, cut, told, taken time.Time, clientBound, serverBound time.Duration) {
	t.Helper()
	t.Logf("%s: told after %v, taken over after %v, margin %v (bounds: told %v, taken %v)",
		what, told.Sub(cut).Round(time.Millisecond), taken.Sub(cut).Round(time.Millisecond),
		taken.Sub(told).Round(time.Millisecond), clientBound, serverBound)
	if !told.Before(taken) {
		t.Errorf("%s: ORDER REVERSED: taken over %v before the holder was told", what, told.Sub(taken))
	}
	if told.Sub(cut) > clientBound {
		t.Errorf("%s: told after %v, over the bound %v", what, told.Sub(cut), clientBound)
	}
	if taken.Sub(cut) > serverBound {
		t.Errorf("%s: taken over after %v, over the bound %v", what, taken.Sub(cut), serverBound)
	}
}

// holderCut runs a holder in the namespace, cuts the link in direction d,
// and checks the order and the bounds.
func holderCut(t *testing.T, d netns.Direction, fast bool) {
	p := newPartition(t)
	child, _ := p.startInside(t, "hold", fast)
	got := p.takeOver(t, partKey)
	opts := (*alock.SessionOptions)(nil)
	if fast {
		opts = fastPartition
	}
	client, server := alock.Bounds(opts)
	interval := 5 * time.Second
	if fast {
		interval = opts.KeepaliveInterval
	}
	time.Sleep(500 * time.Millisecond) // the holder idles: its watchdog parks
	cut := time.Now()
	if err := p.link.Cut(d); err != nil {
		t.Fatal(err)
	}
	told := p.told(t, child, client+10*time.Second)
	taken := p.took(t, got, interval+server+10*time.Second, "partKey")
	slack := time.Second // scheduling, timer wheels, the keepalive tick
	checkOrder(t, "holder cut "+d.String(), cut, told, taken, client+slack, interval+server+2*slack)
}

func TestPartitionHolder(t *testing.T) {
	t.Parallel()
	for _, d := range []netns.Direction{netns.Both, netns.ToHost, netns.ToNamespace} {
		t.Run(strings.ReplaceAll(d.String(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			holderCut(t, d, true)
		})
	}
}

// TestPartitionHolderDefaults is the same with the default options: the
// holder is told within 10 s, the lock is free within 21 s.
func TestPartitionHolderDefaults(t *testing.T) {
	t.Parallel()
	holderCut(t, netns.Both, false)
}

// waiterCut runs a helper that holds Key(1) and waits for partKey (held by
// a blocker outside), cuts the link in direction d, and checks that the
// helper is told before Key(1) is taken over. With grant, the blocker lets
// partKey go just after the cut, so that the server grants it to the dead
// waiter: it must free it within twice the server timeout. Without, the
// dead waiter must leave the queue (its backend ends) within the server
// timeout, never granted.
func waiterCut(t *testing.T, d netns.Direction, grant bool) {
	p := newPartition(t)
	blocking := openSession(t, p.server.ConnString("postgres"), nil)
	blocker := blocking.NewExclusive(alock.Key(partKey))
	mustAcquire(t, blocker)
	child, backend := p.startInside(t, "wait", true)
	p.waitFor(t, "the helper to wait", `SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND objid = 4242 AND NOT granted`, backend)
	other := p.takeOver(t, 1)
	var next <-chan time.Time
	if grant {
		next = p.takeOver(t, partKey) // queued behind the helper
	}
	client, server := alock.Bounds(fastPartition)
	interval, slack := fastPartition.KeepaliveInterval, time.Second
	time.Sleep(500 * time.Millisecond)
	cut := time.Now()
	if err := p.link.Cut(d); err != nil {
		t.Fatal(err)
	}
	ended := make(chan time.Time, 1)
	go func() { ended <- p.backendEnd(backend, 2*time.Minute) }()
	if grant {
		time.Sleep(300 * time.Millisecond)
		mustRelease(t, blocker)
	}
	told := p.told(t, child, client+10*time.Second)
	taken := p.took(t, other, interval+server+10*time.Second, "Key(1)")
	checkOrder(t, "waiter cut "+d.String()+", its other lock", cut, told, taken, client+slack, interval+server+2*slack)
	end := <-ended
	if grant {
		taken := p.took(t, next, 2*server+10*time.Second, "partKey")
		t.Logf("the dead waiter was granted partKey; taken over after %v (bound %v), its backend ended after %v",
			taken.Sub(cut).Round(time.Millisecond), 2*server+2*slack, end.Sub(cut).Round(time.Millisecond))
		if taken.Sub(cut) > 2*server+2*slack {
			t.Errorf("the dead waiter kept partKey for %v, over the bound %v", taken.Sub(cut), 2*server+2*slack)
		}
		return
	}
	t.Logf("the dead waiter's backend left the queue after %v (bound %v)", end.Sub(cut).Round(time.Millisecond), server+2*slack)
	if end.Sub(cut) > server+2*slack {
		t.Errorf("the dead waiter stayed queued for %v, over the bound %v", end.Sub(cut), server+2*slack)
	}
	if holder := serverHolder(t, p.admin, partKey); holder != 0 && holder != blocking.PID() {
		t.Errorf("partKey held by backend %d, not the blocker", holder)
	}
}

// backendEnd polls until backend has ended and returns when, or the zero
// time after timeout.
func (p *partition) backendEnd(backend uint32, timeout time.Duration) time.Time {
	conn, err := pgx.Connect(context.Background(), p.server.ConnString("postgres"))
	if err != nil {
		return time.Time{}
	}
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend).Scan(&n); err == nil && n == 0 {
			return time.Now()
		}
	}
	return time.Time{}
}

func TestPartitionWaiter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d     netns.Direction
		grant bool
	}{{netns.Both, true}, {netns.Both, false}, {netns.ToHost, false}, {netns.ToNamespace, false}} {
		name := strings.ReplaceAll(c.d.String(), " ", "_")
		if c.grant {
			name += "/granted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			waiterCut(t, c.d, c.grant)
		})
	}
}

// TestPartitionReleaseInFlight: the holder's link to the server is cut one
// way (its packets dropped, the server's still delivered) and then it
// releases: the unlock is never acknowledged, while the server's keepalive
// probes still arrive. It must be told within the client's bound all the
// same, and before the server frees the lock.
func TestPartitionReleaseInFlight(t *testing.T) {
	t.Parallel()
	p := newPartition(t)
	child, _ := p.startInside(t, "release", true)
	got := p.takeOver(t, partKey)
	client, server := alock.Bounds(fastPartition)
	time.Sleep(500 * time.Millisecond)
	cut := time.Now()
	if err := p.link.Cut(netns.ToHost); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintln(child.stdin, "release"); err != nil {
		t.Fatal(err)
	}
	told := p.told(t, child, client+10*time.Second)
	taken := p.took(t, got, fastPartition.KeepaliveInterval+server+10*time.Second, "partKey")
	slack := time.Second
	checkOrder(t, "release in flight, cut "+netns.ToHost.String(), cut, told, taken, client+slack, fastPartition.KeepaliveInterval+server+2*slack)
}
