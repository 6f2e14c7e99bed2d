package rdb

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// fuzzOpts keeps fuzzing cheap: tiny parts and a 1 MiB string cap.
var fuzzOpts = Options{ChunkElements: 16, ChunkBytes: 1024, MaxStringBytes: 1 << 20, ReturnEmpty: true}

func syntheticFiles(t testing.TB) [][]byte {
	var out [][]byte
	for _, ver := range []int{7, 9, 10, 12, 80} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, ver)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteAux([]byte("redis-ver"), []byte("7.2.0"))
		w.SelectDB(1)
		for name, v := range sampleValues() {
			if name == "bigstring" {
				continue
			}
			if _, _, err := EncodeValue(v, ver); err != nil {
				continue
			}
			w.WriteKey([]byte(name), v, 1700000000000)
		}
		w.Close()
		out = append(out, buf.Bytes())
	}
	// Blob encodings.
	keys := map[string]rawValue{}
	for name, c := range chunkCases() {
		if c.t >= 16 && c.t <= 20 {
			keys[name] = c
		}
	}
	items := genItems(40, 5)
	keys["ql"] = rawValue{t: TypeCodeListQuicklist2, b: quicklist2(items, 7)}
	out = append(out, writeFile(t, 11, keys))
	return out
}

func corpusSeeds(t testing.TB) [][]byte {
	if _, err := os.Stat(filepath.Join(corpusDir, "_decoded")); err != nil {
		return nil
	}
	var out [][]byte
	for _, rel := range corpusFiles(t) {
		data, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil || len(data) > 64<<10 {
			continue // big files slow the fuzzer down without adding coverage
		}
		out = append(out, data)
	}
	return out
}

func FuzzReader(f *testing.F) {
	seeds := append(corpusSeeds(f), syntheticFiles(f)...)
	for _, s := range seeds {
		f.Add(s)
		// Truncations exercise every "unexpected end" path.
		f.Add(s[:len(s)/2])
		if len(s) > 9 {
			f.Add(s[:len(s)-9])
		}
	}
	if dir := filepath.Join(corpusDir, "_dump_vectors"); true {
		files, _ := os.ReadDir(dir)
		for _, fi := range files {
			if p, err := os.ReadFile(filepath.Join(dir, fi.Name())); err == nil {
				f.Add(append([]byte("REDIS0009"), p...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzRead(t, data)
	})
}

func fuzzRead(t *testing.T, data []byte) {
	// Leaving values raw changes nothing but Value: the same entries, Raw and errors.
	for _, o := range []Options{fuzzOpts, {ChunkElements: 16, ChunkBytes: 1024, MaxStringBytes: 1 << 20}} {
		if _, err := sameAsDecoding(data, o); err != nil {
			t.Fatalf("RawValues: %v", err)
		}
	}
	rd, err := NewReader(bytes.NewReader(data), fuzzOpts)
	if err != nil {
		return
	}
	// Every part consumes input or comes from an LZF-expanded blob (at most
	// lzfMaxRatio bytes per input byte, two bytes per element), so this
	// bound catches any loop that stops making progress.
	limit := len(data)*lzfMaxRatio/2/fuzzOpts.ChunkElements + len(data) + 16
	for i := 0; ; i++ {
		if i > limit {
			t.Fatalf("%d entries from %d bytes: no progress", i, len(data))
		}
		e, err := rd.Next()
		if err != nil {
			return
		}
		if e.Kind == KindModuleAux {
			e.Module.Ops()
		}
		if e.Kind != KindKey {
			continue
		}
		if m, ok := e.Value.(*Module); ok {
			m.Ops()
		}
		if e.Raw == nil {
			continue
		}
		// Raw must be a valid DUMP body of the same value.
		de, _, err := DecodeDumpWith(BuildDump(e.TypeByte, e.Raw, uint16(rd.Version())), fuzzOpts)
		if err != nil {
			t.Fatalf("key %q: Raw does not decode: %v", e.Key, err)
		}
		if msg := diffValues(e.Value, de.Value); msg != "" {
			t.Fatalf("key %q: Raw decodes differently: %s", e.Key, msg)
		}
		checkReencode(t, e.Value, rd.Version())
	}
}

// checkReencode: whatever decodes must re-encode into something that
// decodes (encoders may refuse, never emit garbage).
func checkReencode(t *testing.T, v Value, ver int) {
	for _, target := range []int{ver, 11, 80} {
		p, err := EncodeDump(v, target)
		if err != nil {
			continue
		}
		de, _, err := DecodeDumpWith(p, Options{MaxStringBytes: 64 << 20})
		if err != nil {
			t.Fatalf("re-encoded %s for RDB %d does not decode: %v", TypeOf(v), target, err)
		}
		if _, isStream := v.(*Stream); !isStream {
			if msg := diffValues(v, de.Value); msg != "" {
				t.Fatalf("re-encoded %s for RDB %d differs: %s", TypeOf(v), target, msg)
			}
		}
	}
}

func FuzzDecodeDump(f *testing.F) {
	add := func(p []byte) {
		if len(p) >= 11 {
			n := len(p)
			f.Add(binary.LittleEndian.Uint16(p[n-10:]), p[:n-10])
		}
	}
	if files, err := os.ReadDir(filepath.Join(corpusDir, "_dump_vectors")); err == nil {
		for _, fi := range files {
			if p, err := os.ReadFile(filepath.Join(corpusDir, "_dump_vectors", fi.Name())); err == nil {
				add(p)
			}
		}
	}
	for _, v := range sampleValues() {
		for _, ver := range []int{7, 9, 10, 11, 12, 80} {
			if p, err := EncodeDump(v, ver); err == nil && len(p) < 4096 {
				add(p)
			}
		}
	}
	for _, data := range append(corpusSeeds(f), syntheticFiles(f)...) {
		rd, err := NewReader(bytes.NewReader(data), Options{SkipChecksum: true})
		if err != nil {
			continue
		}
		for {
			e, err := rd.Next()
			if err != nil {
				break
			}
			if e.Raw != nil && len(e.Raw) < 4096 {
				add(BuildDump(e.TypeByte, e.Raw, uint16(rd.Version())))
			}
		}
	}
	f.Fuzz(func(t *testing.T, ver uint16, body []byte) {
		// The fuzzer cannot forge CRC64, so the trailer is computed here;
		// the raw bytes are also tried as a complete payload.
		DecodeDumpWith(body, fuzzOpts)
		var p []byte
		if len(body) > 0 {
			p = BuildDump(body[0], body[1:], ver)
		}
		e, v, err := DecodeDumpWith(p, fuzzOpts)
		if err != nil {
			return
		}
		if m, ok := e.Value.(*Module); ok {
			m.Ops()
		}
		checkReencode(t, e.Value, v)
	})
}
