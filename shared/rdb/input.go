package rdb

import (
	"errors"
	"io"
	"strconv"
)

// input is a buffered byte source that tracks the absolute offset, feeds
// consumed bytes to the CRC64 and optionally captures them (for Entry.Raw).
// Consumed bytes are "observed" by the capture lazily in bulk, and fed to the
// CRC only before the buffer moves (a buffer's worth at a time), which keeps
// the per-byte path cheap.
type input struct {
	src  io.Reader
	buf  []byte
	size int // the buffer's normal size (rewind may grow it for a while)
	r, w int
	// buf[obs:r] is consumed but not yet observed. obs > r only after rewind: the bytes up to
	// obs are being read a second time and were observed the first time.
	obs  int
	base int64 // absolute offset of buf[0]
	err  error // sticky source error

	crcOn bool
	crc   uint64
	crcAt int64 // absolute offset up to which crc is computed

	capOn    bool
	capOver  bool
	capLimit int
	capBuf   []byte
	// capHead: capBuf starts with capType, a value's type byte read before the capture, so the
	// captured value is a DUMP payload body with room left for the trailer (Entry.Dump).
	capHead bool
	capType byte
	// slab: small captures are cut from it one after another instead of each being allocated
	// (a reader captures every value of an import, twice); it is left to the collector once
	// full, and lives on while a value cut from it does.
	slab []byte

	// borrowed: buf is the caller's memory, holding the whole input; it is never written.
	// alias: readCopy returns parts of it instead of copies.
	borrowed, alias bool
}

const defaultBufSize = 64 << 10

func newInput(src io.Reader, off int64, size int) *input {
	if size <= 0 {
		size = defaultBufSize
	}
	return &input{src: src, buf: make([]byte, size), size: size, base: off, crcAt: off}
}

// newInputBytes reads b in place, without copying it into a buffer; with alias, strings read
// from it are parts of b (which must then stay unchanged as long as they are used).
func newInputBytes(b []byte, alias bool) *input {
	return &input{buf: b, size: len(b), w: len(b), err: io.EOF, borrowed: true, alias: alias}
}

func (in *input) offset() int64 { return in.base + int64(in.r) }

// checksum feeds every consumed byte not yet in the CRC to it. Offsets, not buffer positions,
// say which: a byte read again after rewind is fed once.
func (in *input) checksum() {
	end := in.base + int64(in.r)
	if !in.crcOn || in.crcAt >= end {
		return
	}
	in.crc = CRC64(in.crc, in.buf[in.crcAt-in.base:in.r])
	in.crcAt = end
}

// observe feeds consumed-but-unobserved bytes to the capture.
func (in *input) observe() {
	if in.obs >= in.r {
		return
	}
	b := in.buf[in.obs:in.r]
	in.obs = in.r
	if in.capOn && !in.capOver {
		if len(in.capBuf)-in.head()+len(b) > in.capLimit {
			in.capOver = true
			in.capBuf = nil
		} else {
			in.capAppend(b)
		}
	}
}

func (in *input) head() int {
	if in.capHead && in.capBuf != nil {
		return 1
	}
	return 0
}

// capAppend adds b to the capture, leaving room for a DUMP trailer.
func (in *input) capAppend(b []byte) {
	if in.capBuf == nil && in.capHead {
		in.capBuf = append(in.cut(1+len(b)+dumpTrailer), in.capType)
	}
	if need := len(in.capBuf) + len(b); need > cap(in.capBuf) {
		in.capBuf = append(in.cut(max(need+dumpTrailer, 2*cap(in.capBuf))), in.capBuf...)
	}
	in.capBuf = append(in.capBuf, b...)
}

// cut returns an empty slice with capacity n, from the slab when n is small. Its capacity is
// exact, so appending past it moves it rather than writing over the next capture.
func (in *input) cut(n int) []byte {
	if n > maxSlabCut {
		return make([]byte, 0, n)
	}
	if n > cap(in.slab) {
		in.slab = make([]byte, 0, slabSize)
	}
	b := in.slab[:0:n]
	in.slab = in.slab[n:n]
	return b
}

const (
	slabSize   = 256 << 10
	maxSlabCut = 8 << 10
	// dumpTrailer is the size of a DUMP payload's trailer: RDB version and CRC64.
	dumpTrailer = 10
)

func (in *input) startCapture(limit int) {
	in.observe()
	in.capOn, in.capOver, in.capLimit, in.capBuf, in.capHead = true, false, limit, nil, false
}

// startValueCapture captures a value whose type byte t was just read.
func (in *input) startValueCapture(limit int, t byte) {
	in.startCapture(limit)
	in.capHead, in.capType = true, t
}

// stopCapture ends capturing and returns the captured bytes, or nil if the
// capture overflowed its limit.
func (in *input) stopCapture() []byte {
	b, _ := in.stopValueCapture()
	return b
}

// stopValueCapture is stopCapture that also returns, for a value capture, the type byte and
// the value in one slice with spare capacity for the trailer; raw is that slice after the type
// byte, capped so that appending to it cannot reach the spare room.
func (in *input) stopValueCapture() (raw, body []byte) {
	in.observe()
	in.capOn = false
	b := in.capBuf
	head := in.head()
	in.capBuf, in.capHead = nil, false
	if in.capOver {
		return nil, nil
	}
	if b == nil {
		return []byte{}, nil
	}
	if head == 0 {
		return b, nil
	}
	return b[1:len(b):len(b)], b
}

