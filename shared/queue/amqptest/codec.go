package amqptest

// The AMQP 1.0 type system, reduced to what the performatives exchanged with the azservicebus
// sender need. Messages themselves are (un)marshalled by go-amqp's exported Message type; only
// the frame bodies are handled here, because go-amqp keeps its frame codec internal.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// symbol is the AMQP symbol type (an ASCII name), distinct from string on the wire.
type symbol string

// described is a described type: a descriptor code and the value it describes.
type described struct {
	code  uint64
	value any
}

// list is an AMQP list. raw keeps each item's original encoding so a terminus (source/target)
// can be echoed back byte for byte, with its exact integer widths.
type list struct {
	items []any
	raw   [][]byte
}

// amqpMap is an AMQP map as alternating keys and values, in wire order.
type amqpMap []any

// symbols encodes as an array of symbols (sasl-server-mechanisms).
type symbols []symbol

// rawValue is an already-encoded value, written out unchanged.
type rawValue []byte

var errShort = errors.New("amqp: truncated value")

// decoder reads AMQP values from a byte slice.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) need(n int) ([]byte, error) {
	if n < 0 || d.off+n > len(d.b) {
		return nil, errShort
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) byte() (byte, error) {
	p, err := d.need(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// value decodes one value, constructor included.
func (d *decoder) value() (any, error) {
	code, err := d.byte()
	if err != nil {
		return nil, err
	}
	if code == 0x00 {
		desc, err := d.value()
		if err != nil {
			return nil, err
		}
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		c, _ := desc.(uint64) // symbolic descriptors are not used by the performatives we read
		return described{code: c, value: v}, nil
	}
	return d.body(code)
}

// body decodes the value that follows constructor code.
func (d *decoder) body(code byte) (any, error) {
	fixed := func(n int) ([]byte, error) { return d.need(n) }
	switch code {
	case 0x40:
		return nil, nil
	case 0x41:
		return true, nil
	case 0x42:
		return false, nil
	case 0x43, 0x44:
		return uint64(0), nil
	case 0x45:
		return list{}, nil
	case 0x56:
		p, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return p[0] != 0, nil
	case 0x50, 0x52, 0x53:
		p, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return uint64(p[0]), nil
	case 0x51, 0x54, 0x55:
		p, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return int64(int8(p[0])), nil
	case 0x60:
		p, err := fixed(2)
		if err != nil {
			return nil, err
		}
		return uint64(binary.BigEndian.Uint16(p)), nil
	case 0x61:
		p, err := fixed(2)
		if err != nil {
			return nil, err
		}
		return int64(int16(binary.BigEndian.Uint16(p))), nil
	case 0x70:
		p, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return uint64(binary.BigEndian.Uint32(p)), nil
	case 0x71:
		p, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return int64(int32(binary.BigEndian.Uint32(p))), nil
	case 0x72:
		p, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return float64(math.Float32frombits(binary.BigEndian.Uint32(p))), nil
	case 0x73, 0x74:
		return fixed(4)
	case 0x80:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.Uint64(p), nil
	case 0x81, 0x83:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return int64(binary.BigEndian.Uint64(p)), nil
	case 0x82:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	case 0x84:
		return fixed(8)
	case 0x94, 0x98:
		return fixed(16)
	case 0xa0, 0xa1, 0xa3, 0xb0, 0xb1, 0xb3:
		var n int
		if code&0xf0 == 0xa0 {
			b, err := d.byte()
			if err != nil {
				return nil, err
			}
			n = int(b)
		} else {
			p, err := fixed(4)
			if err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint32(p))
		}
		p, err := d.need(n)
		if err != nil {
			return nil, err
		}
		switch code & 0x0f {
		case 0x01:
			return string(p), nil
		case 0x03:
			return symbol(p), nil
		}
		return append([]byte(nil), p...), nil
	case 0xc0, 0xc1, 0xd0, 0xd1:
		count, end, err := d.compound(code&0xf0 == 0xc0)
		if err != nil {
			return nil, err
		}
		var l list
		for i := 0; i < count; i++ {
			start := d.off
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			l.items = append(l.items, v)
			l.raw = append(l.raw, d.b[start:d.off])
		}
		if d.off != end {
			return nil, fmt.Errorf("amqp: compound size mismatch")
		}
		if code&0x0f == 0x01 {
			return amqpMap(l.items), nil
		}
		return l, nil
	case 0xe0, 0xf0:
		count, end, err := d.compound(code == 0xe0)
		if err != nil {
			return nil, err
		}
		elem, err := d.byte()
		if err != nil {
			return nil, err
		}
		var descCode uint64
		if elem == 0x00 {
			desc, err := d.value()
			if err != nil {
				return nil, err
			}
			descCode, _ = desc.(uint64)
			if elem, err = d.byte(); err != nil {
				return nil, err
			}
		}
		items := make([]any, 0, count)
		for i := 0; i < count; i++ {
			v, err := d.body(elem)
			if err != nil {
				return nil, err
			}
			if descCode != 0 {
				v = described{code: descCode, value: v}
			}
			items = append(items, v)
		}
		if d.off != end {
			return nil, fmt.Errorf("amqp: array size mismatch")
		}
		return items, nil
	}
	return nil, fmt.Errorf("amqp: unsupported type code %#x", code)
}

// compound reads the size and count of a list, map or array; small selects the 1-byte forms.
func (d *decoder) compound(small bool) (count, end int, err error) {
	var size int
	if small {
		p, err := d.need(2)
		if err != nil {
			return 0, 0, err
		}
		size, count = int(p[0]), int(p[1])
		end = d.off + size - 1
	} else {
		p, err := d.need(8)
		if err != nil {
			return 0, 0, err
		}
		size, count = int(binary.BigEndian.Uint32(p)), int(binary.BigEndian.Uint32(p[4:]))
		end = d.off + size - 4
	}
	if end > len(d.b) || end < d.off {
		return 0, 0, errShort
	}
	return count, end, nil
}

// encode appends the encoding of v. Integer widths follow the Go type, so callers pick the
// AMQP type the spec asks for (uint32 for handles, uint8 for settle modes, ...).
func encode(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, 0x40)
	case bool:
		if v {
			return append(b, 0x41)
		}
		return append(b, 0x42)
	case uint8:
		return append(b, 0x50, v)
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, 0x60), v)
	case uint32:
		return binary.BigEndian.AppendUint32(append(b, 0x70), v)
	case uint64:
		return binary.BigEndian.AppendUint64(append(b, 0x80), v)
	case int32:
		return binary.BigEndian.AppendUint32(append(b, 0x71), uint32(v))
	case string:
		return variable(b, 0xb1, []byte(v))
	case symbol:
		return variable(b, 0xb3, []byte(v))
	case []byte:
		return variable(b, 0xb0, v)
	case rawValue:
		return append(b, v...)
	case described:
		// Descriptors are written as smallulong: go-amqp insists on it for frame bodies.
		if v.code < 256 {
			b = append(b, 0x00, 0x53, byte(v.code))
		} else {
			b = encode(append(b, 0x00), v.code)
		}
		return encode(b, v.value)
	case list:
		return compound(b, 0xd0, v.items)
	case []any:
		return compound(b, 0xd0, v)
	case amqpMap:
		return compound(b, 0xd1, v)
	case symbols:
		body := binary.BigEndian.AppendUint32(nil, uint32(len(v)))
		body = append(body, 0xb3)
		for _, s := range v {
			body = binary.BigEndian.AppendUint32(body, uint32(len(s)))
			body = append(body, s...)
		}
		b = binary.BigEndian.AppendUint32(append(b, 0xf0), uint32(len(body)))
		return append(b, body...)
	}
	panic(fmt.Sprintf("amqptest: cannot encode %T", v))
}

