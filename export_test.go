package alock

import "time"

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
