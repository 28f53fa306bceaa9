package pgxtext

import (
	"bytes"
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestKeyArraysEncodeAsSlices: keys and keyPairs encode to the bytes pgx
// sends for the []int64 and []int32 they wrap, in both formats, including
// empty, nil and extreme values; and KeysByRef copies only when it
// converts.
func TestKeyArraysEncodeAsSlices(t *testing.T) {
	m := pgtype.NewMap()
	int8s := [][]int64{nil, {}, {0}, {1, -1, 255, 256, math.MinInt64, math.MaxInt64}}
	int4s := [][]int32{nil, {}, {0}, {1, -1, 255, 256, math.MinInt32, math.MaxInt32}}
	for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
		for _, v := range int8s {
			want, err1 := m.Encode(pgtype.Int8ArrayOID, format, v, nil)
			got, err2 := m.Encode(pgtype.Int8ArrayOID, format, keys(v), nil)
			if err1 != nil || err2 != nil || !bytes.Equal(got, want) || (got == nil) != (want == nil) {
				t.Errorf("format %d, %v: keys give %q (%v), []int64 %q (%v)", format, v, got, err2, want, err1)
			}
		}
		for _, v := range int4s {
			want, err1 := m.Encode(pgtype.Int4ArrayOID, format, v, nil)
			got, err2 := m.Encode(pgtype.Int4ArrayOID, format, keyPairs(v), nil)
			if err1 != nil || err2 != nil || !bytes.Equal(got, want) || (got == nil) != (want == nil) {
				t.Errorf("format %d, %v: keyPairs give %q (%v), []int32 %q (%v)", format, v, got, err2, want, err1)
			}
		}
	}
	shared := []any{int64(1), "x"}
	if out := KeysByRef(shared); &out[0] != &shared[0] {
		t.Error("KeysByRef copied args with no key array")
	}
	shared = []any{[]int64{1}, []int32{2}, "x"}
	out := KeysByRef(shared)
	if _, ok := shared[0].([]int64); !ok {
		t.Error("KeysByRef changed its argument")
	}
	if _, ok := out[0].(keys); !ok {
		t.Errorf("KeysByRef left %T", out[0])
	}
	if _, ok := out[1].(keyPairs); !ok {
		t.Errorf("KeysByRef left %T", out[1])
	}
}

// BenchmarkKeysEncode: the allocations pgx makes to encode 32 keys, as a
// []int64 and as keys.
func BenchmarkKeysEncode(b *testing.B) {
	m := pgtype.NewMap()
	v := make([]int64, 32)
	for i := range v {
		v[i] = int64(1000 + i)
	}
	for _, c := range []struct {
		name string
		arg  any
	}{{"slice", v}, {"keys", keys(v)}} {
		b.Run(c.name, func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = m.Encode(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, c.arg, buf[:0])
			}
		})
	}
}
