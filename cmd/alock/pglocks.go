package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/pgalock/alock"
)

// pgLocksQuery lists the advisory locks of the current database, held or
// awaited, as pg_locks shows them.
const pgLocksQuery = `
SELECT pid, classid, objid, objsubid, mode, granted
FROM pg_locks
WHERE locktype = 'advisory'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// waitTimeout bounds how long the demo waits for pg_locks to show a state.
const waitTimeout = 10 * time.Second

// lockRow is one row of pg_locks for an advisory lock.
type lockRow struct {
	pid     uint32
	id      alock.ID
	mode    string
	granted bool
}

// pgLocks returns the advisory locks of the current database, sorted by id,
// then granted before waiting, then session.
func (d *demo) pgLocks(ctx context.Context) ([]lockRow, error) {
	rows, err := d.observer.Query(ctx, pgLocksQuery)
	if err != nil {
		return nil, fmt.Errorf("alock: demo: query pg_locks: %w", err)
	}
	defer rows.Close()
	var out []lockRow
	for rows.Next() {
		var pid int32
		var classID, objID uint32
		var objSubID int16
		var r lockRow
		if err := rows.Scan(&pid, &classID, &objID, &objSubID, &r.mode, &r.granted); err != nil {
			return nil, fmt.Errorf("alock: demo: read pg_locks: %w", err)
		}
		r.pid, r.id = uint32(pid), lockID(classID, objID, objSubID)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("alock: demo: read pg_locks: %w", err)
	}
	slices.SortFunc(out, d.compareRows)
	return out, nil
}

// lockID renders pg_locks' classid, objid and objsubid back as the alock ID
// that takes that lock.
func lockID(classID, objID uint32, objSubID int16) alock.ID {
	id, _ := alock.FromLockTag(classID, objID, uint16(objSubID))
	return id
}

// compareRows orders rows by lock tag, granted first, then session label.
func (d *demo) compareRows(x, y lockRow) int {
	xc, xo, xs := x.id.LockTag()
	yc, yo, ys := y.id.LockTag()
	return cmp.Or(cmp.Compare(xs, ys), cmp.Compare(xc, yc), cmp.Compare(xo, yo),
		-compareBool(x.granted, y.granted), cmp.Compare(d.label(x.pid), d.label(y.pid)))
}

func compareBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}

// label returns the session letter of backend pid, or "other" for a session
// the demo did not open.
func (d *demo) label(pid uint32) string {
	for _, s := range d.sessions() {
		if s.pid() == pid {
			return s.label
		}
	}
	return "other"
}

// display returns id as the demo's code wrote it: Name(...) for the keys of
// names it used, else Key(...) or Pair(...).
func (d *demo) display(id alock.ID) string {
	if n, ok := d.names[id]; ok {
		return n.String()
	}
	return id.String()
}

// showLocks prints what pg_locks shows now.
func (d *demo) showLocks(ctx context.Context) error {
	rows, err := d.pgLocks(ctx)
	if err != nil {
		return err
	}
	d.printLocks(rows)
	return nil
}

// printLocks prints rows as an indented, aligned table.
func (d *demo) printLocks(rows []lockRow) {
	fmt.Fprintln(d.out, "\n  pg_locks (locktype = 'advisory'):")
	if len(rows) == 0 {
		fmt.Fprint(d.out, "    (no advisory locks)\n\n")
		return
	}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    session\tpid\tlock\tmode\tgranted")
	for _, r := range rows {
		fmt.Fprintf(tw, "    %s\t%d\t%s\t%s\t%t\n", d.label(r.pid), r.pid, d.display(r.id), r.mode, r.granted)
	}
	_ = tw.Flush()
	fmt.Fprintln(d.out)
}

// waitForLocks polls pg_locks until ok accepts its rows, then prints them.
// It fails after waitTimeout.
func (d *demo) waitForLocks(ctx context.Context, what string, ok func([]lockRow) bool) error {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		rows, err := d.pgLocks(ctx)
		if err == nil && ok(rows) {
			d.printLocks(rows)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("alock: demo: waiting for pg_locks to show %s: %w", what, cmp.Or(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasRow reports whether rows include one for pid with the given granted.
func hasRow(rows []lockRow, pid uint32, granted bool) bool {
	return slices.ContainsFunc(rows, func(r lockRow) bool { return r.pid == pid && r.granted == granted })
}
