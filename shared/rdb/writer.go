package rdb

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// AppendLength appends an RDB length.
func AppendLength(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, byte(v>>8)|0x40, byte(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0x80), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0x81), v)
}

// AppendString appends a plain (unencoded) RDB string.
func AppendString(b, s []byte) []byte {
	return append(AppendLength(b, uint64(len(s))), s...)
}

func appendMillis(b []byte, v int64) []byte {
	return binary.LittleEndian.AppendUint64(b, uint64(v))
}

// appendTextDouble writes the ZSET (type 3) score format.
func appendTextDouble(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, 253)
	case math.IsInf(f, 1):
		return append(b, 254)
	case math.IsInf(f, -1):
		return append(b, 255)
	}
	s := strconv.FormatFloat(f, 'g', 17, 64)
	return append(append(b, byte(len(s))), s...)
}

// EncodeValue encodes v in the oldest encoding every loader up to
// targetRDBVersion accepts: STRING (0), LIST (1), SET (2), ZSET_2 (5) or
// ZSET (3) below RDB 8, HASH (4), and for field TTLs HASH_METADATA (24,
// RDB 12-79) or Valkey HASH_2 (22, RDB >= 80); streams as STREAM_LISTPACKS
// (15) for RDB 9, _2 (19) for RDB 10 and _3 (21) above (IDMP state of
// STREAM_LISTPACKS_4 is not carried); modules as MODULE_2 (7) from Raw.
func EncodeValue(v Value, targetRDBVersion int) (byte, []byte, error) {
	switch x := v.(type) {
	case *String:
		return TypeCodeString, AppendString(nil, x.Data), nil
	case *List:
		b := AppendLength(nil, uint64(len(x.Items)))
		for _, it := range x.Items {
			b = AppendString(b, it)
		}
		return TypeCodeList, b, nil
	case *Set:
		b := AppendLength(nil, uint64(len(x.Members)))
		for _, m := range x.Members {
			b = AppendString(b, m)
		}
		return TypeCodeSet, b, nil
	case *ZSet:
		b := AppendLength(nil, uint64(len(x.Members)))
		if targetRDBVersion >= 8 {
			for _, m := range x.Members {
				b = binary.LittleEndian.AppendUint64(AppendString(b, m.Member), math.Float64bits(m.Score))
			}
			return TypeCodeZSet2, b, nil
		}
		for _, m := range x.Members {
			b = appendTextDouble(AppendString(b, m.Member), m.Score)
		}
		return TypeCodeZSet, b, nil
	case *Hash:
		return encodeHash(x, targetRDBVersion)
	case *Stream:
		return encodeStream(x, targetRDBVersion)
	case *Module:
		if len(x.Raw) == 0 {
			return 0, nil, encErr(ErrUnsupported, "module value %s has no raw payload", x.Name)
		}
		if targetRDBVersion < 8 {
			return 0, nil, encErr(ErrUnsupported, "module values need RDB >= 8, target is %d", targetRDBVersion)
		}
		return TypeCodeModule2, append(AppendLength(nil, x.ID), x.Raw...), nil
	}
	return 0, nil, encErr(ErrUnsupported, "cannot encode value of type %T", v)
}

func encodeHash(h *Hash, target int) (byte, []byte, error) {
	var minExp int64
	for _, f := range h.Fields {
		if f.ExpireAtMs > 0 && (minExp == 0 || f.ExpireAtMs < minExp) {
			minExp = f.ExpireAtMs
		}
	}
	b := AppendLength(nil, uint64(len(h.Fields)))
	switch {
	case minExp == 0:
		for _, f := range h.Fields {
			b = AppendString(AppendString(b, f.Field), f.Value)
		}
		return TypeCodeHash, b, nil
	case target >= ValkeyVersion80:
		for _, f := range h.Fields {
			exp := int64(-1)
			if f.ExpireAtMs > 0 {
				exp = f.ExpireAtMs
			}
			b = appendMillis(AppendString(AppendString(b, f.Field), f.Value), exp)
		}
		return TypeCodeValkeyHash2, b, nil
	case target >= 12:
		b = appendMillis(nil, minExp)
		b = AppendLength(b, uint64(len(h.Fields)))
		for _, f := range h.Fields {
			var rel uint64
			if f.ExpireAtMs > 0 {
				rel = uint64(f.ExpireAtMs-minExp) + 1
			}
			b = AppendString(AppendString(AppendLength(b, rel), f.Field), f.Value)
		}
		return TypeCodeHashMetadata, b, nil
	}
	return 0, nil, encErr(ErrUnsupported, "hash field TTLs need RDB >= 12, target is %d", target)
}

// lpBuilder writes a listpack.
type lpBuilder struct {
	b []byte
	n int
}

func newLPBuilder() *lpBuilder { return &lpBuilder{b: make([]byte, 6, 256)} }

