package alock

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgalock/alock/internal/core"
)

// GuardPool makes a pgxpool destroy, instead of reuse, a connection that is
// given back while a Lock on it (made with NewExclusive or NewShare on the
// pooled *pgx.Conn) still holds: the next borrower would otherwise share
// its locks, and the server would keep them. It chains cfg.AfterRelease
// (the previous hook still runs for connections that hold nothing), and
// logs each such connection at Warn on logger (nil for none), naming the
// Locks and the file:line of the program's call that took them (Acquire,
// TryAcquire or Do). Call it before pgxpool.NewWithConfig. From then on,
// the first acquisition of a Lock on a plain connection records its caller
// (one runtime.Callers).
func GuardPool(cfg *pgxpool.Config, logger *slog.Logger) {
	poolGuards.Add(1)
	next := cfg.AfterRelease
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		if core.HoldCount(c) > 0 {
			if logger != nil {
				logger.Log(context.Background(), slog.LevelWarn,
					"alock: a pooled connection was given back holding advisory locks; destroyed",
					"pid", c.PgConn().PID(), "locks", acquireSites.of(c))
			}
			acquireSites.forget(c)
			core.ForgetSession(c) // the pool closes it: its locks end with it
			return false
		}
		acquireSites.forget(c)
		return next == nil || next(c)
	}
}

// poolGuards counts GuardPool calls: while it is zero, Acquire records
// nothing.
var poolGuards atomic.Int32

// acquireSites remembers, per pooled connection, where its held Locks were
// acquired.
var acquireSites = sites{m: make(map[*pgx.Conn]map[*Lock]string)}

type sites struct {
	mu sync.Mutex
	m  map[*pgx.Conn]map[*Lock]string
}

// note records l's acquisition site (see callerSite) if it is not recorded
// yet, or forgets it if l is not held. Without GuardPool it costs one
// atomic load.
func (s *sites) note(l *Lock, held bool) {
	if poolGuards.Load() == 0 {
		return
	}
	c := l.plainConn()
	if c == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	byLock := s.m[c]
	if !held {
		delete(byLock, l)
		return
	}
	if _, ok := byLock[l]; ok {
		return
	}
	site := callerSite()
	if byLock == nil {
		byLock = make(map[*Lock]string)
		s.m[c] = byLock
	}
	byLock[l] = site
}

// callerSite returns the file:line of the first caller outside alock's
// packages: the program's call that took the Lock, whether Acquire,
// TryAcquire or Do (whose acquisition runs a few calls deeper).
func callerSite() string {
	var pcs [32]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs[:])])
	for {
		f, more := frames.Next()
		if !inAlock(f.Function) {
			return fmt.Sprintf("%s:%d", f.File, f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}

// inAlock reports whether the function named fn (as runtime.Frame gives
// it) is alock's own: of this package or one below it. A program's package
// alock_test or main is not.
func inAlock(fn string) bool {
	rest, ok := strings.CutPrefix(fn, alockPath)
	return ok && (strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "/"))
}

// alockPath is this package's import path, as the program was built (a
// fork's, or a vendored copy's).
var alockPath = reflect.TypeFor[Lock]().PkgPath()

// of describes the Locks held on c and where they were acquired.
func (s *sites) of(c *pgx.Conn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for l, site := range s.m[c] {
		out = append(out, l.String()+" acquired at "+site)
	}
	return strings.Join(out, "; ")
}

func (s *sites) forget(c *pgx.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
}
