package alocksql

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// cancelOnly returns a *pgconn.PgConn that can only send cancel requests for
// the session of sc: it is made from copies of sc's cancel key (backend pid
// and secret key), its server's address, its TLS configuration and its
// connection configuration (for the dialer), and has no connection of its
// own. Its only use is CancelRequest, which dials the server afresh, so it
// may be called while database/sql runs a statement on sc: nothing of sc is
// used outside the (*sql.Conn).Raw that calls cancelOnly. It returns nil if
// the configuration cannot make one.
func cancelOnly(sc *stdlib.Conn) *pgconn.PgConn {
	cfg := sc.Conn().Config().Config // a deep copy
	if cfg.DialFunc == nil || cfg.BuildFrontend == nil || cfg.BuildContextWatcherHandler == nil {
		return nil
	}
	pc := sc.Conn().PgConn()
	remote := pc.Conn().RemoteAddr()
	c, err := pgconn.Construct(&pgconn.HijackedConn{
		Conn:      noConn{remote: addr{network: remote.Network(), address: remote.String()}},
		TLSConfig: tlsConfigOf(pc.Conn(), &cfg),
		PID:       pc.PID(),
		SecretKey: bytes.Clone(pc.SecretKey()),
		TxStatus:  'I',
		Config:    &cfg,
	})
	if err != nil {
		return nil
	}
	return c
}

// tlsConfigOf returns the TLS configuration that conn was opened with, from
// cfg (a copy of its configuration): nil if conn is not TLS, else the one of
// cfg's hosts whose server name conn's handshake used, or the first one.
func tlsConfigOf(conn net.Conn, cfg *pgconn.Config) *tls.Config {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil
	}
	candidates := []*tls.Config{cfg.TLSConfig}
	for _, f := range cfg.Fallbacks {
		candidates = append(candidates, f.TLSConfig)
	}
	var first *tls.Config
	for _, c := range candidates {
		if c == nil {
			continue
		}
		if c.ServerName == tc.ConnectionState().ServerName {
			return c
		}
		if first == nil {
			first = c
		}
	}
	return first
}

// noConn stands for the connection of a cancel-only PgConn: it has a remote
// address, for CancelRequest to dial, and no traffic.
type noConn struct{ remote addr }

var errNoConn = errors.New("alock: a cancel-only connection carries no traffic")

func (noConn) Read([]byte) (int, error)         { return 0, errNoConn }
func (noConn) Write([]byte) (int, error)        { return 0, errNoConn }
func (noConn) Close() error                     { return nil }
func (noConn) LocalAddr() net.Addr              { return addr{} }
func (c noConn) RemoteAddr() net.Addr           { return c.remote }
func (noConn) SetDeadline(time.Time) error      { return nil }
func (noConn) SetReadDeadline(time.Time) error  { return nil }
func (noConn) SetWriteDeadline(time.Time) error { return nil }

// addr is a copied net.Addr.
type addr struct{ network, address string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.address }
