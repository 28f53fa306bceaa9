package alock

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// bounds are a Session's network bounds, derived from its options (see
// "Partitions" in the package documentation).
type bounds struct {
	// client: the Session tells of a loss (Lost, Done, Do's ctx) at most this
	// long after the last packet it received from the server.
	client time.Duration
	// keepIdle is the idle time before the client's TCP keepalive probes,
	// which go out every second after it: they keep the link watch fed
	// while an Acquire waits.
	keepIdle time.Duration
	// kernel is the client's TCP_USER_TIMEOUT: the kernel gives up after
	// the Session has told, and before the server does.
	kernel time.Duration
	// server is the server's tcp_user_timeout, 0 to leave the server alone.
	server time.Duration
}

// minServerMargin is how much ServerTimeout must exceed the client's bound.
const minServerMargin = time.Second

// deriveBounds computes the bounds of o (with its defaults filled in).
func deriveBounds(o SessionOptions) (bounds, error) {
	interval := o.KeepaliveInterval
	if interval <= 0 {
		interval = 5 * time.Second // probes disabled: TCP keepalive alone
	}
	var b bounds
	b.keepIdle = max(time.Second, (interval/2+time.Second-1)/time.Second*time.Second)
	// The link watch needs two keepalive intervals of silence to conclude.
	b.client = max(interval+o.KeepaliveTimeout, b.keepIdle+2*time.Second)
	margin := max(2*time.Second, b.client*2/5)
	switch {
	case o.ServerTimeout < 0:
		b.kernel = b.client + margin/2
		return b, nil
	case o.ServerTimeout == 0:
		b.server = b.client + margin
	case o.ServerTimeout < b.client+minServerMargin:
		return b, fmt.Errorf("alock: open: ServerTimeout %v must exceed the client's bound %v (KeepaliveInterval + KeepaliveTimeout) by %v at least",
			o.ServerTimeout, b.client, minServerMargin)
	default:
		b.server = o.ServerTimeout
	}
	b.kernel = b.client + (b.server-b.client)/2
	return b, nil
}

// serverSettings are the per-session settings that make the server end the
// session, and free its locks, b.server after it last heard from the client:
// tcp_user_timeout for data it sent that stays unacknowledged, keepalive for
// an idle or waiting session (on Linux tcp_user_timeout also decides when
// keepalive gives up; elsewhere idle + count × interval comes to the same),
// and client_connection_check_interval so that a backend waiting for a lock
// notices its dead socket and leaves the queue instead of being granted.
func (b bounds) serverSettings() [][2]string {
	idle := max(time.Second, b.server/2/time.Second*time.Second)
	count := (b.server - idle + time.Second - 1) / time.Second
	check := min(time.Second, max(100*time.Millisecond, b.server/10))
	return [][2]string{
		{"tcp_user_timeout", strconv.FormatInt(b.server.Milliseconds(), 10) + "ms"},
		{"tcp_keepalives_idle", strconv.FormatInt(int64(idle/time.Second), 10) + "s"},
		{"tcp_keepalives_interval", "1s"},
		{"tcp_keepalives_count", strconv.FormatInt(int64(count), 10)},
		{"client_connection_check_interval", strconv.FormatInt(check.Milliseconds(), 10) + "ms"},
	}
}

// setServerTimeout applies b's server settings to the session over TCP, in
// one round trip; the ones the server does not know (before PostgreSQL 14,
// client_connection_check_interval) are skipped.
func setServerTimeout(ctx context.Context, conn *pgx.Conn, b bounds) error {
	if _, tcp := tcpConn(conn.PgConn().Conn()); !tcp || b.server <= 0 {
		return nil
	}
	var names, values []string
	for _, kv := range b.serverSettings() {
		names, values = append(names, kv[0]), append(values, kv[1])
	}
	_, err := conn.Exec(ctx, `SELECT set_config(v.name, v.setting, false)
		FROM unnest($1::text[], $2::text[]) AS v(name, setting)
		WHERE EXISTS (SELECT 1 FROM pg_settings p WHERE p.name = v.name)`, names, values)
	if err != nil {
		return fmt.Errorf("alock: open: set the server's timeouts: %w", err)
	}
	return nil
}

// minRTO is Linux's smallest retransmission timeout: data seen stuck has
// been unacknowledged at least that long.
const minRTO = 200 * time.Millisecond

// watchLink tells of a loss when the kernel has received nothing from the
// server for longer than the client bound: no answer to the watchdog's
// probes, to the TCP keepalive probes or to data sent. It covers the time an
// Acquire waits (the watchdog is not running then), and it tells before the
// kernel gives up (b.kernel) and sends a reset that could end the session on
// the server first. Then it makes the connection's I/O fail, so that its
// user closes it. Without TCP_INFO (not Linux) it does nothing.
func (s *Session) watchLink(c net.Conn, b bounds) {
	defer close(s.linked)
	tc, ok := tcpConn(c)
	if !ok {
		return
	}
	tick := time.NewTicker(min(250*time.Millisecond, b.client/8))
	defer tick.Stop()
	var stuckSince time.Time // when sent data was first seen stuck
	for {
		select {
		case <-s.done:
			return
		case <-s.closing:
			return
		case <-tick.C:
		}
		quiet, stuck, ok := sinceHeard(tc)
		if !ok {
			return
		}
		switch {
		case !stuck:
			stuckSince = time.Time{}
		case stuckSince.IsZero():
			stuckSince = time.Now().Add(-minRTO) // stuck once a retransmission timed out
		default:
			quiet = max(quiet, time.Since(stuckSince))
		}
		if quiet > b.client {
			s.tell(fmt.Errorf("nothing received from the server for %v", quiet))
			_ = tc.SetDeadline(time.Now())
			return
		}
	}
}
