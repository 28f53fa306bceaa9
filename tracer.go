package alock

import "context"

// Tracer is told of a Lock's acquisitions, to feed metrics or traces. A
// Session's Locks use SessionOptions.Tracer; a Lock on a plain *pgx.Conn
// gets one with Lock.Trace. Its methods are called synchronously, possibly
// from several goroutines, and must not use the Lock or the Session they
// are given.
//
// More events come as optional interfaces that a Tracer may also implement
// (ReleaseTracer, LostTracer), as pgx does, so that a new event never breaks
// an existing implementation.
type Tracer interface {
	// AcquireStart is called before an Acquire or TryAcquire; the context it
	// returns is passed to AcquireEnd.
	AcquireStart(ctx context.Context, l *Lock) context.Context
	// AcquireEnd is called after it, with whether the Lock was taken.
	AcquireEnd(ctx context.Context, l *Lock, acquired bool, err error)
}

// ReleaseTracer is a Tracer that is also told of every Release.
type ReleaseTracer interface {
	Release(ctx context.Context, l *Lock, err error)
}

// LostTracer is a Tracer that is also told, once, when a Session is lost
// (not when it is closed), with why.
type LostTracer interface {
	Lost(s *Session, err error)
}
