// Package rdb is a streaming codec for Redis / Valkey RDB files and DUMP
// payloads.
//
// The Reader walks an RDB file entry by entry and never holds more than one
// value (or one part of a large value) in memory. Values whose element count
// or size exceeds Options.ChunkElements / Options.ChunkBytes are delivered in
// successive parts of the same key. The package also decodes, builds and
// encodes DUMP payloads (type byte + value + 2-byte RDB version + CRC64) so
// the importer can fall back to type commands when a target refuses a payload.
//
// Notes for importers:
//
//   - Entry.Offset of a key (shared by all its parts) and of every other
//     entry is a resume point for NewReaderAt; Reader.Offset in the middle
//     of a split value is not.
//   - Empty collections are skipped and counted (Reader.EmptySkipped)
//     unless Options.ReturnEmpty asks for them (Entry.Empty set).
//   - The RESTORE fast path may send BuildDump(TypeByte, Raw, v) when the
//     target loads TypeByte: v >= TypeMinVersion(TypeByte, src valkey) and
//     v <= the target's RDB version, and for codes >= 22 the target must be
//     of the same dialect (Valkey HASH_2 and Redis HASH_METADATA_PRE_GA both
//     use 22). Otherwise re-encode with EncodeDump or write type commands.
//   - Idle and Freq are -1 when the file has no IDLE/FREQ opcode; absolute
//     expiries use 0 for "none" (an expiry at or before the epoch becomes 1
//     so it stays in the past).
//   - The Redis Enterprise opcode 107 (RAM_LRU, one length) is skipped; any
//     other unknown opcode or type is an ErrUnsupported error.
//
// Only the standard library is used.
package rdb

import (
	"errors"
	"fmt"
	"strconv"
)

// Options tunes a Reader. Zero values pick the defaults.
type Options struct {
	// SkipChecksum disables CRC64 verification at EOF.
	SkipChecksum bool
	// ChunkElements is the maximum number of elements (list items, set or
	// zset members, hash fields, stream entries) delivered in one part.
	ChunkElements int
	// ChunkBytes is the approximate maximum payload size of one part; plain
	// strings above it are delivered in parts too.
	ChunkBytes int
	// MaxStringBytes caps any single string or encoded blob (key, LZF
	// string, ziplist, listpack, module value) that must be held whole.
	MaxStringBytes int64
	// ReturnEmpty makes Next return empty collections with Entry.Empty set
	// instead of silently skipping (and counting) them.
	ReturnEmpty bool
	// RawValues leaves values undecoded where their bytes suffice: a string,
	// list, set, sorted set or hash in an encoding older than the field-TTL
	// types (code < 22) that decoding would deliver whole with Raw comes with
	// Raw and a nil Value. Its bytes are still walked and checked exactly as
	// decoding checks them, so corrupt input fails with the same error at the
	// same offset. Reader.Decode gives the Value when it is needed after all.
	// Other values (streams, modules, field TTLs, values in parts) are decoded.
	RawValues bool
	// ReuseEntries makes Next return the same *Entry every time, overwritten by the next call,
	// for readers that are done with an entry before asking for the next one. The slices it
	// holds (Key, Raw, parts of Value) are new for each entry and stay valid.
	ReuseEntries bool
}

// Defaults used when Options fields are zero.
const (
	DefaultChunkElements  = 1024
	DefaultChunkBytes     = 8 << 20
	DefaultMaxStringBytes = 1 << 30
)

