package pgxtext

import "github.com/jackc/pgx/v5/pgtype"

// The batch statements pass their keys as []int64 (int8[]) and []int32
// (int4[], for pairs). pgx encodes such a slice element by element through
// an interface value, which boxes (allocates) every element not below 256:
// one allocation per key of every batch. keys and keyPairs hand pgx a
// reference to each element instead (a pointer-shaped value, which needs no
// allocation) that it reads through pgtype.Int64Valuer. The bytes sent are
// the same.
type (
	keys     []int64
	keyPairs []int32
)

// keyRef is one element of keys or keyPairs.
type keyRef struct{ p *int64 }

func (k keyRef) Int64Value() (pgtype.Int8, error) { return pgtype.Int8{Int64: *k.p, Valid: true}, nil }

// pairRef is one element of keyPairs.
type pairRef struct{ p *int32 }

func (k pairRef) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*k.p), Valid: true}, nil
}

func (a keys) Dimensions() []pgtype.ArrayDimension     { return dimensions(len(a), a == nil) }
func (a keys) Index(i int) any                         { return keyRef{&a[i]} }
func (a keys) IndexType() any                          { return keyRef{new(int64)} }
func (a keyPairs) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a keyPairs) Index(i int) any                     { return pairRef{&a[i]} }
func (a keyPairs) IndexType() any                      { return pairRef{new(int32)} }

// dimensions are a one-dimensional array's, nil for a nil slice (NULL), as
// pgtype.FlatArray's.
func dimensions(n int, isNil bool) []pgtype.ArrayDimension {
	if isNil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(n), LowerBound: 1}}
}

// KeysByRef returns args with every []int64 and []int32 as keys and
// keyPairs: a copy if there is any (args may be a statement's, shared), args
// itself if there is none. Only for a connection whose exec mode Describes.
func KeysByRef(args []any) []any {
	var out []any
	for i, a := range args {
		var v any
		switch a := a.(type) {
		case []int64:
			v = keys(a)
		case []int32:
			v = keyPairs(a)
		default:
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = v
	}
	if out == nil {
		return args
	}
	return out
}
