package alock_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/pgtest"
)

// The soak's harness, shared by TestSoakMutualExclusion and
// TestSoakPartitions: children's output, the start, the nemesis's common
// faults, and the end.

// readChild waits for child's "ready", then records its events until its
// output ends.
func (g *soakLog) readChild(t *testing.T, child *helperProc, readers *sync.WaitGroup) {
	t.Helper()
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

// startSoak tells the children the deadline and runs workers until it, in
// wg.
func startSoak(t *testing.T, wg *sync.WaitGroup, deadline time.Time, children []*helperProc, workers []*soakWorker) {
	t.Helper()
	for _, child := range children {
		if _, err := fmt.Fprintf(child.stdin, "%d\n", deadline.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range workers {
		wg.Go(func() {
			if err := w.run(deadline); err != nil {
				t.Error(err)
			}
		})
	}
}

// terminate has the nemesis terminate the backend of a soak Session: with
// holders, preferably one holding an advisory lock; else (or if none does)
// any worker's latest. It records the kill first. It returns false, doing
// nothing, if there is no Session yet.
func (g *soakLog) terminate(ctx context.Context, admin *pgx.Conn, rng *rand.Rand, holders bool) (bool, error) {
	var ids []string
	for try := 0; holders && len(ids) == 0 && try < 20; try++ {
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
		return false, nil
	}
	id := ids[rng.IntN(len(ids))]
	if _, ok := g.kills[id]; !ok {
		g.kills[id] = time.Now()
	}
	g.mu.Unlock()
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := admin.Exec(kctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", id); err != nil {
		return false, fmt.Errorf("terminate: %w", err)
	}
	return true, nil
}

// cancelWait cancels the wait of a random worker, if it is waiting.
func cancelWait(workers []*soakWorker, rng *rand.Rand) bool {
	c := workers[rng.IntN(len(workers))].cancel.Load()
	if c != nil {
		(*c)()
	}
	return c != nil
}

// finishSoak waits for the children and their output, reports the
// workers' errors, waits until no Session is left and no advisory lock in
// admin's database, and runs checkSoak.
func finishSoak(t *testing.T, g *soakLog, admin *pgx.Conn, children []*helperProc, readers *sync.WaitGroup) {
	t.Helper()
	ctx := context.Background()
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
}

// createCounters makes the soak's counter rows and its fencing sequence in
// admin's database.
func createCounters(t *testing.T, admin *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
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
}
