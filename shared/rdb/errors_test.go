package rdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// rdbFile frames body (everything after the header, before EOF) as a file.
func rdbFile(header string, body []byte) []byte {
	b := append([]byte(header), body...)
	b = append(b, opEOF)
	return binary.LittleEndian.AppendUint64(b, CRC64(0, b))
}

func readAllEntries(data []byte, opts Options) ([]*Entry, error) {
	rd, err := NewReader(bytes.NewReader(data), opts)
	if err != nil {
		return nil, err
	}
	var out []*Entry
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func TestHeaderErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"REDIS0099", "unsupported RDB version 99"},
		{"REDIS0000", "unsupported RDB version 0"},
		{"VALKEY081", "unsupported RDB version 81"},
		{"REDIX0001", "bad magic"},
		{"REDIS00x1", "bad RDB header"},
		{"REDIS", "unexpected end of input"},
	} {
		_, err := NewReader(strings.NewReader(c.in), Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v", c.in, err)
		}
	}
	if _, err := NewReaderAt(strings.NewReader(""), 100, 14, false, 0, Options{}); !errors.Is(err, ErrUnsupported) {
		t.Fatal(err)
	}
}

func TestZiplistErrorNamesOffset(t *testing.T) {
	// A ziplist whose only entry claims 99999 bytes.
	zl := make([]byte, 10)
	zl = append(zl, 0, 0x80, 0, 1, 0x86, 0x9f, 'a', 'b', 0xff)
	binary.LittleEndian.PutUint32(zl, uint32(len(zl)))
	binary.LittleEndian.PutUint32(zl[4:], 10)
	binary.LittleEndian.PutUint16(zl[8:], 1)
	body := AppendString(AppendString([]byte{TypeCodeListZiplist}, []byte("k")), zl)
	data := rdbFile("REDIS0006", body)
	_, err := readAllEntries(data, Options{})
	want := "rdb: offset 12: ziplist entry at byte 10: length 99999 exceeds remaining 2 bytes"
	if err == nil || err.Error() != want || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var re *Error
	if !errors.As(err, &re) || re.Offset != 12 {
		t.Fatalf("error offset: %+v", re)
	}
}

func TestUnknownOpcodes(t *testing.T) {
	for _, c := range []struct {
		hdr  string
		body []byte
		want string
	}{
		{"REDIS0011", []byte{200, 1, 'k'}, "offset 9: unknown value type or non-OSS opcode 200"},
		{"REDIS0011", []byte{27, 1, 'k'}, "unknown value type or non-OSS opcode 27"},
		{"VALKEY080", []byte{23, 1, 'k'}, "unknown value type or non-OSS opcode 23"},
		{"VALKEY080", []byte{242}, "unknown value type or non-OSS opcode 242"},
		{"REDIS0011", []byte{TypeCodeModulePreGA, 1, 'k', 5}, "MODULE value (type 6"},
	} {
		_, err := readAllEntries(rdbFile(c.hdr, c.body), Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%v: got %v, want %q", c.body, err, c.want)
		}
	}
}

