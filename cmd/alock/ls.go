package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgalock/alock"
)

// lsCommand runs `alock ls [--json | --dot] [ID...]`.
func lsCommand(ctx context.Context, std stdio, args []string) error {
	fs := newFlagSet("ls")
	asJSON := fs.Bool("json", false, "JSON output")
	asDot := fs.Bool("dot", false, "Graphviz output")
	dsn := dsnFlag(fs)
	idArgs, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *asJSON && *asDot {
		return usagef("--json and --dot exclude each other")
	}
	ids, err := parseIDs(idArgs)
	if err != nil {
		return err
	}
	cfg, err := connConfig(*dsn)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	snap, err := readLocks(ctx, conn, ids)
	if err != nil {
		return err
	}
	snap.addNames(idArgs)
	switch {
	case *asJSON:
		return snap.writeJSON(std.out)
	case *asDot:
		return snap.writeDot(std.out)
	}
	return snap.writeTable(std.out)
}

// snapshot is what `alock ls` saw: the advisory locks of one database.
type snapshot struct {
	database string
	now      time.Time // the server's clock
	rows     []lockInfo
}

// lockInfo is one row of pg_locks for an advisory lock, with what
// pg_stat_activity shows of its session.
type lockInfo struct {
	id           alock.ID
	name         string // "" unless known
	mode         string // "exclusive" or "share"
	granted      bool
	waitStart    *time.Time
	pid          *int32 // nil for a prepared transaction
	app, user    *string
	client       *string // nil for a unix socket, or hidden
	sessionStart *time.Time
	inActivity   bool // pg_stat_activity has the session
	blockedBy    []int32
}

// visible reports whether the row's session details could be read: false
// for another user's session without the rights, or a session that ended
// while alock looked.
func (r *lockInfo) visible() bool { return r.inActivity && r.sessionStart != nil }

// lsQuery lists the advisory locks of the current database, all of them if
// $1, else those whose lock tags are in $2, $3, $4. pg_blocking_pids, which
// briefly takes the whole lock manager, runs only for waiting backends.
const lsQuery = `
SELECT l.pid, l.classid, l.objid, l.objsubid, l.mode, l.granted, %s,
       a.pid IS NOT NULL, a.application_name, a.usename, host(a.client_addr), a.backend_start,
       CASE WHEN l.granted THEN '{}'::int4[] ELSE pg_blocking_pids(l.pid) END
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ($1::bool OR (l.classid::int8, l.objid::int8, l.objsubid::int8) IN
       (SELECT * FROM unnest($2::int8[], $3::int8[], $4::int8[])))`

// readLocks reads the advisory locks of conn's database, only those of ids
// if there are any, sorted by id, holders first, then the longest waiting.
func readLocks(ctx context.Context, conn *pgx.Conn, ids []alock.ID) (*snapshot, error) {
	snap := &snapshot{}
	var version int
	err := conn.QueryRow(ctx, "SELECT current_database(), now(), current_setting('server_version_num')::int").
		Scan(&snap.database, &snap.now, &version)
	if err != nil {
		return nil, fmt.Errorf("alock: read the server's clock: %w", err)
	}
	waitStart := "l.waitstart"
	if version < 140000 { // pg_locks.waitstart is new in PostgreSQL 14
		waitStart = "NULL::timestamptz"
	}
	var classIDs, objIDs, objSubIDs []int64
	for _, id := range ids {
		c, o, s := id.LockTag()
		classIDs, objIDs, objSubIDs = append(classIDs, int64(c)), append(objIDs, int64(o)), append(objSubIDs, int64(s))
	}
	rows, err := conn.Query(ctx, fmt.Sprintf(lsQuery, waitStart), len(ids) == 0, classIDs, objIDs, objSubIDs)
	if err != nil {
		return nil, fmt.Errorf("alock: read pg_locks: %w", err)
	}
	snap.rows, err = pgx.CollectRows(rows, scanLockInfo)
	if err != nil {
		return nil, fmt.Errorf("alock: read pg_locks: %w", err)
	}
	slices.SortFunc(snap.rows, compareLockInfo)
	return snap, nil
}

// scanLockInfo scans one row of lsQuery.
func scanLockInfo(row pgx.CollectableRow) (lockInfo, error) {
	var r lockInfo
	var classID, objID uint32
	var objSubID int16
	var mode string
	err := row.Scan(&r.pid, &classID, &objID, &objSubID, &mode, &r.granted, &r.waitStart,
		&r.inActivity, &r.app, &r.user, &r.client, &r.sessionStart, &r.blockedBy)
	if err != nil {
		return r, err
	}
	r.id, _ = alock.FromLockTag(classID, objID, uint16(objSubID))
	r.mode = "share"
	if mode == "ExclusiveLock" {
		r.mode = "exclusive"
	}
	return r, nil
}

// compareLockInfo orders rows by id (Keys, then Pairs), holders first, then by wait start
// and pid.
func compareLockInfo(x, y lockInfo) int {
	xs, x1, x2 := idOrder(x.id)
	ys, y1, y2 := idOrder(y.id)
	return cmp.Or(cmp.Compare(xs, ys), cmp.Compare(x1, y1), cmp.Compare(x2, y2),
		-compareBool(x.granted, y.granted), compareTimes(x.waitStart, y.waitStart),
		cmp.Compare(derefOr(x.pid, 0), derefOr(y.pid, 0)))
}

// idOrder returns the sort keys of id: Keys by value, then Pairs by their
// two values.
func idOrder(id alock.ID) (sub uint16, a, b int64) {
	c, o, sub := id.LockTag()
	if sub == 1 {
		return sub, idKey(id), 0
	}
	return sub, int64(int32(c)), int64(int32(o))
}

// compareTimes orders times, nil first.
func compareTimes(x, y *time.Time) int {
	if x == nil || y == nil {
		return compareBool(x != nil, y != nil)
	}
	return x.Compare(*y)
}

// derefOr returns *p, or def if p is nil.
func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// addNames fills in the names of the rows' ids: those given as name:TEXT
// in idArgs, and those in the application_name of `alock run` sessions.
func (s *snapshot) addNames(idArgs []string) {
	names := namesInAppName(runAppPrefix + joinIDArgs(idArgs))
	for _, r := range s.rows {
		for k, n := range namesInAppName(derefOr(r.app, "")) {
			names[k] = n
		}
	}
	for i := range s.rows {
		if _, _, sub := s.rows[i].id.LockTag(); sub == 1 {
			s.rows[i].name = names[idKey(s.rows[i].id)]
		}
	}
}

// idKey returns the key of a Key id.
func idKey(id alock.ID) int64 {
	c, o, _ := id.LockTag()
	return int64(uint64(c)<<32 | uint64(o))
}
