package alock

import "context"

// Tracer is told of a Session's lock events, to feed metrics or traces. Its
// methods are called synchronously, possibly from several goroutines, and
// must not use the Lock or the Session they are given.
type Tracer interface {
	// AcquireStart is called before an Acquire or TryAcquire; the context it
	// returns is passed to AcquireEnd.
	AcquireStart(ctx context.Context, l *Lock) context.Context
	// AcquireEnd is called after it, with whether the Lock was taken.
	AcquireEnd(ctx context.Context, l *Lock, acquired bool, err error)
	// Release is called after a Release.
	Release(ctx context.Context, l *Lock, err error)
	// Lost is called once when the session is lost, with why.
	Lost(s *Session, err error)
}
