package core

import (
	"errors"
	"fmt"
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

// lockStatement takes every tag in order in one statement:
//
//	SELECT pg_advisory_lock($1), pg_advisory_lock($2, $3)
//
// PostgreSQL evaluates a target list left to right, so the locks are taken in
// the order given, and a failure part-way leaves the earlier ones held.
func lockStatement(m Mode, tags []Tag) statement {
	return build("SELECT ", "pg_advisory_lock"+m.suffix(), ", ", "", tags, false, nil)
}

// lockWithinStatement is lockStatement with the server's lock_timeout set to
// d for the statement's transaction:
//
//	SELECT set_config('lock_timeout', $1, true), pg_advisory_lock($2)
func lockWithinStatement(m Mode, tags []Tag, d time.Duration) statement {
	ms := strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
	return build("SELECT set_config('lock_timeout', $1, true), ", "pg_advisory_lock"+m.suffix(), ", ", "", tags, false, []any{ms})
}

// tryStatement tries every tag in order and reports each result as one
// character of a text value, '1' for taken and '0' for not:
//
//	SELECT concat(pg_try_advisory_lock($1)::int, pg_try_advisory_lock($2, $3)::int)
func tryStatement(m Mode, tags []Tag) statement {
	return build("SELECT concat(", "pg_try_advisory_lock"+m.suffix(), "::int, ", "::int)", tags, false, nil)
}

// unlockStatement releases the tags in reverse order and reports each result
// as tryStatement does, in the order of tags (not of execution).
func unlockStatement(m Mode, tags []Tag) statement {
	return build("SELECT reverse(concat(", "pg_advisory_unlock"+m.suffix(), "::int, ", "::int))", tags, true, nil)
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

// parseFlags turns the '1'/'0' text of tryStatement or unlockStatement into
// one boolean per tag; ok is false if the text does not have one flag per tag.
func parseFlags(s string, n int) (flags []bool, ok bool) {
	if len(s) != n {
		return nil, false
	}
	flags = make([]bool, n)
	for i := range n {
		switch s[i] {
		case '1':
			flags[i] = true
		case '0':
		default:
			return nil, false
		}
	}
	return flags, true
}

// parseHeld parses the text of heldStatement.
func parseHeld(text string) (map[Tag]bool, error) {
	held := make(map[Tag]bool)
	if text == "" {
		return held, nil
	}
	for item := range strings.SplitSeq(text, ",") {
		parts := strings.Split(item, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("unexpected pg_locks entry %q", item)
		}
		c, err1 := strconv.ParseUint(parts[0], 10, 32)
		o, err2 := strconv.ParseUint(parts[1], 10, 32)
		s, err3 := strconv.ParseUint(parts[2], 10, 16)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("unexpected pg_locks entry %q: %w", item, err)
		}
		held[Tag{uint32(c), uint32(o), uint16(s)}] = true
	}
	return held, nil
}
