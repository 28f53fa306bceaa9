package alock_test

// Adversarial tests of fencing tokens, pooler detection by behaviour, the
// Session's batch and the Locker, checked against pg_locks.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
	"github.com/pgalock/alock/internal/locktest"
	"github.com/pgalock/alock/internal/pgtest"
)

// a3Bouncer starts a PgBouncer in mode with size server connections in
// front of a fresh database and returns the database's dsn and the bouncer's.
func a3Bouncer(t *testing.T, mode string, size int) (dsn, via string) {
	t.Helper()
	return startBouncerSized(t, mode, size)
}

// a3BackendOf returns the backend pid behind conn (through a pooler, the
// server's, not the pooler's).
func a3BackendOf(t *testing.T, conn *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestAttack3SessionPoolerReuseAfterCloseWithLocks: behind a session-mode
// PgBouncer with one server connection, a plain connection takes a lock and
// is closed while holding it (the documentation: the locks end with the
// session, whatever ends it). PgBouncer resets the backend (DISCARD ALL
// frees advisory locks) and hands it to the next client of the process. That
// client's first lock must work: its connection is the only one on that
// backend. A stale claim of the backend by the closed connection makes it
// fail with ErrPooler and closes a healthy connection.
func TestAttack3SessionPoolerReuseAfterCloseWithLocks(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "session", 1)
	ctx := context.Background()
	a := pgtest.Connect(t, via)
	backend := a3BackendOf(t, a)
	mustAcquire(t, alock.NewExclusive(a, alock.Key(1)))
	if got := locktest.Holds(t, dsn, backend); len(got) != 1 {
		t.Fatalf("server shows %v for a", got)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := pgtest.Connect(t, via)
	if got := a3BackendOf(t, b); got != backend {
		t.Skipf("the pooler gave b backend %d, not a's %d", got, backend)
	}
	if got := locktest.Holds(t, dsn, backend); len(got) != 0 {
		t.Fatalf("the reset backend still holds %v", got)
	}
	l := alock.NewExclusive(b, alock.Key(2))
	if err := l.Acquire(ctx); err != nil {
		pgtest.Fatalf(t, "b's first lock on its own backend: %v (b closed: %v; server shows %v)",
			err, b.IsClosed(), locktest.Holds(t, dsn, backend))
	}
	if got := locktest.Holds(t, dsn, backend); len(got) != 1 || got[0] != hold(alock.Key(2), alock.Exclusive) {
		t.Fatalf("server shows %v, want only b's Key(2)", got)
	}
	mustRelease(t, l)
}

// a3Exec runs sql on dsn's database or fails the test.
func a3Exec(t *testing.T, dsn string, sql string) {
	t.Helper()
	c := pgtest.Connect(t, dsn)
	if _, err := c.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	_ = c.Close(context.Background())
}

// TestAttack3FenceExhaustedGivesBack: the fencing sequence reaches its
// MAXVALUE (NO CYCLE, which Open accepts): nextval fails in the lock
// statement after the locks were taken. Acquire and TryAcquire must fail
// and leave nothing held on the server (the package's promise: never leak a
// lock on failure), and the library must agree.
func TestAttack3FenceExhaustedGivesBack(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a3Exec(t, dsn, "CREATE SEQUENCE public.alock_fence MAXVALUE 2")
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true})
	ctx := context.Background()
	for i := range 2 {
		if tok := fencedToken(t, s, alock.Key(1)); tok != int64(i+1) {
			t.Fatalf("token %d, want %d", tok, i+1)
		}
	}
	check := func(what string, err error, l *alock.Lock) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with an exhausted sequence: no error (token %d)", what, l.Token())
		}
		if l.Locked() {
			t.Errorf("%s: Locked after a failure", what)
		}
		if s.Err() == nil {
			if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
				t.Errorf("%s failed (%v) but the server shows %v held", what, err, got)
			}
		}
		t.Logf("%s: %v (session %v)", what, err, s.Err())
	}
	l := s.NewExclusive(alock.Key(1), alock.Key(2))
	check("Acquire", l.Acquire(ctx), l)
	if s.Err() != nil {
		return
	}
	l2 := s.NewShare(alock.Key(3))
	ok, err := l2.TryAcquire(ctx)
	if ok && err == nil {
		err = nil
		t.Errorf("TryAcquire succeeded with an exhausted sequence (token %d)", l2.Token())
	}
	check("TryAcquire", err, l2)
}

