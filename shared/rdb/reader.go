package rdb

import (
	"encoding/binary"
	"io"
	"math"
)

// Reader streams the entries of an RDB file.
type Reader struct {
	d      decoder
	db     int
	done   bool
	err    error
	cur    *curValue // nil unless a value is being delivered in parts
	curBuf curValue  // storage for cur, reused to save allocations
	tmpl   Entry     // entry under construction
	out    Entry     // the entry returned last, with Options.ReuseEntries
	empty  int
	// prefixed: a key's expire/idle/freq/meta prefix has been read into tmpl
	// but not its value yet. Like redis-server's loader, other opcodes (AUX,
	// SELECTDB, RESIZEDB, MODULE_AUX, FUNCTION, ...) may come in between; they
	// are delivered as entries and the prefix stays for the next key (EOF
	// drops it).
	prefixed bool
}

// curValue is a key whose value is being delivered in parts.
type curValue struct {
	st       valueState
	part     int
	valueOff int64
}

// NewReader reads and validates the header ("REDIS0001".."REDIS0013" or
// "VALKEY080").
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	rd := &Reader{d: decoder{in: newInput(r, 0, 0), opts: opts.withDefaults()}}
	rd.d.in.crcOn = true
	hdr, err := rd.d.in.readN(9, "RDB header")
	if err != nil {
		return nil, err
	}
	version, valkey, err := parseHeader(hdr)
	if err != nil {
		return nil, err
	}
	rd.d.version, rd.d.valkey = version, valkey
	if version < 5 || rd.d.opts.SkipChecksum {
		rd.d.in.crcOn = false
	}
	return rd, nil
}

