package alock

import "math/bits"

// NameKey returns the key that [Name] locks: the value of PostgreSQL's
// hashtextextended(name, 0), computed in Go, for a text value in a UTF-8 database whose
// collation is deterministic (the default for C, C.UTF-8, libc and
// deterministic ICU collations). In that case PostgreSQL hashes the raw
// bytes of the string with hash_any_extended, i.e. hash_bytes_extended in
// src/common/hashfn.c, which this function ports exactly.
//
// The algorithm is Bob Jenkins' lookup3 hash (the 2006 "hashlittle"
// variant with separate mix and final steps) as adapted by PostgreSQL. All
// arithmetic is on uint32 values modulo 2^32, and rot(x, k) is a left
// rotation of x by k bits. The steps are given for any seed, as
// hashtextextended(s, seed) takes one; NameKey uses seed 0 and s = name:
//
//  1. Let n be the byte length of s. Set a = b = c = 0x9e3779b9 + n + 3923095.
//  2. Only if seed != 0: a += uint32(seed>>32); b += uint32(seed); mix(a,b,c).
//  3. While >= 12 bytes remain: with w0, w1, w2 the next 12 bytes read as
//     little-endian uint32s, a += w0; b += w1; c += w2; mix(a, b, c).
//  4. Tail (0-11 remaining bytes k[0..r-1]), little-endian byte placement:
//     byte i is added to a (i = 0..3), b (i = 4..7) or c (i = 8..10) shifted
//     left by 8*(i%4) bits for a and b, and by 8*(i%4+1) bits for c (the
//     lowest byte of c is never filled by the tail). No mix follows, even
//     when r == 0.
//  5. final(a, b, c).
//  6. The result is the uint64 (b << 32) | c, reinterpreted as an int64
//     (PostgreSQL returns it as bigint).
//
// mix(a, b, c):
//
//	a -= c; a ^= rot(c, 4);  c += b
//	b -= a; b ^= rot(a, 6);  a += c
//	c -= b; c ^= rot(b, 8);  b += a
//	a -= c; a ^= rot(c, 16); c += b
//	b -= a; b ^= rot(a, 19); a += c
//	c -= b; c ^= rot(b, 4);  b += a
//
// final(a, b, c):
//
//	c ^= b; c -= rot(b, 14)
//	a ^= c; a -= rot(c, 11)
//	b ^= a; b -= rot(a, 25)
//	c ^= b; c -= rot(b, 16)
//	a ^= c; a -= rot(c, 4)
//	b ^= a; b -= rot(a, 14)
//	c ^= b; c -= rot(b, 24)
//
// Test vectors (seed 0), verified against PostgreSQL 15 hashtextextended:
//
//	""                    → -6939563903564495251
//	"a"                   → 3591986179850072241
//	"hello world!"        → -2866487628948787489 (12 bytes)
//	"alock:orders/42"     → -4432692027760746032 (15 bytes)
//	"Grüße, 世界 🌍"       → 2620783084510910622 (20 bytes of UTF-8)
//
// With a seed: hashtextextended('a', 1) → 3325245193489759299 and
// hashtextextended('a', -1) → 8688456822845412000 (seed 0xffffffffffffffff).
func NameKey(name string) int64 { return hashTextExtended(name, 0) }

// hashTextExtended returns hashtextextended(s, seed) as documented on NameKey.
func hashTextExtended(s string, seed uint64) int64 {
	a := 0x9e3779b9 + uint32(len(s)) + 3923095
	b, c := a, a

	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = hashMix(a, b, c)
	}

	k := s
	for len(k) >= 12 {
		a += le32(k[0:4])
		b += le32(k[4:8])
		c += le32(k[8:12])
		a, b, c = hashMix(a, b, c)
		k = k[12:]
	}

	// Tail: identical to the C fall-through switch on the remaining length.
	switch len(k) {
	case 11:
		c += uint32(k[10]) << 24
		fallthrough
	case 10:
		c += uint32(k[9]) << 16
		fallthrough
	case 9:
		c += uint32(k[8]) << 8
		fallthrough
	case 8:
		// the lowest byte of c is reserved for the length
		b += uint32(k[7]) << 24
		fallthrough
	case 7:
		b += uint32(k[6]) << 16
		fallthrough
	case 6:
		b += uint32(k[5]) << 8
		fallthrough
	case 5:
		b += uint32(k[4])
		fallthrough
	case 4:
		a += uint32(k[3]) << 24
		fallthrough
	case 3:
		a += uint32(k[2]) << 16
		fallthrough
	case 2:
		a += uint32(k[1]) << 8
		fallthrough
	case 1:
		a += uint32(k[0])
	}

	_, b, c = hashFinal(a, b, c)
	return int64(uint64(b)<<32 | uint64(c))
}

// le32 decodes the first four bytes of s as a little-endian uint32.
func le32(s string) uint32 {
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// hashMix is lookup3's mix(a, b, c) as in PostgreSQL's hashfn.c.
func hashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// hashFinal is lookup3's final(a, b, c) as in PostgreSQL's hashfn.c.
func hashFinal(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return a, b, c
}
