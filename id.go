package alock

import (
	"strconv"

	"github.com/pgalock/alock/internal/core"
)

// ID identifies one advisory lock: a 64-bit key, a pair of 32-bit keys, or a
// name hashed to a 64-bit key. The zero ID is Key(0). IDs are comparable
// values; two IDs that name the same server lock are ==, except that an ID
// made by Name remembers its name for String.
//
// Advisory locks are scoped to one database: the same ID in two databases
// of a cluster names two unrelated locks.
type ID struct {
	tag  core.Tag
	name string // set by Name, for String
}

// Key returns the ID of pg_advisory_lock(k). In pg_locks it shows as
// classid = k>>32, objid = k&0xffffffff (both as unsigned 32-bit), objsubid = 1.
func Key(k int64) ID { return ID{tag: core.KeyTag(k)} }

// Pair returns the ID of pg_advisory_lock(k1, k2). In pg_locks it shows as
// classid = k1, objid = k2 (as unsigned 32-bit), objsubid = 2. Pairs are a key
// space apart from Key: Pair(1, 2) and Key(1<<32|2) are different locks.
func Pair(k1, k2 int32) ID { return ID{tag: core.PairTag(k1, k2)} }

// Name returns the ID of pg_advisory_lock(hashtextextended(name, 0)) in a
// database whose encoding is UTF-8 (the key is computed in Go, with no round
// trip; see [NameKey]). Distinct names can share a key, as with any 64-bit
// hash; the chance is negligible for a few million names.
func Name(name string) ID {
	return ID{tag: core.KeyTag(NameKey(name)), name: name}
}

// String returns the ID as Go source that makes it: Key(42), Pair(1, 2) or
// Name("jobs").
func (id ID) String() string {
	switch {
	case id.name != "":
		return "Name(" + strconv.Quote(id.name) + ")"
	case id.tag.IsPair():
		k1, k2 := id.tag.Pair()
		return "Pair(" + strconv.Itoa(int(k1)) + ", " + strconv.Itoa(int(k2)) + ")"
	}
	return "Key(" + strconv.FormatInt(id.tag.Key(), 10) + ")"
}

// LockTag returns the columns that identify id in pg_locks (rows with
// locktype = 'advisory'): classid, objid and objsubid.
func (id ID) LockTag() (classID, objID uint32, objSubID uint16) {
	return id.tag.ClassID, id.tag.ObjID, id.tag.ObjSubID
}

// FromLockTag returns the ID that pg_locks shows as classid, objid and
// objsubid in a row with locktype = 'advisory': a Key for objsubid 1, a Pair
// for objsubid 2. ok is false for any other objsubid. A Name comes back as
// its Key.
func FromLockTag(classID, objID uint32, objSubID uint16) (id ID, ok bool) {
	switch objSubID {
	case 1:
		return Key(int64(uint64(classID)<<32 | uint64(objID))), true
	case 2:
		return Pair(int32(classID), int32(objID)), true
	}
	return ID{}, false
}

// tags returns the core tags of ids.
func tags(ids []ID) []core.Tag {
	out := make([]core.Tag, len(ids))
	for i, id := range ids {
		out[i] = id.tag
	}
	return out
}
