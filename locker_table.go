package alock

import (
	"container/list"
	"context"
	"sync"

	"github.com/pgalock/alock/internal/core"
)

// table is a Locker's in-process lock table: it makes a Locker's Locks
// exclude each other as the server makes sessions exclude each other, so
// that only one of a process's goroutines competes at the server for an id.
// A request takes all its ids or waits for all of them; per id, requests are
// granted first come first served (a share request does not overtake an
// exclusive one that waits). The Locker's mutex guards it.
//
// An id's entry outlives its last holder and waiter (it is idle), so that
// the usual cycle of a hot id, granted at once and then released, neither
// allocates nor inserts into and deletes from the map under the Locker's
// mutex. Idle entries are swept once they are most of the map (and more
// than minIdle), so the map stays within twice the ids in use, plus
// minIdle.
type table struct {
	ids  map[core.Tag]*tableEntry
	idle int // entries with no holder and no waiter
}

// minIdle is the most idle entries a table keeps whatever its size.
const minIdle = 1024

// tableEntry is one id: who holds it and who waits for it, in order.
type tableEntry struct {
	exclusive bool      // held in exclusive mode
	holders   int       // how many requests hold it
	queue     list.List // of *tableRequest, first come first
}

// tableRequest is one Lock's request for its ids.
type tableRequest struct {
	mode    Mode
	tags    []core.Tag
	elems   []*list.Element // its place in each id's queue while it waits
	granted chan struct{}   // closed when granted
	err     error           // set before granted closes if it failed (Close)
}

func newTable() table { return table{ids: make(map[core.Tag]*tableEntry)} }

// newRequest returns a request for tags in mode m, to be made with request.
// It is made outside the Locker's mutex.
func newRequest(m Mode, tags []core.Tag) tableRequest {
	return tableRequest{mode: m, tags: tags, granted: grantedNow}
}

// request queues r, and grants it at once if it can be. The caller holds
// the Locker's mutex.
func (t *table) request(r *tableRequest) {
	if t.free(r.mode, r.tags) { // the usual case: no queue to join
		for _, tag := range r.tags {
			e := t.entry(tag)
			e.holders++
			e.exclusive = r.mode == Exclusive
		}
		return
	}
	r.granted = make(chan struct{})
	for _, tag := range r.tags {
		r.elems = append(r.elems, t.entry(tag).queue.PushBack(r))
	}
	t.grant(r)
}

// entry returns tag's entry, made if there is none, for a request to hold
// or wait for it (it is no longer idle).
func (t *table) entry(tag core.Tag) *tableEntry {
	e := t.ids[tag]
	switch {
	case e == nil:
		e = &tableEntry{}
		t.ids[tag] = e
	case e.idle():
		t.idle--
	}
	return e
}

// idle reports whether nobody holds or waits for e's id.
func (e *tableEntry) idle() bool { return e.holders == 0 && e.queue.Len() == 0 }

// sweep deletes the idle entries once they are most of the map and more
// than minIdle.
func (t *table) sweep() {
	if t.idle <= minIdle || t.idle <= len(t.ids)/2 {
		return
	}
	for tag, e := range t.ids {
		if e.idle() {
			delete(t.ids, tag)
		}
	}
	t.idle = 0
}

// grantedNow is the granted channel of the requests granted when made.
var grantedNow = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// free reports whether a request for tags in mode m can be granted without
// queueing: nobody waits for any of its ids, and their holders (if any)
// are compatible.
func (t *table) free(m Mode, tags []core.Tag) bool {
	for _, tag := range tags {
		if e := t.ids[tag]; e != nil && (e.queue.Len() > 0 || e.holders > 0 && (e.exclusive || m == Exclusive)) {
			return false
		}
	}
	return true
}

// grantable reports whether r is first in every queue it waits in and
// compatible with every id's holders.
func (t *table) grantable(r *tableRequest) bool {
	for i, tag := range r.tags {
		e := t.ids[tag]
		if e.queue.Front() != r.elems[i] {
			return false
		}
		if e.holders > 0 && (e.exclusive || r.mode == Exclusive) {
			return false
		}
	}
	return true
}

// grant grants r if it can be, and then whoever waited behind it and can
// now be granted too (shares behind a share).
func (t *table) grant(r *tableRequest) {
	if r.elems == nil || !t.grantable(r) {
		return
	}
	for i, tag := range r.tags {
		e := t.ids[tag]
		e.queue.Remove(r.elems[i])
		e.holders++
		e.exclusive = r.mode == Exclusive
	}
	r.elems = nil
	close(r.granted)
	t.wake(r.tags)
}

// wake grants the requests first in the queues of tags, where they can be.
func (t *table) wake(tags []core.Tag) {
	for _, tag := range tags {
		if e := t.ids[tag]; e != nil {
			if front := e.queue.Front(); front != nil {
				t.grant(front.Value.(*tableRequest))
			}
		}
	}
}

// release gives back a granted request's ids and wakes who waits.
func (t *table) release(r *tableRequest) {
	waiters := false
	for _, tag := range r.tags {
		e := t.ids[tag]
		if e.holders--; e.holders == 0 {
			e.exclusive = false
		}
		switch {
		case e.queue.Len() > 0:
			waiters = true
		case e.holders == 0:
			t.idle++
		}
	}
	if waiters {
		t.wake(r.tags)
	}
	t.sweep()
}

// withdraw takes a waiting request out of its queues (its ctx ended), or
// releases it if it was granted meanwhile.
func (t *table) withdraw(r *tableRequest) {
	if r.elems == nil {
		if r.err == nil {
			t.release(r)
		}
		return
	}
	for i, tag := range r.tags {
		e := t.ids[tag]
		e.queue.Remove(r.elems[i])
		if e.idle() {
			t.idle++
		}
	}
	r.elems = nil
	t.wake(r.tags)
	t.sweep()
}

// fail ends every waiting request with err.
func (t *table) fail(err error) {
	for tag, e := range t.ids {
		for f := e.queue.Front(); f != nil; f = e.queue.Front() {
			r := f.Value.(*tableRequest)
			for i, tg := range r.tags {
				t.ids[tg].queue.Remove(r.elems[i])
			}
			r.elems, r.err = nil, err
			close(r.granted)
		}
		if e.holders == 0 {
			delete(t.ids, tag)
		}
	}
	t.idle = 0 // the entries left are held
}

// await waits for r until ctx ends; mu is the Locker's mutex, which the
// caller does not hold.
func (t *table) await(ctx context.Context, mu *sync.Mutex, r *tableRequest) error {
	select {
	case <-r.granted:
		return r.err
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	t.withdraw(r)
	return core.CtxErr(ctx)
}
