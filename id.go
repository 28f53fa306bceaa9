package alock

import (
	"strconv"

	"github.com/pgalock/alock/internal/core"
)

// ID identifies one advisory lock: a 64-bit key, a pair of 32-bit keys, or a
// name hashed to a 64-bit key. The zero ID is Key(0), the same ID and the
// same server lock in every respect.
//
// IDs are comparable values, but an ID made by Name remembers its name (for
// String), so == tells Name("jobs") from Key(NameKey("jobs")) although they
// name the same server lock. Equal compares by server lock; the Locks of this
// package do too (duplicates among a Lock's ids count once, and Locks on one
// session share one server-level hold per lock and mode).
//
// Advisory locks are scoped to one database: the same ID in two databases
// of a cluster names two unrelated locks.
type ID struct {
	classID, objID uint32 // pg_locks' classid and objid
	pair           bool   // objsubid 2 (a Pair), else 1 (a Key): so the zero ID is Key(0)
	named          bool   // made by Name (whose name may be "")
	name           string // set by Name, for String
}

// Key returns the ID of pg_advisory_lock(k). In pg_locks it shows as
// classid = k>>32, objid = k&0xffffffff (both as unsigned 32-bit), objsubid = 1.
func Key(k int64) ID { return fromTag(core.KeyTag(k)) }

// Pair returns the ID of pg_advisory_lock(k1, k2). In pg_locks it shows as
// classid = k1, objid = k2 (as unsigned 32-bit), objsubid = 2. Pairs are a key
// space apart from Key: Pair(1, 2) and Key(1<<32|2) are different locks.
func Pair(k1, k2 int32) ID { return fromTag(core.PairTag(k1, k2)) }

// Name returns the ID of pg_advisory_lock(hashtextextended(name, 0)) in a
// database whose encoding is UTF-8 (the key is computed in Go, with no round
// trip; see [NameKey]). Distinct names can share a key, as with any 64-bit
// hash; the chance is negligible for a few million names. The ID is Equal to
// Key(NameKey(name)) but not ==: it keeps name for String.
func Name(name string) ID {
	id := Key(NameKey(name))
	id.named, id.name = true, name
	return id
}

// Equal reports whether id and other name the same server lock: Key(0) and
// the zero ID, or Name(s) and Key(NameKey(s)), are Equal. Unlike ==, it
// ignores the name an ID made by Name keeps for String.
func (id ID) Equal(other ID) bool { return id.tag() == other.tag() }

// String returns the ID as Go source that makes it: Key(42), Pair(1, 2) or
// Name("jobs").
func (id ID) String() string {
	switch {
	case id.named:
		return "Name(" + strconv.Quote(id.name) + ")"
	case id.pair:
		k1, k2 := id.tag().Pair()
		return "Pair(" + strconv.Itoa(int(k1)) + ", " + strconv.Itoa(int(k2)) + ")"
	}
	return "Key(" + strconv.FormatInt(id.tag().Key(), 10) + ")"
}

// LockTag returns the columns that identify id in pg_locks (rows with
// locktype = 'advisory'): classid, objid and objsubid.
func (id ID) LockTag() (classID, objID uint32, objSubID uint16) {
	t := id.tag()
	return t.ClassID, t.ObjID, t.ObjSubID
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

// tag returns the core tag of id: the server lock it names.
func (id ID) tag() core.Tag {
	if id.pair {
		return core.Tag{ClassID: id.classID, ObjID: id.objID, ObjSubID: 2}
	}
	return core.Tag{ClassID: id.classID, ObjID: id.objID, ObjSubID: 1}
}

// fromTag returns the ID of a Key or Pair tag.
func fromTag(t core.Tag) ID { return ID{classID: t.ClassID, objID: t.ObjID, pair: t.IsPair()} }

// tags returns the core tags of ids.
func tags(ids []ID) []core.Tag {
	out := make([]core.Tag, len(ids))
	for i, id := range ids {
		out[i] = id.tag()
	}
	return out
}
