package rdb

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCRC64(t *testing.T) {
	// The check value of CRC-64/Jones as used by Redis (crc64.c self test).
	if got := CRC64(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(123456789) = %016x", got)
	}
	// Split updates must agree with one-shot updates.
	data := bytes.Repeat([]byte("redis-migrate"), 1000)
	c := CRC64(0, data[:7])
	c = CRC64(c, data[7:])
	if c != CRC64(0, data) {
		t.Fatal("incremental CRC differs")
	}
}

func TestDumpVectors(t *testing.T) {
	needCorpus(t)
	want := map[string]struct {
		ver int
		v   string
	}{
		"cupcake-rdb_decoder_test_TestDumpDecoder_v6.bin": {6, `"10"`},
		"valkey-doc_dump.md_SET-mykey-10_v10.bin":         {10, `"10"`},
		"valkey-doc_restore.md_list-1-2-3_ziplist_v4.bin": {4, `["1" "2" "3"]`},
	}
	dir := filepath.Join(corpusDir, "_dump_vectors")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Fatalf("%d vectors, expected %d", len(files), len(want))
	}
	for _, f := range files {
		p, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		e, ver, err := DecodeDump(p)
		if err != nil {
			t.Fatalf("%s: %v", f.Name(), err)
		}
		w := want[f.Name()]
		if ver != w.ver || normalize(e.Value) != w.v {
			t.Fatalf("%s: version %d value %s, want %d %s", f.Name(), ver, normalize(e.Value), w.ver, w.v)
		}
		// Raw re-framed with the same version reproduces the payload.
		if !bytes.Equal(BuildDump(e.TypeByte, e.Raw, uint16(ver)), p) {
			t.Fatalf("%s: BuildDump(Raw) differs from the vector", f.Name())
		}
		// A flipped bit anywhere must be caught by the CRC.
		bad := append([]byte{}, p...)
		bad[len(bad)/2] ^= 0x10
		if _, _, err := DecodeDump(bad); !errors.Is(err, ErrChecksum) {
			t.Fatalf("%s: corrupted payload: %v", f.Name(), err)
		}
	}
}

func TestDecodeDumpErrors(t *testing.T) {
	if _, _, err := DecodeDump([]byte{0, 1, 2}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short payload: %v", err)
	}
	if _, _, err := DecodeDump(BuildDump(0, AppendString(nil, []byte("x")), 99)); err == nil ||
		!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "unsupported RDB version 99") {
		t.Fatalf("version 99: %v", err)
	}
	if _, _, err := DecodeDump(BuildDump(0, append(AppendString(nil, []byte("x")), 'z'), 9)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, _, err := DecodeDump(BuildDump(8, nil, 9)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("type 8: %v", err)
	}
	if _, _, err := DecodeDump(BuildDump(TypeCodeModulePreGA, []byte{1}, 8)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("module pre-GA: %v", err)
	}
}

