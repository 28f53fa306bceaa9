package core

import (
	"slices"
	"sync"
)

// holdKey is one server-level hold: a lock in a mode on a session. Its
// fields pack a Tag and a Mode without padding, so that the maps keyed by it
// (which every batch reads and writes for each of its rows) hash it as
// plain memory.
type holdKey struct {
	id   uint64 // ClassID<<32 | ObjID
	sub  uint32 // ObjSubID
	mode uint32
}

// keyOf returns the holdKey of t in mode m.
func keyOf(t Tag, m Mode) holdKey {
	return holdKey{id: uint64(t.ClassID)<<32 | uint64(t.ObjID), sub: uint32(t.ObjSubID), mode: uint32(m)}
}

// lockTag returns the key's Tag.
func (k holdKey) lockTag() Tag {
	return Tag{ClassID: uint32(k.id >> 32), ObjID: uint32(k.id), ObjSubID: uint16(k.sub)}
}

// lockMode returns the key's Mode.
func (k holdKey) lockMode() Mode { return Mode(k.mode) }

// grant is one server-level hold: how many Locks count it, and the fencing
// token drawn when the server granted it (0 if unfenced). Every Lock that
// shares the hold shares its token: one server grant, one token.
type grant struct {
	locks int
	token int64
}

// sessionHolds is what the library knows of one session while it holds
// anything: its holds, and the backend that answered its first lock
// statement, which every later one must match (see checkBackend).
type sessionHolds struct {
	pid     uint32
	backend backend // zero if its lock statement did not name the server
	grants  map[holdKey]grant
}

// backend is one server process: its pid and its server's start time.
type backend struct {
	start string
	pid   uint32
}

// holds counts, per session and (tag, mode), the Locks that hold it. The
// library takes one server-level hold per (session, tag, mode) whatever the
// number of Locks, so that after a failure "is it held on the server?" tells
// whether the failed statement took it. A session's entry goes when its last
// hold does.
//
// backends maps each backend that a holding session's locks were taken on
// to that session: no backend serves two connections, unless a pooler
// shares it between them.
var holds = struct {
	sync.Mutex
	m        map[any]*sessionHolds
	backends map[backend]any
}{m: make(map[any]*sessionHolds), backends: make(map[backend]any)}

// claimBackend records that the session's locks are taken on backend b,
// unless it already holds anything (whose backend checkBackend compares).
// It returns false if another holding session's locks were taken on b.
func claimBackend(session any, b backend) bool {
	holds.Lock()
	defer holds.Unlock()
	return claimBackendLocked(session, b)
}

// claimBackendLocked is claimBackend with holds locked.
func claimBackendLocked(session any, b backend) bool {
	if holds.m[session] != nil {
		return true
	}
	if other, ok := holds.backends[b]; ok && other != session {
		return false
	}
	holds.m[session] = &sessionHolds{pid: b.pid, backend: b, grants: make(map[holdKey]grant)}
	holds.backends[b] = session
	return true
}

// dropIfEmpty forgets a session that holds nothing: its claim of a backend
// by a lock statement that did not end in a hold.
func dropIfEmpty(session any) {
	holds.Lock()
	defer holds.Unlock()
	dropIfEmptyLocked(session)
}

// dropIfEmptyLocked is dropIfEmpty with holds locked.
func dropIfEmptyLocked(session any) {
	if s := holds.m[session]; s != nil && len(s.grants) == 0 {
		deleteSession(session, s)
	}
}

// deleteSession removes the session's entry and its claim; holds is locked.
func deleteSession(session any, s *sessionHolds) {
	delete(holds.m, session)
	if holds.backends[s.backend] == session {
		delete(holds.backends, s.backend)
	}
}

// unheld returns the tags of tags that no Lock holds in mode m on the session.
func unheld(session any, m Mode, tags []Tag) []Tag {
	holds.Lock()
	defer holds.Unlock()
	return unheldLocked(session, m, tags)
}

// unheldLocked is unheld with holds locked.
func unheldLocked(session any, m Mode, tags []Tag) []Tag {
	s := holds.m[session]
	if s == nil {
		return tags
	}
	return keepTags(tags, func(t Tag) bool {
		_, held := s.grants[keyOf(t, m)]
		return !held
	})
}

