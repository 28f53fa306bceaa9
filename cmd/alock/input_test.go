package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

func testBadInput(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", "--bogus", "1", "--", "true"}, exitUsage, "alock run: flag provided but not defined: -bogus"},
		{[]string{"run", "x1", "--", "true"}, exitUsage, `alock run: malformed ID "x1"`},
		{[]string{"run", "1,2,3", "--", "true"}, exitUsage, `malformed ID "1,2,3"`},
		{[]string{"run", "99999999999,1", "--", "true"}, exitUsage, `malformed ID "99999999999,1"`},
		{[]string{"run", "name:", "--", "true"}, exitUsage, `malformed ID "name:"`},
		{[]string{"run", "1", "true"}, exitUsage, "missing -- between the ids and COMMAND"},
		{[]string{"run", "--", "true"}, exitUsage, "want at least one ID"},
		{[]string{"run", "1", "--"}, exitUsage, "want a COMMAND after --"},
		{[]string{"run", "-w", "soon", "1", "--", "true"}, exitUsage, `invalid value "soon" for flag -w`},
		{[]string{"run", "-E", "300", "1", "--", "true"}, exitUsage, "an exit status is 0 to 255"},
		{[]string{"run", "-E", "x", "1", "--", "true"}, exitUsage, "an exit status is 0 to 255"},
		{[]string{"run", "-w", "9999999999h", "1", "--", "true"}, exitUsage, "not a duration of at most 2562047h"},
		{[]string{"run", "-n", "-w", "5s", "1", "--", "true"}, exitUsage, "-n and -w both say how long to wait"},
		{append(append([]string{"run"}, manyIDs(alock.MaxIDs+1)...), "--", "true"), exitUsage,
			"65 distinct ids: a lock has at most 64"},
		{[]string{"ls", "--json", "--dot"}, exitUsage, "exclude each other"},
		{[]string{"ls", "nope"}, exitUsage, `malformed ID "nope"`},
		{[]string{"key"}, exitUsage, "want at least one NAME"},
		{[]string{"help", "nope"}, exitUsage, `unknown subcommand "nope"`},
		{[]string{"nope"}, exitUsage, `alock: unknown subcommand "nope"`},
	} {
		r := c.run(t, tt.args...)
		r.expect(t, strings.Join(tt.args, " "), tt.code, tt.want)
		if !strings.Contains(r.stderr, "Run 'alock help") {
			t.Errorf("alock %q: stderr %q does not say where the usage is", tt.args, r.stderr)
		}
	}

	// 66 arguments, 64 distinct ids: a repeat and a name given as its key
	// count once, as the library counts them.
	ids := append(manyIDs(63), "name:x", strconv.FormatInt(alock.NameKey("x"), 10), "1")
	c.run(t, append(append([]string{"run"}, ids...), "--", "true")...).expect(t, "64 distinct ids in 66 arguments", 0)

	// Unreachable server: one line (pgx gives each attempt a line of its
	// own, and sslmode=prefer tries twice), and the password never shows.
	unreachable := "postgres://bob:sekrit@127.0.0.1:1/db?connect_timeout=2"
	for _, args := range [][]string{{"run", "--dsn", unreachable, "1", "--", "true"}, {"ls", "--dsn", unreachable}} {
		r := c.run(t, args...)
		r.expect(t, args[0]+" unreachable", exitError, "alock: connect: ", "connection refused")
		if strings.Contains(r.stderr+r.stdout, "sekrit") {
			t.Errorf("alock %s printed the password: %q", args[0], r.stderr)
		}
		if strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("alock %s unreachable: want one line, got %q", args[0], r.stderr)
		}
	}
	r := c.run(t, "ls", "--dsn", "postgres://bob:sekrit@[bad")
	r.expect(t, "bad dsn", exitUsage, "alock ls: bad connection string")
	if strings.Contains(r.stderr, "sekrit") {
		t.Errorf("alock ls printed the password: %q", r.stderr)
	}

	// No database configured: one line, naming DATABASE_URL and alock demo.
	none := cli{bin: bin}
	for _, args := range [][]string{{"run", "1", "--", "true"}, {"ls"}} {
		r := none.run(t, args...)
		r.expect(t, args[0]+" without a database", exitUsage, "no database configured", "DATABASE_URL", "alock demo")
		if strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("alock %s without a database: want one line, got %q", args[0], r.stderr)
		}
	}
	none.run(t, "key", "x").expect(t, "key needs no database", 0)
}

// manyIDs returns n distinct ids as arguments: 1, 2, ...
func manyIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(i + 1)
	}
	return ids
}

func testHelp(t *testing.T, bin string) {
	c := cli{bin: bin}
	for _, sub := range []string{"run", "ls", "key", "demo"} {
		for _, args := range [][]string{{"help", sub}, {sub, "-h"}, {sub, "--help"}} {
			r := c.run(t, args...)
			r.expect(t, strings.Join(args, " "), 0)
			if !strings.HasPrefix(r.stdout, "Usage: alock "+sub) || !strings.Contains(r.stdout, "Exit status") ||
				!strings.Contains(r.stdout, "Example") || r.stderr != "" {
				t.Errorf("alock %q: stdout %q, stderr %q; want usage, exit statuses and examples", args, r.stdout, r.stderr)
			}
		}
	}
	r := c.run(t, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "alock run [flags] ID... -- COMMAND") {
		t.Errorf("alock help: exit %d, stdout %q", r.code, r.stdout)
	}
	r = c.run(t, "help", "run")
	for _, want := range []string{"75", "76", "128+N", "ALOCK_FENCING_TOKEN", "--grace"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("alock help run does not mention %s", want)
		}
	}
}

func testConnection(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pgEnv := []string{"PGHOST=" + cfg.Host, "PGPORT=" + strconv.Itoa(int(cfg.Port)),
		"PGDATABASE=" + cfg.Database, "PGUSER=" + cfg.User}
	unreachable := "postgres://bob@127.0.0.1:1/db?connect_timeout=2"
	wantDB := func(what string, c cli, args ...string) {
		t.Helper()
		r := c.run(t, append([]string{"ls", "--json"}, args...)...)
		var snap jsonSnapshot
		if err := json.Unmarshal([]byte(r.stdout), &snap); err != nil || snap.Database != cfg.Database {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want database %s", what, r.code, r.stdout, r.stderr, cfg.Database)
		}
	}
	wantDB("PG* variables", cli{bin: bin, extraEnv: pgEnv})
	wantDB("DATABASE_URL before PG*", cli{bin: bin, dsn: dsn, extraEnv: []string{"PGHOST=127.0.0.1", "PGPORT=1"}})
	wantDB("--dsn before DATABASE_URL", cli{bin: bin, dsn: unreachable}, "--dsn", dsn)
	r := cli{bin: bin, extraEnv: pgEnv}.run(t, "run", "1", "--", "true")
	r.expect(t, "run with PG* variables", 0)
}