// sampleValues covers every value type, including binary data, special
// scores, field TTLs and stream groups.
func sampleValues() map[string]Value {
	stream := &Stream{
		Entries: []StreamEntry{
			{ID: StreamID{1700000000000, 0}, Fields: [][]byte{[]byte("a"), []byte("1"), []byte("b"), []byte("x")}},
			{ID: StreamID{1700000000000, 1}, Fields: [][]byte{[]byte("a"), []byte("2"), []byte("b"), []byte("-77777")}},
			{ID: StreamID{1700000000005, 0}, Fields: [][]byte{[]byte("other"), bytes.Repeat([]byte("v"), 5000)}},
		},
		HasMeta: true, Length: 3, LastID: StreamID{1700000000005, 0}, FirstID: StreamID{1700000000000, 0},
		EntriesAdded: 3,
		Groups: []StreamGroup{{
			Name: []byte("g1"), LastID: StreamID{1700000000000, 1}, EntriesRead: 2,
			PEL: []PendingEntry{
				{ID: StreamID{1700000000000, 0}, DeliveryTime: 1700000000100, DeliveryCount: 2, Consumer: []byte("alice")},
				{ID: StreamID{1700000000000, 1}, DeliveryTime: 1700000000200, DeliveryCount: 1, Consumer: []byte("bob")},
			},
			Consumers: []StreamConsumer{
				{Name: []byte("alice"), SeenTime: 1700000000300, ActiveTime: 1700000000300},
				{Name: []byte("bob"), SeenTime: 1700000000400, ActiveTime: 1700000000400},
				{Name: []byte("carol"), SeenTime: 1700000000500, ActiveTime: 1700000000500},
			},
		}, {Name: []byte("empty"), EntriesRead: -1}},
	}
	var many [][]byte
	for i := 0; i < 300; i++ {
		many = append(many, []byte(strings.Repeat("m", i%70)+string(rune('a'+i%26))))
	}
	return map[string]Value{
		"string":    &String{Data: []byte("hello\x00\xff world")},
		"emptystr":  &String{Data: []byte{}},
		"bigstring": &String{Data: bytes.Repeat([]byte{0, 1, 2, 250}, 40000)},
		"list":      &List{Items: append([][]byte{[]byte("1"), {}, []byte("three")}, many...)},
		"set":       &Set{Members: [][]byte{[]byte("a"), []byte("-5"), []byte("\x00")}},
		"zset": &ZSet{Members: []ZMember{{[]byte("a"), 1.5}, {[]byte("b"), math.Inf(1)}, {[]byte("c"), math.Inf(-1)},
			{[]byte("d"), -0.1}, {[]byte("e"), 1e300}, {[]byte("f"), 5e-324}, {[]byte("g"), 123456789012}}},
		"hash":    &Hash{Fields: []HashField{{Field: []byte("f"), Value: []byte("v")}, {Field: []byte("n"), Value: []byte("12")}}},
		"hashttl": &Hash{Fields: []HashField{{[]byte("f1"), []byte("v1"), 1800000000000}, {[]byte("f2"), []byte("v2"), 0}, {[]byte("f3"), []byte("v3"), 1800000009999}}},
		"stream":  stream,
		"module":  &Module{ID: 0x2a5b3c4d5e6f7 << 10, Name: ModuleName(0x2a5b3c4d5e6f7 << 10), Raw: []byte{2, 1, 5, 3, 'a', 'b', 'c', 0}},
	}
}

// streamEquivalent compares what survives an encoding of version ver.
func streamEquivalent(t *testing.T, name string, a, b *Stream, ver int) {
	t.Helper()
	ca, cb := *a, *b
	ca.Groups, cb.Groups = append([]StreamGroup{}, a.Groups...), append([]StreamGroup{}, b.Groups...)
	ca.IDMP, cb.IDMP = nil, nil
	ca.Length, cb.Length = uint64(len(a.Entries)), uint64(len(b.Entries))
	if len(a.Entries) > 0 && a.LastID.Less(a.Entries[len(a.Entries)-1].ID) {
		ca.LastID = a.Entries[len(a.Entries)-1].ID
	}
	ca.FirstID = StreamID{}
	if len(a.Entries) > 0 {
		ca.FirstID = a.Entries[0].ID
	}
	ca.EntriesAdded = max(a.EntriesAdded, uint64(len(a.Entries)))
	if ver == 1 {
		ca.MaxDeletedID, cb.MaxDeletedID = StreamID{}, StreamID{}
		ca.EntriesAdded = ca.Length
	}
	for i := range ca.Groups {
		g := ca.Groups[i]
		if ver == 1 {
			g.EntriesRead = -1
		}
		g.Consumers = append([]StreamConsumer{}, g.Consumers...)
		for j := range g.Consumers {
			if ver < 3 {
				g.Consumers[j].ActiveTime = g.Consumers[j].SeenTime
			}
		}
		ca.Groups[i] = g
	}
	if msg := diffValues(&ca, &cb); msg != "" {
		t.Fatalf("%s: stream round trip (v%d): %s", name, ver, msg)
	}
}

