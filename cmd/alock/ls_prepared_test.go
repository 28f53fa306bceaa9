package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
)

// TestPreparedTransactionIsNamed: a prepared transaction has no session:
// pg_locks gives it no pid, and pg_blocking_pids gives its waiters the pid
// 0. Every output names it as one holder, "prepared" (a prepared
// transaction), never as a session of pid 0: the table's BLOCKED BY, the
// wait-for graph (one node, with the edge to it) and the holder line of
// alock run's conflict message.
func TestPreparedTransactionIsNamed(t *testing.T) {
	t.Parallel()
	now := time.Now()
	start := now.Add(-time.Second)
	pid, app, user := int32(1613), "alock run 5", "postgres"
	held := lockInfo{id: alock.Key(5), mode: "exclusive", granted: true} // no pid
	snap := &snapshot{database: "postgres", now: now, rows: []lockInfo{held,
		{id: alock.Key(5), mode: "exclusive", waitStart: &start, pid: &pid, app: &app, user: &user,
			sessionStart: &start, inActivity: true, blockedBy: []int32{0}},
	}}
	var dot, table bytes.Buffer
	if err := snap.writeDot(&dot); err != nil {
		t.Fatal(err)
	}
	if g := dot.String(); strings.Contains(g, `"0"`) || !strings.Contains(g, `"1613" -> "prepared"`) ||
		!strings.Contains(g, `"prepared" [label="a prepared transaction\nholds Key(5) exclusive"]`) {
		t.Errorf("--dot: want one node for the prepared transaction and the edge from 1613 to it; got\n%s", g)
	}
	if err := snap.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if f := strings.Fields(lines[2]); f[len(f)-1] != "prepared" {
		t.Errorf("table: the waiter's BLOCKED BY is %q, want \"prepared\"; got\n%s", f[len(f)-1], table.String())
	}
	if got := snap.holder(held); got != "Key(5) exclusive by a prepared transaction" {
		t.Errorf("holder line %q, want \"Key(5) exclusive by a prepared transaction\"", got)
	}
}
