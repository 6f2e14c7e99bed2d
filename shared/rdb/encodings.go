package rdb

import (
	"encoding/binary"
	"strconv"
)

// elem is one element of a compact encoding: a string or an integer.
type elem struct {
	s     []byte
	i     int64
	isInt bool
}

func (e elem) bytes() []byte {
	if e.isInt {
		return strconv.AppendInt(nil, e.i, 10)
	}
	return e.s
}

// blen is len(e.bytes()) without building the bytes.
func (e elem) blen() int {
	if e.isInt {
		return decLen(e.i)
	}
	return len(e.s)
}

func (e elem) size() int {
	if e.isInt {
		return 8
	}
	return len(e.s)
}

func (e elem) int64() (int64, bool) {
	if e.isInt {
		return e.i, true
	}
	v, err := strconv.ParseInt(string(e.s), 10, 64)
	return v, err == nil
}

func (e elem) float() (float64, bool) {
	if e.isInt {
		return float64(e.i), true
	}
	return parseScore(e.s)
}

// blobIter walks a compact encoding. Implementations check every bound, so
// a corrupt blob yields an error, never a panic.
type blobIter interface {
	next() (elem, bool, error)
	more() bool
}

type blobKind int

const (
	blobZiplist blobKind = iota
	blobListpack
	blobIntset
	blobZipmap
)

var blobNames = [...]string{"ziplist", "listpack", "intset", "zipmap"}

func newBlobIter(kind blobKind, b []byte, off int64) (blobIter, int, error) {
	switch kind {
	case blobZiplist:
		return newZiplist(b, off)
	case blobListpack:
		return newListpack(b, off)
	case blobIntset:
		return newIntset(b, off)
	default:
		return newZipmap(b, off)
	}
}

func blobErr(off int64, kind string, pos int, format string, args ...any) error {
	return errAt(off, ErrCorrupt, kind+" entry at byte "+strconv.Itoa(pos)+": "+format, args...)
}

// ---- ziplist ----

type ziplist struct {
	b       []byte
	off     int64
	p       int
	prevLen int
	n       int
}

func newZiplist(b []byte, off int64) (*ziplist, int, error) {
	if len(b) < 11 {
		return nil, 0, errAt(off, ErrCorrupt, "ziplist too short: %d bytes", len(b))
	}
	total := binary.LittleEndian.Uint32(b)
	if uint64(total) != uint64(len(b)) {
		return nil, 0, errAt(off, ErrCorrupt, "ziplist header says %d bytes, blob has %d", total, len(b))
	}
	if b[len(b)-1] != 0xff {
		return nil, 0, errAt(off, ErrCorrupt, "ziplist not terminated by 0xff")
	}
	tail := binary.LittleEndian.Uint32(b[4:])
	if uint64(tail) >= uint64(len(b)) || tail < 10 {
		return nil, 0, errAt(off, ErrCorrupt, "ziplist tail offset %d outside %d bytes", tail, len(b))
	}
	count := int(binary.LittleEndian.Uint16(b[8:]))
	return &ziplist{b: b, off: off, p: 10}, count, nil
}

func (z *ziplist) more() bool { return z.p < len(z.b) && z.b[z.p] != 0xff }

