// Package alocksql provides alock's PostgreSQL advisory locks over
// database/sql, with pgx's stdlib driver or lib/pq: session locks on a
// *sql.Conn ([Lock]) and transaction locks on a *sql.Tx ([LockTx]).
//
// The contracts are those of package alock; the hazards of session locks
// described there apply, plus one of database/sql's own: a session lock
// needs one pinned session, so a Lock takes a *sql.Conn (from
// (*sql.DB).Conn), never a *sql.DB, and that *sql.Conn must not go back to
// the pool while a lock is held on it. (*sql.Conn).Close does not check;
// [CloseConn] does.
//
// # Cancellation and deadlocks
//
// Both drivers close the connection, and so end every lock of its session,
// when the context of a statement ends. A Lock never lets them. With pgx's
// stdlib driver it interrupts a wait with a cancel request, from a copy of
// the session's cancel key taken inside (*sql.Conn).Raw: nothing of the
// driver connection is used after Raw returns. With lib/pq, and for
// [LockTx] with either driver (database/sql gives no way to the driver
// connection of a *sql.Tx), a wait under a context that can end runs in
// slices of the server's lock_timeout of 50 to 100 ms, so the end of the
// context is noticed within a slice. The session's (or transaction's) own
// lock_timeout and statement_timeout bound the whole wait, not each slice:
// once the shorter has run out, the wait fails with an error wrapping
// alock.ErrLockTimeout or alock.ErrStatementTimeout, as an unsliced wait
// would.
//
// PostgreSQL finds a deadlock only in a wait that lasts its deadlock_timeout
// (1 s by default), longer than a slice. So between slices a waiter asks the
// server whether a session that holds or waits for a lock it wants is, by
// pg_blocking_pids, waiting for it; if so it waits deadlock_timeout plus
// 100 ms in one slice, and the server's own check runs during it. The server
// decides whether there is a deadlock and picks the one victim, whose wait
// returns an error wrapping alock.ErrDeadlock, as with a single wait: the
// Lock holds none of its ids and the session's other locks stay. A deadlock
// is so reported soon after deadlock_timeout (1.0 to 1.1 s with the
// default); during such a long slice the end of the context is noticed only
// when the slice ends.
package alocksql