// TestAttack3FenceTryFailureDrawsNothing: a fenced TryAcquire that fails
// (one id of two held elsewhere) draws no token and holds nothing.
func TestAttack3FenceTryFailureDrawsNothing(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true})
	ctx := context.Background()
	first := fencedToken(t, s, alock.Key(9))
	holdKeys(t, dsn, 2)
	for range 5 {
		l := s.NewExclusive(alock.Key(1), alock.Key(2))
		ok, err := l.TryAcquire(ctx)
		if ok || err != nil {
			t.Fatalf("TryAcquire over a held id: %v, %v", ok, err)
		}
		if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
			t.Fatalf("after a failed try the server shows %v", got)
		}
		if l.Token() != 0 {
			t.Fatalf("token %d of a failed try", l.Token())
		}
	}
	if next := fencedToken(t, s, alock.Key(9)); next != first+1 {
		t.Fatalf("token after five failed tries %d, want %d (nothing drawn)", next, first+1)
	}
}

// TestAttack3FenceNonPositiveTokens: Open accepts a sequence with a positive
// INCREMENT whose values start at or below zero (MINVALUE -10 START -2).
// Token documents 0 as "not held or not fenced", so a held fenced Lock must
// not report 0, and tokens must still grow grant after grant; else Open
// must refuse the sequence as it refuses CYCLE or CACHE > 1.
func TestAttack3FenceNonPositiveTokens(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a3Exec(t, dsn, "CREATE SEQUENCE public.alock_fence MINVALUE -10 START -2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := alock.Open(ctx, dsn, &alock.SessionOptions{Fencing: true})
	if err != nil {
		t.Logf("Open refuses the sequence: %v", err)
		return
	}
	defer s.Close(ctx)
	var tokens []int64
	for range 4 {
		tokens = append(tokens, fencedToken(t, s, alock.Key(1)))
	}
	admin := pgtest.Connect(t, dsn)
	var last int64
	if err := admin.QueryRow(ctx, "SELECT last_value FROM public.alock_fence").Scan(&last); err != nil {
		t.Fatal(err)
	}
	for i, tok := range tokens {
		if tok == 0 || (i > 0 && tok <= tokens[i-1]) {
			t.Fatalf("tokens of four successive grants: %v (sequence at %d); want them non-zero and growing, or Open to refuse the sequence", tokens, last)
		}
	}
}

// TestAttack3OpenThroughBusyTransactionPooler: Open must refuse a
// transaction-mode pooler (doc.go: "[Open] refuses both"), also when other
// clients of the pool keep its backends busy, so that the probe's second
// client and the session's next statement do not fall on the backends that
// the check expects. Each Open that succeeds is then made to lock: the
// library must not report a lock held on a backend whose locks the server
// does not show.
func TestAttack3OpenThroughBusyTransactionPooler(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "transaction", 4)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for i := range 3 {
		c := pgtest.Connect(t, via)
		wg.Go(func() {
			for ctx.Err() == nil {
				_, _ = c.Exec(ctx, "SELECT pg_sleep(0.003 * $1)", i+1)
			}
		})
	}
	opened := 0
	for range 10 {
		octx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := alock.Open(octx, via, nil)
		cancel()
		if err != nil {
			if !errors.Is(err, alock.ErrPooler) {
				t.Errorf("Open: %v, want ErrPooler", err)
			}
			continue
		}
		opened++
		l := s.NewExclusive(alock.Key(int64(100 + opened)))
		err = l.Acquire(context.Background())
		if err == nil {
			// Earlier iterations' locks may linger on this backend: a
			// transaction-mode pooler keeps serving it (doc.go).
			got := locktest.Holds(t, dsn, s.PID())
			if !slices.Contains(got, hold(alock.Key(int64(100+opened)), alock.Exclusive)) {
				t.Errorf("Acquire succeeded through a transaction pooler and the session's backend %d shows %v", s.PID(), got)
			}
			_ = l.Release(context.Background())
		}
		t.Logf("Open succeeded through a transaction pooler; Acquire: %v", err)
		_ = s.Close(context.Background())
	}
	// Open's check is a probe, not a proof (doc.go, "Connections and
	// pools"): behind a busy pool it can miss; the lock statements' pid
	// checks above are what must hold.
	t.Logf("Open succeeded %d times of 10 through a transaction-mode pooler with busy backends", opened)
}

