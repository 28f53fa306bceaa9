package core

import (
	"fmt"
	"math"
	"testing"
)

// TestHoldKeyRoundTrip: a holdKey gives back the Tag and Mode it packs, and
// keys differ whenever the tag or the mode does.
func TestHoldKeyRoundTrip(t *testing.T) {
	tags := []Tag{
		KeyTag(0), KeyTag(1), KeyTag(-1), KeyTag(math.MinInt64), KeyTag(math.MaxInt64),
		PairTag(0, 0), PairTag(-1, -1), PairTag(math.MinInt32, math.MaxInt32), PairTag(0, 1), PairTag(1, 0),
	}
	seen := make(map[holdKey]string)
	for _, tag := range tags {
		for _, m := range []Mode{Exclusive, Share} {
			k := keyOf(tag, m)
			if k.lockTag() != tag || k.lockMode() != m {
				t.Errorf("keyOf(%v, %v) gives back %v, %v", tag, m, k.lockTag(), k.lockMode())
			}
			if other, dup := seen[k]; dup {
				t.Errorf("keyOf(%v, %v) is the key of %s too", tag, m, other)
			}
			seen[k] = fmt.Sprint(tag, "/", m)
		}
	}
}

// TestKeepTags: keepTags keeps the tags keep accepts, in order, calling it
// once per tag in order, and gives back tags itself only when it keeps all.
func TestKeepTags(t *testing.T) {
	tags := []Tag{KeyTag(1), KeyTag(2), KeyTag(3), KeyTag(4)}
	for mask := range 1 << len(tags) {
		var calls []Tag
		got := keepTags(tags, func(tag Tag) bool {
			calls = append(calls, tag)
			return mask&(1<<(len(calls)-1)) != 0
		})
		var want []Tag
		for i, tag := range tags {
			if mask&(1<<i) != 0 {
				want = append(want, tag)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(calls) != fmt.Sprint(tags) {
			t.Errorf("mask %04b: kept %v after calls %v, want %v after one call per tag", mask, got, calls, want)
		}
		if all := mask == 1<<len(tags)-1; all != (len(got) > 0 && &got[0] == &tags[0]) {
			t.Errorf("mask %04b: result shares tags' array: %v, want %v", mask, !all, all)
		}
	}
}

// TestRowKindMode: a row's kind gives back the mode it was made with.
func TestRowKindMode(t *testing.T) {
	for _, m := range []Mode{Exclusive, Share} {
		for _, unlock := range []bool{false, true} {
			for _, tag := range []Tag{KeyTag(-5), PairTag(-1, 7)} {
				if got := kindOf(m, tag, unlock).mode(); got != m {
					t.Errorf("kindOf(%v, %v, %v).mode() = %v", m, tag, unlock, got)
				}
			}
		}
	}
}
