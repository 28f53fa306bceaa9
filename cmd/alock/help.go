package main

import (
	"context"
	"fmt"
)

const mainUsage = `alock: PostgreSQL advisory locks from the shell (github.com/pgalock/alock)

Usage:
  alock run [flags] ID... -- COMMAND [ARGS...]   run COMMAND while holding the ids
  alock ls [--json | --dot] [ID...]              show held and awaited advisory locks
  alock key NAME...                              show the key and pg_locks tag of names
  alock demo [-dsn DSN]                          walk through the library on a throwaway server
  alock help [SUBCOMMAND]                        print this help, or a subcommand's

An ID is a number (a 64-bit key), A,B (a pair of 32-bit keys) or name:TEXT
(the key hashtextextended(TEXT, 0)), as alock.Key, alock.Pair and alock.Name.

Connection: --dsn, else $DATABASE_URL, else the PG* variables as libpq reads
them (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE...).
` + "`alock demo`" + ` needs no database.

Exit status: 0 success, 1 failure, 2 usage error or no database configured;
alock run adds 75 (lock held elsewhere), 76 (lock lost) and COMMAND's own.
Run 'alock help SUBCOMMAND' for details and examples.
`

const runUsage = `Usage: alock run [flags] ID... -- COMMAND [ARGS...]

Takes every ID (all or none, 64 distinct ids at most) on one database
session, runs COMMAND with inherited stdin, stdout and stderr, and releases
the ids when it ends.

Flags:
  -s, --share              take share locks (default exclusive)
  -n, --no-wait            fail at once if an ID is held elsewhere (as -w 0;
                           not with -w)
  -w, --wait DURATION      wait at most DURATION for the lock (500ms, 30s, 2m;
                           0 = do not wait; default: wait as long as it takes)
  -E, --conflict-exit-code N
                           exit status when the lock is held elsewhere (default 75)
      --grace DURATION     after a loss, how long COMMAND has between SIGTERM
                           and SIGKILL (default 10s)
      --fencing            draw a fencing token (ALOCK_FENCING_TOKEN) on acquisition
      --dsn DSN            connection string (default $DATABASE_URL, then PG*)

COMMAND runs in a process group of its own, so that a loss can stop all of
it, grandchildren included. That group is not the terminal's foreground
group: COMMAND gets no keyboard signals but those alock forwards, and reading
from the terminal stops it (SIGTTIN); give it input through a pipe or a file.
SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to alock (Ctrl-C included) are
forwarded to the whole group. A signal while alock waits for the lock stops
the wait.
COMMAND's environment adds:
  ALOCK_HELD=1
  ALOCK_IDS             the ids as given, separated by spaces; an ID that has
                        a space, a double quote, a backslash or anything
                        outside printable ASCII is written as a quoted Go
                        string (non-ASCII as \u escapes)
  ALOCK_FENCING_TOKEN   the token, with --fencing
The session's application_name is "alock run " and the ids (63 bytes at most),
which alock ls and pg_stat_activity show.

If the session is lost while COMMAND runs (backend terminated, server
restart, network cut), alock says why on stderr, sends SIGTERM to COMMAND's
process group, SIGKILL after --grace, and exits 76.

Exit status:
  COMMAND's status, or 128+N if it died of signal N (or alock did while waiting)
  75   an ID is held elsewhere (with -n or -w, or when the session's own
       lock_timeout, from PGOPTIONS say, ends the wait); one line on stderr
       names the holder (pid, application_name, user, session start), from
       pg_locks
  76   the lock was lost while COMMAND ran
  126  COMMAND could not be run; 127 COMMAND not found
  1    other failures (connection, server); 2 usage error or no database

Examples:
  alock run name:nightly-report -- ./report.sh
  alock run -n name:deploy -- make deploy          # exits 75 if a deploy runs
  alock run -w 30s -E 0 42 -- ./cleanup            # after 30 s, say who holds it and exit 0
  alock run -s 7 -- ./reader & alock run -s 7 -- ./reader   # both run at once
  alock run --fencing name:leader -- sh -c 'exec ./job --token "$ALOCK_FENCING_TOKEN"'
`