func parseHeader(h []byte) (int, bool, error) {
	digits := func(b []byte) (int, bool) {
		v := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	switch {
	case string(h[:5]) == "REDIS":
		v, ok := digits(h[5:9])
		if !ok {
			return 0, false, errAt(0, ErrCorrupt, "bad RDB header %q", h)
		}
		if v < 1 || v > MaxRedisVersion {
			return 0, false, errAt(5, ErrUnsupported, "unsupported RDB version %d (supported 1-%d and VALKEY%03d)", v, MaxRedisVersion, MaxValkeyVersion)
		}
		return v, false, nil
	case string(h[:6]) == "VALKEY":
		v, ok := digits(h[6:9])
		if !ok {
			return 0, false, errAt(0, ErrCorrupt, "bad RDB header %q", h)
		}
		if v < ValkeyVersion80 || v > MaxValkeyVersion {
			return 0, false, errAt(6, ErrUnsupported, "unsupported RDB version %d (Valkey; supported %d)", v, MaxValkeyVersion)
		}
		return v, true, nil
	}
	return 0, false, errAt(0, ErrCorrupt, "not an RDB file: bad magic %q", h)
}

// NewReaderAt resumes parsing at an entry-aligned offset previously seen in
// Entry.Offset; r must be positioned there. The header is not re-read and
// the checksum is not verified.
func NewReaderAt(r io.Reader, offset int64, version int, valkey bool, db int, opts Options) (*Reader, error) {
	if valkey && (version < ValkeyVersion80 || version > MaxValkeyVersion) ||
		!valkey && (version < 1 || version > MaxRedisVersion) {
		return nil, errAt(offset, ErrUnsupported, "unsupported RDB version %d", version)
	}
	rd := &Reader{d: decoder{in: newInput(r, offset, 0), opts: opts.withDefaults(), version: version, valkey: valkey}}
	rd.db = db
	return rd, nil
}

// Version is the RDB version (80 for VALKEY080).
func (r *Reader) Version() int { return r.d.version }

// IsValkey reports a VALKEY magic.
func (r *Reader) IsValkey() bool { return r.d.valkey }

// Offset is the number of bytes consumed so far (absolute file offset).
func (r *Reader) Offset() int64 { return r.d.off() }

// InKeyPrefix reports that a key's expire/idle/freq prefix has been read and
// an opcode entry came before its value: Offset is then not a resume point
// (resuming there would lose the prefix); the pending key's Entry.Offset,
// where its prefix starts, is.
func (r *Reader) InKeyPrefix() bool { return r.prefixed }

// DB is the currently selected database.
func (r *Reader) DB() int { return r.db }

// EmptySkipped counts empty collections met so far (skipped unless
// Options.ReturnEmpty).
func (r *Reader) EmptySkipped() int { return r.empty }

// Next returns the next entry, or io.EOF after the EOF opcode (and a valid
// checksum). Errors are sticky.
func (r *Reader) Next() (*Entry, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.done {
		return nil, io.EOF
	}
	e, err := r.next()
	if err != nil {
		if err == io.EOF {
			r.done = true
		} else {
			r.err = err
		}
		return nil, err
	}
	return e, nil
}

func (r *Reader) next() (*Entry, error) {
	d := &r.d
	for {
		if r.cur != nil {
			e, err := r.continueValue()
			if err != nil || e != nil {
				return e, err
			}
			continue // empty collection skipped
		}
		if !r.prefixed {
			r.tmpl = Entry{Kind: KindKey, Offset: d.off(), Idle: -1, Freq: -1}
		}
		e := &r.tmpl
		for {
			off := d.off()
			t, err := d.in.readByte("opcode or value type")
			if err != nil {
				return nil, err
			}
			isPrefix := true
			switch {
			case t == opExpireTimeMs:
				v, err := d.readMillis("expire time")
				if err != nil {
					return nil, err
				}
				e.ExpireAtMs = 0
				if v != -1 { // -1 is how Redis spells "no expire"
					e.ExpireAtMs = expireOrExpired(v)
				}
			case t == opExpireTime:
				p, err := d.in.readN(4, "expire time")
				if err != nil {
					return nil, err
				}
				v := int64(int32(binary.LittleEndian.Uint32(p)))
				e.ExpireAtMs = 0
				if v != -1 {
					e.ExpireAtMs = expireOrExpired(v * 1000)
				}
			case t == opIdle:
				v, err := d.readLength("LRU idle time")
				if err != nil {
					return nil, err
				}
				if v > math.MaxInt64 {
					v = math.MaxInt64
				}
				e.Idle = int64(v)
			case t == opFreq:
				b, err := d.in.readByte("LFU frequency")
				if err != nil {
					return nil, err
				}
				e.Freq = int(b)
			case t == opREAMLRU && !d.valkey:
				// Redis Enterprise RAM_LRU: a single length with no OSS meaning.
				if _, err := d.readLength("Redis Enterprise RAM_LRU"); err != nil {
					return nil, err
				}
			case t == opKeyMetaOrSlotImport && !d.valkey:
				km, err := d.readKeyMeta()
				if err != nil {
					return nil, err
				}
				e.KeyMeta = append(e.KeyMeta, km...)
			default:
				isPrefix = false
			}
			if isPrefix {
				r.prefixed = true
				continue
			}
			if t >= opKeyMetaOrSlotImport || t == opREAMLRU {
				if t == opEOF {
					r.prefixed = false // a dangling prefix is dropped, as redis-server does
					return nil, r.finish()
				}
				// Not part of a key: its own entry, at its own offset. A
				// pending prefix (in tmpl) waits for the next key.
				out := r.deliver(&Entry{Kind: KindKey, Offset: off, DB: r.db, Idle: -1, Freq: -1})
				if err := r.readOpcode(out, t, off); err != nil {
					return nil, err
				}
				return out, nil
			}
			ti, ok := lookupType(t, d.valkey)
			if !ok {
				return nil, errAt(off, ErrUnsupported, "unknown value type or non-OSS opcode %d (%s RDB %d)", t, dialect(d.valkey), d.version)
			}
			r.prefixed = false
			e.DB = r.db // a SELECTDB between the prefix and the value counts
			whole, err := r.startValue(e, t, ti)
			if err != nil {
				return nil, err
			}
			if whole != nil {
				return whole, nil
			}
			break
		}
	}
}

func dialect(valkey bool) string {
	if valkey {
		return "Valkey"
	}
	return "Redis"
}

// startValue reads the key and the value header; parts come from
// continueValue. With Options.RawValues a value that comes whole is walked
// to its end here and returned raw (nil, with nothing else to do, when it
// was an empty collection that is skipped).
func (r *Reader) startValue(e *Entry, t byte, ti typeInfo) (*Entry, error) {
	d := &r.d
	key, err := d.readString("key")
	if err != nil {
		return nil, err
	}
	e.Key, e.TypeByte, e.Type = key, t, ti.vt
	limit := d.opts.ChunkBytes
	if ti.vt == TypeModule {
		// Module values cannot be split or re-encoded: keep them whole.
		limit = int(min(d.opts.MaxStringBytes, math.MaxInt32))
	}
	valueOff := d.off()
	if d.opts.RawValues && walkable(t) {
		d.in.startValueCapture(limit+rawSlack, t)
		total, collection, err := d.walkValue(t, valueOff)
		empty := collection && total == 0
		if err == nil && empty && d.opts.ReturnEmpty {
			err = errSplit // decoded, so the entry carries its empty Value
		}
		switch {
		case err == nil:
			raw, body := d.in.stopValueCapture()
			if empty {
				r.empty++
				return nil, nil
			}
			out := r.deliver(e)
			out.Raw, out.body, out.Last = raw, body, true
			return out, nil
		case err != errSplit:
			d.in.stopCapture()
			return nil, err
		}
		if !d.in.rewind(limit) {
			d.in.stopCapture()
			return nil, errAt(valueOff, ErrLimit, "value cannot be read again from its start")
		}
	} else {
		d.in.startValueCapture(limit, t)
	}
	st, err := d.newValueState(t, ti)
	if err != nil {
		d.in.stopCapture()
		return nil, err
	}
	r.curBuf = curValue{st: st, valueOff: valueOff}
	r.cur = &r.curBuf
	return nil, nil
}

// Decode returns the value of a key entry: Value, or Raw decoded when the
// reader left it undecoded (Options.RawValues).
func (r *Reader) Decode(e *Entry) (Value, error) {
	if e.Value != nil || e.Raw == nil || e.Kind != KindKey {
		return e.Value, nil
	}
	v, err := decodeValue(e.TypeByte, e.Raw, r.d.version, r.d.valkey, r.d.opts.MaxStringBytes)
	if err != nil {
		return nil, errAt(e.Offset, ErrCorrupt, "key %q: decoding its value again: %v", e.Key, err)
	}
	return v, nil
}

// continueValue produces the next part of the current value; it returns
// (nil, nil) when an empty collection was skipped.
func (r *Reader) continueValue() (*Entry, error) {
	d := &r.d
	c := r.cur
	done, err := c.st.fill(d)
	if err != nil {
		if c.part == 0 {
			d.in.stopCapture()
		}
		return nil, err
	}
	e := r.tmpl
	e.Value = c.st.take()
	e.Part = c.part
	e.Last = done
	if c.part == 0 {
		raw, body := d.in.stopValueCapture()
		if done {
			e.Raw, e.body = raw, body
		}
		if ms, ok := c.st.(*moduleState); ok {
			if raw == nil {
				return nil, errAt(c.valueOff, ErrLimit, "module value exceeds MaxStringBytes %d", d.opts.MaxStringBytes)
			}
			ms.m.Raw = raw[ms.idEnd-c.valueOff:]
		}
	}
	c.part++
	if !done {
		return r.deliver(&e), nil
	}
	r.cur = nil
	if c.st.collection() && c.st.total() == 0 {
		r.empty++
		if !d.opts.ReturnEmpty {
			return nil, nil
		}
		e.Empty = true
	}
	return r.deliver(&e), nil
}

// deliver is the entry Next returns: a new one, or with Options.ReuseEntries the reader's own
// (an Entry is about 400 bytes, and an import reads every key twice).
func (r *Reader) deliver(e *Entry) *Entry {
	if !r.d.opts.ReuseEntries {
		out := new(Entry)
		*out = *e
		return out
	}
	r.out = *e
	return &r.out
}

func (d *decoder) readKeyMeta() ([]KeyMeta, error) {
	n, err := d.readSmall("KEY_META class count", 64)
	if err != nil {
		return nil, err
	}
	out := make([]KeyMeta, 0, n)
	for i := 0; i < n; i++ {
		p, err := d.in.readN(4, "KEY_META class spec")
		if err != nil {
			return nil, err
		}
		km := KeyMeta{ClassSpec: binary.LittleEndian.Uint32(p)}
		d.in.startCapture(int(min(d.opts.MaxStringBytes, math.MaxInt32)))
		err = d.skipModuleOps("KEY_META value")
		km.Raw = d.in.stopCapture()
		if err != nil {
			return nil, err
		}
		if km.Raw == nil {
			return nil, errAt(d.off(), ErrLimit, "KEY_META value exceeds MaxStringBytes")
		}
		out = append(out, km)
	}
	return out, nil
}

// readOpcode handles the non-key opcodes.
func (r *Reader) readOpcode(e *Entry, t byte, off int64) error {
	d := &r.d
	var err error
	switch t {
	case opAux:
		e.Kind = KindAux
		if e.AuxKey, err = d.readString("AUX key"); err != nil {
			return err
		}
		if e.AuxValue, err = d.readString("AUX value"); err != nil {
			return err
		}
	case opSelectDB:
		db, err := d.readSmall("SELECTDB", math.MaxInt32)
		if err != nil {
			return err
		}
		r.db = db
		e.Kind, e.DB = KindSelectDB, db
	case opResizeDB:
		e.Kind = KindResizeDB
		if e.DBSize, err = d.readLength("RESIZEDB db size"); err != nil {
			return err
		}
		if e.ExpiresSize, err = d.readLength("RESIZEDB expires size"); err != nil {
			return err
		}
	case opModuleAux:
		e.Kind = KindModuleAux
		id, err := d.readLength("MODULE_AUX module id")
		if err != nil {
			return err
		}
		whenOp, err := d.readLength("MODULE_AUX when opcode")
		if err != nil {
			return err
		}
		if whenOp != modOpUInt {
			return errAt(off, ErrCorrupt, "MODULE_AUX when opcode %d, expected %d", whenOp, modOpUInt)
		}
		if e.ModuleWhen, err = d.readLength("MODULE_AUX when"); err != nil {
			return err
		}
		m := &Module{ID: id, Name: ModuleName(id), EncVer: ModuleEncVer(id)}
		d.in.startCapture(int(min(d.opts.MaxStringBytes, math.MaxInt32)))
		err = d.skipModuleOps("MODULE_AUX payload")
		m.Raw = d.in.stopCapture()
		if err != nil {
			return err
		}
		if m.Raw == nil {
			return errAt(off, ErrLimit, "MODULE_AUX payload exceeds MaxStringBytes")
		}
		e.ModuleName, e.Module = m.Name, m
	case opFunction2:
		e.Kind = KindFunction
		if e.Function, err = d.readString("FUNCTION2 library code"); err != nil {
			return err
		}
	case opFunctionPreGA:
		// Redis 7.0 rc1/rc2 layout: name, engine, has-description flag,
		// [description], code. Redis GA refuses it; we read it best effort.
		e.Kind = KindFunction
		if e.FunctionName, err = d.readString("FUNCTION name"); err != nil {
			return err
		}
		if e.FunctionEngine, err = d.readString("FUNCTION engine"); err != nil {
			return err
		}
		hasDesc, err := d.readLength("FUNCTION description flag")
		if err != nil {
			return err
		}
		if hasDesc > 1 {
			return errAt(off, ErrCorrupt, "FUNCTION description flag %d, expected 0 or 1", hasDesc)
		}
		if hasDesc == 1 {
			if e.FunctionDesc, err = d.readString("FUNCTION description"); err != nil {
				return err
			}
		}
		if e.Function, err = d.readString("FUNCTION code"); err != nil {
			return err
		}
	case opSlotInfo:
		e.Kind = KindSlotInfo
		if e.Slot, err = d.readLength("SLOT_INFO slot"); err != nil {
			return err
		}
		if e.SlotSize, err = d.readLength("SLOT_INFO size"); err != nil {
			return err
		}
		if e.SlotExpiresSize, err = d.readLength("SLOT_INFO expires size"); err != nil {
			return err
		}
	case opKeyMetaOrSlotImport: // Valkey only; Redis KEY_META is a key prefix
		e.Kind = KindSlotImport
		if e.SlotImportJob, err = d.readString("SLOT_IMPORT job name"); err != nil {
			return err
		}
		n, err := d.readSmall("SLOT_IMPORT range count", 16384)
		if err != nil {
			return err
		}
		e.SlotRanges = make([]SlotRange, 0, n)
		for i := 0; i < n; i++ {
			var sr SlotRange
			if sr.Start, err = d.readLength("SLOT_IMPORT range start"); err != nil {
				return err
			}
			if sr.End, err = d.readLength("SLOT_IMPORT range end"); err != nil {
				return err
			}
			e.SlotRanges = append(e.SlotRanges, sr)
		}
	default:
		return errAt(off, ErrUnsupported, "unknown opcode %d (%s RDB %d; non-OSS extension?)", t, dialect(d.valkey), d.version)
	}
	return nil
}

// finish handles the EOF opcode: the CRC64 trailer (RDB >= 5) is checked
// unless disabled; a zero CRC means the writer disabled checksums. Bytes
// after the trailer (AOF tail, diskless EOF mark) are never read.
func (r *Reader) finish() error {
	d := &r.d
	d.in.checksum()
	computed := d.in.crc
	check := d.in.crcOn
	d.in.crcOn = false
	if d.version >= 5 {
		off := d.off()
		p, err := d.in.readN(8, "CRC64 checksum")
		if err != nil {
			return err
		}
		stored := binary.LittleEndian.Uint64(p)
		if check && stored != 0 && stored != computed {
			return errAt(off, ErrChecksum, "CRC64 mismatch: file has %016x, computed %016x", stored, computed)
		}
	}
	return io.EOF
}
