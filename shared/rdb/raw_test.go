package rdb

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// sameAsDecoding reads data twice, decoding and with RawValues, and reports how the two runs
// differ: they must give the same entries (offsets, keys, parts, Raw bytes) and end the same way
// (EOF or the same error), and every value left undecoded must decode to what decoding gave.
// It returns the number of entries that came raw.
func sameAsDecoding(data []byte, opts Options) (int, error) {
	type run struct {
		rd      *Reader
		entries []*Entry
		err     error
	}
	read := func(o Options) run {
		rd, err := NewReader(bytes.NewReader(data), o)
		if err != nil {
			return run{err: err}
		}
		var r run
		r.rd = rd
		for i := 0; i < 10*len(data)+100; i++ {
			e, err := rd.Next()
			if err != nil {
				r.err = err
				return r
			}
			r.entries = append(r.entries, e)
		}
		r.err = fmt.Errorf("no end")
		return r
	}
	dec := read(opts)
	ro := opts
	ro.RawValues = true
	raw := read(ro)
	if fmt.Sprint(dec.err) != fmt.Sprint(raw.err) {
		return 0, fmt.Errorf("decoding ends with %v, raw with %v", dec.err, raw.err)
	}
	if dec.rd == nil {
		return 0, nil
	}
	if dec.rd.EmptySkipped() != raw.rd.EmptySkipped() {
		return 0, fmt.Errorf("empty collections skipped: %d decoding, %d raw", dec.rd.EmptySkipped(), raw.rd.EmptySkipped())
	}
	if len(dec.entries) != len(raw.entries) {
		return 0, fmt.Errorf("%d entries decoding, %d raw", len(dec.entries), len(raw.entries))
	}
	n := 0
	for i, a := range dec.entries {
		b := raw.entries[i]
		if a.Kind != b.Kind || a.Offset != b.Offset || a.DB != b.DB || !bytes.Equal(a.Key, b.Key) || a.TypeByte != b.TypeByte ||
			a.ExpireAtMs != b.ExpireAtMs || a.Idle != b.Idle || a.Freq != b.Freq || a.Part != b.Part || a.Last != b.Last ||
			a.Empty != b.Empty || !bytes.Equal(a.Raw, b.Raw) || (a.Raw == nil) != (b.Raw == nil) {
			return 0, fmt.Errorf("entry %d (%s %q at %d) differs: decoding part %d last %v raw %d bytes; raw part %d last %v raw %d bytes",
				i, a.Kind, a.Key, a.Offset, a.Part, a.Last, len(a.Raw), b.Part, b.Last, len(b.Raw))
		}
		if a.Kind != KindKey {
			continue
		}
		if a.Raw != nil {
			want := BuildDump(a.TypeByte, a.Raw, 7)
			for _, x := range []*Entry{a, b} {
				if !bytes.Equal(x.Body(), want[:len(want)-10]) || !bytes.Equal(x.Dump(7), want) {
					return 0, fmt.Errorf("key %q: Body or Dump differ from BuildDump", a.Key)
				}
			}
		}
		if b.Value != nil {
			if msg := diffValues(a.Value, b.Value); msg != "" {
				return 0, fmt.Errorf("key %q: %s", a.Key, msg)
			}
			continue
		}
		n++
		if !walkable(a.TypeByte) || a.Raw == nil || a.Part != 0 || !a.Last {
			return 0, fmt.Errorf("key %q (type %d) came raw", a.Key, a.TypeByte)
		}
		v, err := raw.rd.Decode(b)
		if err != nil {
			return 0, fmt.Errorf("key %q: %v", a.Key, err)
		}
		if msg := diffValues(a.Value, v); msg != "" {
			return 0, fmt.Errorf("key %q decoded from Raw: %s", a.Key, msg)
		}
	}
	return n, nil
}

var rawConfigs = []Options{
	{},
	{ReturnEmpty: true},
	{ChunkElements: 1},
	{ChunkElements: 3, ChunkBytes: 100},
	{ChunkElements: 16, ChunkBytes: 1024, MaxStringBytes: 1 << 20},
	{ChunkBytes: 40, MaxStringBytes: 300},
}

// Every corpus file, whole, cut short and with a byte changed, reads the same with RawValues as
// decoded, under part limits that split values in many places.
func TestRawValuesCorpus(t *testing.T) {
	files := corpusFiles(t)
	raw := 0
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		variants := [][]byte{data}
		cuts := []int{len(data) / 3, len(data) / 2, len(data) - 9, len(data) - 1}
		flips := []int{len(data) / 4, len(data) / 2, 3 * len(data) / 4}
		if len(data) > 32<<10 {
			cuts, flips = cuts[1:2], flips[1:2] // big files: their values are like the small ones'
		}
		for _, cut := range cuts {
			if cut > 9 {
				variants = append(variants, data[:cut])
			}
		}
		for _, at := range flips {
			if at > 9 && at < len(data) {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					v := append([]byte(nil), data...)
					v[at] ^= x
					variants = append(variants, v)
				}
			}
		}
		for vi, v := range variants {
			configs := rawConfigs
			if vi > 0 {
				configs = rawConfigs[2:4]
			}
			for ci, o := range configs {
				o.SkipChecksum = vi > 0
				n, err := sameAsDecoding(v, o)
				if err != nil {
					t.Fatalf("%s variant %d config %d: %v", rel, vi, ci, err)
				}
				raw += n
			}
		}
	}
	if raw == 0 {
		t.Fatal("no value came raw")
	}
	t.Logf("%d files, %d raw entries", len(files), raw)
}