func TestEncodeDumpRoundTrip(t *testing.T) {
	targets := []int{6, 7, 8, 9, 10, 11, 12, 13, 80}
	for name, v := range sampleValues() {
		for _, target := range targets {
			p, err := EncodeDump(v, target)
			switch {
			case name == "stream" && target < 9, name == "hashttl" && target < 12, name == "module" && target < 8:
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s for RDB %d: want ErrUnsupported, got %v", name, target, err)
				}
				continue
			case err != nil:
				t.Fatalf("%s for RDB %d: %v", name, target, err)
			}
			e, ver, err := DecodeDump(p)
			if err != nil {
				t.Fatalf("%s for RDB %d: decode: %v", name, target, err)
			}
			if ver != target {
				t.Fatalf("%s: version %d, want %d", name, ver, target)
			}
			checkOldestEncoding(t, name, e.TypeByte, target)
			if s, ok := v.(*Stream); ok {
				sv := map[byte]int{15: 1, 19: 2, 21: 3}[e.TypeByte]
				streamEquivalent(t, name, s, e.Value.(*Stream), sv)
				continue
			}
			if msg := diffValues(v, e.Value); msg != "" {
				t.Fatalf("%s for RDB %d: %s", name, target, msg)
			}
		}
	}
}

func checkOldestEncoding(t *testing.T, name string, tb byte, target int) {
	t.Helper()
	want := map[string]byte{"string": 0, "emptystr": 0, "bigstring": 0, "list": 1, "set": 2, "zset": 5, "hash": 4, "module": 7}
	w, ok := want[name]
	switch {
	case name == "zset" && target < 8:
		w, ok = 3, true
	case name == "hashttl":
		w, ok = 24, true
		if target >= 80 {
			w = 22
		}
	case name == "stream":
		w, ok = 21, true
		if target == 9 {
			w = 15
		} else if target == 10 {
			w = 19
		}
	}
	if ok && tb != w {
		t.Fatalf("%s for RDB %d encoded as type %d, want %d", name, target, tb, w)
	}
}

// TestEncodeCorpusValues re-encodes every corpus value for a modern target
// and checks it decodes back identically.
func TestEncodeCorpusValues(t *testing.T) {
	n := 0
	for _, rel := range corpusFiles(t) {
		if _, neg := negative[rel]; neg {
			continue
		}
		data, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		g, err := readFile(t, bytes.NewReader(data), Options{ReturnEmpty: true}, false)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for _, k := range g.keys {
			for _, target := range []int{9, 10, 11, 13, 80} {
				p, err := EncodeDump(k.value, target)
				if err != nil {
					if errors.Is(err, ErrUnsupported) {
						continue // e.g. field TTLs for an old target
					}
					t.Fatalf("%s key %q: %v", rel, k.e.Key, err)
				}
				e, _, err := DecodeDump(p)
				if err != nil {
					t.Fatalf("%s key %q target %d: %v", rel, k.e.Key, target, err)
				}
				if s, ok := k.value.(*Stream); ok {
					sv := map[byte]int{15: 1, 19: 2, 21: 3}[e.TypeByte]
					streamEquivalent(t, rel+" "+string(k.e.Key), s, e.Value.(*Stream), sv)
				} else if msg := diffValues(k.value, e.Value); msg != "" {
					t.Fatalf("%s key %q target %d: %s", rel, k.e.Key, target, msg)
				}
				n++
			}
		}
	}
	t.Logf("%d corpus values re-encoded and decoded back", n)
}

