package core

import "sync"

// holdKey is one server-level hold: a lock in a mode on a session.
type holdKey struct {
	tag  Tag
	mode Mode
}

// holds counts, per session and (tag, mode), the Locks that hold it. The
// library takes one server-level hold per (session, tag, mode) whatever the
// number of Locks, so that after a failure "is it held on the server?" tells
// whether the failed statement took it.
var holds = struct {
	sync.Mutex
	m map[any]map[holdKey]int
}{m: make(map[any]map[holdKey]int)}

// unheld returns the tags of tags that no Lock holds in mode m on the session.
func unheld(session any, m Mode, tags []Tag) []Tag {
	holds.Lock()
	defer holds.Unlock()
	counts := holds.m[session]
	if len(counts) == 0 {
		return tags
	}
	var out []Tag
	for _, t := range tags {
		if counts[holdKey{t, m}] == 0 {
			out = append(out, t)
		}
	}
	return out
}

// addHolds records that one more Lock holds tags in mode m on the session.
func addHolds(session any, m Mode, tags []Tag) {
	holds.Lock()
	defer holds.Unlock()
	counts := holds.m[session]
	if counts == nil {
		counts = make(map[holdKey]int)
		holds.m[session] = counts
	}
	for _, t := range tags {
		counts[holdKey{t, m}]++
	}
}

// dropHolds records that one Lock no longer holds tags in mode m on the
// session, and returns the tags that no Lock holds any more: the ones to
// unlock on the server.
func dropHolds(session any, m Mode, tags []Tag) []Tag {
	holds.Lock()
	defer holds.Unlock()
	counts := holds.m[session] // nil after forgetSession
	var freed []Tag
	for _, t := range tags {
		if counts == nil {
			freed = append(freed, t)
			continue
		}
		k := holdKey{t, m}
		if counts[k]--; counts[k] <= 0 {
			delete(counts, k)
			freed = append(freed, t)
		}
	}
	if len(counts) == 0 {
		delete(holds.m, session)
	}
	return freed
}

// forgetSession drops every hold of a session that has ended: they ended
// with it. Locks that still count a hold on it find nothing to unlock.
func forgetSession(session any) {
	holds.Lock()
	defer holds.Unlock()
	delete(holds.m, session)
}

// HoldCount returns how many server-level holds the library knows of on a
// session.
func HoldCount(session any) int {
	holds.Lock()
	defer holds.Unlock()
	return len(holds.m[session])
}

// ForgetSession drops every hold of a session that its owner ends (a pool
// destroying a connection given back with locks).
func ForgetSession(session any) { forgetSession(session) }
