package alock_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// TestOpenConfigKeepsTheCallersSettings: OpenConfig uses the caller's
// DialFunc, keeps application_name, leaves cfg unchanged, and PID is the
// backend's.
func TestOpenConfigKeepsTheCallersSettings(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "alock_openconfig_test"
	var dials atomic.Int32
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	s, err := alock.OpenConfig(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if dials.Load() == 0 {
		t.Fatal("the caller's DialFunc was not used")
	}
	if cfg.AfterNetConnect != nil {
		t.Fatal("OpenConfig modified the caller's config")
	}
	admin := pgtest.Connect(t, dsn)
	var name string
	if err := admin.QueryRow(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1", s.PID()).Scan(&name); err != nil {
		t.Fatalf("no backend with the Session's PID %d: %v", s.PID(), err)
	}
	if name != "alock_openconfig_test" {
		t.Fatalf("application_name %q", name)
	}
	if _, err := alock.OpenConfig(ctx, nil, nil); err == nil {
		t.Fatal("OpenConfig(nil) succeeded")
	}
}

// TestOpenKeepsApplicationName: Open keeps the connection string's
// application_name.
func TestOpenKeepsApplicationName(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openSession(t, withParam(dsn, "application_name", "alock_open_test"), nil)
	var name string
	if err := pgtest.Connect(t, dsn).QueryRow(context.Background(),
		"SELECT application_name FROM pg_stat_activity WHERE pid = $1", s.PID()).Scan(&name); err != nil || name != "alock_open_test" {
		t.Fatalf("application_name %q, %v", name, err)
	}
}

// TestDoContextEndsOnLoss: fn's ctx ends when the hold is lost, with a
// cause wrapping ErrLost; Do then returns.
func TestDoContextEndsOnLoss(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openSession(t, dsn, nil)
	l := s.NewExclusive(alock.Key(1))
	var cause error
	err := l.Do(context.Background(), func(ctx context.Context) error {
		terminate(t, dsn, s.PID())
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return errors.New("fn's ctx did not end within 5 s of the loss")
		}
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, alock.ErrLost) {
		t.Fatalf("Do: %v, want fn's context.Canceled joined with Release's ErrLost", err)
	}
	if !errors.Is(cause, alock.ErrLost) {
		t.Fatalf("cause: %v, want ErrLost", cause)
	}
}

// acquireOnlyTracer implements Tracer and none of the optional interfaces.
type acquireOnlyTracer struct{ ends atomic.Int32 }

func (a *acquireOnlyTracer) AcquireStart(ctx context.Context, _ *alock.Lock) context.Context {
	return ctx
}

func (a *acquireOnlyTracer) AcquireEnd(context.Context, *alock.Lock, bool, error) { a.ends.Add(1) }

// TestTracerOnAPlainConnAndOptionalEvents: a Tracer without the optional
// interfaces works, on a plain connection too; a lost Lock's error is a
// *LostError with its ids.
func TestTracerOnAPlainConnAndOptionalEvents(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn := pgtest.Connect(t, dsn)
	tr := &acquireOnlyTracer{}
	l := alock.NewExclusive(conn, alock.Key(1), alock.Pair(1, 2)).Trace(tr)
	if err := l.Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if tr.ends.Load() != 1 {
		t.Fatalf("AcquireEnd called %d times, want 1", tr.ends.Load())
	}
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	terminate(t, dsn, conn.PgConn().PID())
	err := l.Release(ctx)
	var lost *alock.LostError
	if !errors.As(err, &lost) || !errors.Is(err, alock.ErrLost) || len(lost.IDs) != 2 || lost.IDs[1] != alock.Pair(1, 2) {
		t.Fatalf("Release: %v, want a *LostError with the ids", err)
	}
	s := openSession(t, dsn, &alock.SessionOptions{Tracer: tr})
	if err := s.NewExclusive(alock.Key(3)).Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	terminate(t, dsn, s.PID())
	<-s.Done()
}