// fill makes at least n (<= len(buf)) bytes available.
func (in *input) fill(n int, what string) error {
	zeroReads := 0
	for in.w-in.r < n {
		if in.err != nil {
			return in.eofError(n, what)
		}
		if in.r > 0 {
			in.checksum()
			in.observe() // leaves obs >= r
			dst := in.buf
			if len(dst) > in.size && in.w-in.r <= in.size/2 && n <= in.size {
				dst = make([]byte, in.size) // back to the normal size after a rewind grew it
			}
			copy(dst, in.buf[in.r:in.w])
			in.buf = dst
			in.base += int64(in.r)
			in.w -= in.r
			in.obs -= in.r
			in.r = 0
		}
		k, err := in.src.Read(in.buf[in.w:])
		in.w += k
		if err != nil {
			in.err = err
		}
		if k == 0 && err == nil {
			// A reader returning (0, nil) forever must not hang us.
			if zeroReads++; zeroReads > 100 {
				in.err = io.ErrNoProgress
			}
		}
	}
	return nil
}

func (in *input) eofError(n int, what string) error {
	if errors.Is(in.err, io.EOF) {
		return &Error{Offset: in.offset(), Msg: "unexpected end of input reading " + what +
			" (need " + itoa(int64(n)) + " bytes, have " + itoa(int64(in.w-in.r)) + ")", Err: io.ErrUnexpectedEOF}
	}
	return &Error{Offset: in.offset(), Msg: "reading " + what + ": " + in.err.Error(), Err: in.err}
}

func (in *input) readByte(what string) (byte, error) {
	if in.r < in.w {
		b := in.buf[in.r]
		in.r++
		return b, nil
	}
	if err := in.fill(1, what); err != nil {
		return 0, err
	}
	b := in.buf[in.r]
	in.r++
	return b, nil
}

// readN returns n (<= 64) bytes that stay valid only until the next read.
func (in *input) readN(n int, what string) ([]byte, error) {
	if in.w-in.r < n {
		if err := in.fill(n, what); err != nil {
			return nil, err
		}
	}
	b := in.buf[in.r : in.r+n]
	in.r += n
	return b, nil
}

// readCopy returns n bytes in a fresh slice. Memory grows with the data
// actually read, so a bogus huge length in a short input cannot trigger a
// huge allocation.
func (in *input) readCopy(n int64, what string) ([]byte, error) {
	if n < 0 {
		return nil, &Error{Offset: in.offset(), Msg: what + ": negative length", Err: ErrCorrupt}
	}
	if n <= int64(in.w-in.r) && in.alias {
		out := in.buf[in.r : in.r+int(n) : in.r+int(n)]
		in.r += int(n)
		return out, nil
	}
	if n <= int64(in.w-in.r) {
		out := make([]byte, n)
		copy(out, in.buf[in.r:])
		in.r += int(n)
		return out, nil
	}
	initial := n
	if initial > 1<<20 {
		initial = 1 << 20
	}
	out := make([]byte, 0, initial)
	for int64(len(out)) < n {
		if in.r == in.w {
			if err := in.fill(1, what); err != nil {
				return nil, err
			}
		}
		k := int64(in.w - in.r)
		if rem := n - int64(len(out)); k > rem {
			k = rem
		}
		out = append(out, in.buf[in.r:in.r+int(k)]...)
		in.r += int(k)
	}
	return out, nil
}

// discard consumes n bytes as readCopy would (the same errors at the same offsets), without
// keeping them.
func (in *input) discard(n int64, what string) error {
	if n < 0 {
		return &Error{Offset: in.offset(), Msg: what + ": negative length", Err: ErrCorrupt}
	}
	for n > 0 {
		if in.r == in.w {
			if err := in.fill(1, what); err != nil {
				return err
			}
		}
		k := int64(in.w - in.r)
		if k > n {
			k = n
		}
		in.r += int(k)
		n -= k
	}
	return nil
}

// view consumes n bytes and returns them without a copy (valid until the next read) when they
// are already buffered; otherwise it reads them like readCopy.
func (in *input) view(n int64, what string) ([]byte, error) {
	if n >= 0 && n <= int64(in.w-in.r) {
		b := in.buf[in.r : in.r+int(n)]
		in.r += int(n)
		return b, nil
	}
	return in.readCopy(n, what)
}

// rewind moves the read position back to where the running capture started: the captured bytes
// are read again before the rest of the input (they were fed to the CRC the first time and are
// not fed again) and the capture keeps them, now with the given limit. It reports false when
// the capture overflowed and the bytes are gone.
func (in *input) rewind(limit int) bool {
	in.checksum() // the bytes before the capture leave the buffer
	in.observe()
	if !in.capOn || in.capOver {
		return false
	}
	c := in.capBuf[in.head():]
	unread := in.w - in.r
	n := len(c) + unread
	buf := in.buf
	if n > len(buf) || in.borrowed {
		buf = make([]byte, n)
	}
	copy(buf[len(c):], in.buf[in.r:in.w]) // may overlap: copy moves
	copy(buf, c)
	in.buf = buf
	in.base += int64(in.r) - int64(len(c))
	in.r, in.w, in.obs = 0, n, len(c) // offsets below crcAt are not fed to the CRC again
	in.capLimit = limit
	if len(c) > limit {
		in.capOver, in.capBuf = true, nil
	}
	return true
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
