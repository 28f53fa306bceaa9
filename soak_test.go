package alock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/netproxy"
	"github.com/pgalock/alock/internal/pgtest"
)

// The soak (scenario 17, after Jepsen's lock and set workloads): workers in
// this process and in child processes, each with its own Session, take
// exclusive locks over soakKeys keys with random short timeouts and early
// cancels, and in each critical section do a read-sleep-write of the key's
// counter row through a separate plain connection, while a nemesis
// terminates their backends, resets the TCP proxies some of them use, and
// cancels their waits. Afterwards:
//
//   - no two critical sections on one key overlap in time, except after the
//     earlier one's loss: a lost section is cut at the fault that took its
//     lock (or at its Lost, if no injected fault explains it);
//   - every section whose Release succeeded (the server held the lock from
//     grant to unlock) had its fenced read and write accepted, and each
//     counter equals the number of accepted writes;
//   - a worker that holds nothing has no advisory lock in pg_locks, its
//     closed Sessions' backends end, and once every Session is closed,
//     pg_locks shows no advisory lock in the database;
//   - every lost hold's Lost channel was closed, and tokens are unique.
//
// The counter is fenced with the lock's token: the read claims the row
// (token := mine, if smaller) and the write succeeds only if the row still
// carries my token. A holder whose backend was killed keeps running until
// its Lost fires (the watchdog parks only after 50 ms idle), and its write
// must not clobber the next holder's: the claim makes the count exact.
const soakKeys = 3

// soakSession is a Session a worker opened: its id is also its
// application_name, by which the nemesis terminates its backend.
type soakSession struct {
	ID     string    `json:"id"`
	Worker string    `json:"worker"`
	Proxy  string    `json:"proxy,omitempty"` // the proxy it goes through
	Opened time.Time `json:"opened"`          // before Open was called
}

// soakSection is one hold of a lock: one critical section.
type soakSection struct {
	Worker  string    `json:"worker"`
	Session string    `json:"session"`
	Key     int       `json:"key"`
	Token   int64     `json:"token"`
	Acq     time.Time `json:"acq"`     // Acquire returned
	End     time.Time `json:"end"`     // Release called
	LostAt  time.Time `json:"lost_at"` // Lost seen closed; zero if never
	Claimed bool      `json:"claimed"` // the fenced read claimed the row
	Skipped bool      `json:"skipped"` // Lost fired before the write: not written
	Wrote   bool      `json:"wrote"`   // the fenced write changed the row
	Clean   bool      `json:"clean"`   // Release returned nil
	Closed  bool      `json:"closed"`  // the Lost channel was closed after Release
}

func (s soakSection) lost() bool { return !s.LostAt.IsZero() }

// soakStats counts a worker's outcomes.
type soakStats struct {
	Attempts, Acquired, Timeouts, Cancels, AcquireLost, OtherErrs, Reopens, OpenErrs int
}

func (a *soakStats) add(b soakStats) {
	a.Attempts += b.Attempts
	a.Acquired += b.Acquired
	a.Timeouts += b.Timeouts
	a.Cancels += b.Cancels
	a.AcquireLost += b.AcquireLost
	a.OtherErrs += b.OtherErrs
	a.Reopens += b.Reopens
	a.OpenErrs += b.OpenErrs
}

// soakEvent is what a worker reports; a child prints it as a JSON line.
type soakEvent struct {
	Session *soakSession `json:"session,omitempty"`
	Section *soakSection `json:"section,omitempty"`
	Stats   *soakStats   `json:"stats,omitempty"`
	Error   string       `json:"error,omitempty"`
}

// soakWorker is one loop of lock, read, sleep, write, release.
type soakWorker struct {
	name       string
	direct     string // DSN for the counter connection
	sessionDSN string // DSN for its Sessions (maybe through a proxy)
	proxy      string // the proxy's name, "" if direct
	rng        *rand.Rand
	report     func(soakEvent)

	cancel atomic.Pointer[context.CancelFunc] // the wait in progress, for the nemesis
	stats  soakStats
	errs   int // unexpected errors reported (bounded)
}