// keepTags returns the tags for which keep is true, in order; keep is
// called once per tag, in order. When it keeps them all (the usual case:
// no other Lock of the session shares them) the result is tags itself,
// with no allocation: callers must not modify it.
func keepTags(tags []Tag, keep func(Tag) bool) []Tag {
	for i, t := range tags {
		if keep(t) {
			continue
		}
		out := slices.Clone(tags[:i])
		for _, u := range tags[i+1:] {
			if keep(u) {
				out = append(out, u)
			}
		}
		return out
	}
	return tags
}

// addHolds records that one more Lock holds tags in mode m on the session.
// The tags no Lock held yet were just granted by a statement that ran on
// backend pid and drew token. It returns the Lock's token: the largest of
// its tags' grant tokens, which is token if any tag was newly granted.
func addHolds(session any, m Mode, tags []Tag, pid uint32, token int64) int64 {
	if len(tags) == 0 {
		return 0
	}
	holds.Lock()
	defer holds.Unlock()
	return addHoldsLocked(session, m, tags, pid, token)
}

// addHoldsLocked is addHolds with holds locked.
func addHoldsLocked(session any, m Mode, tags []Tag, pid uint32, token int64) int64 {
	s := holds.m[session]
	if s == nil {
		s = &sessionHolds{grants: make(map[holdKey]grant)}
		holds.m[session] = s
	}
	if s.pid == 0 {
		s.pid = pid
	}
	var newest int64
	for _, t := range tags {
		k := keyOf(t, m)
		g, ok := s.grants[k]
		if !ok {
			g.token = token
		}
		g.locks++
		s.grants[k] = g
		newest = max(newest, g.token)
	}
	return newest
}

// dropHolds records that one Lock no longer holds tags in mode m on the
// session, and returns the tags that no Lock holds any more: the ones to
// unlock on the server.
func dropHolds(session any, m Mode, tags []Tag) []Tag {
	holds.Lock()
	defer holds.Unlock()
	return dropHoldsLocked(session, m, tags)
}

// dropHoldsLocked is dropHolds with holds locked.
func dropHoldsLocked(session any, m Mode, tags []Tag) []Tag {
	s := holds.m[session] // nil after forgetSession
	if s == nil {
		return tags
	}
	freed := keepTags(tags, func(t Tag) bool {
		k := keyOf(t, m)
		g, ok := s.grants[k]
		if g.locks--; !ok || g.locks <= 0 {
			delete(s.grants, k)
			return true
		}
		s.grants[k] = g
		return false
	})
	if len(s.grants) == 0 {
		deleteSession(session, s)
	}
	return freed
}

// sessionPID returns the backend pid the session's holds were taken on, 0
// if it holds nothing.
func sessionPID(session any) uint32 {
	holds.Lock()
	defer holds.Unlock()
	if s := holds.m[session]; s != nil {
		return s.pid
	}
	return 0
}

// forgetSession drops every hold of a session that has ended: they ended
// with it. Locks that still count a hold on it find nothing to unlock.
func forgetSession(session any) {
	holds.Lock()
	defer holds.Unlock()
	if s := holds.m[session]; s != nil {
		deleteSession(session, s)
	}
}

// HoldCount returns how many server-level holds the library knows of on a
// session.
func HoldCount(session any) int {
	holds.Lock()
	defer holds.Unlock()
	if s := holds.m[session]; s != nil {
		return len(s.grants)
	}
	return 0
}

// ForgetSession drops every hold of a session that its owner ends (a pool
// destroying a connection given back with locks).
func ForgetSession(session any) { forgetSession(session) }

// dropStaleClaim drops the record of the session that claimed backend b if
// none of its holds is in held (what b holds now), and makes session's
// claim. It reports whether the claim was made.
func dropStaleClaim(session any, b backend, held map[holdKey]bool) bool {
	holds.Lock()
	defer holds.Unlock()
	if other, ok := holds.backends[b]; ok && other != session {
		if s := holds.m[other]; s == nil {
			delete(holds.backends, b)
		} else {
			for k := range s.grants {
				if held[k] {
					return false
				}
			}
			deleteSession(other, s)
		}
	}
	return claimBackendLocked(session, b)
}