func (o Options) withDefaults() Options {
	if o.ChunkElements <= 0 {
		o.ChunkElements = DefaultChunkElements
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.MaxStringBytes <= 0 {
		o.MaxStringBytes = DefaultMaxStringBytes
	}
	return o
}

// Kind says what an Entry carries.
type Kind int

// Entry kinds.
const (
	KindKey        Kind = iota // a key (or one part of a key's value)
	KindAux                    // AUX field (AuxKey, AuxValue)
	KindSelectDB               // SELECTDB (DB)
	KindResizeDB               // RESIZEDB hint (DBSize, ExpiresSize)
	KindFunction               // FUNCTION2 / FUNCTION_PRE_GA library code
	KindModuleAux              // MODULE_AUX (ModuleName, ModuleWhen, Module)
	KindSlotInfo               // Redis SLOT_INFO (Slot, SlotSize, SlotExpiresSize)
	KindSlotImport             // Valkey SLOT_IMPORT (SlotImportJob, SlotRanges)
)

var kindNames = [...]string{"key", "aux", "selectdb", "resizedb", "function", "module-aux", "slot-info", "slot-import"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ValueType is the logical type of a key, independent of its encoding.
type ValueType int

// Logical value types.
const (
	TypeString ValueType = iota
	TypeList
	TypeSet
	TypeZSet
	TypeHash
	TypeStream
	TypeModule
)

var typeNames = [...]string{"string", "list", "set", "zset", "hash", "stream", "module"}

func (t ValueType) String() string {
	if t >= 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Entry is one item of an RDB file.
type Entry struct {
	Kind Kind
	// Offset is where this entry (including its expire/idle/freq/meta
	// prefixes) starts; all parts of a key share it. It is a resume point
	// for NewReaderAt.
	Offset int64
	DB     int

	Key        []byte
	ExpireAtMs int64 // absolute unix ms; 0 = no expire
	Idle       int64 // LRU idle seconds; -1 when absent
	Freq       int   // LFU counter; -1 when absent
	KeyMeta    []KeyMeta

	TypeByte byte // RDB type code as found in the file
	Type     ValueType
	Value    Value
	Part     int  // 0,1,2... for values delivered in parts
	Last     bool // true on the final (or only) part
	// Raw is the exact encoded value (the bytes after the key) when the
	// value was delivered in a single part and fit in ChunkBytes (module
	// values always). BuildDump(TypeByte, Raw, version) makes a payload.
	Raw []byte
	// Empty marks an empty collection (only returned with ReturnEmpty).
	Empty bool
	// body is TypeByte and Raw in one slice with room for a DUMP trailer
	// after them, when the reader captured Raw so (see Body, Dump).
	body []byte

	AuxKey, AuxValue []byte

	Function       []byte // library code
	FunctionName   []byte // pre-GA only
	FunctionEngine []byte // pre-GA only
	FunctionDesc   []byte // pre-GA only

	ModuleName string // MODULE_AUX
	ModuleWhen uint64
	Module     *Module

	DBSize, ExpiresSize uint64 // RESIZEDB

	Slot, SlotSize, SlotExpiresSize uint64 // SLOT_INFO

	SlotImportJob []byte // SLOT_IMPORT
	SlotRanges    []SlotRange
}

// KeyMeta is one Redis 8.6 KEY_META class attached to a key.
type KeyMeta struct {
	ClassSpec uint32
	Raw       []byte // module-opcode encoded value, including the EOF opcode
}

// SlotRange is an inclusive hash-slot range.
type SlotRange struct{ Start, End uint64 }

// Value is a decoded value (or part of one).
type Value interface{ valueType() ValueType }

// String is a string value.
type String struct{ Data []byte }

// List is a list value (or a run of consecutive items).
type List struct{ Items [][]byte }

// Set is a set value.
type Set struct{ Members [][]byte }

// ZMember is a sorted-set member.
type ZMember struct {
	Member []byte
	Score  float64
}

// ZSet is a sorted-set value.
type ZSet struct{ Members []ZMember }

// HashField is a hash field; ExpireAtMs is the field TTL (0 = none).
type HashField struct {
	Field, Value []byte
	ExpireAtMs   int64
}

// Hash is a hash value.
type Hash struct{ Fields []HashField }

// StreamID is a stream entry ID.
type StreamID struct{ Ms, Seq uint64 }

func (id StreamID) String() string {
	return strconv.FormatUint(id.Ms, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// Less orders IDs.
func (id StreamID) Less(o StreamID) bool {
	return id.Ms < o.Ms || (id.Ms == o.Ms && id.Seq < o.Seq)
}

// StreamEntry is one live stream entry; Fields alternate field, value.
type StreamEntry struct {
	ID     StreamID
	Fields [][]byte
}

// PendingEntry is one entry of a consumer group's PEL.
type PendingEntry struct {
	ID            StreamID
	DeliveryTime  int64
	DeliveryCount uint64
	Consumer      []byte // nil when no consumer owns it
}

// StreamConsumer is a consumer of a group.
type StreamConsumer struct {
	Name       []byte
	SeenTime   int64
	ActiveTime int64 // equals SeenTime for formats older than STREAM_LISTPACKS_3
}

// StreamGroup is a consumer group.
type StreamGroup struct {
	Name        []byte
	LastID      StreamID
	EntriesRead int64 // -1 when unknown
	PEL         []PendingEntry
	Consumers   []StreamConsumer
}

// IDMPEntry maps an idempotency id to the entry it produced.
type IDMPEntry struct {
	IID []byte
	ID  StreamID
}

// IDMPProducer is one producer of the Redis 8.6 stream IDMP table.
type IDMPProducer struct {
	PID     []byte
	Entries []IDMPEntry
}

// StreamIDMP is the idempotent-producer state of STREAM_LISTPACKS_4.
type StreamIDMP struct {
	Duration, MaxEntries      uint64
	Producers                 []IDMPProducer
	IIDsAdded, IIDsDuplicates uint64
}

// Stream is a stream value. When delivered in parts, only the last part
// carries the metadata (HasMeta); earlier parts carry entries only.
type Stream struct {
	Entries      []StreamEntry
	HasMeta      bool
	Length       uint64
	LastID       StreamID
	FirstID      StreamID
	MaxDeletedID StreamID
	EntriesAdded uint64
	Groups       []StreamGroup
	IDMP         *StreamIDMP
}

// Module is a MODULE_2 value (or a MODULE_AUX payload).
type Module struct {
	ID     uint64
	Name   string
	EncVer int
	// Raw is the module-opcode stream after the module id, including the
	// final EOF opcode.
	Raw []byte
}

func (*String) valueType() ValueType { return TypeString }
func (*List) valueType() ValueType   { return TypeList }
func (*Set) valueType() ValueType    { return TypeSet }
func (*ZSet) valueType() ValueType   { return TypeZSet }
func (*Hash) valueType() ValueType   { return TypeHash }
func (*Stream) valueType() ValueType { return TypeStream }
func (*Module) valueType() ValueType { return TypeModule }

// TypeOf returns the logical type of v.
func TypeOf(v Value) ValueType { return v.valueType() }

// Sentinel errors; every error returned by this package wraps one of them
// (or io.ErrUnexpectedEOF / a reader error) so callers can use errors.Is.
var (
	ErrCorrupt     = errors.New("corrupt data")
	ErrUnsupported = errors.New("unsupported")
	ErrChecksum    = errors.New("checksum mismatch")
	ErrLimit       = errors.New("limit exceeded")
)

// Error locates a failure in the input (Offset is -1 for encoding errors).
type Error struct {
	Offset int64
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Offset < 0 {
		return "rdb: " + e.Msg
	}
	return "rdb: offset " + strconv.FormatInt(e.Offset, 10) + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// encErr reports a value that cannot be encoded.
func encErr(kind error, format string, args ...any) error {
	return errAt(-1, kind, format, args...)
}

func errAt(off int64, kind error, format string, args ...any) error {
	return &Error{Offset: off, Msg: fmt.Sprintf(format, args...), Err: kind}
}

// RDB type codes.
const (
	TypeCodeString            = 0
	TypeCodeList              = 1
	TypeCodeSet               = 2
	TypeCodeZSet              = 3
	TypeCodeHash              = 4
	TypeCodeZSet2             = 5
	TypeCodeModulePreGA       = 6
	TypeCodeModule2           = 7
	TypeCodeHashZipmap        = 9
	TypeCodeListZiplist       = 10
	TypeCodeSetIntset         = 11
	TypeCodeZSetZiplist       = 12
	TypeCodeHashZiplist       = 13
	TypeCodeListQuicklist     = 14
	TypeCodeStreamListpacks   = 15
	TypeCodeHashListpack      = 16
	TypeCodeZSetListpack      = 17
	TypeCodeListQuicklist2    = 18
	TypeCodeStreamListpacks2  = 19
	TypeCodeSetListpack       = 20
	TypeCodeStreamListpacks3  = 21
	TypeCodeHashMetadataPreGA = 22 // Redis; Valkey uses 22 for HASH_2
	TypeCodeHashLpExPreGA     = 23
	TypeCodeHashMetadata      = 24
	TypeCodeHashLpEx          = 25
	TypeCodeStreamListpacks4  = 26
	TypeCodeValkeyHash2       = 22
)

// Opcodes.
const (
	opKeyMetaOrSlotImport = 243 // Redis KEY_META / Valkey SLOT_IMPORT
	opSlotInfo            = 244
	opFunction2           = 245
	opFunctionPreGA       = 246
	opModuleAux           = 247
	opIdle                = 248
	opFreq                = 249
	opAux                 = 250
	opResizeDB            = 251
	opExpireTimeMs        = 252
	opExpireTime          = 253
	opSelectDB            = 254
	opEOF                 = 255
	opREAMLRU             = 107 // Redis Enterprise RAM_LRU: one length, ignored
)

// Supported versions.
const (
	MaxRedisVersion  = 13
	ValkeyVersion80  = 80
	MaxValkeyVersion = 80
)

// typeInfo describes a type code under a dialect.
type typeInfo struct {
	name string
	vt   ValueType
	min  int // minimum RDB version a loader needs to accept this code
}

var redisTypes = map[byte]typeInfo{
	0: {"STRING", TypeString, 1}, 1: {"LIST", TypeList, 1}, 2: {"SET", TypeSet, 1},
	3: {"ZSET", TypeZSet, 1}, 4: {"HASH", TypeHash, 1}, 5: {"ZSET_2", TypeZSet, 8},
	6: {"MODULE_PRE_GA", TypeModule, 8}, 7: {"MODULE_2", TypeModule, 8},
	9: {"HASH_ZIPMAP", TypeHash, 2}, 10: {"LIST_ZIPLIST", TypeList, 2},
	11: {"SET_INTSET", TypeSet, 2}, 12: {"ZSET_ZIPLIST", TypeZSet, 2},
	13: {"HASH_ZIPLIST", TypeHash, 4}, 14: {"LIST_QUICKLIST", TypeList, 7},
	15: {"STREAM_LISTPACKS", TypeStream, 9}, 16: {"HASH_LISTPACK", TypeHash, 10},
	17: {"ZSET_LISTPACK", TypeZSet, 10}, 18: {"LIST_QUICKLIST_2", TypeList, 10},
	19: {"STREAM_LISTPACKS_2", TypeStream, 10}, 20: {"SET_LISTPACK", TypeSet, 11},
	21: {"STREAM_LISTPACKS_3", TypeStream, 11}, 22: {"HASH_METADATA_PRE_GA", TypeHash, 12},
	23: {"HASH_LISTPACK_EX_PRE_GA", TypeHash, 12}, 24: {"HASH_METADATA", TypeHash, 12},
	25: {"HASH_LISTPACK_EX", TypeHash, 12}, 26: {"STREAM_LISTPACKS_4", TypeStream, 13},
}

func lookupType(code byte, valkey bool) (typeInfo, bool) {
	if valkey {
		if code == TypeCodeValkeyHash2 {
			return typeInfo{"HASH_2", TypeHash, 80}, true
		}
		if code > 21 {
			return typeInfo{}, false
		}
	}
	ti, ok := redisTypes[code]
	return ti, ok
}

// TypeName names a type code ("HASH_LISTPACK"); valkey selects the Valkey
// meaning of clashing codes.
func TypeName(code byte, valkey bool) string {
	if ti, ok := lookupType(code, valkey); ok {
		return ti.name
	}
	return "TYPE_" + strconv.Itoa(int(code))
}

// TypeMinVersion is the lowest RDB version whose loader understands the
// type code (0 if unknown). The fast path may RESTORE raw bytes only when
// the target's RDB version is at least this (and, for codes >= 22, the
// target is of the same dialect: Valkey >= 80 vs Redis 12..79).
func TypeMinVersion(code byte, valkey bool) int {
	if ti, ok := lookupType(code, valkey); ok {
		return ti.min
	}
	return 0
}

// HasFieldTTLs reports whether v is a hash with at least one field TTL (Redis 7.4+).
func HasFieldTTLs(v Value) bool {
	h, ok := v.(*Hash)
	if !ok {
		return false
	}
	for _, f := range h.Fields {
		if f.ExpireAtMs > 0 {
			return true
		}
	}
	return false
}
