// Package alock provides PostgreSQL advisory locks for Go programs that use
// pgx v5: lock objects in exclusive or share mode over several ids, counted
// like a re-entrant mutex, blocking or not, that never lose a session on
// cancellation and never leak a lock on failure.
//
// A [Locker] serves a whole process: its Locks exclude the process's own
// goroutines as well as other processes, over at most MaxSessions database
// sessions whatever the number of goroutines and waiters, and [Locker.Lead]
// runs a function while the process leads. It is built from the pieces
// below, which can also be used alone.
//
// A [Lock] is made over a *pgx.Conn and a list of ids ([Key], [Pair] or
// [Name]); [Lock.Acquire] waits for all of them, [Lock.TryAcquire] takes all
// or none, [Lock.Release] undoes one acquisition, and [Lock.Do] wraps a
// function in Acquire and Release.
//
// # Session scope
//
// The locks are session-level (pg_advisory_lock): they belong to the
// database session of the connection and ignore transactions. A lock taken
// in a transaction that rolls back stays held; an unlock in a transaction
// that rolls back still takes effect. They end when the session ends,
// whatever ends it: Close, an administrator's pg_terminate_backend, a server
// restart or crash, a failover, a broken network, idle_session_timeout. The
// program is not told until it next uses the connection: [Lock.Release] then
// returns an error wrapping [ErrLost] and [Lock.Locked] turns false.
//
// # Sessions: knowing when locks are lost
//
// A [Session] (see [Open]) owns one dedicated connection and watches it:
// while it is idle a watchdog parks a read that wakes as soon as the server
// ends the session or the socket closes, and probes the server every
// KeepaliveInterval (or a third of the server's idle_session_timeout, if
// shorter), which also bounds a silently cut network and defeats
// idle_session_timeout. On loss, [Session.Done] and every held Lock's
// [Lock.Lost] close, [Session.Err] says why (an error wrapping [ErrLost] and
// the cause; [ErrClosed] after [Session.Close], which is not a loss), and
// the ctx of a running [Lock.Do] ends. A Session never reconnects and
// re-locks behind the program's back. Its Locks are safe for concurrent
// use; they share one database session, so they exclude other sessions,
// not each other. No operation waits behind another goroutine's lock wait:
// the wait is interrupted and resumed (see [Session]).
//
// # Lockers
//
// A [Locker]'s goroutines first wait in the process, in a queue per id,
// first come first served; only the first of them competes at the server,
// on one of the Locker's Sessions, where it waits as a Session's Lock does.
// So a process never pins a connection (nor a snapshot, which a blocked
// pg_advisory_lock holds and which holds back vacuum) per waiter. Each
// release goes to the server, where another process's waiter is queued, so
// a process whose goroutines pass a hot id around cannot starve another
// process. A waiter that shares its session with another wait polls with
// try-locks every 5 to 200 ms; a try-lock cannot overtake a waiter queued
// in the server, so such a poller can be overtaken by other processes'
// blocked waiters, never the reverse.
//
// # Fencing
//
// No lock service can stop a holder that was paused or partitioned from
// acting after its lock was granted to someone else. With
// SessionOptions.Fencing every acquisition draws a token from a sequence
// ([Lock.Token]); tokens grow with every grant, across holders and server
// restarts, so the protected resource can reject a write that carries an
// older token than the newest it has accepted (see the example of
// Lock.Token). An asynchronous standby promoted after a failover may have
// missed the last tokens drawn and hand them out again.
//
// Acquire can return a lock that is already lost: the server granted it,
// then the session died (backend terminated, connection reset) while the
// success was still on its way, and another session may already hold it.
// Lost fires within the Session's bound (at once for a terminated backend or
// a closed socket); only a fence protects a write made in that window.
//
// # Connections and pools
//
// Lock and unlock must run on the same session, so a Lock takes a
// *pgx.Conn, never a pool. A pooled connection (pgxpool.Conn.Conn) may be
// used, but it must not go back to the pool while a Lock on it is held: the
// next borrower would silently share the locks. Transaction-mode poolers
// such as PgBouncer in pool_mode=transaction move statements between server
// sessions and break session locks entirely (use [LockTx] there); so does a
// hot standby, whose locks the primary never sees. [Open] refuses both
// ([ErrPooler], [ErrStandby]).
//
// # Cancellation
//
// By default pgx closes the connection when a query's context is cancelled,
// which drops every lock of the session. This package never passes the
// caller's cancellation to pgx: when the context of [Lock.Acquire] ends it
// sends the server a cancel request, waits for the statement to end and for
// the request to be taken (so a late cancel cannot hit a later statement),
// checks pg_locks for ids granted as the cancel arrived and gives them back.
// Clean-up is bounded by [CleanupTimeout]; a session whose lock state cannot
// be established within it is closed ("doubt destroys").
//
// # Counting and holds
//
// The count is kept by the Lock, not the server: only the first acquisition
// and the last release go to the server. Several Locks on one session share
// one server-level hold per (id, mode), so they do not block each other and
// releasing one never drops another's hold. Locks taken on the same
// connection with raw SQL are invisible to this bookkeeping: do not mix the
// two for the same ids.
//
// # Deadlocks and limits
//
// The ids of a Lock are taken in the order given; give ids in one global
// order to avoid deadlocks between Locks. When the server detects a deadlock
// the victim's Acquire returns an error wrapping [ErrDeadlock] and its other
// holds remain. Every held id uses an entry of the cluster-wide shared lock
// table (max_locks_per_transaction × max_connections); when it is full no
// session can lock anything. A Lock has at most [MaxIDs] distinct ids.
//
// # Name ids
//
// [Name] hashes a string to a key exactly as PostgreSQL's
// hashtextextended(name, 0) does in a UTF-8 database, so that
// pg_advisory_lock(hashtextextended('jobs', 0)) in SQL and Name("jobs") in
// Go take the same lock. The algorithm and test vectors for other languages
// are documented with [NameKey].
package alock
