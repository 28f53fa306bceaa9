package alock

import (
	"context"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"github.com/pgalock/alock/internal/pgtest"
)

// Vectors obtained from PostgreSQL 15.18 (UTF-8 database, C.UTF-8 locale)
// with: select hashtextextended($1, $2).
var hashTextExtendedVectors = []struct {
	s    string
	seed uint64
	want int64
}{
	{"", 0, -6939563903564495251},
	{"a", 0, 3591986179850072241},
	{"hello world!", 0, -2866487628948787489},
	{"alock:orders/42", 0, -4432692027760746032},
	{"Grüße, 世界 🌍", 0, 2620783084510910622},
	{"a", 1, 3325245193489759299},
	{"a", ^uint64(0), 8688456822845412000}, // seed -1
}

func TestHashTextExtendedVectors(t *testing.T) {
	for _, v := range hashTextExtendedVectors {
		if got := hashTextExtended(v.s, v.seed); got != v.want {
			t.Errorf("hashTextExtended(%q, %d) = %d, want %d", v.s, v.seed, got, v.want)
		}
	}
}

// TestNameKeyMatchesServer proves the Go port against the server's own
// hashtextextended(name, 0) for random strings of 0-300 bytes, non-ASCII
// included.
func TestNameKeyMatchesServer(t *testing.T) {
	t.Parallel()
	names := randomNames(rand.New(rand.NewPCG(1, 2)), 1500)
	conn := pgtest.Connect(t, pgtest.NewDatabase(t))
	var keys []int64
	err := conn.QueryRow(context.Background(), `SELECT array_agg(hashtextextended(s, 0) ORDER BY n)
		FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n)`, names).Scan(&keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(names) {
		t.Fatalf("server hashed %d names, want %d", len(keys), len(names))
	}
	mismatches, nonASCII := 0, 0
	for i, s := range names {
		if utf8.RuneCountInString(s) != len(s) {
			nonASCII++
		}
		if got := NameKey(s); got != keys[i] {
			mismatches++
			t.Errorf("NameKey(%q) = %d, server says %d", s, got, keys[i])
		}
		if !utf8.ValidString(s) || len(s) > 300 {
			t.Fatalf("bad name %q (len %d)", s, len(s))
		}
	}
	if nonASCII < len(names)/2 {
		t.Fatalf("only %d of %d names are non-ASCII", nonASCII, len(names))
	}
	t.Logf("%d names (%d non-ASCII), %d mismatches", len(names), nonASCII, mismatches)
}

// randomNames returns n valid UTF-8 strings without NUL bytes, of 0-300
// bytes; about 1 in 8 is pure ASCII, the rest mix ASCII with 2-, 3- and
// 4-byte runes. Byte lengths are biased
// towards the lookup3 block boundaries (11, 12, 13 and multiples of 12 ± 1)
// so that every tail length is exercised. Intended for cross-checking
// hashTextExtended against a server's hashtextextended.
func randomNames(r *rand.Rand, n int) []string {
	out := make([]string, 0, n)
	for range n {
		var size int
		switch r.IntN(4) {
		case 0:
			size = 11 + r.IntN(3)
		case 1:
			size = 12*r.IntN(26) + r.IntN(3) - 1 // 12k-1, 12k, 12k+1
		default:
			size = r.IntN(301)
		}
		size = max(0, min(size, 300))
		asciiOnly := r.IntN(8) == 0
		buf := make([]byte, 0, size)
		for len(buf) < size {
			var c rune
			switch k := r.IntN(4); {
			case asciiOnly || k == 3:
				c = 1 + r.Int32N(0x7f)
			case k == 0:
				c = 0x80 + r.Int32N(0x800-0x80)
			case k == 1:
				c = 0x800 + r.Int32N(0x10000-0x800)
				if c >= 0xD800 && c <= 0xDFFF { // surrogates are not valid UTF-8
					c = 'x'
				}
			default:
				c = 0x10000 + r.Int32N(0x110000-0x10000)
			}
			if len(buf)+utf8.RuneLen(c) > size {
				c = 1 + r.Int32N(0x7f) // pad to the exact size with ASCII
			}
			buf = utf8.AppendRune(buf, c)
		}
		out = append(out, string(buf))
	}
	return out
}