// Synthetic files with every blob encoding, big and small, read the same both ways; the
// mixed bench file too, where most values come raw.
func TestRawValuesSynthetic(t *testing.T) {
	files := syntheticFiles(t)
	keys := map[string]rawValue{}
	for name, c := range chunkCases() {
		keys[name] = c
	}
	files = append(files, writeFile(t, 11, keys))
	for fi, data := range files {
		start := time.Now()
		for ci, o := range rawConfigs {
			if _, err := sameAsDecoding(data, o); err != nil {
				t.Fatalf("file %d config %d: %v", fi, ci, err)
			}
			for _, cut := range []int{len(data) / 2, len(data) - 20} {
				o.SkipChecksum = true
				if _, err := sameAsDecoding(data[:cut], o); err != nil {
					t.Fatalf("file %d cut at %d config %d: %v", fi, cut, ci, err)
				}
			}
		}
		t.Logf("file %d: %d bytes, %v", fi, len(data), time.Since(start))
	}
	// The bench file, in the encodings a Redis 7 server writes: all but its streams come raw.
	rd, err := NewReader(bytes.NewReader(benchFile(t)), Options{RawValues: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindKey && e.Value == nil {
			n++
		}
	}
	if n < 190_000 {
		t.Fatalf("only %d of 200000 values came raw", n)
	}
}

// A rewind past a buffer's worth of bytes (values bigger than the input buffer that decoding
// splits) reads on correctly, and the buffer shrinks back afterwards.
func TestRawValuesRewindBeyondBuffer(t *testing.T) {
	big := make([]HashField, 3000)
	for i := range big {
		big[i] = HashField{Field: []byte(fmt.Sprintf("field-%05d", i)), Value: bytes.Repeat([]byte{byte('a' + i%26)}, 40)}
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 11)
	if err != nil {
		t.Fatal(err)
	}
	w.SelectDB(0)
	for i := 0; i < 5; i++ {
		w.WriteKey([]byte(fmt.Sprintf("big%d", i)), &Hash{Fields: big}, 0)
		w.WriteKey([]byte(fmt.Sprintf("small%d", i)), &String{Data: []byte("v")}, 0)
	}
	for i := 0; i < 20000; i++ { // more than a buffer's worth after the last rewind
		w.WriteKey([]byte(fmt.Sprintf("tail%d", i)), &String{Data: []byte("some value")}, 0)
	}
	w.Close()
	for _, o := range []Options{{}, {ChunkElements: 5000, ChunkBytes: 100 << 10}, {ChunkElements: 2999}} {
		if _, err := sameAsDecoding(buf.Bytes(), o); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	rd, err := NewReader(bytes.NewReader(buf.Bytes()), Options{RawValues: true, ChunkElements: 2999})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(rd.d.in.buf); n > defaultBufSize {
		t.Fatalf("input buffer still %d bytes", n)
	}
}

// lzfRun without an output reports exactly what decompressing reports.
func TestLZFCheckMatchesDecompress(t *testing.T) {
	src := bytes.Repeat([]byte("abcabcabcxyz"), 50)
	comp := lzfCompressForTest(src)
	for i := 0; i < len(comp)*8; i++ {
		c := append([]byte(nil), comp...)
		c[i/8] ^= 1 << (i % 8)
		for _, n := range []int{len(src), len(src) - 1, len(src) + 5} {
			_, e1 := lzfDecompress(c, n)
			e2 := lzfRun(nil, c, n)
			if fmt.Sprint(e1) != fmt.Sprint(e2) {
				t.Fatalf("bit %d len %d: decompress %v, check %v", i, n, e1, e2)
			}
		}
	}
}

// lzfCompressForTest encodes a string of 12-byte periods: one literal run, then back references
// one period back.
func lzfCompressForTest(src []byte) []byte {
	out := append([]byte{11}, src[:12]...)
	for i := 12; i < len(src); i += 12 {
		out = append(out, 7<<5, 12-2-7, 11) // length 12, distance 12
	}
	return out
}

// Whatever plainDecimal accepts, parseScore accepts.
func TestPlainDecimal(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"0", true}, {"-1", true}, {"123.456", true}, {"1.", true}, {".5", true}, {"-.5", true},
		{"1e300", true}, {"1E-5", true}, {"2.5e+10", true}, {"1e999", true}, {"123456789012345678901234567890", true},
		{"", false}, {"-", false}, {".", false}, {"1e", false}, {"1e+", false}, {"+1", false}, {"inf", false},
		{"nan", false}, {"0x10", false}, {"1_000", false}, {" 1", false}, {"1 ", false}, {"1..2", false},
	} {
		if got := plainDecimal([]byte(c.s)); got != c.want {
			t.Fatalf("plainDecimal(%q) = %v", c.s, got)
		}
		if _, ok := parseScore([]byte(c.s)); c.want && !ok {
			t.Fatalf("parseScore(%q) refuses what plainDecimal accepts", c.s)
		}
	}
}
