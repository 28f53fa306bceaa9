package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock/internal/pgtest"
)

// lsScene starts, in dsn's database, an exclusive holder of name:ls-job and
// Key(5), a waiter for name:ls-job, and a share holder of Pair(1, 2), and
// waits until the waiter waits.
func lsScene(t *testing.T, c cli) {
	t.Helper()
	hold := `echo held; exec sleep 30`
	c.start(t, "run", "name:ls-job", "5", "--", "sh", "-c", hold).line(t)
	c.start(t, "run", "-s", "1,2", "--", "sh", "-c", hold).line(t)
	c.start(t, "run", "name:ls-job", "--", "true")
	waitWaiters(t, c.dsn, 1)
}

func testLs(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	c.run(t, "ls").expect(t, "ls of no locks", 0)
	lsScene(t, c)

	// JSON, parsed back.
	r := c.run(t, "ls", "--json")
	r.expect(t, "ls --json", 0)
	var snap jsonSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &snap); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, r.stdout)
	}
	if len(snap.Locks) != 4 || len(snap.Notes) != 0 || snap.Database == "" {
		t.Fatalf("ls --json: want 4 locks and no notes:\n%s", r.stdout)
	}
	holder, waiter, key5, pair := snap.Locks[0], snap.Locks[1], snap.Locks[2], snap.Locks[3]
	if holder.Name == nil || *holder.Name != "ls-job" || !holder.Granted || holder.Mode != "exclusive" ||
		holder.Key == nil || holder.PID == nil || !holder.Visible || holder.SessionStart == nil ||
		len(holder.BlockedBy) != 0 || derefOr(holder.ApplicationName, "") != "alock run name:ls-job 5" {
		t.Errorf("ls --json: holder %+v", holder)
	}
	if waiter.Name == nil || *waiter.Name != "ls-job" || waiter.Granted || waiter.WaitSeconds == nil ||
		waiter.WaitStart == nil || len(waiter.BlockedBy) != 1 || waiter.BlockedBy[0] != *holder.PID ||
		derefOr(waiter.ApplicationName, "") != "alock run name:ls-job" {
		t.Errorf("ls --json: waiter %+v", waiter)
	}
	if key5.ID != "Key(5)" || key5.Name != nil || *key5.Key != 5 || *key5.PID != *holder.PID {
		t.Errorf("ls --json: Key(5) %+v", key5)
	}
	if pair.ID != "Pair(1, 2)" || pair.Pair == nil || *pair.Pair != [2]int32{1, 2} || pair.Mode != "share" ||
		pair.ObjSubID != 2 || pair.Key != nil {
		t.Errorf("ls --json: Pair(1, 2) %+v", pair)
	}

	// The table.
	r = c.run(t, "ls")
	r.expect(t, "ls", 0)
	for _, pattern := range []string{
		`^ID\s+NAME\s+MODE\s+STATE\s+FOR\s+PID\s+USER\s+CLIENT\s+APPLICATION\s+BLOCKED BY$`,
		`^Pair\(1, 2\)\s+-\s+share\s+held\s+<=\d+\.\ds\s+\d+\s+\w+\s+\S+\s+alock run 1,2\s+-$`,
		`^Key\(5\)\s+-\s+exclusive\s+held\s+`,
		fmt.Sprintf(`^Key\(-?\d+\)\s+ls-job\s+exclusive\s+held\s+<=\d+\.\ds\s+%d\s+`, *holder.PID),
		fmt.Sprintf(`^Key\(-?\d+\)\s+ls-job\s+exclusive\s+waiting\s+\d+\.\ds\s+%d\s+\w+\s+\S+\s+alock run name:ls-job\s+%d$`,
			*waiter.PID, *holder.PID),
	} {
		expectLine(t, r.stdout, "ls", pattern)
	}

	// The wait-for graph.
	r = c.run(t, "ls", "--dot")
	r.expect(t, "ls --dot", 0)
	expectLine(t, r.stdout, "ls --dot", fmt.Sprintf(`^  "%d" -> "%d" \[label="Key\(-?\d+\) name:\\"ls-job\\" exclusive, waiting \d+\.\ds"\];$`,
		*waiter.PID, *holder.PID))
	expectLine(t, r.stdout, "ls --dot", fmt.Sprintf(`^  "%d" \[label="pid %d\\nalock run name:ls-job 5\\nholds Key\(-?\d+\) name:\\"ls-job\\" exclusive\\nholds Key\(5\) exclusive"\];$`,
		*holder.PID, *holder.PID))
	if !strings.HasPrefix(r.stdout, "digraph alock {") || !strings.HasSuffix(r.stdout, "}\n") {
		t.Errorf("ls --dot: not a digraph:\n%s", r.stdout)
	}

	// Filtered by id.
	r = c.run(t, "ls", "--json", "name:ls-job", "3")
	var only jsonSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &only); err != nil || len(only.Locks) != 2 {
		t.Errorf("ls --json name:ls-job 3: want the 2 rows of ls-job (%v):\n%s", err, r.stdout)
	}
	r = c.run(t, "ls", "3")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "No advisory locks in database") {
		t.Errorf("ls 3: exit %d, stdout %q", r.code, r.stdout)
	}
}

func testLsNotSuperuser(t *testing.T, bin string) {
	dsn := pgtest.NewDatabase(t)
	c := cli{bin: bin, dsn: dsn}
	role := "alock_ls_" + strings.TrimPrefix(regexp.MustCompile(`alock_test_\w+`).FindString(dsn), "alock_test_")
	conn := pgtest.Connect(t, dsn)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN"); err != nil {
		t.Fatalf("create role: %v", err)
	}
	t.Cleanup(func() {
		conn := pgtest.Connect(t, dsn)
		if _, err := conn.Exec(context.Background(), "DROP ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	lsScene(t, c)
	user := cli{bin: bin, dsn: withUser(t, dsn, role)}
	r := user.run(t, "ls", "--json")
	r.expect(t, "ls --json as a plain user", 0)
	var snap jsonSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &snap); err != nil || len(snap.Locks) != 4 || len(snap.Notes) != 1 {
		t.Fatalf("ls --json as a plain user: want 4 locks and a note (%v):\n%s", err, r.stdout)
	}
	for _, l := range snap.Locks {
		if l.Visible || l.SessionStart != nil || l.PID == nil || l.ApplicationName == nil {
			t.Errorf("ls --json as a plain user: %+v; want pid and application_name, no session start", l)
		}
	}
	if snap.Locks[1].Name == nil || len(snap.Locks[1].BlockedBy) != 1 {
		t.Errorf("ls --json as a plain user: the waiter %+v; want its name and blocker", snap.Locks[1])
	}
	r = user.run(t, "ls")
	expectLine(t, r.stdout, "ls as a plain user", `^Key\(5\)\s+-\s+exclusive\s+held\s+\?\s+\d+\s+\w+\s+\?\s+alock run`)
	expectLine(t, r.stdout, "ls as a plain user", `^Note: 4 row\(s\) belong to other users' sessions.*pg_read_all_stats`)
}

// withUser returns dsn with user name.
func withUser(t *testing.T, dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(name)
		return u.String()
	}
	return dsn + " user=" + name + " password=''"
}
