package rdb

import (
	"encoding/binary"
	"sync"
)

// Redis uses CRC-64/Jones: reflected, polynomial 0xad93d23594c935a9 (here in
// reversed form), initial value 0, no final xor. hash/crc64 always inverts
// the register and has no faster path for other polynomials, so it is not
// used.
const crc64JonesReversed = 0x95ac9329ac4bc9b5

var crcTables = func() *[8][256]uint64 {
	t := new([8][256]uint64)
	for i := 0; i < 256; i++ {
		c := uint64(i)
		for k := 0; k < 8; k++ {
			if c&1 == 1 {
				c = c>>1 ^ crc64JonesReversed
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	for i := 0; i < 256; i++ {
		c := t[0][i]
		for k := 1; k < 8; k++ {
			c = t[0][c&0xff] ^ c>>8
			t[k][i] = c
		}
	}
	return t
}()

// A long input is cut into three runs of equal length. With no initial or final xor the CRC is
// linear: crc(A||B) = shift_|B|(crc(A)) ^ crc(B), where shift_n is what n zero bytes do to the
// register. Three runs checksummed in the same loop keep the CPU busy (one run alone waits on
// its table lookups), and two shifts join them. Runs are 4 KiB for long inputs and 64 bytes for
// the few hundred bytes of a DUMP payload; each length has its shift table (16 KiB, built on
// first use).
type crcRuns struct {
	n     int
	once  sync.Once
	shift *[8][256]uint64
}

var crcLong, crcShort = &crcRuns{n: 4096}, &crcRuns{n: 64}

func (r *crcRuns) table() *[8][256]uint64 {
	r.once.Do(func() {
		// shift is linear: the images of the 64 single-bit registers give every entry.
		var basis [64]uint64
		for b := range basis {
			c := uint64(1) << b
			for i := 0; i < r.n; i++ {
				c = crcTables[0][c&0xff] ^ c>>8
			}
			basis[b] = c
		}
		t := new([8][256]uint64)
		for k := 0; k < 8; k++ {
			for v := 1; v < 256; v++ {
				var c uint64
				for bit := 0; bit < 8; bit++ {
					if v>>bit&1 == 1 {
						c ^= basis[8*k+bit]
					}
				}
				t[k][v] = c
			}
		}
		r.shift = t
	})
	return r.shift
}

func shiftBy(t *[8][256]uint64, c uint64) uint64 {
	return t[0][c&0xff] ^ t[1][c>>8&0xff] ^ t[2][c>>16&0xff] ^ t[3][c>>24&0xff] ^
		t[4][c>>32&0xff] ^ t[5][c>>40&0xff] ^ t[6][c>>48&0xff] ^ t[7][c>>56]
}

// CRC64 updates a Redis CRC64 with p (start with crc = 0).
func CRC64(crc uint64, p []byte) uint64 {
	if len(p) >= 3*crcLong.n {
		crc, p = crcLong.update(crc, p)
	}
	if len(p) >= 3*crcShort.n {
		crc, p = crcShort.update(crc, p)
	}
	return crc64Slice8(crc, p)
}

// update checksums the runs of p that make whole blocks of three, returning the rest.
func (r *crcRuns) update(crc uint64, p []byte) (uint64, []byte) {
	sh := r.table()
	n := r.n
	for len(p) >= 3*n {
		a, b, c := crc, uint64(0), uint64(0)
		for i := 0; i < n; i += 64 {
			a, b, c = crc3(a, b, c, (*[64]byte)(p[i:]), (*[64]byte)(p[n+i:]), (*[64]byte)(p[2*n+i:]))
		}
		crc = shiftBy(sh, shiftBy(sh, a)^b) ^ c
		p = p[3*n:]
	}
	return crc, p
}

// crc3 feeds 64 bytes to each of three registers.
func crc3(a, b, c uint64, pa, pb, pc *[64]byte) (uint64, uint64, uint64) {
	t := crcTables
	for i := 0; i <= 56; i += 8 {
		a ^= binary.LittleEndian.Uint64(pa[i : i+8])
		b ^= binary.LittleEndian.Uint64(pb[i : i+8])
		c ^= binary.LittleEndian.Uint64(pc[i : i+8])
		a = t[7][a&0xff] ^ t[6][a>>8&0xff] ^ t[5][a>>16&0xff] ^ t[4][a>>24&0xff] ^
			t[3][a>>32&0xff] ^ t[2][a>>40&0xff] ^ t[1][a>>48&0xff] ^ t[0][a>>56]
		b = t[7][b&0xff] ^ t[6][b>>8&0xff] ^ t[5][b>>16&0xff] ^ t[4][b>>24&0xff] ^
			t[3][b>>32&0xff] ^ t[2][b>>40&0xff] ^ t[1][b>>48&0xff] ^ t[0][b>>56]
		c = t[7][c&0xff] ^ t[6][c>>8&0xff] ^ t[5][c>>16&0xff] ^ t[4][c>>24&0xff] ^
			t[3][c>>32&0xff] ^ t[2][c>>40&0xff] ^ t[1][c>>48&0xff] ^ t[0][c>>56]
	}
	return a, b, c
}

// crc64Slice8 is the one-run loop, eight bytes a step.
func crc64Slice8(crc uint64, p []byte) uint64 {
	t := crcTables
	for len(p) >= 8 {
		crc ^= binary.LittleEndian.Uint64(p)
		crc = t[7][crc&0xff] ^ t[6][crc>>8&0xff] ^ t[5][crc>>16&0xff] ^ t[4][crc>>24&0xff] ^
			t[3][crc>>32&0xff] ^ t[2][crc>>40&0xff] ^ t[1][crc>>48&0xff] ^ t[0][crc>>56]
		p = p[8:]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return crc
}