func (l *lpBuilder) addInt(v int64) {
	start := len(l.b)
	switch {
	case v >= 0 && v <= 127:
		l.b = append(l.b, byte(v))
	case v >= -4096 && v <= 4095:
		u := uint64(v) & 0x1fff
		l.b = append(l.b, 0xc0|byte(u>>8), byte(u))
	case v >= math.MinInt16 && v <= math.MaxInt16:
		l.b = binary.LittleEndian.AppendUint16(append(l.b, 0xf1), uint16(v))
	case v >= -1<<23 && v < 1<<23:
		u := uint32(v)
		l.b = append(l.b, 0xf2, byte(u), byte(u>>8), byte(u>>16))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		l.b = binary.LittleEndian.AppendUint32(append(l.b, 0xf3), uint32(v))
	default:
		l.b = binary.LittleEndian.AppendUint64(append(l.b, 0xf4), uint64(v))
	}
	l.b = appendBacklen(l.b, len(l.b)-start)
	l.n++
}

func (l *lpBuilder) addString(s []byte) {
	start := len(l.b)
	switch n := len(s); {
	case n < 64:
		l.b = append(l.b, 0x80|byte(n))
	case n < 4096:
		l.b = append(l.b, 0xe0|byte(n>>8), byte(n))
	default:
		l.b = binary.LittleEndian.AppendUint32(append(l.b, 0xf0), uint32(n))
	}
	l.b = append(l.b, s...)
	l.b = appendBacklen(l.b, len(l.b)-start)
	l.n++
}

func (l *lpBuilder) bytes() []byte {
	l.b = append(l.b, 0xff)
	binary.LittleEndian.PutUint32(l.b, uint32(len(l.b)))
	binary.LittleEndian.PutUint16(l.b[4:], uint16(min(l.n, 0xffff)))
	return l.b
}

// Stream nodes mirror Redis defaults (stream-node-max-entries 100,
// stream-node-max-bytes 4096).
const (
	streamNodeMaxEntries = 100
	streamNodeMaxBytes   = 4096
)

func sameFields(e StreamEntry, master [][]byte) bool {
	if len(e.Fields) != 2*len(master) {
		return false
	}
	for i, f := range master {
		if string(e.Fields[2*i]) != string(f) {
			return false
		}
	}
	return true
}

func encodeStreamNode(entries []StreamEntry) (key, lp []byte) {
	master := entries[0].ID
	key = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, master.Ms), master.Seq)
	mf := make([][]byte, 0, len(entries[0].Fields)/2)
	for i := 0; i+1 < len(entries[0].Fields); i += 2 {
		mf = append(mf, entries[0].Fields[i])
	}
	l := newLPBuilder()
	l.addInt(int64(len(entries)))
	l.addInt(0)
	l.addInt(int64(len(mf)))
	for _, f := range mf {
		l.addString(f)
	}
	l.addInt(0)
	for _, e := range entries {
		nf := len(e.Fields) / 2
		same := sameFields(e, mf)
		if same {
			l.addInt(streamFlagSameFields)
		} else {
			l.addInt(0)
		}
		l.addInt(int64(e.ID.Ms - master.Ms))
		l.addInt(int64(e.ID.Seq - master.Seq))
		if same {
			for i := 1; i < len(e.Fields); i += 2 {
				l.addString(e.Fields[i])
			}
			l.addInt(int64(nf) + 3)
		} else {
			l.addInt(int64(nf))
			for _, f := range e.Fields {
				l.addString(f)
			}
			l.addInt(2*int64(nf) + 4)
		}
	}
	return key, l.bytes()
}