func (z *ziplist) next() (elem, bool, error) {
	b := z.b
	p := z.p
	end := len(b) - 1 // index of the terminator
	if p >= end || b[p] == 0xff {
		if p != end {
			return elem{}, false, blobErr(z.off, "ziplist", p, "terminator before end of blob")
		}
		return elem{}, false, nil
	}
	start := p
	prev := int(b[p])
	p++
	if prev == 0xfe {
		if p+4 > end {
			return elem{}, false, blobErr(z.off, "ziplist", start, "prevlen exceeds remaining %d bytes", end-p)
		}
		prev = int(binary.LittleEndian.Uint32(b[p:]))
		p += 4
	}
	if prev != z.prevLen {
		return elem{}, false, blobErr(z.off, "ziplist", start, "prevlen %d, previous entry is %d bytes", prev, z.prevLen)
	}
	if p >= end {
		return elem{}, false, blobErr(z.off, "ziplist", start, "missing encoding byte")
	}
	enc := b[p]
	p++
	var e elem
	var dlen int
	switch enc >> 6 {
	case 0:
		dlen = int(enc & 0x3f)
	case 1:
		if p >= end {
			return elem{}, false, blobErr(z.off, "ziplist", start, "truncated 14-bit length")
		}
		dlen = int(enc&0x3f)<<8 | int(b[p])
		p++
	case 2:
		if enc != 0x80 {
			return elem{}, false, blobErr(z.off, "ziplist", start, "invalid encoding 0x%02x", enc)
		}
		if p+4 > end {
			return elem{}, false, blobErr(z.off, "ziplist", start, "truncated 32-bit length")
		}
		l := binary.BigEndian.Uint32(b[p:])
		p += 4
		if uint64(l) > uint64(end-p) {
			return elem{}, false, blobErr(z.off, "ziplist", start, "length %d exceeds remaining %d bytes", l, end-p)
		}
		dlen = int(l)
	default:
		e.isInt = true
		switch {
		case enc == 0xc0:
			dlen = 2
		case enc == 0xd0:
			dlen = 4
		case enc == 0xe0:
			dlen = 8
		case enc == 0xf0:
			dlen = 3
		case enc == 0xfe:
			dlen = 1
		case enc >= 0xf1 && enc <= 0xfd:
			e.i = int64(enc&0x0f) - 1
		default:
			return elem{}, false, blobErr(z.off, "ziplist", start, "invalid encoding 0x%02x", enc)
		}
	}
	if dlen > end-p {
		return elem{}, false, blobErr(z.off, "ziplist", start, "length %d exceeds remaining %d bytes", dlen, end-p)
	}
	d := b[p : p+dlen]
	if e.isInt {
		switch dlen {
		case 1:
			e.i = int64(int8(d[0]))
		case 2:
			e.i = int64(int16(binary.LittleEndian.Uint16(d)))
		case 3:
			e.i = int64(int32(uint32(d[0])<<8|uint32(d[1])<<16|uint32(d[2])<<24) >> 8)
		case 4:
			e.i = int64(int32(binary.LittleEndian.Uint32(d)))
		case 8:
			e.i = int64(binary.LittleEndian.Uint64(d))
		}
	} else {
		e.s = d
	}
	p += dlen
	z.prevLen = p - start
	z.p = p
	z.n++
	return e, true, nil
}

// ---- listpack ----

type listpack struct {
	b   []byte
	off int64
	p   int
	n   int
}

func newListpack(b []byte, off int64) (*listpack, int, error) {
	if len(b) < 7 {
		return nil, 0, errAt(off, ErrCorrupt, "listpack too short: %d bytes", len(b))
	}
	total := binary.LittleEndian.Uint32(b)
	if uint64(total) != uint64(len(b)) {
		return nil, 0, errAt(off, ErrCorrupt, "listpack header says %d bytes, blob has %d", total, len(b))
	}
	if b[len(b)-1] != 0xff {
		return nil, 0, errAt(off, ErrCorrupt, "listpack not terminated by 0xff")
	}
	count := int(binary.LittleEndian.Uint16(b[4:]))
	return &listpack{b: b, off: off, p: 6}, count, nil
}

func (l *listpack) more() bool { return l.p < len(l.b) && l.b[l.p] != 0xff }

func backlenSize(n int) int {
	switch {
	case n <= 127:
		return 1
	case n < 16383:
		return 2
	case n < 2097151:
		return 3
	case n < 268435455:
		return 4
	}
	return 5
}

// appendBacklen appends the reverse-readable length of an entry.
func appendBacklen(dst []byte, n int) []byte {
	size := backlenSize(n)
	for i := size - 1; i >= 0; i-- {
		v := byte(n >> (7 * uint(i)) & 127)
		if i != size-1 {
			v |= 128
		}
		dst = append(dst, v)
	}
	return dst
}

