package rdb

import "math"

// partLimit tracks how much the current part holds.
type partLimit struct {
	maxN, maxBytes int
	n, bytes       int
	total          uint64
}

// elemOverhead approximates per-element bookkeeping so parts of many tiny
// elements are still bounded in bytes.
const elemOverhead = 24

func (p *partLimit) add(size int) {
	p.n++
	p.bytes += size + elemOverhead
	p.total++
}

func (p *partLimit) full() bool { return p.n >= p.maxN || p.bytes >= p.maxBytes }

func (p *partLimit) reset() { p.n, p.bytes = 0, 0 }

// valueState decodes one value incrementally, one part per fill/take.
type valueState interface {
	// fill decodes elements until the part is full or the value ends.
	fill(d *decoder) (done bool, err error)
	// take returns the part decoded so far and starts a new one.
	take() Value
	// total is the number of elements decoded so far.
	total() uint64
	// collection reports whether an empty value must be skipped.
	collection() bool
}

func (d *decoder) newLimit() partLimit {
	return partLimit{maxN: d.opts.ChunkElements, maxBytes: d.opts.ChunkBytes}
}

// prealloc bounds slice preallocation by the part size, never by a count
// read from the file.
func (d *decoder) prealloc(n uint64) int {
	if n > uint64(d.opts.ChunkElements) {
		n = uint64(d.opts.ChunkElements)
	}
	if n > 1024 {
		n = 1024
	}
	return int(n)
}

// newValueState reads the value header (counts etc.) for type code t.
func (d *decoder) newValueState(t byte, ti typeInfo) (valueState, error) {
	off := d.off()
	switch ti.vt {
	case TypeString:
		return d.newStringState()
	case TypeList:
		return d.newListState(t)
	case TypeSet:
		return d.newSetState(t)
	case TypeZSet:
		return d.newZSetState(t)
	case TypeHash:
		return d.newHashState(t)
	case TypeStream:
		return d.newStreamState(t)
	case TypeModule:
		if t == TypeCodeModulePreGA {
			return nil, errAt(off, ErrUnsupported, "MODULE value (type 6, Redis 4.0 RC format) cannot be parsed without the module")
		}
		return d.newModuleState()
	}
	return nil, errAt(off, ErrUnsupported, "value type %d", t)
}

// ---- string ----

type stringState struct {
	whole     []byte
	remaining uint64
	cur       []byte
	started   bool
}

func (d *decoder) newStringState() (*stringState, error) {
	off := d.off()
	n, enc, err := d.readLen("string value")
	if err != nil {
		return nil, err
	}
	s := &stringState{}
	if enc {
		s.whole, err = d.readEncoded(off, n, "string value")
		return s, err
	}
	if n <= uint64(d.opts.ChunkBytes) {
		if err := d.checkSize(off, "string value", n); err != nil {
			return nil, err
		}
		if s.whole, err = d.in.readCopy(int64(n), "string value"); err != nil {
			return nil, err
		}
		return s, nil
	}
	// Large raw strings are streamed in ChunkBytes parts.
	s.remaining = n
	return s, nil
}

func (s *stringState) fill(d *decoder) (bool, error) {
	if s.whole != nil {
		s.cur, s.whole = s.whole, nil
		return true, nil
	}
	k := s.remaining
	if k > uint64(d.opts.ChunkBytes) {
		k = uint64(d.opts.ChunkBytes)
	}
	b, err := d.in.readCopy(int64(k), "string value")
	if err != nil {
		return false, err
	}
	s.cur = b
	s.remaining -= k
	return s.remaining == 0, nil
}

func (s *stringState) take() Value {
	v := &String{Data: s.cur}
	if v.Data == nil {
		v.Data = []byte{}
	}
	s.cur = nil
	return v
}

func (s *stringState) total() uint64    { return 1 }
func (s *stringState) collection() bool { return false }

// ---- list ----

type listState struct {
	t         byte
	remaining uint64 // items (LIST) or nodes (quicklists)
	it        blobIter
	left      int // elements left in the current blob (allocation hint)
	items     [][]byte
	lim       partLimit
}