// A Valkey 8 (RDB 11) DUMP payload decodes and re-encodes for an older
// Redis: the cross-version fallback path.
func TestDumpCrossVersion(t *testing.T) {
	h := &Hash{Fields: []HashField{{Field: []byte("a"), Value: []byte("1")}}}
	// A Valkey 9 HASH_2 payload (RDB 80) is decoded with the Valkey meaning.
	p := BuildDump(22, appendMillis(AppendString(AppendString(AppendLength(nil, 1), []byte("a")), []byte("1")), -1), 80)
	e, ver, err := DecodeDump(p)
	if err != nil || ver != 80 {
		t.Fatal(ver, err)
	}
	if msg := diffValues(h, e.Value); msg != "" {
		t.Fatal(msg)
	}
	// The same type code under a Redis version means HASH_METADATA_PRE_GA.
	p = BuildDump(22, AppendString(AppendString(AppendLength(AppendLength(nil, 1), 1700000000000), []byte("a")), []byte("1")), 12)
	e, _, err = DecodeDump(p)
	if err != nil {
		t.Fatal(err)
	}
	if f := e.Value.(*Hash).Fields[0]; f.ExpireAtMs != 1700000000000 {
		t.Fatalf("PRE_GA ttl = %d", f.ExpireAtMs)
	}
	out, err := EncodeDump(&Hash{Fields: []HashField{{Field: []byte("a"), Value: []byte("1")}}}, 7)
	if err != nil || out[0] != TypeCodeHash {
		t.Fatal(err)
	}
}

// Redis 8.6 DUMP payloads may carry KEY_META before the type.
func TestDumpKeyMeta(t *testing.T) {
	body := []byte{opKeyMetaOrSlotImport, 1, 1, 2, 3, 4, modOpUInt, 5, modOpEOF, TypeCodeString}
	body = AppendString(body, []byte("v"))
	p := append(append([]byte{}, body...), 13, 0)
	p = append(p, make([]byte, 8)...)
	c := CRC64(0, p[:len(p)-8])
	for i := 0; i < 8; i++ {
		p[len(p)-8+i] = byte(c >> (8 * i))
	}
	e, _, err := DecodeDump(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.KeyMeta) != 1 || e.KeyMeta[0].ClassSpec != 0x04030201 || !bytes.Equal(e.KeyMeta[0].Raw, []byte{2, 5, 0}) {
		t.Fatalf("key meta %+v", e.KeyMeta)
	}
	if string(e.Value.(*String).Data) != "v" {
		t.Fatal("value")
	}
}

// The three-run CRC64 of long inputs equals the one-run loop at every length and split.
func TestCRC64LongInputs(t *testing.T) {
	const crcLane = 4096
	data := make([]byte, 5*3*crcLane+77)
	for i := range data {
		data[i] = byte(i*131 + i>>7)
	}
	for _, n := range []int{0, 7, 100, 191, 192, 193, 400, 3*crcLane - 1, 3 * crcLane, 3*crcLane + 1, 7*crcLane + 5, len(data)} {
		if CRC64(0, data[:n]) != crc64Slice8(0, data[:n]) {
			t.Fatalf("length %d differs", n)
		}
		if CRC64(12345, data[:n]) != crc64Slice8(12345, data[:n]) {
			t.Fatalf("length %d from a running CRC differs", n)
		}
	}
	for _, cut := range []int{1, 8, crcLane, 3*crcLane + 3} {
		if CRC64(CRC64(0, data[:cut]), data[cut:]) != crc64Slice8(0, data) {
			t.Fatalf("split at %d differs", cut)
		}
	}
}

func BenchmarkCRC64(b *testing.B) {
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		CRC64(0, p)
	}
}

func BenchmarkCRC64Payload(b *testing.B) {
	p := make([]byte, 400)
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		CRC64(0, p)
	}
}

func BenchmarkCRC64PayloadOneRun(b *testing.B) {
	p := make([]byte, 400)
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		crc64Slice8(0, p)
	}
}

func BenchmarkCRC64OneRun(b *testing.B) {
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		crc64Slice8(0, p)
	}
}