func (l *listpack) next() (elem, bool, error) {
	b := l.b
	p := l.p
	end := len(b) - 1
	if p >= end || b[p] == 0xff {
		if p != end {
			return elem{}, false, blobErr(l.off, "listpack", p, "terminator before end of blob")
		}
		return elem{}, false, nil
	}
	start := p
	enc := b[p]
	var e elem
	hdr, dlen := 1, 0
	switch {
	case enc&0x80 == 0:
		e.isInt, e.i = true, int64(enc&0x7f)
	case enc&0xc0 == 0x80:
		dlen = int(enc & 0x3f)
	case enc&0xe0 == 0xc0:
		if p+1 >= end {
			return elem{}, false, blobErr(l.off, "listpack", start, "truncated 13-bit integer")
		}
		v := int64(enc&0x1f)<<8 | int64(b[p+1])
		if v >= 1<<12 {
			v -= 1 << 13
		}
		e.isInt, e.i, hdr = true, v, 2
	case enc&0xf0 == 0xe0:
		if p+1 >= end {
			return elem{}, false, blobErr(l.off, "listpack", start, "truncated 12-bit length")
		}
		dlen, hdr = int(enc&0x0f)<<8|int(b[p+1]), 2
	case enc == 0xf0:
		if p+5 > end {
			return elem{}, false, blobErr(l.off, "listpack", start, "truncated 32-bit length")
		}
		n := binary.LittleEndian.Uint32(b[p+1:])
		if uint64(n) > uint64(end-p-5) {
			return elem{}, false, blobErr(l.off, "listpack", start, "length %d exceeds remaining %d bytes", n, end-p-5)
		}
		dlen, hdr = int(n), 5
	case enc >= 0xf1 && enc <= 0xf4:
		e.isInt = true
		dlen = [...]int{2, 3, 4, 8}[enc-0xf1]
	default:
		return elem{}, false, blobErr(l.off, "listpack", start, "invalid encoding 0x%02x", enc)
	}
	if dlen > end-p-hdr {
		return elem{}, false, blobErr(l.off, "listpack", start, "length %d exceeds remaining %d bytes", dlen, end-p-hdr)
	}
	d := b[p+hdr : p+hdr+dlen]
	if e.isInt && dlen > 0 {
		switch dlen {
		case 2:
			e.i = int64(int16(binary.LittleEndian.Uint16(d)))
		case 3:
			e.i = int64(int32(uint32(d[0])<<8|uint32(d[1])<<16|uint32(d[2])<<24) >> 8)
		case 4:
			e.i = int64(int32(binary.LittleEndian.Uint32(d)))
		case 8:
			e.i = int64(binary.LittleEndian.Uint64(d))
		}
	} else if !e.isInt {
		e.s = d
	}
	elen := hdr + dlen
	bl := backlenSize(elen)
	if bl > end-p-elen {
		return elem{}, false, blobErr(l.off, "listpack", start, "backlen of %d bytes exceeds remaining %d bytes", bl, end-p-elen)
	}
	var want [5]byte
	if string(appendBacklen(want[:0], elen)) != string(b[p+elen:p+elen+bl]) {
		return elem{}, false, blobErr(l.off, "listpack", start, "backlen does not match entry length %d", elen)
	}
	l.p = p + elen + bl
	l.n++
	return e, true, nil
}

// ---- intset ----

type intset struct {
	b   []byte
	enc int
	i   int
	n   int
	off int64
}

