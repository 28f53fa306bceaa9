package alock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// openSession opens a Session on dsn, closed at the end of the test.
func openSession(t *testing.T, dsn string, opts *alock.SessionOptions) *alock.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := alock.Open(ctx, dsn, opts)
	if err != nil {
		pgtest.Fatalf(t, "Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// sessionPID returns the backend pid that holds Key(want) in dsn's database
// (pg_locks is cluster-wide: other tests hold the same keys elsewhere).
func sessionPID(t *testing.T, dsn string, want int) uint32 {
	t.Helper()
	admin := pgtest.Connect(t, dsn)
	var pid uint32
	if err := admin.QueryRow(context.Background(),
		`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted
		   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, want).Scan(&pid); err != nil {
		t.Fatalf("find the session's backend by its lock %d: %v", want, err)
	}
	return pid
}

// expectLost waits for l's Lost channel and s's Done, both within bound,
// and returns how long the loss took to be signalled.
func expectLost(t *testing.T, s *alock.Session, l *alock.Lock, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(bound):
		pgtest.Fatalf(t, "Lost not closed within %v", bound)
	}
	took := time.Since(start)
	select {
	case <-s.Done():
	case <-time.After(bound):
		t.Fatal("Done not closed after Lost")
	}
	if !errors.Is(s.Err(), alock.ErrLost) {
		t.Fatalf("Err: %v, want ErrLost", s.Err())
	}
	if l.Locked() {
		t.Fatal("Locked after the loss")
	}
	if err := l.Release(context.Background()); !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Release after the loss: %v, want ErrLost", err)
	}
	return took
}

// watchStalls samples this process's scheduling every 10 ms until the test
// ends. The func it returns gives the longest time the process went without
// running the sampler: a stall (the machine's load, a GC pause, a SIGSTOP)
// that held back the Sessions' timers as well.
func watchStalls(t *testing.T) (longest func() time.Duration) {
	var last, most atomic.Int64
	last.Store(time.Now().UnixNano())
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			now := time.Now().UnixNano()
			if gap := now - last.Swap(now); gap > most.Load() {
				most.Store(gap)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() time.Duration {
		return time.Duration(max(most.Load(), time.Now().UnixNano()-last.Load()))
	}
}

// fatalUnlessStalled fails t with the message, unless the process stalled
// for longer than tolerance at once (see watchStalls): then the failure may
// be the stall's, not the library's, and t is skipped saying so.
func fatalUnlessStalled(t *testing.T, longest func() time.Duration, tolerance time.Duration, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if stall := longest(); stall > tolerance {
		t.Skipf("no verdict: this process stalled for %v at once, more than the %v the test tolerates, and then: %s", stall, tolerance, msg)
	}
	pgtest.Fatalf(t, "%s", msg)
}

// TestSessionSignalsTerminatedBackend: a terminated backend is signalled
// "at once" (package documentation: Lost fires "at once for a terminated
// backend or a closed socket"), by the watchdog's parked read. The
// keepalive probes are off, so that nothing else could notice: the 10 s
// bound is a hang guard and slack for a loaded machine, not a figure the
// docs give.
func TestSessionSignalsTerminatedBackend(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openSession(t, dsn, &alock.SessionOptions{KeepaliveInterval: -1})
	l := s.NewExclusive(alock.Key(1))
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := sessionPID(t, dsn, 1)
	time.Sleep(100 * time.Millisecond) // let the watchdog park
	admin := pgtest.Connect(t, dsn)
	start := time.Now()
	if _, err := admin.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	expectLost(t, s, l, 10*time.Second)
	t.Logf("terminated backend signalled after %v", time.Since(start))
	// The backend sends its FATAL error before it exits and frees its
	// locks: the holder is told first.
	pgtest.WaitFor(t, "another session to take the lock", func() bool {
		var free bool
		err := admin.QueryRow(context.Background(), "SELECT pg_try_advisory_lock(1)").Scan(&free)
		return err == nil && free
	})
}

func TestSessionLocksAreSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openSession(t, dsn, nil)
	marker := s.NewExclusive(alock.Key(999)) // finds the session's backend
	if err := marker.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := sessionPID(t, dsn, 999)
	shared := s.NewShare(alock.Key(1))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			own := s.NewExclusive(alock.Key(int64(100 + g)))
			for range 20 {
				if err := own.Do(context.Background(), func(context.Context) error {
					_ = own.Locked()
					return shared.Do(context.Background(), func(context.Context) error { return nil })
				}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(g) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if shared.Locked() {
		t.Fatal("shared still Locked")
	}
	if err := s.Err(); err != nil {
		t.Fatalf("session lost: %v", err)
	}
	if got := locktest.Holds(t, dsn, pid); len(got) != 1 || got[0] != hold(alock.Key(999), alock.Exclusive) {
		t.Fatalf("server shows %v after every goroutine released, want only the marker", got)
	}
}

// recordingTracer records the events a Tracer is told of.
type recordingTracer struct {
	mu     sync.Mutex
	events []string
}

func (r *recordingTracer) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recordingTracer) AcquireStart(ctx context.Context, l *alock.Lock) context.Context {
	r.add("start " + l.String())
	return ctx
}

func (r *recordingTracer) AcquireEnd(_ context.Context, l *alock.Lock, acquired bool, err error) {
	r.add(fmt.Sprintf("end %s %v %v", l, acquired, err))
}

func (r *recordingTracer) Release(_ context.Context, l *alock.Lock, err error) {
	r.add(fmt.Sprintf("release %s %v", l, err))
}

func (r *recordingTracer) Lost(_ *alock.Session, err error) { r.add("lost " + err.Error()) }

func TestSessionTracerAndLogger(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	tracer := &recordingTracer{}
	var logged strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := openSession(t, dsn, &alock.SessionOptions{Tracer: tracer, Logger: logger})
	l := s.NewExclusive(alock.Key(3))
	if err := l.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	admin := pgtest.Connect(t, dsn)
	if _, err := admin.Exec(context.Background(), "SELECT pg_terminate_backend($1)", sessionPID(t, dsn, 3)); err != nil {
		t.Fatal(err)
	}
	<-s.Done()
	tracer.mu.Lock()
	got := strings.Join(tracer.events, "\n")
	tracer.mu.Unlock()
	want := []string{"start exclusive [Key(3)]", "end exclusive [Key(3)] true <nil>", "release exclusive [Key(3)] <nil>", "lost alock: session lost"}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("tracer events lack %q:\n%s", w, got)
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged.String(), "level=WARN msg=\"alock: session lost\"") {
		t.Errorf("logger did not report the loss:\n%s", logged.String())
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestConcurrentFencedOpens opens fenced Sessions at once on a database
// without the fencing sequence: they race to create it, and all succeed.
func TestConcurrentFencedOpens(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s, err := alock.Open(context.Background(), dsn, &alock.SessionOptions{Fencing: true})
			if err != nil {
				t.Error(err)
				return
			}
			_ = s.Close(context.Background())
		})
	}
	wg.Wait()
}

// TestFencingTokens checks that tokens grow with every hold, stay for a
// re-entrant one, and that an acquisition whose token cannot be drawn holds
// nothing.
func TestFencingTokens(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := openSession(t, dsn, &alock.SessionOptions{Fencing: true, FenceSequence: "public.test_fence"})
	keep := s.NewShare(alock.Key(2))
	l := s.NewExclusive(alock.Key(1), alock.Key(2))
	if err := keep.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	var last int64
	for range 3 {
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Acquire(ctx); err != nil { // re-entrant: same hold
			t.Fatal(err)
		}
		tok := l.Token()
		if tok <= last {
			t.Fatalf("token %d after %d", tok, last)
		}
		last = tok
		if err := errors.Join(l.Release(ctx), l.Release(ctx)); err != nil {
			t.Fatal(err)
		}
		if l.Token() != 0 {
			t.Fatalf("Token of an unheld Lock: %d", l.Token())
		}
	}
	admin := pgtest.Connect(t, dsn)
	if _, err := admin.Exec(ctx, "DROP SEQUENCE public.test_fence"); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ctx); err == nil || !strings.Contains(err.Error(), "fencing token") {
		t.Fatalf("Acquire without its sequence: %v, want a fencing token error", err)
	}
	if l.Locked() {
		t.Fatal("Locked after a failed fenced Acquire")
	}
	// Only keep's share hold of Key(2) remains.
	if got := locktest.Holds(t, dsn, sessionPID(t, dsn, 2)); len(got) != 1 || got[0] != hold(alock.Key(2), alock.Share) {
		t.Fatalf("server shows %v, want only keep's hold", got)
	}
}