func (d *decoder) newListState(t byte) (*listState, error) {
	s := &listState{t: t, lim: d.newLimit()}
	var err error
	switch t {
	case TypeCodeListZiplist:
		s.it, s.left, err = d.readBlob(blobZiplist, 1, "list ziplist")
	default:
		s.remaining, err = d.readLength("list length")
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *listState) fill(d *decoder) (bool, error) {
	if s.items == nil {
		hint := uint64(s.left)
		if s.t == TypeCodeList {
			hint = s.remaining
		}
		s.items = make([][]byte, 0, d.prealloc(hint))
	}
	for !s.lim.full() {
		if s.it != nil {
			e, ok, err := s.it.next()
			if err != nil {
				return false, err
			}
			if ok {
				b := e.bytes()
				s.items = append(s.items, b)
				s.lim.add(len(b))
				continue
			}
			s.it = nil
		}
		if s.remaining == 0 {
			return true, nil
		}
		s.remaining--
		var err error
		switch s.t {
		case TypeCodeList:
			var b []byte
			if b, err = d.readString("list item"); err == nil {
				s.items = append(s.items, b)
				s.lim.add(len(b))
			}
		case TypeCodeListQuicklist:
			s.it, s.left, err = d.readBlob(blobZiplist, 1, "quicklist node")
		case TypeCodeListQuicklist2:
			off := d.off()
			var c uint64
			if c, err = d.readLength("quicklist container"); err != nil {
				return false, err
			}
			switch c {
			case 1: // plain node: one element stored as a string
				var b []byte
				if b, err = d.readString("quicklist plain node"); err == nil {
					s.items = append(s.items, b)
					s.lim.add(len(b))
				}
			case 2:
				s.it, s.left, err = d.readBlob(blobListpack, 1, "quicklist node")
			default:
				return false, errAt(off, ErrCorrupt, "quicklist container %d is neither plain (1) nor packed (2)", c)
			}
		}
		if err != nil {
			return false, err
		}
	}
	return s.remaining == 0 && (s.it == nil || !s.it.more()), nil
}

func (s *listState) take() Value {
	v := &List{Items: s.items}
	s.left = max(0, s.left-len(v.Items))
	s.items = nil
	s.lim.reset()
	return v
}

func (s *listState) total() uint64    { return s.lim.total }
func (s *listState) collection() bool { return true }

// ---- set ----

type setState struct {
	remaining uint64
	it        blobIter
	left      int
	members   [][]byte
	lim       partLimit
}

func (d *decoder) newSetState(t byte) (*setState, error) {
	s := &setState{lim: d.newLimit()}
	var err error
	switch t {
	case TypeCodeSetIntset:
		s.it, s.left, err = d.readBlob(blobIntset, 1, "set intset")
	case TypeCodeSetListpack:
		s.it, s.left, err = d.readBlob(blobListpack, 1, "set listpack")
	default:
		s.remaining, err = d.readLength("set size")
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *setState) fill(d *decoder) (bool, error) {
	if s.members == nil {
		s.members = make([][]byte, 0, d.prealloc(s.remaining+uint64(s.left)))
	}
	for !s.lim.full() {
		if s.it != nil {
			e, ok, err := s.it.next()
			if err != nil {
				return false, err
			}
			if ok {
				b := e.bytes()
				s.members = append(s.members, b)
				s.lim.add(len(b))
				continue
			}
			s.it = nil
		}
		if s.remaining == 0 {
			return true, nil
		}
		s.remaining--
		b, err := d.readString("set member")
		if err != nil {
			return false, err
		}
		s.members = append(s.members, b)
		s.lim.add(len(b))
	}
	return s.remaining == 0 && (s.it == nil || !s.it.more()), nil
}

func (s *setState) take() Value {
	v := &Set{Members: s.members}
	s.left = max(0, s.left-len(v.Members))
	s.members = nil
	s.lim.reset()
	return v
}

func (s *setState) total() uint64    { return s.lim.total }
func (s *setState) collection() bool { return true }

// ---- sorted set ----

type zsetState struct {
	t         byte
	remaining uint64
	it        blobIter
	left      int
	members   []ZMember
	lim       partLimit
}

func (d *decoder) newZSetState(t byte) (*zsetState, error) {
	s := &zsetState{t: t, lim: d.newLimit()}
	var err error
	switch t {
	case TypeCodeZSetZiplist:
		s.it, s.left, err = d.readBlob(blobZiplist, 2, "zset ziplist")
	case TypeCodeZSetListpack:
		s.it, s.left, err = d.readBlob(blobListpack, 2, "zset listpack")
	default:
		s.remaining, err = d.readLength("zset size")
	}
	if err != nil {
		return nil, err
	}
	s.left /= 2
	return s, nil
}

func (s *zsetState) fill(d *decoder) (bool, error) {
	if s.members == nil {
		s.members = make([]ZMember, 0, d.prealloc(s.remaining+uint64(s.left)))
	}
	for !s.lim.full() {
		if s.it != nil {
			off := d.off()
			m, ok, err := s.it.next()
			if err != nil {
				return false, err
			}
			if ok {
				sc, _, err := s.it.next()
				if err != nil {
					return false, err
				}
				f, ok := sc.float()
				if !ok {
					return false, errAt(off, ErrCorrupt, "zset score %q is not a number", sc.s)
				}
				b := m.bytes()
				s.members = append(s.members, ZMember{b, f})
				s.lim.add(len(b) + 8)
				continue
			}
			s.it = nil
		}
		if s.remaining == 0 {
			return true, nil
		}
		s.remaining--
		b, err := d.readString("zset member")
		if err != nil {
			return false, err
		}
		var f float64
		if s.t == TypeCodeZSet2 {
			f, err = d.readBinaryDouble("zset score")
		} else {
			f, err = d.readTextDouble("zset score")
		}
		if err != nil {
			return false, err
		}
		s.members = append(s.members, ZMember{b, f})
		s.lim.add(len(b) + 8)
	}
	return s.remaining == 0 && (s.it == nil || !s.it.more()), nil
}

func (s *zsetState) take() Value {
	v := &ZSet{Members: s.members}
	s.left = max(0, s.left-len(v.Members))
	s.members = nil
	s.lim.reset()
	return v
}

func (s *zsetState) total() uint64    { return s.lim.total }
func (s *zsetState) collection() bool { return true }

// ---- hash ----

// Hash field TTL layouts: which form the per-field expiry takes.
const (
	ttlNone      = iota
	ttlPreGA     // HASH_METADATA_PRE_GA: absolute ms as a length, 0 = none
	ttlRelative  // HASH_METADATA: length relative to minExpire, 0 = none
	ttlValkey    // HASH_2: 8-byte ms after the value, -1 = none
	ttlListpack3 // LISTPACK_EX*: listpack triples field, value, ttl (0 = none)
)

type hashState struct {
	remaining uint64
	it        blobIter
	left      int
	ttl       int
	minExpire uint64
	fields    []HashField
	lim       partLimit
}

func (d *decoder) newHashState(t byte) (*hashState, error) {
	s := &hashState{lim: d.newLimit()}
	var err error
	if d.valkey && t == TypeCodeValkeyHash2 {
		s.ttl = ttlValkey
		s.remaining, err = d.readLength("hash size")
	} else {
		switch t {
		case TypeCodeHashZipmap:
			s.it, s.left, err = d.readBlob(blobZipmap, 2, "hash zipmap")
		case TypeCodeHashZiplist:
			s.it, s.left, err = d.readBlob(blobZiplist, 2, "hash ziplist")
		case TypeCodeHashListpack:
			s.it, s.left, err = d.readBlob(blobListpack, 2, "hash listpack")
		case TypeCodeHashLpExPreGA, TypeCodeHashLpEx:
			s.ttl = ttlListpack3
			if t == TypeCodeHashLpEx {
				// minExpire is only a hint for the server's expiry index.
				if _, err = d.readUint64LE("hash min expire"); err != nil {
					return nil, err
				}
			}
			if s.it, s.left, err = d.readBlob(blobListpack, 3, "hash listpack-ex"); err == nil {
				s.left /= 3
			}
		case TypeCodeHashMetadataPreGA:
			s.ttl = ttlPreGA
			s.remaining, err = d.readLength("hash size")
		case TypeCodeHashMetadata:
			s.ttl = ttlRelative
			if s.minExpire, err = d.readUint64LE("hash min expire"); err != nil {
				return nil, err
			}
			s.remaining, err = d.readLength("hash size")
		default:
			s.remaining, err = d.readLength("hash size")
		}
	}
	if err != nil {
		return nil, err
	}
	if s.ttl != ttlListpack3 {
		s.left /= 2
	}
	return s, nil
}

// expireOrExpired maps an on-disk absolute expiry to the API form where 0
// means "none": a non-positive real expiry is already in the past, so it
// becomes 1 (still in the past) instead of turning into "no TTL".
func expireOrExpired(v int64) int64 {
	if v <= 0 {
		return 1
	}
	return v
}

func (s *hashState) fill(d *decoder) (bool, error) {
	if s.fields == nil {
		s.fields = make([]HashField, 0, d.prealloc(s.remaining+uint64(s.left)))
	}
	for !s.lim.full() {
		if s.it != nil {
			off := d.off()
			f, ok, err := s.it.next()
			if err != nil {
				return false, err
			}
			if ok {
				v, _, err := s.it.next()
				if err != nil {
					return false, err
				}
				hf := HashField{Field: f.bytes(), Value: v.bytes()}
				if s.ttl == ttlListpack3 {
					t, _, err := s.it.next()
					if err != nil {
						return false, err
					}
					ttl, ok := t.int64()
					if !ok || ttl < 0 {
						return false, errAt(off, ErrCorrupt, "hash field TTL %q is not a valid time", t.bytes())
					}
					hf.ExpireAtMs = ttl
				}
				s.fields = append(s.fields, hf)
				s.lim.add(len(hf.Field) + len(hf.Value))
				continue
			}
			s.it = nil
		}
		if s.remaining == 0 {
			return true, nil
		}
		s.remaining--
		var hf HashField
		var err error
		switch s.ttl {
		case ttlPreGA, ttlRelative:
			off := d.off()
			var t uint64
			if t, err = d.readLength("hash field TTL"); err != nil {
				return false, err
			}
			if t != 0 {
				if s.ttl == ttlRelative {
					if s.minExpire > math.MaxInt64 || t-1 > math.MaxInt64-s.minExpire {
						return false, errAt(off, ErrCorrupt, "hash field TTL %d + min expire %d out of range", t, s.minExpire)
					}
					t += s.minExpire - 1
				}
				if t > math.MaxInt64 {
					return false, errAt(off, ErrCorrupt, "hash field TTL %d out of range", t)
				}
				hf.ExpireAtMs = int64(t)
			}
		}
		if hf.Field, err = d.readString("hash field"); err != nil {
			return false, err
		}
		if hf.Value, err = d.readString("hash value"); err != nil {
			return false, err
		}
		if s.ttl == ttlValkey {
			var t int64
			if t, err = d.readMillis("hash field expiry"); err != nil {
				return false, err
			}
			if t != -1 {
				hf.ExpireAtMs = expireOrExpired(t)
			}
		}
		s.fields = append(s.fields, hf)
		s.lim.add(len(hf.Field) + len(hf.Value))
	}
	return s.remaining == 0 && (s.it == nil || !s.it.more()), nil
}

func (s *hashState) take() Value {
	v := &Hash{Fields: s.fields}
	s.left = max(0, s.left-len(v.Fields))
	s.fields = nil
	s.lim.reset()
	return v
}

func (s *hashState) total() uint64    { return s.lim.total }
func (s *hashState) collection() bool { return true }

// ---- module ----

type moduleState struct {
	m     *Module
	idEnd int64 // offset after the module id: Module.Raw starts there
}

func (d *decoder) newModuleState() (*moduleState, error) {
	id, err := d.readLength("module id")
	if err != nil {
		return nil, err
	}
	return &moduleState{m: &Module{ID: id, Name: ModuleName(id), EncVer: ModuleEncVer(id)}, idEnd: d.off()}, nil
}

func (s *moduleState) fill(d *decoder) (bool, error) {
	// The reader captures the bytes consumed here into Module.Raw.
	return true, d.skipModuleOps("module value")
}

func (s *moduleState) take() Value      { return s.m }
func (s *moduleState) total() uint64    { return 1 }
func (s *moduleState) collection() bool { return false }
