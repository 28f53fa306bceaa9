package core

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// A statement is one SQL text with its arguments.
type statement struct {
	sql  string
	args []any
}

// Every statement that takes or releases locks also reports the backend
// pid that ran it (those that take them, until the Lock knows it, also the server: see pidStartSQL), so that a pooler that moves a connection's statements
// between backends is noticed (see checkBackend), and a fenced one draws
// the fencing token of the grant: one round trip for it all.

// lockStatement takes every tag in order and reports "pid@start:token" (the token
// empty unless fence names the sequence to draw it from):
//
//	SELECT concat(pg_backend_pid(), '@', date_part('epoch', pg_postmaster_start_time()), ':', nextval($4::regclass))
//	FROM (SELECT set_config('synchronous_commit', 'on', true),
//	             pg_advisory_lock($1), pg_advisory_lock($2, $3)) AS l
//
// PostgreSQL evaluates a target list left to right, so the locks are taken in
// the order given, and a failure part-way leaves the earlier ones held. The
// subquery, which has volatile functions and is therefore never flattened,
// runs before the outer target list: the token is drawn after every grant.
//
// Unfenced, it is one expression (void prints as nothing), which the server
// plans faster:
//
//	SELECT concat(pg_advisory_lock($1), pg_advisory_lock($2, $3), pg_backend_pid(), '@', ..., ':')
func lockStatement(m Mode, tags []Tag, fence, who string) statement {
	if fence == "" {
		return build("SELECT concat(", "pg_advisory_lock"+m.suffix(), ", ", ", "+who+", ':')", tags, false, nil)
	}
	return grantStatement(build("SELECT "+durable(fence), "pg_advisory_lock"+m.suffix(), ", ", "", tags, false, nil), fence, who)
}

// lockWithinStatement is lockStatement with the server's lock_timeout set to
// d for the statement's transaction:
//
//	SELECT concat(pg_backend_pid(), '@', ..., ':')
//	FROM (SELECT set_config('lock_timeout', $1, true), pg_advisory_lock($2)) AS l
func lockWithinStatement(m Mode, tags []Tag, d time.Duration, fence, who string) statement {
	ms := strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
	head := "SELECT set_config('lock_timeout', $1, true), " + durable(fence)
	return grantStatement(build(head, "pg_advisory_lock"+m.suffix(), ", ", "", tags, false, []any{ms}), fence, who)
}

// grantStatement wraps the statement that takes the locks so that it
// reports "pid@start:token".
func grantStatement(take statement, fence, who string) statement {
	draw := ""
	if fence != "" {
		take.args = append(take.args, fence)
		draw = ", nextval($" + strconv.Itoa(len(take.args)) + "::regclass)"
	}
	return statement{sql: "SELECT concat(" + who + ", ':'" + draw + ") FROM (" + take.sql + ") AS l", args: take.args}
}

// How a lock statement names the backend that runs it (who): by pid, or,
// until a Lock knows its server, as "pid@start" with the server's start time
// (seconds since 1970), so that pids of two servers never compare equal.
const (
	pidSQL      = "pg_backend_pid()"
	pidStartSQL = "pg_backend_pid(), '@', date_part('epoch', pg_postmaster_start_time())"
)

// durable is the set_config that makes the commit of a statement that draws
// a token flush the WAL whatever the session's synchronous_commit: nextval
// assigns a transaction id when it logs, so the commit waits for the flush
// before the client reads the token. It lasts until the end of the
// transaction: in a transaction block, the rest of the caller's transaction.
func durable(fence string) string {
	if fence == "" {
		return ""
	}
	return "set_config('synchronous_commit', 'on', true), "
}

// tryStatement tries every tag in order and reports each result as one
// character, '1' for taken and '0' for not, then the pid and, if every tag
// was taken and fence names a sequence, the token: "flags:pid@start:token".
//
//	SELECT concat(pg_try_advisory_lock($1)::int, pg_try_advisory_lock($2, $3)::int, ':', pg_backend_pid(), '@', ..., ':')
//
// or, fenced:
//
//	SELECT concat(f, ':', pg_backend_pid(), '@', ..., ':', CASE WHEN strpos(f, '0') = 0 THEN nextval($4::regclass) END)
//	FROM (SELECT set_config('synchronous_commit', 'on', true), concat(pg_try_advisory_lock($1)::int, ...) AS f) AS l
func tryStatement(m Mode, tags []Tag, fence, who string) statement {
	fn := "pg_try_advisory_lock" + m.suffix()
	if fence == "" {
		return build("SELECT concat(", fn, "::int, ", "::int, ':', "+who+", ':')", tags, false, nil)
	}
	take := build("SELECT "+durable(fence)+"concat(", fn, "::int, ", "::int) AS f", tags, false, nil)
	take.args = append(take.args, fence)
	draw := "CASE WHEN strpos(f, '0') = 0 THEN nextval($" + strconv.Itoa(len(take.args)) + "::regclass) END"
	return statement{sql: "SELECT concat(f, ':', " + who + ", ':', " + draw + ") FROM (" + take.sql + ") AS l", args: take.args}
}

// unlockStatement releases the tags in reverse order and reports each result
// as tryStatement does, in the order of tags (not of execution), then the
// pid: "flags:pid".
func unlockStatement(m Mode, tags []Tag) statement {
	return build("SELECT concat(reverse(concat(", "pg_advisory_unlock"+m.suffix(), "::int, ", "::int)), ':', pg_backend_pid())", tags, true, nil)
}

// build writes prefix, then fn(args) for each tag joined by sep, then suffix;
// the tags' arguments follow args.
func build(prefix, fn, sep, suffix string, tags []Tag, reversed bool, args []any) statement {
	var b strings.Builder
	args = slices.Grow(args, 2*len(tags))
	b.WriteString(prefix)
	for i := range tags {
		t := tags[i]
		if reversed {
			t = tags[len(tags)-1-i]
		}
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(fn)
		b.WriteByte('(')
		b.WriteString("$" + strconv.Itoa(len(args)+1))
		if t.IsPair() {
			b.WriteString(", $" + strconv.Itoa(len(args)+2))
		}
		b.WriteByte(')')
		args = t.appendArgs(args)
	}
	b.WriteString(suffix)
	return statement{sql: b.String(), args: args}
}

// heldStatement lists the advisory locks this session holds in mode m, as
// "classid:objid:objsubid" joined by commas (NULL when there are none).
func heldStatement(m Mode) statement {
	return statement{sql: heldSQL, args: []any{m.pgLocksMode()}}
}

// A backend only holds advisory locks in the database it is connected to, so
// the pid alone selects them. The query must not touch pg_database: a shared
// catalog cannot use a fast-path lock, and when the lock table is full
// (53200) it would fail exactly when it is needed.
const heldSQL = `SELECT string_agg(classid::text || ':' || objid::text || ':' || objsubid::text, ',')
FROM pg_catalog.pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND mode = $1`