// run loops until deadline. It returns an error only when the run cannot
// be trusted any more (the counter connection failed, so a write's outcome
// is unknown).
func (w *soakWorker) run(deadline time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline)+30*time.Second)
	defer cancel()
	resource, err := pgx.Connect(ctx, w.direct)
	if err != nil {
		return fmt.Errorf("%s: counter connection: %w", w.name, err)
	}
	defer resource.Close(context.Background())
	var s *alock.Session
	var opened []*alock.Session // kept reachable until their backends are seen gone
	defer func() {
		if s != nil {
			_ = s.Close(context.Background())
		}
	}()
	var cur soakSession
	for gen := 0; time.Now().Before(deadline); {
		if s != nil && isDone(s.Done()) {
			_ = s.Close(ctx)
			s = nil
			w.stats.Reopens++
		}
		if s == nil {
			cur = soakSession{ID: fmt.Sprintf("alock_soak_%s_%d", w.name, gen), Worker: w.name, Proxy: w.proxy, Opened: time.Now()}
			gen++
			octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
			s, err = alock.Open(octx, withParam(w.sessionDSN, "application_name", cur.ID),
				&alock.SessionOptions{Fencing: true, KeepaliveInterval: time.Second, KeepaliveTimeout: 2 * time.Second})
			ocancel()
			if err != nil {
				if cur.Proxy == "" {
					w.unexpected("open: %v", err)
				}
				w.stats.OpenErrs++ // a reset during Open
				s = nil
				time.Sleep(10 * time.Millisecond)
				continue
			}
			opened = append(opened, s)
			w.report(soakEvent{Session: &cur})
		}
		if err := w.once(ctx, s, cur.ID, resource); err != nil {
			return err
		}
	}
	// Between acquisitions the worker holds nothing: neither may the server.
	if s != nil && !isDone(s.Done()) {
		var ghosts int
		err := resource.QueryRow(ctx, `
			SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND a.application_name = $1`, cur.ID).Scan(&ghosts)
		if err != nil {
			return fmt.Errorf("%s: pg_locks: %w", w.name, err)
		}
		if ghosts > 0 && !isDone(s.Done()) {
			w.unexpected("session %s holds nothing, but pg_locks shows %d advisory locks for it", cur.ID, ghosts)
		}
	}
	// Once closed, a Session's backend ends (soon: the server sees the
	// connection close).
	if s != nil {
		_ = s.Close(ctx)
		s = nil
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		var left int
		err := resource.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name ~ $1",
			"^alock_soak_"+w.name+"_[0-9]+$").Scan(&left)
		if err != nil {
			return fmt.Errorf("%s: pg_stat_activity: %w", w.name, err)
		}
		if left == 0 {
			break
		}
		if time.Since(start) > 3*time.Second {
			w.unexpected("%d of its sessions still have a backend 3 s after Close", left)
			break
		}
	}
	runtime.KeepAlive(opened)
	w.report(soakEvent{Stats: &w.stats})
	return nil
}