func TestOpcodes(t *testing.T) {
	var body []byte
	body = AppendString(AppendString(append(body, opAux), []byte("redis-ver")), []byte("7.2.0"))
	body = append(body, opModuleAux)
	body = AppendLength(body, 0x2a5b3c4d5e6f7<<10|3)
	body = append(body, modOpUInt, 2, modOpString, 1, 'x', modOpDouble)
	body = binary.LittleEndian.AppendUint64(body, 0x3ff8000000000000) // 1.5
	body = append(body, modOpEOF)
	body = AppendString(append(body, opFunction2), []byte("#!lua name=lib\n"))
	body = AppendString(append(body, opFunctionPreGA), []byte("f"))
	body = AppendString(body, []byte("LUA"))
	body = AppendString(append(body, 1), []byte("desc"))
	body = AppendString(body, []byte("return 1"))
	body = AppendLength(append(body, opSelectDB), 3)
	body = AppendLength(AppendLength(append(body, opResizeDB), 10), 2)
	body = AppendLength(AppendLength(AppendLength(append(body, opSlotInfo), 7638), 1), 0)
	// Prefixes: seconds expire, idle, freq, Redis Enterprise RAM_LRU.
	body = binary.LittleEndian.AppendUint32(append(body, opExpireTime), 1700000000)
	body = AppendLength(append(body, opIdle), 24)
	body = append(body, opFreq, 5, opREAMLRU, 0x40, 0x43)
	body = AppendString(AppendString(append(body, TypeCodeString), []byte("k")), []byte("v"))
	// Redis 8.6 KEY_META before a key.
	body = append(body, opKeyMetaOrSlotImport, 1, 9, 9, 9, 9, modOpSInt, 7, modOpEOF)
	body = AppendString(AppendString(append(body, TypeCodeString), []byte("m")), []byte("w"))
	es, err := readAllEntries(rdbFile("REDIS0013", body), Options{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := ""
	for _, e := range es {
		kinds += e.Kind.String() + ","
	}
	if kinds != "aux,module-aux,function,function,selectdb,resizedb,slot-info,key,key," {
		t.Fatal(kinds)
	}
	ma := es[1]
	ops, err := ma.Module.Ops()
	if err != nil || ma.ModuleWhen != 2 || ma.Module.EncVer != 3 || len(ops) != 2 || ops[1].Float != 1.5 || string(ops[0].Str) != "x" {
		t.Fatalf("module aux %+v %+v %v", ma, ops, err)
	}
	if f := es[3]; string(f.FunctionName) != "f" || string(f.FunctionEngine) != "LUA" || string(f.FunctionDesc) != "desc" || string(f.Function) != "return 1" {
		t.Fatalf("pre-GA function %+v", f)
	}
	if es[6].Slot != 7638 || es[6].SlotSize != 1 {
		t.Fatalf("slot info %+v", es[6])
	}
	k := es[7]
	if k.DB != 3 || k.ExpireAtMs != 1700000000000 || k.Idle != 24 || k.Freq != 5 || string(k.Key) != "k" {
		t.Fatalf("key %+v", k)
	}
	if m := es[8]; len(m.KeyMeta) != 1 || m.KeyMeta[0].ClassSpec != 0x09090909 || m.Idle != -1 || m.ExpireAtMs != 0 {
		t.Fatalf("key meta %+v", m)
	}
	// Under VALKEY magic 243 is SLOT_IMPORT, an entry of its own.
	vb := AppendString([]byte{opKeyMetaOrSlotImport}, []byte("job"))
	vb = AppendLength(AppendLength(AppendLength(vb, 1), 100), 200)
	es, err = readAllEntries(rdbFile("VALKEY080", vb), Options{})
	if err != nil || len(es) != 1 || es[0].Kind != KindSlotImport || string(es[0].SlotImportJob) != "job" ||
		len(es[0].SlotRanges) != 1 || es[0].SlotRanges[0] != (SlotRange{100, 200}) {
		t.Fatalf("slot import %+v %v", es, err)
	}
}

func TestChecksum(t *testing.T) {
	body := AppendString(AppendString([]byte{TypeCodeString}, []byte("k")), []byte("v"))
	good := rdbFile("REDIS0009", body)
	if _, err := readAllEntries(good, Options{}); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{}, good...)
	bad[len(bad)-1] ^= 1
	if _, err := readAllEntries(bad, Options{}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("bad crc: %v", err)
	}
	if _, err := readAllEntries(bad, Options{SkipChecksum: true}); err != nil {
		t.Fatalf("skip checksum: %v", err)
	}
	zero := append([]byte{}, good...)
	copy(zero[len(zero)-8:], make([]byte, 8))
	if _, err := readAllEntries(zero, Options{}); err != nil {
		t.Fatalf("zero crc: %v", err)
	}
	// Trailing data (AOF tail, diskless EOF mark) is ignored.
	tail := append(append([]byte{}, good...), []byte("*2\r\n$3\r\nset\r\n")...)
	if _, err := readAllEntries(tail, Options{}); err != nil {
		t.Fatalf("trailing data: %v", err)
	}
	// Version 4 files have no checksum at all.
	old := append([]byte("REDIS0004"), body...)
	old = append(old, opEOF)
	if es, err := readAllEntries(old, Options{}); err != nil || len(es) != 1 {
		t.Fatalf("v4: %v", err)
	}
}

func TestTruncationsFail(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, 12)
	w.WriteAux([]byte("a"), []byte("b"))
	for name, v := range sampleValues() {
		if err := w.WriteKey([]byte(name), v, 1700000000000); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	data := buf.Bytes()
	if _, err := readAllEntries(data, Options{}); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(data); n += 1 + n/50 {
		_, err := readAllEntries(data[:n], Options{ChunkElements: 7})
		if err == nil {
			t.Fatalf("truncated at %d/%d: no error", n, len(data))
		}
		if n >= 9 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated at %d: %v", n, err)
		}
	}
}

// A huge claimed length must not allocate before the data shows up.
func TestNoAllocationFromLengths(t *testing.T) {
	cases := [][]byte{
		AppendLength(append(AppendString([]byte{TypeCodeString}, []byte("k")), 0x81), 1<<40),
		append(AppendString([]byte{TypeCodeString}, []byte("k")), 0x80, 0x7f, 0xff, 0xff, 0xff, 'x'),
		AppendLength(AppendString([]byte{TypeCodeList}, []byte("k")), 1<<62),
		AppendLength(AppendString([]byte{TypeCodeStreamListpacks3}, []byte("k")), 1<<62),
		// LZF claiming 1 GB out of 3 compressed bytes.
		append(AppendString([]byte{TypeCodeString}, []byte("k")), 0xc3, 3, 0x80, 0x40, 0, 0, 0, 1, 2, 3),
	}
	for i, body := range cases {
		data := append([]byte("REDIS0011"), body...)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := readAllEntries(data, Options{})
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("case %d: no error", i)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
			t.Fatalf("case %d: allocated %d bytes for a %d-byte input (%v)", i, d, len(data), err)
		}
	}
	// MaxStringBytes applies to strings that must be held whole.
	key := AppendLength([]byte{TypeCodeString, 0x80}, 0)
	key = append(key[:2], 0, 0x10, 0, 0) // key of 1 MiB
	_, err := readAllEntries(append([]byte("REDIS0011"), key...), Options{MaxStringBytes: 1000})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("MaxStringBytes: %v", err)
	}
}
