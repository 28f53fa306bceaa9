package alock

import (
	"hash/maphash"
	"sync"

	"github.com/pgalock/alock/internal/core"
)

// heldSet is a Session's held Locks, for tell to mark them lost. It is
// sharded by Lock, each shard with its own mutex, so that the many
// goroutines whose holds begin and end together (the Locks of one batch)
// rarely queue on one mutex. The zero value is an empty set.
//
// A grant that completes as the session is told lost is marked lost either
// way: Held adds the Lock before it reads Session.ended, and tell sets
// ended before it lists the set, so that one of them sees the other.
type heldSet struct {
	shards [heldShards]heldShard
}

// heldShards is the number of shards of a heldSet.
const heldShards = 16

// heldShard is one shard, on a cache line of its own.
type heldShard struct {
	mu sync.Mutex
	m  map[*core.Lock]struct{}
	_  [48]byte
}

// heldSeed hashes Locks to shards.
var heldSeed = maphash.MakeSeed()

func (h *heldSet) shard(l *core.Lock) *heldShard {
	return &h.shards[maphash.Comparable(heldSeed, l)%heldShards]
}

// add records l.
func (h *heldSet) add(l *core.Lock) {
	sh := h.shard(l)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[*core.Lock]struct{})
	}
	sh.m[l] = struct{}{}
	sh.mu.Unlock()
}

// remove forgets l.
func (h *heldSet) remove(l *core.Lock) {
	sh := h.shard(l)
	sh.mu.Lock()
	delete(sh.m, l)
	sh.mu.Unlock()
}

// list returns the Locks held now.
func (h *heldSet) list() []*core.Lock {
	var held []*core.Lock
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for l := range sh.m {
			held = append(held, l)
		}
		sh.mu.Unlock()
	}
	return held
}