// once makes one attempt: acquire a random key under a random short
// timeout (sometimes cancelled early), and if that succeeds run the
// critical section and release.
func (w *soakWorker) once(ctx context.Context, s *alock.Session, session string, resource *pgx.Conn) error {
	key := 1 + w.rng.IntN(soakKeys)
	l := s.NewExclusive(alock.Key(int64(key)))
	actx, cancel := context.WithTimeout(ctx, time.Duration(10+w.rng.IntN(300))*time.Millisecond)
	defer cancel()
	if w.rng.IntN(8) == 0 {
		early := time.AfterFunc(time.Duration(w.rng.IntN(4000))*time.Microsecond, cancel)
		defer early.Stop()
	}
	w.cancel.Store(&cancel)
	w.stats.Attempts++
	err := l.Acquire(actx)
	acq := time.Now()
	w.cancel.Store(nil)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		w.stats.Timeouts++
		return nil
	case errors.Is(err, context.Canceled):
		w.stats.Cancels++
		return nil
	case errors.Is(err, alock.ErrLost):
		w.stats.AcquireLost++
		return nil
	default:
		// The backend was terminated or the proxy reset during the wait:
		// the session must then be lost.
		w.stats.OtherErrs++
		if !isDone(s.Done()) {
			w.unexpected("acquire failed but the session lives: %v", err)
		}
		return nil
	}
	w.stats.Acquired++
	sec := soakSection{Worker: w.name, Session: session, Key: key, Token: l.Token(), Acq: acq}

	// Record when Lost fires.
	lost := l.Lost()
	lostAt := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-lost:
			lostAt <- time.Now()
		case <-stop:
			lostAt <- time.Time{}
		}
	}()

	// The critical section: fenced read, sleep, fenced write.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	var value int64
	err = resource.QueryRow(rctx,
		"UPDATE counters SET token = $1 WHERE id = $2 AND token < $1 RETURNING value", sec.Token, key).Scan(&value)
	switch {
	case err == nil:
		sec.Claimed = true
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: claim: %w", w.name, err)
	}
	if sec.Claimed {
		time.Sleep(time.Duration(w.rng.IntN(3001)) * time.Microsecond)
		if isDone(lost) {
			sec.Skipped = true // as a careful holder would
		} else {
			tag, err := resource.Exec(rctx, "UPDATE counters SET value = $1 WHERE id = $2 AND token = $3", value+1, key, sec.Token)
			if err != nil {
				return fmt.Errorf("%s: write: %w", w.name, err)
			}
			sec.Wrote = tag.RowsAffected() == 1
		}
	}

	sec.End = time.Now()
	err = l.Release(ctx)
	sec.Clean = err == nil
	if err != nil && !errors.Is(err, alock.ErrLost) {
		w.unexpected("release: %v", err)
	}
	close(stop)
	sec.LostAt = <-lostAt
	sec.Closed = isDone(lost)
	if sec.LostAt.IsZero() && (isDone(lost) || errors.Is(err, alock.ErrLost)) {
		sec.LostAt = time.Now() // fired as Release returned: no earlier than this
	}
	if sec.Clean && sec.lost() {
		w.unexpected("Release succeeded but Lost fired at %v", sec.LostAt)
	}
	w.report(soakEvent{Section: &sec})
	return nil
}

