package rdb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"
)

// Listpack-based encodings built with the package's listpack writer, so
// chunking is tested on blob encodings too.
func encodeListpack(items [][]byte) []byte {
	l := newLPBuilder()
	for _, it := range items {
		if v, err := strconv.ParseInt(string(it), 10, 64); err == nil && strconv.FormatInt(v, 10) == string(it) {
			l.addInt(v)
		} else {
			l.addString(it)
		}
	}
	return l.bytes()
}

func quicklist2(items [][]byte, perNode int) []byte {
	nodes := (len(items) + perNode - 1) / perNode
	b := AppendLength(nil, uint64(nodes))
	for i := 0; i < len(items); i += perNode {
		j := min(i+perNode, len(items))
		if j-i == 1 && len(items[i]) > 100 {
			b = AppendString(AppendLength(b, 1), items[i]) // plain node
			continue
		}
		b = AppendString(AppendLength(b, 2), encodeListpack(items[i:j]))
	}
	return b
}

func genItems(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		if i%3 == 0 {
			out[i] = []byte(strconv.Itoa(i*7 - 5000))
		} else {
			out[i] = []byte(fmt.Sprintf("%0*d", size, i))
		}
	}
	return out
}

type rawValue struct {
	t   byte
	b   []byte
	v   Value
	n   int // elements
	ver int
}

func chunkCases() map[string]rawValue {
	items := genItems(5000, 12)
	pairs := func(n int) []HashField {
		f := make([]HashField, n)
		for i := range f {
			f[i] = HashField{Field: []byte("field:" + strconv.Itoa(i)), Value: items[i]}
		}
		return f
	}
	zm := make([]ZMember, 3000)
	for i := range zm {
		zm[i] = ZMember{Member: []byte("m" + strconv.Itoa(i)), Score: float64(i) / 3}
	}
	var se []StreamEntry
	for i := 0; i < 2500; i++ {
		se = append(se, StreamEntry{ID: StreamID{uint64(1e12 + i/3), uint64(i % 3)}, Fields: [][]byte{[]byte("k"), items[i]}})
	}
	ttl := pairs(2000)
	for i := range ttl {
		if i%2 == 0 {
			ttl[i].ExpireAtMs = 1800000000000 + int64(i)
		}
	}
	cases := map[string]rawValue{}
	add := func(name string, v Value, ver int) {
		t, b, err := EncodeValue(v, ver)
		if err != nil {
			panic(err)
		}
		cases[name] = rawValue{t, b, v, elemCount(v), ver}
	}
	add("list", &List{Items: items}, 11)
	add("set", &Set{Members: items}, 11)
	add("zset", &ZSet{Members: zm}, 11)
	add("zset-text", &ZSet{Members: zm}, 7)
	add("hash", &Hash{Fields: pairs(4000)}, 11)
	add("hash-metadata", &Hash{Fields: ttl}, 12)
	add("hash2-valkey", &Hash{Fields: ttl}, 80)
	add("stream", &Stream{Entries: se, HasMeta: true, Length: uint64(len(se)), LastID: se[len(se)-1].ID}, 11)
	// Blob encodings.
	cases["quicklist2"] = rawValue{TypeCodeListQuicklist2, quicklist2(items, 128), &List{Items: items}, len(items), 11}
	cases["set-listpack"] = rawValue{TypeCodeSetListpack, AppendString(nil, encodeListpack(items[:3000])), &Set{Members: items[:3000]}, 3000, 11}
	var flat [][]byte
	for _, f := range pairs(3000) {
		flat = append(flat, f.Field, f.Value)
	}
	cases["hash-listpack"] = rawValue{TypeCodeHashListpack, AppendString(nil, encodeListpack(flat)), &Hash{Fields: pairs(3000)}, 3000, 11}
	return cases
}

