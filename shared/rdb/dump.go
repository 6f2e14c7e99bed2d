package rdb

import (
	"encoding/binary"
	"math"
)

// DecodeDump decodes a DUMP payload (type byte, value, 2-byte RDB version,
// CRC64). The value is returned whole as a KindKey entry without a key; Raw
// aliases the payload. The version decides Valkey (>= 80) versus Redis
// meaning of clashing type codes.
func DecodeDump(payload []byte) (*Entry, int, error) {
	return DecodeDumpWith(payload, Options{})
}

// DecodeDumpWith is DecodeDump with limits (only MaxStringBytes applies;
// the value is never split).
func DecodeDumpWith(payload []byte, opts Options) (*Entry, int, error) {
	return decodeDump(payload, opts, false)
}

// DecodeDumpView is DecodeDump whose value aliases the payload wherever the
// payload holds its bytes as they are (strings not compressed, elements of
// compact encodings): no copy of them is made, so the payload must not change
// while the value is used. For comparing values read once.
func DecodeDumpView(payload []byte) (*Entry, int, error) {
	return decodeDump(payload, Options{}, true)
}

func decodeDump(payload []byte, opts Options, view bool) (*Entry, int, error) {
	n := len(payload)
	if n < 11 {
		return nil, 0, encErr(ErrCorrupt, "DUMP payload of %d bytes is too short", n)
	}
	ver := int(binary.LittleEndian.Uint16(payload[n-10:]))
	stored := binary.LittleEndian.Uint64(payload[n-8:])
	if c := CRC64(0, payload[:n-8]); c != stored {
		return nil, ver, errAt(int64(n-8), ErrChecksum, "DUMP CRC64 mismatch: payload has %016x, computed %016x", stored, c)
	}
	valkey := ver >= ValkeyVersion80
	if ver < 1 || !valkey && ver > MaxRedisVersion || valkey && ver > MaxValkeyVersion {
		return nil, ver, errAt(int64(n-10), ErrUnsupported, "unsupported RDB version %d in DUMP payload", ver)
	}
	body := payload[:n-10]
	o := opts.withDefaults()
	o.ChunkElements, o.ChunkBytes = math.MaxInt, math.MaxInt
	d := &decoder{in: newInputBytes(body, view), opts: o, version: ver, valkey: valkey}
	e := &Entry{Kind: KindKey, Idle: -1, Freq: -1, Last: true}
	off := d.off()
	t, err := d.in.readByte("value type")
	if err != nil {
		return nil, ver, err
	}
	if t == opKeyMetaOrSlotImport && !valkey {
		if e.KeyMeta, err = d.readKeyMeta(); err != nil {
			return nil, ver, err
		}
		off = d.off()
		if t, err = d.in.readByte("value type"); err != nil {
			return nil, ver, err
		}
	}
	ti, ok := lookupType(t, valkey)
	if !ok {
		return nil, ver, errAt(off, ErrUnsupported, "unknown value type %d in DUMP payload (%s RDB %d)", t, dialect(valkey), ver)
	}
	start := d.off()
	st, err := d.newValueState(t, ti)
	if err != nil {
		return nil, ver, err
	}
	done, err := st.fill(d)
	if err != nil {
		return nil, ver, err
	}
	if !done {
		return nil, ver, errAt(d.off(), ErrCorrupt, "DUMP value did not end")
	}
	if ms, ok := st.(*moduleState); ok {
		ms.m.Raw = body[ms.idEnd:d.off()]
	}
	e.TypeByte, e.Type, e.Value = t, ti.vt, st.take()
	if rest := int64(len(body)) - d.off(); rest != 0 {
		return nil, ver, errAt(d.off(), ErrCorrupt, "%d unexpected bytes after the value in DUMP payload", rest)
	}
	e.Raw = body[start:]
	e.Empty = st.collection() && st.total() == 0
	return e, ver, nil
}

// decodeValue decodes one whole encoded value of type code t.
func decodeValue(t byte, raw []byte, version int, valkey bool, maxString int64) (Value, error) {
	ti, ok := lookupType(t, valkey)
	if !ok {
		return nil, encErr(ErrUnsupported, "unknown value type %d", t)
	}
	o := Options{MaxStringBytes: maxString}.withDefaults()
	o.ChunkElements, o.ChunkBytes = math.MaxInt, math.MaxInt
	d := &decoder{in: newInputBytes(raw, false), opts: o, version: version, valkey: valkey}
	return d.whole(t, ti, raw)
}