// TestAttack3FenceOrderUnderConcurrency: goroutines take exclusive
// single-id Locks, blocking, trying, re-entrant and with deadlines that end
// mid-wait, on two fenced Sessions and a fenced Locker over three ids. An
// exclusive id has one server-level holder at a time, so in the order in
// which the acquisitions return, the tokens of an id never go down, and
// Locks that hold an id at once (only on one Session) share a token. At the
// end, every Lock released, the server shows nothing.
func TestAttack3FenceOrderUnderConcurrency(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	opts := &alock.SessionOptions{Fencing: true}
	s1, s2 := attackSession(t, dsn, opts), attackSession(t, dsn, opts)
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	lk, err := alock.NewLocker(lctx, dsn, &alock.LockerOptions{MaxSessions: 2, Session: *opts})
	lcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close(context.Background())
	var (
		mu      sync.Mutex
		last    = map[int64]int64{}   // id → the token of the latest acquisition to return
		holders = map[int64][]int64{} // id → tokens of current holders
		errs    []string
	)
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 3))
			for time.Now().Before(deadline) {
				id := int64(r.IntN(3) + 1)
				var l *alock.Lock
				switch g % 3 {
				case 0:
					l = s1.NewExclusive(alock.Key(id))
				case 1:
					l = s2.NewExclusive(alock.Key(id))
				default:
					l = lk.NewExclusive(alock.Key(id))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(40))*time.Millisecond)
				var err error
				if r.IntN(3) == 0 {
					var ok bool
					ok, err = l.TryAcquire(ctx)
					if err == nil && !ok {
						cancel()
						continue
					}
				} else {
					err = l.Acquire(ctx)
				}
				cancel()
				if err != nil {
					if l.Locked() {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("failed acquisition %v leaves Locked", err))
						mu.Unlock()
					}
					continue
				}
				tok := l.Token()
				mu.Lock()
				if tok <= 0 {
					errs = append(errs, fmt.Sprintf("token %d of a held fenced Lock", tok))
				}
				if tok < last[id] {
					errs = append(errs, fmt.Sprintf("Key(%d): token %d returned after %d", id, tok, last[id]))
				}
				for _, h := range holders[id] {
					if h != tok {
						errs = append(errs, fmt.Sprintf("Key(%d): held at once with tokens %d and %d", id, h, tok))
					}
				}
				last[id] = tok
				holders[id] = append(holders[id], tok)
				mu.Unlock()
				if r.IntN(4) == 0 { // re-entrant: keeps the token
					if err := l.Acquire(context.Background()); err != nil || l.Token() != tok {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("re-entrant Acquire: %v, token %d, was %d", err, l.Token(), tok))
						mu.Unlock()
					} else {
						_ = l.Release(context.Background())
					}
				}
				time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
				mu.Lock()
				hs := holders[id]
				if i := slices.Index(hs, tok); i >= 0 {
					holders[id] = slices.Delete(hs, i, i+1)
				}
				mu.Unlock()
				if err := l.Release(context.Background()); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("Release: %v", err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, e := range errs[:min(len(errs), 10)] {
		t.Error(e)
	}
	for _, s := range []*alock.Session{s1, s2} {
		if err := s.Err(); err != nil {
			t.Errorf("session lost: %v", err)
		} else if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
			t.Errorf("after every release the server shows %v on %d", got, s.PID())
		}
	}
	t.Logf("latest tokens %v", last)
}

