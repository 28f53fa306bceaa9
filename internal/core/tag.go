package core

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Tag identifies one advisory lock the way pg_locks shows it: the classid,
// objid and objsubid columns of a row with locktype 'advisory'. A bigint key k
// is (k>>32, k&0xffffffff, 1); a pair of int4 keys (k1, k2) is (k1, k2, 2).
// The two key spaces never collide because objsubid differs.
type Tag struct {
	ClassID  uint32
	ObjID    uint32
	ObjSubID uint16
}

// KeyTag returns the tag of pg_advisory_lock(k).
func KeyTag(k int64) Tag {
	return Tag{ClassID: uint32(uint64(k) >> 32), ObjID: uint32(k), ObjSubID: 1}
}

// PairTag returns the tag of pg_advisory_lock(k1, k2).
func PairTag(k1, k2 int32) Tag {
	return Tag{ClassID: uint32(k1), ObjID: uint32(k2), ObjSubID: 2}
}

// IsPair reports whether t is a two-key lock.
func (t Tag) IsPair() bool { return t.ObjSubID == 2 }

// Key returns the bigint key of a one-key tag.
func (t Tag) Key() int64 { return int64(uint64(t.ClassID)<<32 | uint64(t.ObjID)) }

// Pair returns the two int4 keys of a two-key tag.
func (t Tag) Pair() (int32, int32) { return int32(t.ClassID), int32(t.ObjID) }

// appendArgs appends the SQL arguments that name t.
func (t Tag) appendArgs(args []any) []any {
	if t.IsPair() {
		k1, k2 := t.Pair()
		return append(args, k1, k2)
	}
	return append(args, t.Key())
}

// String returns the form pg_locks uses in error messages: classid:objid:objsubid.
func (t Tag) String() string {
	return strconv.FormatUint(uint64(t.ClassID), 10) + ":" +
		strconv.FormatUint(uint64(t.ObjID), 10) + ":" +
		strconv.FormatUint(uint64(t.ObjSubID), 10)
}

// Distinct returns tags without repeats, in their first order.
func Distinct(tags []Tag) []Tag { return distinct(tags) }

// distinct returns tags without repeats, in their first order.
func distinct(tags []Tag) []Tag {
	out := make([]Tag, 0, len(tags))
	for _, t := range tags {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Describe names a lock in messages by its mode and ids:
// exclusive [Key(1) Name("jobs")]. Past four ids it shows the first three
// and the count.
func Describe[ID fmt.Stringer](mode string, ids []ID) string {
	var names []string
	for i, id := range ids {
		if i == 3 && len(ids) > 4 {
			names = append(names, "… ("+strconv.Itoa(len(ids))+" ids)")
			break
		}
		names = append(names, id.String())
	}
	return mode + " [" + strings.Join(names, " ") + "]"
}
