package rdb

import (
	"encoding/binary"
	"math"
	"strconv"
)

// decoder reads RDB primitives; it is shared by the file Reader and
// DecodeDump.
type decoder struct {
	in      *input
	opts    Options
	version int
	valkey  bool
	scratch []byte // LZF blobs checked by the raw walk (walk.go)
}

func (d *decoder) off() int64 { return d.in.offset() }

// readLen reads an RDB length; encoded reports the 11xxxxxx special form
// (whose low six bits are returned as the value).
func (d *decoder) readLen(what string) (v uint64, encoded bool, err error) {
	off := d.off()
	b, err := d.in.readByte(what)
	if err != nil {
		return 0, false, err
	}
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3f), false, nil
	case 1:
		b2, err := d.in.readByte(what)
		if err != nil {
			return 0, false, err
		}
		return uint64(b&0x3f)<<8 | uint64(b2), false, nil
	case 2:
		switch b {
		case 0x80:
			p, err := d.in.readN(4, what)
			if err != nil {
				return 0, false, err
			}
			return uint64(binary.BigEndian.Uint32(p)), false, nil
		case 0x81:
			p, err := d.in.readN(8, what)
			if err != nil {
				return 0, false, err
			}
			return binary.BigEndian.Uint64(p), false, nil
		}
		return 0, false, errAt(off, ErrCorrupt, "%s: invalid length prefix 0x%02x", what, b)
	}
	return uint64(b & 0x3f), true, nil
}

// readLength reads a plain (non-encoded) length.
func (d *decoder) readLength(what string) (uint64, error) {
	off := d.off()
	v, enc, err := d.readLen(what)
	if err != nil {
		return 0, err
	}
	if enc {
		return 0, errAt(off, ErrCorrupt, "%s: expected a length, found string encoding %d", what, v)
	}
	return v, nil
}

// readSmall reads a length that must fit an int below max.
func (d *decoder) readSmall(what string, max uint64) (int, error) {
	off := d.off()
	v, err := d.readLength(what)
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, errAt(off, ErrCorrupt, "%s: %d exceeds limit %d", what, v, max)
	}
	return int(v), nil
}

func (d *decoder) checkSize(off int64, what string, n uint64) error {
	if n > uint64(d.opts.MaxStringBytes) {
		return errAt(off, ErrLimit, "%s: length %d exceeds MaxStringBytes %d", what, n, d.opts.MaxStringBytes)
	}
	return nil
}

// readEncoded finishes a string whose length prefix was a special encoding.
func (d *decoder) readEncoded(off int64, kind uint64, what string) ([]byte, error) {
	switch kind {
	case 0:
		b, err := d.in.readByte(what)
		if err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int8(b)), 10), nil
	case 1:
		p, err := d.in.readN(2, what)
		if err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int16(binary.LittleEndian.Uint16(p))), 10), nil
	case 2:
		p, err := d.in.readN(4, what)
		if err != nil {
			return nil, err
		}
		return strconv.AppendInt(nil, int64(int32(binary.LittleEndian.Uint32(p))), 10), nil
	case 3:
		clen, ulen, err := d.readLZFLengths(off, what)
		if err != nil {
			return nil, err
		}
		c, err := d.in.readCopy(int64(clen), what)
		if err != nil {
			return nil, err
		}
		out, err := lzfDecompress(c, int(ulen))
		if err != nil {
			return nil, errAt(off, ErrCorrupt, "%s: LZF: %v", what, err)
		}
		return out, nil
	}
	return nil, errAt(off, ErrCorrupt, "%s: unknown string encoding %d", what, kind)
}

// readLZFLengths reads and checks the two lengths of an LZF string starting at off.
func (d *decoder) readLZFLengths(off int64, what string) (clen, ulen uint64, err error) {
	if clen, err = d.readLength(what + " (LZF compressed length)"); err != nil {
		return 0, 0, err
	}
	if ulen, err = d.readLength(what + " (LZF length)"); err != nil {
		return 0, 0, err
	}
	if ulen == 0 || clen == 0 {
		return 0, 0, errAt(off, ErrCorrupt, "%s: LZF lengths %d/%d must be positive", what, clen, ulen)
	}
	if err := d.checkSize(off, what, ulen); err != nil {
		return 0, 0, err
	}
	if err := d.checkSize(off, what+" (LZF compressed)", clen); err != nil {
		return 0, 0, err
	}
	if ulen/lzfMaxRatio > clen {
		return 0, 0, errAt(off, ErrCorrupt, "%s: LZF length %d impossible from %d compressed bytes", what, ulen, clen)
	}
	return clen, ulen, nil
}

// readString reads a whole string (raw, integer or LZF encoded).
func (d *decoder) readString(what string) ([]byte, error) {
	off := d.off()
	n, enc, err := d.readLen(what)
	if err != nil {
		return nil, err
	}
	if enc {
		return d.readEncoded(off, n, what)
	}
	if err := d.checkSize(off, what, n); err != nil {
		return nil, err
	}
	return d.in.readCopy(int64(n), what)
}