// variable writes a 32-bit-length binary, string or symbol.
func variable(b []byte, code byte, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(append(b, code), uint32(len(p)))
	return append(b, p...)
}

// compound writes a list32 or map32.
func compound(b []byte, code byte, items []any) []byte {
	var body []byte
	body = binary.BigEndian.AppendUint32(body, uint32(len(items)))
	for _, it := range items {
		body = encode(body, it)
	}
	b = binary.BigEndian.AppendUint32(append(b, code), uint32(len(body)))
	return append(b, body...)
}

// fields gives typed access to a performative's list; missing or null fields read as zero.
type fields list

func (f fields) get(i int) any {
	if i < len(f.items) {
		return f.items[i]
	}
	return nil
}

func (f fields) uint(i int) (uint64, bool) {
	v, ok := f.get(i).(uint64)
	return v, ok
}

func (f fields) bool(i int) bool {
	v, _ := f.get(i).(bool)
	return v
}

func (f fields) string(i int) string {
	switch v := f.get(i).(type) {
	case string:
		return v
	case symbol:
		return string(v)
	}
	return ""
}

func (f fields) bytes(i int) []byte {
	v, _ := f.get(i).([]byte)
	return v
}

// encoded returns field i's original encoding, or null when absent.
func (f fields) encoded(i int) rawValue {
	if i < len(f.raw) {
		return rawValue(f.raw[i])
	}
	return rawValue{0x40}
}
