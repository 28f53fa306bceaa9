package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock"
)

// Failing tests from an audit of the command's error reporting. Each runs
// without a database (only a refused loopback port) or on a hand-made
// snapshot.

// refused is a connection string whose server refuses at once; pgx's
// default sslmode=prefer makes it try twice.
const refused = "postgres://127.0.0.1:1/x?connect_timeout=2"

// TestAuditConnectErrorOneLine: a refused connection is reported in one
// line, not pgx's one line per attempt.
func TestAuditConnectErrorOneLine(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"ls", "--dsn", refused},
		{"run", "--dsn", refused, "1", "--", "true"},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != exitError || strings.Count(errOut, "\n") != 1 {
			t.Errorf("alock %v: exit %d, stderr %q; want exit 1 and one line", args, code, errOut)
		}
	}
}

// TestAuditTooManyIDsIsUsage: more than alock.MaxIDs distinct ids is a
// command-line mistake, found before connecting (exit 2), not a failure
// reported after connecting (exit 1, "alock: take the lock: alock: ...").
func TestAuditTooManyIDsIsUsage(t *testing.T) {
	t.Parallel()
	args := []string{"run", "--dsn", refused}
	for i := 1; i <= alock.MaxIDs+1; i++ {
		args = append(args, strconv.Itoa(i))
	}
	args = append(args, "--", "true")
	code, _, errOut := runCLI(t, args...)
	if code != exitUsage || !strings.Contains(errOut, strconv.Itoa(alock.MaxIDs)) {
		t.Errorf("alock run with %d ids: exit %d, stderr %q; want exit 2 naming the limit %d",
			alock.MaxIDs+1, code, errOut, alock.MaxIDs)
	}
}

// TestAuditPreparedBlocker: pg_blocking_pids reports a prepared transaction
// as pid 0. alock ls must not show a phantom "pid 0" session in --dot (an
// edge to a node apart from the "prepared" holder), nor "0" in the table's
// BLOCKED BY column.
func TestAuditPreparedBlocker(t *testing.T) {
	now := time.Now()
	start := now.Add(-time.Second)
	pid, app, user := int32(1613), "alock run 5", "postgres"
	snap := &snapshot{database: "postgres", now: now, rows: []lockInfo{
		{id: alock.Key(5), mode: "exclusive", granted: true}, // prepared: no pid
		{id: alock.Key(5), mode: "exclusive", waitStart: &start, pid: &pid, app: &app, user: &user,
			sessionStart: &start, inActivity: true, blockedBy: []int32{0}},
	}}
	var dot, table bytes.Buffer
	if err := snap.writeDot(&dot); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dot.String(), `"0"`) || !strings.Contains(dot.String(), `"1613" -> "prepared"`) {
		t.Errorf("--dot: want an edge from 1613 to the prepared holder, no pid 0 node; got\n%s", dot.String())
	}
	if err := snap.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if f := strings.Fields(lines[2]); f[len(f)-1] == "0" {
		t.Errorf("table: the waiter's BLOCKED BY is \"0\" (a prepared transaction); got\n%s", table.String())
	}
}