// skipString consumes a string without keeping it.
func (d *decoder) skipString(what string) error {
	off := d.off()
	n, enc, err := d.readLen(what)
	if err != nil {
		return err
	}
	if enc {
		switch n {
		case 0, 1, 2:
			_, err := d.in.readN(1<<n, what)
			return err
		case 3:
			clen, err := d.readLength(what)
			if err != nil {
				return err
			}
			if _, err := d.readLength(what); err != nil {
				return err
			}
			n = clen
		default:
			return errAt(off, ErrCorrupt, "%s: unknown string encoding %d", what, n)
		}
	}
	return d.skip(n, what)
}

func (d *decoder) skip(n uint64, what string) error {
	for n > 0 {
		k := uint64(len(d.in.buf))
		if k > n {
			k = n
		}
		if _, err := d.in.readN(int(k), what); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// readBlob reads a string that holds a compact encoding and validates it.
func (d *decoder) readBlob(kind blobKind, group int, what string) (blobIter, int, error) {
	off := d.off()
	b, err := d.readString(what)
	if err != nil {
		return nil, 0, err
	}
	n, err := validateBlob(kind, b, off, group)
	if err != nil {
		return nil, 0, err
	}
	it, _, err := newBlobIter(kind, b, off)
	return it, n, err
}

func (d *decoder) readUint64LE(what string) (uint64, error) {
	p, err := d.in.readN(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

func (d *decoder) readMillis(what string) (int64, error) {
	v, err := d.readUint64LE(what)
	return int64(v), err
}

func (d *decoder) readBinaryDouble(what string) (float64, error) {
	v, err := d.readUint64LE(what)
	return math.Float64frombits(v), err
}

// readTextDouble reads the ZSET (type 3) score format: a length byte with
// 253/254/255 meaning NaN/+inf/-inf, else that many ASCII bytes.
func (d *decoder) readTextDouble(what string) (float64, error) {
	off := d.off()
	n, err := d.in.readByte(what)
	if err != nil {
		return 0, err
	}
	switch n {
	case 253:
		return math.NaN(), nil
	case 254:
		return math.Inf(1), nil
	case 255:
		return math.Inf(-1), nil
	}
	p, err := d.in.readN(int(n), what)
	if err != nil {
		return 0, err
	}
	f, ok := parseScore(p)
	if !ok {
		return 0, errAt(off, ErrCorrupt, "%s: invalid double %q", what, p)
	}
	return f, nil
}

func parseScore(b []byte) (float64, bool) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		// Out-of-range values parse to +-Inf with ErrRange, like strtod.
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, true
		}
		return 0, false
	}
	return f, true
}

// readRawID reads a 128-bit big-endian stream ID (as stored in PELs).
func (d *decoder) readRawID(what string) (StreamID, error) {
	p, err := d.in.readN(16, what)
	if err != nil {
		return StreamID{}, err
	}
	return StreamID{binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])}, nil
}

func (d *decoder) readLenID(what string) (StreamID, error) {
	ms, err := d.readLength(what)
	if err != nil {
		return StreamID{}, err
	}
	seq, err := d.readLength(what)
	return StreamID{ms, seq}, err
}

// Module opcodes.
const (
	modOpEOF    = 0
	modOpSInt   = 1
	modOpUInt   = 2
	modOpFloat  = 3
	modOpDouble = 4
	modOpString = 5
)

// skipModuleOps walks a module-opcode stream up to and including EOF. The
// caller captures the consumed bytes when it needs them.
func (d *decoder) skipModuleOps(what string) error {
	for {
		off := d.off()
		op, err := d.readLength(what + " opcode")
		if err != nil {
			return err
		}
		switch op {
		case modOpEOF:
			return nil
		case modOpSInt, modOpUInt:
			if _, err := d.readLength(what + " integer"); err != nil {
				return err
			}
		case modOpFloat:
			if _, err := d.in.readN(4, what+" float"); err != nil {
				return err
			}
		case modOpDouble:
			if _, err := d.in.readN(8, what+" double"); err != nil {
				return err
			}
		case modOpString:
			if err := d.skipString(what + " string"); err != nil {
				return err
			}
		default:
			return errAt(off, ErrCorrupt, "%s: unknown module opcode %d", what, op)
		}
	}
}

const moduleCharset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// ModuleName decodes the 9-character module type name from a module id.
func ModuleName(id uint64) string {
	var name [9]byte
	n := id >> 10
	for i := 8; i >= 0; i-- {
		name[i] = moduleCharset[n&63]
		n >>= 6
	}
	return string(name[:])
}

// ModuleEncVer is the encoding version carried in a module id.
func ModuleEncVer(id uint64) int { return int(id & 1023) }
