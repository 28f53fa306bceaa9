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
package alocksql