func encodeStream(s *Stream, target int) (byte, []byte, error) {
	var t byte
	ver := 0
	switch {
	case target < 9:
		return 0, nil, encErr(ErrUnsupported, "streams need RDB >= 9, target is %d", target)
	case target == 9:
		t, ver = TypeCodeStreamListpacks, 1
	case target == 10:
		t, ver = TypeCodeStreamListpacks2, 2
	default:
		t, ver = TypeCodeStreamListpacks3, 3
	}
	for i, e := range s.Entries {
		if len(e.Fields)%2 != 0 {
			return 0, nil, encErr(ErrCorrupt, "stream entry %s has an odd number of field/value items", e.ID)
		}
		if i > 0 && !s.Entries[i-1].ID.Less(e.ID) {
			return 0, nil, encErr(ErrCorrupt, "stream entry %s is not after %s", e.ID, s.Entries[i-1].ID)
		}
	}
	// Split into nodes.
	var nodes [][]StreamEntry
	for i := 0; i < len(s.Entries); {
		j, size := i, 0
		for j < len(s.Entries) && j-i < streamNodeMaxEntries && (j == i || size < streamNodeMaxBytes) {
			for _, f := range s.Entries[j].Fields {
				size += len(f) + 2
			}
			j++
		}
		nodes = append(nodes, s.Entries[i:j])
		i = j
	}
	b := AppendLength(nil, uint64(len(nodes)))
	for _, n := range nodes {
		key, lp := encodeStreamNode(n)
		b = AppendString(AppendString(b, key), lp)
	}
	last := s.LastID
	var first StreamID
	if len(s.Entries) > 0 {
		first = s.Entries[0].ID
		if l := s.Entries[len(s.Entries)-1].ID; last.Less(l) {
			last = l
		}
	}
	b = AppendLength(b, uint64(len(s.Entries)))
	b = AppendLength(AppendLength(b, last.Ms), last.Seq)
	if ver >= 2 {
		added := max(s.EntriesAdded, uint64(len(s.Entries)))
		b = AppendLength(AppendLength(b, first.Ms), first.Seq)
		b = AppendLength(AppendLength(b, s.MaxDeletedID.Ms), s.MaxDeletedID.Seq)
		b = AppendLength(b, added)
	}
	b = AppendLength(b, uint64(len(s.Groups)))
	for _, g := range s.Groups {
		b = AppendString(b, g.Name)
		b = AppendLength(AppendLength(b, g.LastID.Ms), g.LastID.Seq)
		if ver >= 2 {
			b = AppendLength(b, uint64(g.EntriesRead))
		}
		pel := slices.Clone(g.PEL)
		slices.SortFunc(pel, func(a, b PendingEntry) int { return cmpID(a.ID, b.ID) })
		b = AppendLength(b, uint64(len(pel)))
		for _, p := range pel {
			b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, p.ID.Ms), p.ID.Seq)
			b = appendMillis(b, p.DeliveryTime)
			b = AppendLength(b, p.DeliveryCount)
		}
		b = AppendLength(b, uint64(len(g.Consumers)))
		for _, c := range g.Consumers {
			b = AppendString(b, c.Name)
			b = appendMillis(b, c.SeenTime)
			if ver >= 3 {
				b = appendMillis(b, c.ActiveTime)
			}
			var own []StreamID
			for _, p := range pel {
				if p.Consumer != nil && string(p.Consumer) == string(c.Name) {
					own = append(own, p.ID)
				}
			}
			b = AppendLength(b, uint64(len(own)))
			for _, id := range own {
				b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, id.Ms), id.Seq)
			}
		}
	}
	return t, b, nil
}

func cmpID(a, b StreamID) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Writer writes an RDB file; values are encoded with EncodeValue for the
// file's version. It exists for tests and tools that need small files.
type Writer struct {
	w       *bufio.Writer
	crc     uint64
	version int
	err     error
	scratch []byte
}

// NewWriter writes the header: "REDIS%04d", or "VALKEY%03d" for >= 80.
func NewWriter(w io.Writer, version int) (*Writer, error) {
	if version < 1 || version > MaxRedisVersion && version != ValkeyVersion80 {
		return nil, encErr(ErrUnsupported, "unsupported RDB version %d", version)
	}
	wr := &Writer{w: bufio.NewWriterSize(w, 64<<10), version: version}
	if version >= ValkeyVersion80 {
		wr.write([]byte(fmt.Sprintf("VALKEY%03d", version)))
	} else {
		wr.write([]byte(fmt.Sprintf("REDIS%04d", version)))
	}
	return wr, wr.err
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.crc = CRC64(w.crc, p)
	_, w.err = w.w.Write(p)
}

// WriteAux writes an AUX field.
func (w *Writer) WriteAux(key, value []byte) error {
	w.write(AppendString(AppendString([]byte{opAux}, key), value))
	return w.err
}

// SelectDB writes SELECTDB.
func (w *Writer) SelectDB(db int) error {
	w.write(AppendLength([]byte{opSelectDB}, uint64(db)))
	return w.err
}

// WriteResizeDB writes a RESIZEDB hint.
func (w *Writer) WriteResizeDB(dbSize, expires uint64) error {
	w.write(AppendLength(AppendLength([]byte{opResizeDB}, dbSize), expires))
	return w.err
}

// WriteKey encodes v for the file version and writes it under key.
func (w *Writer) WriteKey(key []byte, v Value, expireAtMs int64) error {
	t, b, err := EncodeValue(v, w.version)
	if err != nil {
		return err
	}
	return w.WriteRaw(t, key, b, expireAtMs)
}

// WriteRaw writes a key with an already encoded value.
func (w *Writer) WriteRaw(typeByte byte, key, encodedValue []byte, expireAtMs int64) error {
	b := w.scratch[:0]
	if expireAtMs != 0 {
		b = appendMillis(append(b, opExpireTimeMs), expireAtMs)
	}
	b = AppendString(append(b, typeByte), key)
	w.write(b)
	w.write(encodedValue)
	w.scratch = b[:0]
	return w.err
}

// Close writes EOF and, for RDB >= 5, the CRC64; it does not close the
// underlying writer.
func (w *Writer) Close() error {
	w.write([]byte{opEOF})
	if w.err == nil && w.version >= 5 {
		var c [8]byte
		binary.LittleEndian.PutUint64(c[:], w.crc)
		_, w.err = w.w.Write(c[:])
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}
