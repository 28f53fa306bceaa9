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
// blocked waiters, never the reverse. A Lock whose session was lost keeps
// its place in the process until its owner calls Release (the count is the
// owner's): other processes may take the id at once, the process's own
// goroutines queued behind it only after that Release. A goroutine that
// waited on a lost session, holding nothing, waits on another session.
//
// # Partitions: a bounded, ordered takeover
//
// When the network between a Session and the server is cut silently (no
// reset, no FIN), both sides give up on their own clocks, and the package
// orders them so that the holder always learns first. The client side
// tells (Lost, Done, Do's ctx) within its bound B = KeepaliveInterval +
// KeepaliveTimeout (at least 3 s; 10 s by default) of the last packet it
// received from the server: the watchdog's probe when idle, and while an
// Acquire waits a link watch that reads the kernel's TCP_INFO (on Linux)
// and sees the answers to TCP keepalive probes sent every second. Open sets
// the server's tcp_user_timeout, tcp_keepalives_idle/interval/count and
// client_connection_check_interval for the session so that the server ends
// it, and frees its locks, ServerTimeout S after it last heard from the
// client (by default S = B + max(2 s, 40% of B): 14 s). Whatever the server
// last sent, the client received after the server last heard from it, or
// the server still waits for its acknowledgement and counts from sending
// it; so the server's clock starts no earlier than the client's (less one
// trip), and the margin S − B (4 s by default) covers the link watch's tick
// (250 ms), delayed acknowledgements (200 ms), and Go and kernel timer slop.
// When the client's packets still reach the server (a one-way cut), it is
// the client's own close, sent after telling, or its kernel's reset, set
// between B and S, that ends the session. Only the rates of the two clocks
// matter, not their readings; the kernel's timers fire late, never early.
//
// With the defaults, after a silent cut: the holder is told within 10 s
// (+ the 250 ms tick); another process can take its locks within S + 2 s
// of the last exchange, at most KeepaliveInterval + S + 2 s = 21 s after
// the cut. A backend waiting for a lock whose client vanished leaves the
// queue within S + 2 s (client_connection_check_interval, PostgreSQL 14 and
// later); if the lock is granted to it first, the server sends the grant and
// ends the session when it stays unacknowledged for S, so the dead waiter
// holds it at most 2S + 2 s after the cut (30 s). Then no fencing is needed
// against a partitioned holder, only against a paused one (a process
// stopped, a VM frozen: its kernel still answers). The order needs Linux on
// both sides (TCP_USER_TIMEOUT and TCP_INFO); over a unix socket none of
// this applies. ServerTimeout < 0 leaves the server's settings alone.
//
// # Failover
//
// Advisory locks are not replicated: after a failover no lock survives, and
// every Session on the old primary signals its loss (EOF or the keepalive
// bound). Open with a multi-host connection string
// ("host=a,b target_session_attrs=read-write") finds the new primary; acquire
// again. Fencing tokens drawn after a failover to a synchronous standby
// (synchronous_standby_names, synchronous_commit on) are larger than every
// token drawn before it. An asynchronous standby may have missed the last
// WAL: the sequence then goes back by as many tokens as were drawn in what
// it missed, less up to 32 (the sequence logs 32 values ahead). Remedies: a
// synchronous standby, or, before the first Open after promoting an
// asynchronous one, push the sequence past anything handed out, e.g.
// SELECT setval('alock_fence', nextval('alock_fence') + 1000000).
//
// # Fencing
//
// No lock service can stop a holder that was paused or partitioned from
// acting after its lock was granted to someone else. With
// SessionOptions.Fencing every grant draws a token from a sequence
// ([Lock.Token]) in the lock statement itself, after the locks are taken;
// tokens grow with every grant, across holders and server restarts, so the
// protected resource can reject a write that carries an older token than
// the newest it has accepted (see the example of Lock.Token).
//
// What holds:
//
//   - The draw is durable: its statement sets synchronous_commit on for its
//     own transaction, so the token is on disk before the Lock returns it,
//     whatever the session's settings. A Session's connection never runs in
//     a transaction block. (Were a fenced lock taken inside one, the token
//     would be durable only once that transaction commits, and the setting
//     would last until then.)
//   - Every holder must draw from the same sequence. FenceSequence without
//     a schema means the schema public, not the role's search_path; the
//     default is public.alock_fence. Open creates it if it is missing and
//     refuses one with CACHE above 1 (each session would hand out its own
//     range), CYCLE, or an INCREMENT that is not positive.
//   - One server grant, one token: Locks of one Session that share a
//     server-level hold share its token. A Lock over several ids, some
//     already held by the session, gets the token of the newest grant among
//     its ids (its own statement's, if it took any id).
//   - An asynchronous standby promoted after a failover may have missed the
//     last tokens drawn and hand them out again.
//
// On PostgreSQL 15 and later ordinary roles cannot create objects in the
// schema public. Have the sequence created once by a role that can, and let
// the roles that lock draw from it:
//
//	CREATE SEQUENCE public.alock_fence;  -- CACHE 1 NO CYCLE, the defaults
//	GRANT USAGE ON SEQUENCE public.alock_fence TO app_a, app_b;
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
// hot standby, whose locks the primary never sees. [Open] refuses a
// standby ([ErrStandby]) and a pooler its check can catch ([ErrPooler]: a
// statement-mode pool, or a transaction-mode pool whose backends move
// while it looks; behind a busy pool the check can miss, and the lock
// statements' own check below then fails the first statement that lands
// elsewhere); a session-mode pooler, which pins one backend per client,
// works.
//
// A pooler cannot be recognised by its pids (PgBouncer reports its own in
// every mode), so the library watches what it does. Every lock and unlock
// statement also returns the pid of the backend that ran it, which must be
// the session's (a Session's from Open; on a plain connection, the one its
// first lock statement answered from while it held nothing), and no backend
// may hold the locks of two connections of the process (a backend is named
// by its pid and its server's start time). When either fails, the Lock
// gives back what it can, closes the connection and returns an error
// wrapping ErrPooler and ErrLost. What it took on a backend that is not the
// session's stays there if the unlock cannot reach that backend (a
// transaction-mode pooler keeps serving it; the unlock is retried for about
// a second, but PgBouncer gives a client the idle backend it used last, so
// a retry lands on the session's backend only if that comes free while no
// retry runs): another reason not to lock through such a pooler. A record left by a connection closed while it held
// locks does not count once its backend shows none of them (a session-mode
// pooler reset it, or its pid was reused). Clients in different processes whose
// statements land on the same backend cannot be told apart, so on a plain
// connection this is a tripwire, not a guarantee: do not lock through such
// a pooler. Two front ends on one connection (alock on the *pgx.Conn under
// an alocksql *sql.Conn) count as two connections sharing a backend; use
// one.
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
