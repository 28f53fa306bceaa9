package alock

import (
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// Bounds returns the client's bound and the server's timeout that Open
// derives from opts (nil for the defaults).
func Bounds(opts *SessionOptions) (client, server time.Duration) {
	var o SessionOptions
	if opts != nil {
		o = *opts
	}
	b, err := deriveBounds(o.defaults())
	if err != nil {
		panic(err)
	}
	return b.client, b.server
}

// NewFencedExclusive returns a Lock on a plain connection that draws fencing
// tokens from sequence, as a Session's do: the tests count its round trips
// with a tracer on the connection.
func NewFencedExclusive(conn *pgx.Conn, sequence string, ids ...ID) *Lock {
	return newLockOn(pgxConn{conn}, Exclusive, ids, core.Options{Fence: sequence})
}