func newIntset(b []byte, off int64) (*intset, int, error) {
	if len(b) < 8 {
		return nil, 0, errAt(off, ErrCorrupt, "intset too short: %d bytes", len(b))
	}
	enc := binary.LittleEndian.Uint32(b)
	if enc != 2 && enc != 4 && enc != 8 {
		return nil, 0, errAt(off, ErrCorrupt, "intset encoding %d is not 2, 4 or 8", enc)
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if uint64(len(b)-8) != uint64(n)*uint64(enc) {
		return nil, 0, errAt(off, ErrCorrupt, "intset of %d x %d-byte integers does not fit %d bytes", n, enc, len(b)-8)
	}
	return &intset{b: b, enc: int(enc), n: int(n), off: off}, int(n), nil
}

func (s *intset) more() bool { return s.i < s.n }

func (s *intset) get(i int) int64 {
	d := s.b[8+i*s.enc:]
	switch s.enc {
	case 2:
		return int64(int16(binary.LittleEndian.Uint16(d)))
	case 4:
		return int64(int32(binary.LittleEndian.Uint32(d)))
	}
	return int64(binary.LittleEndian.Uint64(d))
}

func (s *intset) next() (elem, bool, error) {
	if s.i >= s.n {
		return elem{}, false, nil
	}
	v := s.get(s.i)
	// Redis keeps intsets sorted and unique; anything else is corruption.
	if s.i > 0 && s.get(s.i-1) >= v {
		return elem{}, false, errAt(s.off, ErrCorrupt, "intset element %d is not ascending", s.i)
	}
	s.i++
	return elem{i: v, isInt: true}, true, nil
}

// ---- zipmap ----

type zipmap struct {
	b   []byte
	off int64
	p   int
	val bool // next element is a value
	n   int
}

func newZipmap(b []byte, off int64) (*zipmap, int, error) {
	if len(b) < 2 {
		return nil, 0, errAt(off, ErrCorrupt, "zipmap too short: %d bytes", len(b))
	}
	if b[len(b)-1] != 0xff {
		return nil, 0, errAt(off, ErrCorrupt, "zipmap not terminated by 0xff")
	}
	count := -1 // unknown when the header byte is >= 254
	if b[0] < 254 {
		count = int(b[0]) * 2
	}
	return &zipmap{b: b, off: off, p: 1}, count, nil
}

func (z *zipmap) more() bool { return z.p < len(z.b) && z.b[z.p] != 0xff }

func (z *zipmap) next() (elem, bool, error) {
	b := z.b
	end := len(b) - 1
	p := z.p
	if p >= end || b[p] == 0xff {
		if p != end {
			return elem{}, false, blobErr(z.off, "zipmap", p, "terminator before end of blob")
		}
		if z.val {
			return elem{}, false, blobErr(z.off, "zipmap", p, "key without value")
		}
		return elem{}, false, nil
	}
	start := p
	n := int(b[p])
	p++
	if n == 254 {
		if p+4 > end {
			return elem{}, false, blobErr(z.off, "zipmap", start, "truncated 32-bit length")
		}
		l := binary.LittleEndian.Uint32(b[p:])
		p += 4
		if uint64(l) > uint64(end-p) {
			return elem{}, false, blobErr(z.off, "zipmap", start, "length %d exceeds remaining %d bytes", l, end-p)
		}
		n = int(l)
	}
	free := 0
	if z.val {
		if p >= end {
			return elem{}, false, blobErr(z.off, "zipmap", start, "missing free byte")
		}
		free = int(b[p])
		p++
	}
	if n+free > end-p {
		return elem{}, false, blobErr(z.off, "zipmap", start, "length %d exceeds remaining %d bytes", n+free, end-p)
	}
	e := elem{s: b[p : p+n]}
	z.p = p + n + free
	z.val = !z.val
	z.n++
	return e, true, nil
}

// validateBlob walks a blob once so corruption is reported before any part
// of the value is delivered; it returns the element count.
func validateBlob(kind blobKind, b []byte, off int64, group int) (int, error) {
	it, declared, err := newBlobIter(kind, b, off)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		_, ok, err := it.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		n++
	}
	return n, blobDone(kind, b, off, group, it, declared, n)
}

// blobDone makes the checks of a blob that need all of its n entries walked by it.
func blobDone(kind blobKind, b []byte, off int64, group int, it blobIter, declared, n int) error {
	name := blobNames[kind]
	if kind == blobZiplist {
		z := it.(*ziplist)
		// The tail offset must point at the last entry.
		last := 10
		if n > 0 {
			last = z.p - z.prevLen
		}
		if int(binary.LittleEndian.Uint32(b[4:])) != last {
			return errAt(off, ErrCorrupt, "ziplist tail offset %d, last entry at %d", binary.LittleEndian.Uint32(b[4:]), last)
		}
	}
	if declared >= 0 && declared != n && !(declared == 0xffff && (kind == blobZiplist || kind == blobListpack)) {
		return errAt(off, ErrCorrupt, "%s header count %d, found %d entries", name, declared, n)
	}
	if group > 1 && n%group != 0 {
		return errAt(off, ErrCorrupt, "%s has %d entries, not a multiple of %d", name, n, group)
	}
	return nil
}