// DecodeBodyView decodes a DUMP payload without its trailer (a type byte and
// the value, as Entry.Body gives them) from a file of RDB version version
// (80 for Valkey), aliasing body as DecodeDumpView does.
func DecodeBodyView(body []byte, version int) (Value, error) {
	if len(body) < 2 {
		return nil, encErr(ErrCorrupt, "value of %d bytes is too short", len(body))
	}
	valkey := version >= ValkeyVersion80
	ti, ok := lookupType(body[0], valkey)
	if !ok || body[0] == opKeyMetaOrSlotImport {
		return nil, encErr(ErrUnsupported, "unknown value type %d", body[0])
	}
	o := Options{}.withDefaults()
	o.ChunkElements, o.ChunkBytes = math.MaxInt, math.MaxInt
	d := &decoder{in: newInputBytes(body[1:], true), opts: o, version: version, valkey: valkey}
	return d.whole(body[0], ti, body[1:])
}

// whole decodes one value of type t that is all of raw.
func (d *decoder) whole(t byte, ti typeInfo, raw []byte) (Value, error) {
	st, err := d.newValueState(t, ti)
	if err != nil {
		return nil, err
	}
	done, err := st.fill(d)
	if err != nil {
		return nil, err
	}
	if !done {
		return nil, errAt(d.off(), ErrCorrupt, "value did not end")
	}
	if rest := int64(len(raw)) - d.off(); rest != 0 {
		return nil, errAt(d.off(), ErrCorrupt, "%d unexpected bytes after the value", rest)
	}
	if ms, ok := st.(*moduleState); ok {
		ms.m.Raw = raw[ms.idEnd:]
	}
	return st.take(), nil
}

// Body is the DUMP payload of a key entry without its trailer: TypeByte then
// Raw (nil when Raw is). For values the reader captured it is made without a
// copy.
func (e *Entry) Body() []byte {
	if e.Raw == nil {
		return nil
	}
	if len(e.body) == len(e.Raw)+1 {
		return e.body[:len(e.body):len(e.body)]
	}
	return append(append(make([]byte, 0, len(e.Raw)+1), e.TypeByte), e.Raw...)
}

// Dump is BuildDump(e.TypeByte, e.Raw, rdbVersion) (nil when Raw is nil). For
// values the reader captured the trailer is written in place after the
// value's bytes, with no copy: the payload shares Raw's memory, and a second
// call (also on a copy of the Entry) rewrites the first one's trailer.
func (e *Entry) Dump(rdbVersion uint16) []byte {
	if e.Raw == nil {
		return nil
	}
	if len(e.body) != len(e.Raw)+1 {
		return BuildDump(e.TypeByte, e.Raw, rdbVersion)
	}
	return appendTrailer(e.body, rdbVersion)
}

func appendTrailer(out []byte, rdbVersion uint16) []byte {
	out = binary.LittleEndian.AppendUint16(out, rdbVersion)
	return binary.LittleEndian.AppendUint64(out, CRC64(0, out))
}

// BuildDump frames an encoded value as a DUMP payload.
func BuildDump(typeByte byte, encodedValue []byte, rdbVersion uint16) []byte {
	out := make([]byte, 0, len(encodedValue)+11)
	out = append(out, typeByte)
	out = append(out, encodedValue...)
	return appendTrailer(out, rdbVersion)
}

// EncodeDump encodes v as a complete DUMP payload (see EncodeValue) whose
// version field is targetRDBVersion.
func EncodeDump(v Value, targetRDBVersion int) ([]byte, error) {
	t, b, err := EncodeValue(v, targetRDBVersion)
	if err != nil {
		return nil, err
	}
	if targetRDBVersion < 1 || targetRDBVersion > math.MaxUint16 {
		return nil, encErr(ErrUnsupported, "target RDB version %d", targetRDBVersion)
	}
	return BuildDump(t, b, uint16(targetRDBVersion)), nil
}

// DumpType is the value type a DUMP payload holds, read from its first byte and its version
// trailer (which decides Valkey or Redis meaning of the codes); false when the payload is too
// short or the code unknown. Nothing but those bytes is examined.
func DumpType[P string | []byte](payload P) (ValueType, bool) {
	n := len(payload)
	if n < 11 {
		return 0, false
	}
	ver := int(payload[n-10]) | int(payload[n-9])<<8
	valkey := ver >= ValkeyVersion80
	t := payload[0]
	if t == opKeyMetaOrSlotImport && !valkey {
		return 0, false // key metadata first: the type follows it
	}
	ti, ok := lookupType(t, valkey)
	if !ok {
		return 0, false
	}
	return ti.vt, true
}