func writeFile(t testing.TB, ver int, keys map[string]rawValue) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, ver)
	if err != nil {
		t.Fatal(err)
	}
	w.SelectDB(0)
	for k, v := range keys {
		if err := w.WriteRaw(v.t, []byte(k), v.b, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestChunking(t *testing.T) {
	for name, c := range chunkCases() {
		data := writeFile(t, c.ver, map[string]rawValue{name: c})
		for _, per := range []int{1000, 97, 1} {
			if per == 1 && c.n > 3000 {
				continue
			}
			rd, err := NewReader(bytes.NewReader(data), Options{ChunkElements: per})
			if err != nil {
				t.Fatal(err)
			}
			var all Value
			parts := 0
			for {
				e, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s/%d: %v", name, per, err)
				}
				if e.Kind != KindKey {
					continue
				}
				if e.Part != parts {
					t.Fatalf("%s: part %d, want %d", name, e.Part, parts)
				}
				if n := elemCount(e.Value); n > per || n == 0 && !e.Last {
					t.Fatalf("%s: part of %d elements with ChunkElements %d", name, n, per)
				}
				if e.Raw != nil && !(e.Part == 0 && e.Last) {
					t.Fatalf("%s: Raw on a split value", name)
				}
				if parts == 0 {
					all = cloneValue(e.Value)
				} else if all, err = mergeValue(all, e.Value); err != nil {
					t.Fatal(err)
				}
				parts++
			}
			want := (c.n + per - 1) / per
			if _, isStream := c.v.(*Stream); isStream && c.n%per == 0 {
				want++ // the metadata comes in a final part of its own
			}
			if parts != want {
				t.Fatalf("%s/%d: %d parts, want %d", name, per, parts, want)
			}
			if s, ok := c.v.(*Stream); ok {
				streamEquivalent(t, name, s, all.(*Stream), 3)
			} else if msg := diffValues(c.v, all); msg != "" {
				t.Fatalf("%s/%d: %s", name, per, msg)
			}
		}
	}
}

func TestChunkBytes(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes
	fields := make([]HashField, 200)
	for i := range fields {
		fields[i] = HashField{Field: []byte(strconv.Itoa(i)), Value: bytes.Repeat([]byte{byte(i)}, 1000)}
	}
	keys := map[string]rawValue{}
	for name, v := range map[string]Value{"big": &String{Data: big}, "hash": &Hash{Fields: fields}, "small": &String{Data: []byte("x")}} {
		tb, b, _ := EncodeValue(v, 11)
		keys[name] = rawValue{t: tb, b: b, v: v}
	}
	data := writeFile(t, 11, keys)
	rd, err := NewReader(bytes.NewReader(data), Options{ChunkBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Value{}
	parts := map[string]int{}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != KindKey {
			continue
		}
		k := string(e.Key)
		if s, ok := e.Value.(*String); ok && len(s.Data) > 16<<10 {
			t.Fatalf("string part of %d bytes", len(s.Data))
		}
		if h, ok := e.Value.(*Hash); ok && len(h.Fields) > 17 {
			t.Fatalf("hash part of %d fields of 1000 bytes with ChunkBytes 16K", len(h.Fields))
		}
		if k == "small" && e.Raw == nil {
			t.Fatal("small value without Raw")
		}
		if parts[k] == 0 {
			got[k] = cloneValue(e.Value)
		} else {
			got[k], _ = mergeValue(got[k], e.Value)
		}
		parts[k]++
	}
	if parts["big"] != 10 || parts["hash"] < 12 {
		t.Fatalf("parts %v", parts)
	}
	for k, v := range keys {
		if msg := diffValues(v.v, got[k]); msg != "" {
			t.Fatalf("%s: %s", k, msg)
		}
	}
}

// hugeHashReader generates an RDB file with one hash of n fields without
// ever holding it.
func hugeHashReader(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		var crc uint64
		write := func(b []byte) {
			crc = CRC64(crc, b)
			bw.Write(b)
		}
		write([]byte("REDIS0011"))
		write(AppendLength(AppendString([]byte{TypeCodeHash}, []byte("huge")), uint64(n)))
		var scratch []byte
		for i := 0; i < n; i++ {
			scratch = scratch[:0]
			scratch = AppendString(scratch, []byte("field:"+strconv.Itoa(i)))
			scratch = AppendString(scratch, []byte("value:"+strconv.Itoa(i)))
			write(scratch)
		}
		write([]byte{opEOF})
		bw.Write(binary.LittleEndian.AppendUint64(nil, crc))
		bw.Flush()
		pw.Close()
	}()
	return pr
}

// TestHugeHashBoundedMemory streams a 2,000,000-field hash and checks the
// heap never holds it.
func TestHugeHashBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 2_000_000
	rd, err := NewReader(hugeHashReader(n), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	var peak uint64
	fields, parts := 0, 0
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h := e.Value.(*Hash)
		if len(h.Fields) > DefaultChunkElements {
			t.Fatalf("part with %d fields", len(h.Fields))
		}
		if string(h.Fields[0].Field) != "field:"+strconv.Itoa(fields) {
			t.Fatalf("part %d starts at %q", parts, h.Fields[0].Field)
		}
		fields += len(h.Fields)
		parts++
		if parts%400 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if fields != n {
		t.Fatalf("%d fields", fields)
	}
	// The whole hash would need well over 100 MB of heap.
	if peak > 32<<20 {
		t.Fatalf("heap reached %d MB while streaming", peak>>20)
	}
	t.Logf("%d fields in %d parts, sampled peak heap %d KB", fields, parts, peak>>10)
}
