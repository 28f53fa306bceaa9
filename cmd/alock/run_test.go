package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/pgtest"
)

func testRunExitStatus(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	c.run(t, "run", "1", "--", "true").expect(t, "true", 0)
	c.run(t, "run", "1", "--", "sh", "-c", "exit 3").expect(t, "exit 3", 3)
	c.run(t, "run", "1", "--", "sh", "-c", "kill -TERM $$").expect(t, "killed by SIGTERM", 128+15)
	c.run(t, "run", "1", "--", "sh", "-c", "kill -KILL $$").expect(t, "killed by SIGKILL", 128+9)
	c.run(t, "run", "-5", "2,-3", "--", "true").expect(t, "negative ids", 0)
	c.run(t, "run", "1", "--", "/nonexistent/command").expect(t, "no such command", 127, "/nonexistent/command")
	c.run(t, "run", "1", "--", t.TempDir()).expect(t, "a directory as COMMAND", 126)
	expectNoAdvisoryLocks(t, dsn)
}

func testRunEnvironment(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	script := `echo "$ALOCK_HELD|$ALOCK_IDS|$ALOCK_FENCING_TOKEN"; cat`
	cmd := c.command("run", "--fencing", "name:my job", "42", "--", "sh", "-c", script)
	cmd.Stdin = strings.NewReader("from stdin\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("alock run: %v", err)
	}
	m := regexp.MustCompile(`^1\|"name:my job" 42\|([1-9][0-9]*)\nfrom stdin\n$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Errorf("the child printed %q; want ALOCK_HELD=1, ALOCK_IDS, a token and its stdin", out)
	}
	out2, err := c.command("run", "--fencing", "42", "--", "sh", "-c", `echo "$ALOCK_FENCING_TOKEN"`).Output()
	if err != nil {
		t.Fatalf("alock run: %v", err)
	}
	t1, _ := strconv.ParseInt(m[1], 10, 64)
	if t2, _ := strconv.ParseInt(strings.TrimSpace(string(out2)), 10, 64); t2 <= t1 {
		t.Errorf("fencing tokens %d then %d; want them to grow", t1, t2)
	}
	out3, err := c.command("run", "42", "--", "sh", "-c", `echo "${ALOCK_FENCING_TOKEN-unset}"`).Output()
	if err != nil || string(out3) != "unset\n" {
		t.Errorf("without --fencing the child saw ALOCK_FENCING_TOKEN=%q (%v)", out3, err)
	}
}

// holderRe matches the conflict line for an `alock run name:job` holder.
var holderRe = regexp.MustCompile(`^alock: name:job \(exclusive\) is held elsewhere: ` +
	`Key\(-?\d+\) name:"job" exclusive by pid \d+ \(application_name "alock run name:job", user \w+, ` +
	`session since .* \(\d+\.\ds ago\)\)\n$`)

func testRunContention(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	holder := c.start(t, "run", "name:job", "--", "sh", "-c", "echo held; exec sleep 30")
	if l := holder.line(t); l != "held" {
		t.Fatalf("holder printed %q", l)
	}
	r := c.run(t, "run", "-n", "name:job", "--", "echo", "ran")
	r.expect(t, "-n", exitConflict)
	if !holderRe.MatchString(r.stderr) || r.stdout != "" {
		t.Errorf("-n: stderr %q, stdout %q; want one line naming the holder", r.stderr, r.stdout)
	}
	c.run(t, "run", "-n", "-E", "9", "name:job", "--", "true").expect(t, "-n -E 9", 9, "held elsewhere")
	c.run(t, "run", "-w", "0", "name:job", "--", "true").expect(t, "-w 0", exitConflict, "held elsewhere")
	r = c.run(t, "run", "-w", "200ms", "name:job", "--", "true")
	r.expect(t, "-w 200ms", exitConflict)
	if !holderRe.MatchString(r.stderr) || r.elapsed < 200*time.Millisecond {
		t.Errorf("-w 200ms: after %v, stderr %q; want >= 200ms and one line naming the holder", r.elapsed, r.stderr)
	}

	// The session's own lock_timeout ends a wait as -w does.
	pgopts := cli{bin: bin, dsn: dsn, extraEnv: []string{"PGOPTIONS=-c lock_timeout=200ms"}}
	r = pgopts.run(t, "run", "name:job", "--", "true")
	r.expect(t, "lock_timeout=200ms", exitConflict)
	if !holderRe.MatchString(r.stderr) || r.elapsed < 200*time.Millisecond {
		t.Errorf("lock_timeout=200ms: after %v, stderr %q; want >= 200ms and one line naming the holder", r.elapsed, r.stderr)
	}

	// A waiter stopped by SIGINT while it waits.
	quitter := c.start(t, "run", "name:job", "--", "echo", "ran")
	waitWaiters(t, dsn, 1)
	quitter.signal(t, syscall.SIGINT)
	if code := quitter.wait(t); code != 128+2 || !strings.Contains(quitter.stderr.String(), "SIGINT while waiting") {
		t.Errorf("waiter interrupted: exit %d, stderr %q; want 130 and a message", code, quitter.stderr)
	}

	// A waiter that gets the lock once the holder ends (by a forwarded SIGTERM).
	waiter := c.start(t, "run", "name:job", "--", "echo", "ran")
	waitWaiters(t, dsn, 1)
	holder.signal(t, syscall.SIGTERM)
	if code := holder.wait(t); code != 128+15 {
		t.Errorf("holder after SIGTERM: exit %d, want 143; stderr:\n%s", code, holder.stderr)
	}
	if l := waiter.line(t); l != "ran" {
		t.Errorf("waiter printed %q, want ran", l)
	}
	if code := waiter.wait(t); code != 0 {
		t.Errorf("waiter: exit %d, want 0; stderr:\n%s", code, waiter.stderr)
	}
	expectNoAdvisoryLocks(t, dsn)
}

func testRunShare(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	holder := c.start(t, "run", "-s", "7", "--", "sh", "-c", "echo held; exec sleep 30")
	holder.line(t)
	c.run(t, "run", "-s", "-n", "7", "--", "true").expect(t, "share beside share", 0)
	r := c.run(t, "run", "--no-wait", "8", "7", "--", "true")
	r.expect(t, "exclusive beside share", exitConflict, "Key(7) share by pid ")
	expectKeyFree(t, dsn, "8") // all or none: Key(8) was given back
}

// expectKeyFree fails the test if pg_locks shows key in dsn's
// database.
func expectKeyFree(t *testing.T, dsn, key string) {
	t.Helper()
	conn := pgtest.Connect(t, dsn)
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND objsubid = 1 AND (classid::int8 << 32 | objid::int8) = $1::int8
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, key).Scan(&n)
	if err != nil || n != 0 {
		t.Errorf("pg_locks shows %d rows of Key(%s) (%v), want 0", n, key, err)
	}
}

func testRunLost(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn, dir: t.TempDir()}
	// COMMAND ignores SIGTERM, and so does the grandchild it starts.
	script := `trap "" TERM; sleep 60 & echo "$$ $!"; while :; do wait; done`
	run := c.start(t, "run", "--grace", "300ms", "name:lost", "--", "sh", "-c", script)
	var childPID, grandchildPID int
	if _, err := fmt.Sscan(run.line(t), &childPID, &grandchildPID); err != nil {
		t.Fatalf("read pids: %v", err)
	}
	conn := pgtest.Connect(t, dsn)
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'alock run name:lost'`).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate the holder's backend: %d backends, %v", n, err)
	}
	start := time.Now()
	code := run.wait(t)
	elapsed := time.Since(start)
	if code != exitLost || !strings.Contains(run.stderr.String(), "alock: lost the lock of name:lost (session lost: ") {
		t.Errorf("exit %d, stderr %q; want %d and a line saying why", code, run.stderr, exitLost)
	}
	if elapsed > 3*time.Second {
		t.Errorf("alock ended %v after the loss; want about the grace period, 300ms", elapsed)
	}
	for _, pid := range []int{childPID, grandchildPID} {
		if alive(pid) {
			t.Errorf("process %d of COMMAND's group is still alive after alock ended", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	t.Logf("alock ended %v after the holder's backend was terminated (grace 300ms); stderr:\n%s", elapsed, run.stderr)
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

func testRunSignals(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	for _, tt := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGHUP, 7}, {syscall.SIGQUIT, 131}, {syscall.SIGTERM, 143}} {
		// The shell traps SIGHUP and exits 7; the other signals kill sleep,
		// and the shell exec's it, so they kill COMMAND.
		script := `trap "exit 7" HUP; echo ready; sleep 30 & wait`
		if tt.sig != syscall.SIGHUP {
			script = `echo ready; exec sleep 30`
		}
		run := c.start(t, "run", "1", "--", "sh", "-c", script)
		run.line(t)
		run.signal(t, tt.sig)
		if code := run.wait(t); code != tt.code {
			t.Errorf("%v: exit %d, want %d; stderr:\n%s", tt.sig, code, tt.code, run.stderr)
		}
	}
	expectNoAdvisoryLocks(t, dsn)
}