// TestAttack3NoFalsePoolerInLegitimateMix: one process locks through every
// legitimate front end at once, directly on the server: a pgxpool with
// GuardPool whose connections are borrowed, locked, and given back released
// or still holding (destroyed), a Session, a Locker with several sessions,
// and alocksql *sql.Conns over pgx's stdlib and lib/pq, which are pinned,
// locked and given back. No backend serves two connections here, so no
// operation may fail with ErrPooler.
func TestAttack3NoFalsePoolerInLegitimateMix(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 3
	alock.GuardPool(cfg, nil)
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := attackSession(t, dsn, nil)
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	lk, err := alock.NewLocker(lctx, dsn, &alock.LockerOptions{MaxSessions: 3})
	lcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close(ctx)
	var dbs []*sql.DB
	for _, name := range []string{"pgx", "postgres"} {
		db, err := sql.Open(name, dsn)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(2)
		defer db.Close()
		dbs = append(dbs, db)
	}
	var mu sync.Mutex
	var poolerErrs []string
	note := func(what string, err error) {
		if errors.Is(err, alock.ErrPooler) {
			mu.Lock()
			poolerErrs = append(poolerErrs, what+": "+err.Error())
			mu.Unlock()
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for time.Now().Before(deadline) {
				id := alock.Key(int64(1000*g + r.IntN(3)))
				switch g {
				case 0, 1: // pgxpool
					pc, err := pool.Acquire(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					l := alock.NewExclusive(pc.Conn(), id)
					err = l.Acquire(ctx)
					note("pool Acquire", err)
					if err == nil && r.IntN(3) > 0 {
						note("pool Release", l.Release(ctx))
					}
					pc.Release() // holding: destroyed by GuardPool
				case 2:
					l := s.NewExclusive(id)
					if err := l.Acquire(ctx); err != nil {
						note("session Acquire", err)
					} else {
						note("session Release", l.Release(ctx))
					}
				case 3:
					l := lk.NewShare(id)
					if err := l.Acquire(ctx); err != nil {
						note("locker Acquire", err)
					} else {
						note("locker Release", l.Release(ctx))
					}
				default: // database/sql
					db := dbs[g-4]
					c, err := db.Conn(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					l := alocksql.NewExclusive(c, id)
					if err := l.Acquire(ctx); err != nil {
						note("sql Acquire", err)
					} else {
						note("sql Release", l.Release(ctx))
					}
					_ = c.Close()
				}
			}
		})
	}
	wg.Wait()
	for _, e := range poolerErrs[:min(len(poolerErrs), 5)] {
		t.Errorf("false ErrPooler: %s", e)
	}
	if s.Err() == nil {
		if got := locktest.Holds(t, dsn, s.PID()); len(got) != 0 {
			t.Errorf("session holds %v", got)
		}
	}
}

// TestAttack3SessionPoolerSeveralClients: behind a session-mode PgBouncer
// (enough server connections for every client), plain connections, a
// Session and a Locker of one process lock and unlock at once, and clients
// come and go between rounds (released first). No ErrPooler, and the server
// agrees with every Lock.
func TestAttack3SessionPoolerSeveralClients(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "session", 8)
	ctx := context.Background()
	s := attackSession(t, via, &alock.SessionOptions{Fencing: true})
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	lk, err := alock.NewLocker(lctx, via, &alock.LockerOptions{MaxSessions: 2})
	lcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close(ctx)
	for round := range 4 {
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Go(func() {
				c, err := pgx.Connect(ctx, via)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close(ctx)
				pid := a3BackendOf(t, c)
				for i := range 10 {
					l := alock.NewExclusive(c, alock.Key(int64(100*g+i)))
					if err := l.Acquire(ctx); err != nil {
						t.Errorf("round %d client %d: %v", round, g, err)
						return
					}
					if got := locktest.Holds(t, dsn, pid); len(got) != 1 {
						t.Errorf("round %d client %d: server shows %v", round, g, got)
					}
					if err := l.Release(ctx); err != nil {
						t.Errorf("round %d client %d: Release: %v", round, g, err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for i := range 10 {
				l := s.NewShare(alock.Key(int64(900 + i)))
				if err := l.Acquire(ctx); err != nil {
					t.Errorf("session: %v", err)
					return
				}
				_ = l.Release(ctx)
			}
		})
		wg.Go(func() {
			for i := range 10 {
				l := lk.NewExclusive(alock.Key(int64(800 + i)))
				if err := l.Acquire(ctx); err != nil {
					t.Errorf("locker: %v", err)
					return
				}
				_ = l.Release(ctx)
			}
		})
		wg.Wait()
	}
}

// TestAttack3TransactionPoolerReleaseLeaksHold: through a transaction-mode
// PgBouncer a plain connection's lock is taken on backend P; the Release
// lands on another backend, the library detects the pooler (ErrPooler) and
// closes the client connection. The package promises never to leak a lock
// on failure and says the Lock "gives back what it can": the server must not
// keep the lock on P after the library reported it gone, else the id stays
// locked for every other client of the pool (and is silently shared by any
// later client landing on P).
func TestAttack3TransactionPoolerReleaseLeaksHold(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "transaction", 2)
	ctx := context.Background()
	a, b := pgtest.Connect(t, via), pgtest.Connect(t, via)
	l := alock.NewExclusive(a, alock.Key(1))
	mustAcquire(t, l)
	holder := sessionPID(t, dsn, 1)
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pinned uint32
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pinned); err != nil {
		t.Fatal(err)
	}
	if pinned != holder {
		_ = tx.Rollback(ctx)
		t.Skipf("the pooler gave b backend %d, not a's %d", pinned, holder)
	}
	// The unlock lands on the pool's other backend: Release sees the
	// pooler and retries it there. PgBouncer hands a client the idle
	// backend used last, so a's retries keep that backend even once b's
	// transaction ends, if it ends during one of them: c pins that
	// backend first, and a retry must then land on the holder's.
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	admin := pgtest.Connect(t, dsn)
	pgtest.WaitFor(t, "the unlock on the pool's other backend", func() bool {
		var n int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> $1 AND pid <> pg_backend_pid()
			  AND query LIKE '%advisory_unlock%'`, holder).Scan(&n)
		return err == nil && n > 0
	})
	c := pgtest.Connect(t, via)
	cTx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cTx.Rollback(ctx)
	if other := a3BackendOf(t, cTx.Conn()); other == holder {
		t.Fatalf("c pinned the holder's backend %d", other)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-released
	if !errors.Is(err, alock.ErrPooler) {
		t.Fatalf("Release through a transaction pooler: %v, want ErrPooler", err)
	}
	if got := locktest.Holds(t, dsn, holder); len(got) != 0 {
		t.Errorf("after Release failed with ErrPooler (Locked %v) the server still shows %v on backend %d, which the pool keeps serving", l.Locked(), got, holder)
	}
}

// TestAttack3LeadTermsGrow: two fenced Lockers campaign in a loop, three
// goroutines each, with terms that end at once or after a while and with
// campaigns cancelled mid-wait. Terms never overlap, and each term's token
// is larger than every earlier term's.
func TestAttack3LeadTermsGrow(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	opts := &alock.LockerOptions{MaxSessions: 2, Session: alock.SessionOptions{Fencing: true}}
	var lks []*alock.Locker
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lk, err := alock.NewLocker(ctx, dsn, opts)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Close(context.Background())
		lks = append(lks, lk)
	}
	var (
		mu      sync.Mutex
		leading int
		last    int64
		terms   int
		errs    []string
	)
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 11))
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+r.IntN(50))*time.Millisecond)
				err := lks[g%2].Lead(ctx, alock.Name("a3 leader"), func(ctx context.Context, token int64) error {
					mu.Lock()
					leading++
					if leading > 1 {
						errs = append(errs, fmt.Sprintf("%d leaders at once", leading))
					}
					if token <= last {
						errs = append(errs, fmt.Sprintf("term token %d after %d", token, last))
					}
					last = token
					terms++
					mu.Unlock()
					time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
					mu.Lock()
					leading--
					mu.Unlock()
					return nil
				})
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					mu.Lock()
					errs = append(errs, "Lead: "+err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, e := range errs[:min(len(errs), 10)] {
		t.Error(e)
	}
	t.Logf("%d terms, last token %d", terms, last)
}

// TestAttack3OpenThroughStatementPooler: a statement-mode PgBouncer moves
// every statement between backends, worse than transaction mode; Open must
// refuse it with ErrPooler. Its check opens a transaction on a second
// client, which statement mode forbids; a failed probe must not count as a
// pass. If Open succeeds, a Session's lock must at least agree with the
// server.
func TestAttack3OpenThroughStatementPooler(t *testing.T) {
	t.Parallel()
	dsn, via := a3Bouncer(t, "statement", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := alock.Open(ctx, via, nil)
	if errors.Is(err, alock.ErrPooler) {
		return
	}
	if err != nil {
		t.Fatalf("Open through a statement pooler: %v, want ErrPooler", err)
	}
	defer s.Close(context.Background())
	l := s.NewExclusive(alock.Key(1))
	aerr := l.Acquire(ctx)
	t.Errorf("Open succeeded through a statement-mode pooler (session pid %d); Acquire: %v; server shows %v on it",
		s.PID(), aerr, locktest.Holds(t, dsn, s.PID()))
	if aerr != nil {
		time.Sleep(200 * time.Millisecond)
		if left := a3AllAdvisory(t, dsn); len(left) > 0 {
			t.Errorf("after Acquire failed (%v), the server still holds %v in the database", aerr, left)
		}
	}
}

// a3AllAdvisory lists the advisory locks held in dsn's database by any
// backend, as "pid:objid:mode".
func a3AllAdvisory(t *testing.T, dsn string) []string {
	t.Helper()
	c := pgtest.Connect(t, dsn)
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), `SELECT pid || ':' || objid || ':' || mode FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAttack3FencedCancelRacesGrant: a fenced Session's Acquire waits for
// an id another connection holds; the holder unlocks while the waiter's
// context is cancelled, at varying offsets. Whatever wins, the library
// agrees with pg_locks, a failure matches the cause, and a success's token
// is larger than every earlier one.
func TestAttack3FencedCancelRacesGrant(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := attackSession(t, dsn, &alock.SessionOptions{Fencing: true})
	other := pgtest.Connect(t, dsn)
	cause := errors.New("a3 cause")
	var best int64
	won := 0
	for i := range 30 {
		if _, err := other.Exec(context.Background(), "SELECT pg_advisory_lock(1)"); err != nil {
			t.Fatal(err)
		}
		l := s.NewExclusive(alock.Key(1))
		ctx, cancel := context.WithCancelCause(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Acquire(ctx) }()
		locktest.WaitWaiting(t, dsn, s.PID())
		unlocked := make(chan struct{})
		go func() {
			defer close(unlocked)
			_, _ = other.Exec(context.Background(), "SELECT pg_advisory_unlock(1)")
		}()
		time.Sleep(time.Duration(i%6) * 200 * time.Microsecond)
		cancel(cause)
		err := <-done
		<-unlocked
		got := locktest.Holds(t, dsn, s.PID())
		if err != nil {
			if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
				t.Fatalf("round %d: %v, want the cancellation and its cause", i, err)
			}
			if l.Locked() || len(got) != 0 || l.Token() != 0 {
				t.Fatalf("round %d: failed (%v) but Locked %v, token %d, server shows %v", i, err, l.Locked(), l.Token(), got)
			}
			continue
		}
		won++
		if !l.Locked() || len(got) != 1 {
			t.Fatalf("round %d: acquired but server shows %v", i, got)
		}
		if l.Token() <= best {
			t.Fatalf("round %d: token %d, want more than %d", i, l.Token(), best)
		}
		best = l.Token()
		mustRelease(t, l)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of 30 won the race", won)
}