const lsUsage = `Usage: alock ls [--json | --dot] [--dsn DSN] [ID...]

Shows the advisory locks of the current database, held and awaited (all, or
those of the given ids): the id as alock.Key or alock.Pair, and its name
where the holder is an alock run session that named it; mode, held or
waiting and for how long; pid, application_name, user and client address of
the session; and for each waiter the pids that block it
(pg_blocking_pids, called only for waiting sessions).

How long a lock has been held is not recorded by PostgreSQL: FOR shows "<="
and the age of the holder's session. Without superuser or pg_read_all_stats,
the client address and session start of other users' sessions are hidden;
alock ls shows them as "?" and says so.

Flags:
  --json   one JSON object (schema below)
  --dot    a Graphviz wait-for graph: an edge from each waiter to each blocker
           (prepared transactions, which have no pid, share one node)
  --dsn    connection string (default $DATABASE_URL, then PG*)

JSON schema (fields are never removed; null where unknown or hidden):
  {"database": string, "now": RFC 3339 time (server),
   "locks": [{"id": "Key(42)" | "Pair(1, 2)", "key": int64 | null,
              "pair": [int32, int32] | null, "name": string | null,
              "classid": uint32, "objid": uint32, "objsubid": 1 | 2,
              "mode": "exclusive" | "share", "granted": bool,
              "wait_start": time | null, "wait_seconds": number | null,
              "pid": int | null (null: a prepared transaction),
              "application_name": string | null, "user": string | null,
              "client_addr": string | null (null: unix socket or hidden),
              "session_start": time | null, "visible": bool (false: hidden fields),
              "blocked_by": [int] (waiters only; [] for holders;
                                   0: a prepared transaction)}],
   "notes": [string]}

Exit status: 0 success, 1 failure, 2 usage error or no database.

Examples:
  alock ls
  alock ls name:nightly-report 42
  alock ls --json | jq '.locks[] | select(.granted | not)'
  alock ls --dot | dot -Tsvg > waits.svg
`

const keyUsage = `Usage: alock key NAME...

Prints, for each NAME, the key that alock.Name(NAME) and alock run name:NAME
lock (PostgreSQL's hashtextextended(NAME, 0), computed without a server) and
the classid, objid and objsubid that pg_locks shows for it.

Exit status: 0 success, 2 usage error.

Example:
  alock key nightly-report
`

const demoUsage = `Usage: alock demo [-dsn DSN]

Walks through exclusive, share, all-or-nothing and cancelled acquisitions,
showing pg_locks after each step. Without -dsn (or $` + demoDSNEnv + `) it starts
a throwaway local PostgreSQL from the server binaries (initdb, postgres,
pg_ctl) and removes it afterwards, also on Ctrl-C.

Exit status: 0 success, 1 failure, 2 usage error.

Example:
  alock demo
`

const helpUsage = `Usage: alock help [SUBCOMMAND]

Prints the usage of alock, or of SUBCOMMAND (run, ls, key, demo).
`

// usageOf returns the usage text of subcommand sub.
func usageOf(sub string) string {
	switch sub {
	case "run":
		return runUsage
	case "ls":
		return lsUsage
	case "key":
		return keyUsage
	case "demo":
		return demoUsage
	case "help":
		return helpUsage
	}
	return mainUsage
}

// helpCommand runs `alock help [SUBCOMMAND]`.
func helpCommand(_ context.Context, std stdio, args []string) error {
	switch {
	case len(args) == 0:
		fmt.Fprint(std.out, mainUsage)
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		fmt.Fprint(std.out, helpUsage)
	case len(args) > 1:
		return usagef("want at most one subcommand, got %d arguments", len(args))
	case commands[args[0]] == nil:
		return usagef("unknown subcommand %q", args[0])
	default:
		fmt.Fprint(std.out, usageOf(args[0]))
	}
	return nil
}
