package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// runCLI runs the command line args and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// section returns the part of out from the heading starting with from up
// to the next heading.
func section(t *testing.T, out, from string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, "== "+from)
	if !ok {
		pgtest.Fatalf(t, "output has no section %q:\n%s", from, out)
	}
	body, _, _ := strings.Cut(rest, "\n== ")
	return body
}

// expectLine fails the test unless some line of text matches pattern.
func expectLine(t *testing.T, text, name, pattern string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)` + pattern).MatchString(text) {
		t.Errorf("%s: no line matches %q in:\n%s", name, pattern, text)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	code, out, errOut := runCLI(t, "demo", "-dsn", dsn)
	if code != 0 || errOut != "" {
		pgtest.Fatalf(t, "alock demo: exit %d, stderr:\n%s\nstdout:\n%s", code, errOut, out)
	}
	step1 := section(t, out, "Step 1")
	expectLine(t, step1, "step 1", `server's hashtextextended\('nightly-report', 0\) agrees`)
	expectLine(t, step1, "step 1", `^\s+A\s+\d+\s+Name\("nightly-report"\)\s+ExclusiveLock\s+true$`)
	expectLine(t, step1, "step 1", `^\s+B\s+\d+\s+Name\("nightly-report"\)\s+ExclusiveLock\s+false$`)
	expectLine(t, step1, "step 1", `^\s+B\s+\d+\s+Name\("nightly-report"\)\s+ExclusiveLock\s+true$`)

	step2 := section(t, out, "Step 2")
	expectLine(t, step2, "step 2", `^C: .*TryAcquire -> false`)
	expectLine(t, step2, "step 2", `^\s+A\s+\d+\s+Key\(42\)\s+ShareLock\s+true$`)
	expectLine(t, step2, "step 2", `^\s+B\s+\d+\s+Key\(42\)\s+ShareLock\s+true$`)

	step3 := section(t, out, "Step 3")
	expectLine(t, step3, "step 3", `^A: .*TryAcquire -> false\.$`)
	expectLine(t, step3, "step 3", `^Rows for A \(pid \d+\) among Key\(1\), Key\(2\), Key\(3\): 0\.$`)

	step4 := section(t, out, "Step 4")
	expectLine(t, step4, "step 4", `errors\.Is\(err, context\.DeadlineExceeded\) = true$`)
	expectLine(t, step4, "step 4", `conn\.IsClosed\(\) = false$`)
	expectLine(t, step4, "step 4", `SELECT 1 -> 1,`)
	expectLine(t, step4, "step 4", `^\s+A\s+\d+\s+Key\(10\)\s+ExclusiveLock\s+true$`)

	step5 := section(t, out, "Step 5")
	expectLine(t, step5, "step 5", `^Done: 200 acquisitions, 0 overlapping critical sections; sessions open: at most [12] \(MaxSessions 2\)\.$`)

	done := section(t, out, "Done")
	expectLine(t, done, "end", `^\s+\(no advisory locks\)$`)
	expectNoAdvisoryLocks(t, dsn)
}

// expectNoAdvisoryLocks fails the test if pg_locks shows any advisory lock
// in the database of dsn.
func expectNoAdvisoryLocks(t *testing.T, dsn string) {
	t.Helper()
	conn := pgtest.Connect(t, dsn)
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	if err != nil {
		pgtest.Fatalf(t, "query pg_locks: %v", err)
	}
	if n != 0 {
		t.Errorf("pg_locks shows %d advisory locks after the demo, want 0", n)
	}
}

func TestDemoBadDSN(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCLI(t, "demo", "-dsn", "host=/nonexistent port=1 connect_timeout=2")
	if code != 1 || !strings.HasPrefix(errOut, "alock: demo: connect: ") {
		t.Errorf("exit %d, stderr %q; want 1 and an \"alock: demo: connect: \" message", code, errOut)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		code       int
		stdout     string // substring expected on stdout
		stderr     string // substring expected on stderr
		quietError bool   // stderr must be empty
	}{
		{args: []string{"bogus"}, code: 2, stderr: `alock: unknown subcommand "bogus"`},
		{args: nil, code: 2, stderr: "Usage:"},
		{args: []string{"demo", "-nope"}, code: 2, stderr: "flag provided but not defined: -nope"},
		{args: []string{"demo", "extra"}, code: 2, stderr: `alock demo: unexpected argument "extra"`},
		{args: []string{"demo", "-h"}, code: 0, stdout: "Usage: alock demo", quietError: true},
		{args: []string{"help"}, code: 0, stdout: "alock demo [-dsn DSN]", quietError: true},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, tt.args...)
		switch {
		case code != tt.code,
			!strings.Contains(out, tt.stdout),
			!strings.Contains(errOut, tt.stderr),
			tt.quietError && errOut != "",
			strings.Contains(errOut, "goroutine "):
			t.Errorf("alock %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out, errOut, tt.code, tt.stdout, tt.stderr)
		}
	}
}