// unexpected reports an error that the checks will count (the first few in
// full).
func (w *soakWorker) unexpected(format string, args ...any) {
	w.errs++
	if w.errs <= 5 {
		w.report(soakEvent{Error: w.name + ": " + fmt.Sprintf(format, args...)})
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// withParam sets a connection parameter in a URL or keyword/value DSN.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value // the last occurrence wins
}

// throughProxy starts a proxy to dsn's server and returns it with a DSN that
// connects through it.
func throughProxy(t *testing.T, dsn string) (*netproxy.Proxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "127.0.0.1"
	}
	proxy, err := netproxy.Start(fmt.Sprintf("%s:%d", host, cfg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	port := strconv.Itoa(proxy.Addr().Port)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = "127.0.0.1:" + port
		q := u.Query()
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
		return proxy, u.String()
	}
	return proxy, dsn + " host=127.0.0.1 port=" + port
}

// TestHelperSoakWorker is a child process of TestSoakMutualExclusion: it
// runs two workers (the first through the parent's proxy, if given) and
// prints their events as JSON lines.
func TestHelperSoakWorker(t *testing.T) {
	dsn := os.Getenv("ALOCK_SOAK_DSN")
	if dsn == "" {
		t.Skip("helper process for TestSoakMutualExclusion")
	}
	name := os.Getenv("ALOCK_SOAK_NAME")
	seed, _ := strconv.ParseUint(os.Getenv("ALOCK_SOAK_SEED"), 10, 64)
	var mu sync.Mutex
	report := func(ev soakEvent) {
		b, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		mu.Lock()
		defer mu.Unlock()
		helperPrintf("%s", b)
	}
	workers := make([]*soakWorker, 2)
	for i := range workers {
		workers[i] = &soakWorker{
			name: fmt.Sprintf("%s%d", name, i), direct: dsn, sessionDSN: dsn,
			rng: rand.New(rand.NewPCG(seed, uint64(i))), report: report,
		}
	}
	if p := os.Getenv("ALOCK_SOAK_PROXY_DSN"); p != "" {
		workers[0].sessionDSN, workers[0].proxy = p, os.Getenv("ALOCK_SOAK_PROXY")
	}
	helperPrintf("ready")
	var until int64
	if _, err := fmt.Fscanf(os.Stdin, "%d\n", &until); err != nil {
		t.Fatalf("read the deadline: %v", err)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			if err := w.run(time.Unix(0, until)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// soakLog gathers every worker's events, and the nemesis's faults.
type soakLog struct {
	mu       sync.Mutex
	sessions map[string]soakSession
	current  map[string]string // worker -> its latest session
	sections []soakSection
	stats    soakStats
	errors   []string
	kills    map[string]time.Time // session -> when the nemesis terminated its backend
	resets   map[string][]time.Time
}

func (g *soakLog) record(ev soakEvent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case ev.Session != nil:
		g.sessions[ev.Session.ID] = *ev.Session
		g.current[ev.Session.Worker] = ev.Session.ID
	case ev.Section != nil:
		g.sections = append(g.sections, *ev.Section)
	case ev.Stats != nil:
		g.stats.add(*ev.Stats)
	case ev.Error != "":
		g.errors = append(g.errors, ev.Error)
	}
}

// faultAt returns the earliest injected fault that could have ended
// session id: its backend's termination, or a reset of its proxy after it
// began to open.
func (g *soakLog) faultAt(id string) (time.Time, bool) {
	s := g.sessions[id]
	at, ok := g.kills[id]
	for _, r := range g.resets[s.Proxy] {
		if s.Proxy != "" && !r.Before(s.Opened) && (!ok || r.Before(at)) {
			at, ok = r, true
		}
	}
	return at, ok
}

// TestSoakMutualExclusion is scenario 17: see soakKeys.
func TestSoakMutualExclusion(t *testing.T) {
	t.Parallel()
	duration := 6 * time.Second // plus about 3 s to start the children and settle
	if testing.Short() {
		duration = 3 * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.Connect(t, dsn)
	for _, sql := range []string{
		"CREATE TABLE counters (id int PRIMARY KEY, value bigint NOT NULL, token bigint NOT NULL)",
		fmt.Sprintf("INSERT INTO counters SELECT g, 0, 0 FROM generate_series(1, %d) g", soakKeys),
		// Made here: concurrent Opens with Fencing race to create it, and
		// the losers fail with 23505 (CREATE SEQUENCE IF NOT EXISTS is not
		// safe against a concurrent creation).
		"CREATE SEQUENCE alock_fence",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	g := &soakLog{
		sessions: map[string]soakSession{}, current: map[string]string{},
		kills: map[string]time.Time{}, resets: map[string][]time.Time{},
	}
	proxies := map[string]*netproxy.Proxy{}

	// Two child processes with two workers each, one of them through a
	// proxy of ours.
	var children []*helperProc
	var readers sync.WaitGroup
	for c := range 2 {
		name := fmt.Sprintf("c%d", c)
		proxy, proxyDSN := throughProxy(t, dsn)
		proxies["proxy_"+name] = proxy
		child := startHelper(t, "TestHelperSoakWorker",
			"ALOCK_SOAK_DSN="+dsn, "ALOCK_SOAK_NAME="+name, "ALOCK_SOAK_SEED="+strconv.FormatUint(seed+uint64(c)+1, 10),
			"ALOCK_SOAK_PROXY_DSN="+proxyDSN, "ALOCK_SOAK_PROXY=proxy_"+name)
		children = append(children, child)
	}
	for _, child := range children {
		if line := child.next(t, 30*time.Second); line != "ready" {
			t.Fatalf("child said %q, want ready", line)
		}
		readers.Go(func() {
			for line := range child.lines {
				var ev soakEvent
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					g.record(soakEvent{Error: fmt.Sprintf("child line %q: %v", line, err)})
					continue
				}
				g.record(ev)
			}
		})
	}

	// Six workers here, three of them through proxies.
	var workers []*soakWorker
	for i := range 6 {
		w := &soakWorker{
			name: fmt.Sprintf("p%d", i), direct: dsn, sessionDSN: dsn,
			rng: rand.New(rand.NewPCG(seed, uint64(100+i))), report: g.record,
		}
		if i < 3 {
			w.proxy = "proxy_" + w.name
			var proxy *netproxy.Proxy
			proxy, w.sessionDSN = throughProxy(t, dsn)
			proxies[w.proxy] = proxy
		}
		workers = append(workers, w)
	}

	deadline := time.Now().Add(duration)
	for _, child := range children {
		if _, err := fmt.Fprintf(child.stdin, "%d\n", deadline.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			if err := w.run(deadline); err != nil {
				t.Error(err)
			}
		})
	}
	var faults struct{ kills, resets, cancels int }
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 999))
		proxyNames := make([]string, 0, len(proxies))
		for name := range proxies {
			proxyNames = append(proxyNames, name)
		}
		// Let the workers get going, and stop early enough that the last
		// faults are noticed before the workers stop.
		for time.Sleep(200 * time.Millisecond); time.Until(deadline) > 200*time.Millisecond; {
			time.Sleep(time.Duration(30+rng.IntN(120)) * time.Millisecond)
			switch n := rng.IntN(10); {
			case n < 5: // terminate a worker's backend, often a lock holder's
				var ids []string
				for try := 0; n < 3 && len(ids) == 0 && try < 20; try++ {
					rows, _ := admin.Query(ctx, `
						SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
						WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'alock_soak_%'`)
					ids, _ = pgx.CollectRows(rows, pgx.RowTo[string])
				}
				g.mu.Lock()
				if len(ids) == 0 {
					for _, id := range g.current {
						ids = append(ids, id)
					}
				}
				if len(ids) == 0 {
					g.mu.Unlock()
					continue
				}
				id := ids[rng.IntN(len(ids))]
				if _, ok := g.kills[id]; !ok {
					g.kills[id] = time.Now()
				}
				g.mu.Unlock()
				kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := admin.Exec(kctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", id)
				cancel()
				if err != nil {
					t.Errorf("nemesis: terminate: %v", err)
					return
				}
				faults.kills++
			case n < 7: // reset a proxy
				name := proxyNames[rng.IntN(len(proxyNames))]
				g.mu.Lock()
				g.resets[name] = append(g.resets[name], time.Now())
				g.mu.Unlock()
				proxies[name].Reset()
				faults.resets++
			default: // cancel a wait here
				if c := workers[rng.IntN(len(workers))].cancel.Load(); c != nil {
					(*c)()
					faults.cancels++
				}
			}
		}
	})
	wg.Wait()
	for _, child := range children {
		child.wait(t, 30*time.Second)
	}
	readers.Wait()
	g.mu.Lock()
	for _, e := range g.errors {
		t.Errorf("worker: %s", e)
	}
	g.mu.Unlock()

	// (c) Quiescence: every Session is closed, so no advisory lock remains.
	pgtest.WaitFor(t, "no advisory locks and no soak sessions left", func() bool {
		var locks, sessions int
		err := admin.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
			          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
			       (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'alock_soak_%')`).Scan(&locks, &sessions)
		return err == nil && locks == 0 && sessions == 0
	})

	g.mu.Lock()
	defer g.mu.Unlock()
	checkSoak(t, g, admin)
	t.Logf("faults injected: %d backend terminations, %d proxy resets, %d cancels by the nemesis", faults.kills, faults.resets, faults.cancels)
}

// checkSoak runs the overlap and counter checks and logs the figures.
func checkSoak(t *testing.T, g *soakLog, admin *pgx.Conn) {
	t.Helper()
	// effEnd is when a section's hold ended at the latest: Release, or for
	// a lost hold its Lost or the fault that took it, if earlier.
	effEnd := func(s soakSection) time.Time {
		end := s.End
		if !s.lost() {
			return end
		}
		if s.LostAt.Before(end) {
			end = s.LostAt
		}
		if f, ok := g.faultAt(s.Session); ok && f.Before(end) {
			end = f
		}
		if end.Before(s.Acq) {
			end = s.Acq
		}
		return end
	}

	var clean, lost, explained, wrote, skipped, rejectedClaims, rejectedWrites int
	var latency time.Duration // longest time from a fault to the Lost it caused
	byKey := map[int][]soakSection{}
	tokens := map[int64]bool{}
	maxClaimed := map[int]int64{}
	writes := map[int]int64{}
	for _, s := range g.sections {
		byKey[s.Key] = append(byKey[s.Key], s)
		if tokens[s.Token] || s.Token <= 0 {
			t.Errorf("token %d given twice (or not positive): %+v", s.Token, s)
		}
		tokens[s.Token] = true
		if s.Clean {
			clean++
			if !s.Claimed || !s.Wrote {
				// The server held the lock from grant to unlock, yet another
				// holder with a larger token used the resource meanwhile.
				t.Errorf("a section whose Release succeeded had its fenced read or write rejected: %+v", s)
			}
		}
		if s.lost() {
			lost++
			if !s.Closed {
				t.Errorf("a lost hold's Lost channel was never closed: %+v", s)
			}
			if f, ok := g.faultAt(s.Session); ok {
				explained++
				latency = max(latency, s.LostAt.Sub(f))
			}
		}
		if s.Claimed {
			maxClaimed[s.Key] = max(maxClaimed[s.Key], s.Token)
		} else {
			rejectedClaims++
		}
		switch {
		case s.Wrote:
			wrote++
			writes[s.Key]++
		case s.Skipped:
			skipped++
		case s.Claimed:
			rejectedWrites++
		}
	}

	// (a) No overlap, except after the earlier holder's loss.
	var overlaps, afterLost, afterFault int
	for _, secs := range byKey {
		for _, a := range secs {
			end := effEnd(a)
			for _, b := range secs {
				if b.Acq.Before(a.Acq) || !b.Acq.Before(a.End) || a == b {
					continue // b does not begin inside a
				}
				switch {
				case a.lost() && !a.LostAt.After(b.Acq):
					afterLost++
				case !b.Acq.Before(end):
					afterFault++ // the server had freed it; a's Lost was still on its way
				default:
					overlaps++
					if overlaps <= 5 {
						t.Errorf("overlap on Key(%d): %+v (held until %v) and %+v",
							a.Key, a, end.Format(time.StampMicro), b)
					}
				}
			}
		}
	}
	if overlaps > 0 {
		t.Errorf("%d overlapping critical sections", overlaps)
	}

	// (b) Each counter is the number of accepted writes, and carries the
	// largest token that claimed it.
	rows, err := admin.Query(context.Background(), "SELECT id, value, token FROM counters ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type counter struct{ id, value, token int64 }
	counters, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c counter, err error) {
		err = r.Scan(&c.id, &c.value, &c.token)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range counters {
		total += c.value
		if c.value != writes[int(c.id)] {
			t.Errorf("counter %d = %d, but %d writes were accepted: lost or phantom updates", c.id, c.value, writes[int(c.id)])
		}
		if c.token != maxClaimed[int(c.id)] {
			t.Errorf("counter %d carries token %d, want the largest that claimed it, %d", c.id, c.token, maxClaimed[int(c.id)])
		}
	}

	st := g.stats
	t.Logf("%d attempts: %d acquired, %d timed out, %d cancelled, %d found the session lost, %d other errors (session killed while waiting); %d sessions reopened, %d Opens failed (proxy reset)",
		st.Attempts, st.Acquired, st.Timeouts, st.Cancels, st.AcquireLost, st.OtherErrs, st.Reopens, st.OpenErrs)
	t.Logf("%d critical sections: %d released cleanly, %d lost (%d after an injected fault; Lost fired at most %v after it)",
		len(g.sections), clean, lost, explained, latency.Round(time.Millisecond))
	t.Logf("counters %v total %d = accepted writes %d; stale holders: %d claims and %d writes rejected by the fence, %d skipped the write as Lost had fired",
		counters, total, wrote, rejectedClaims, rejectedWrites, skipped)
	t.Logf("overlaps: %d after the earlier holder's Lost, %d after the fault but before its Lost, %d unexplained", afterLost, afterFault, overlaps)
	if len(g.sections) == 0 || clean == 0 {
		t.Error("no critical section completed")
	}
}
