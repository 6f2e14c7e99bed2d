package rdb

import (
	"bytes"
	"io"
	"math/rand"
	"strconv"
	"sync"
	"testing"
)

var (
	benchOnce sync.Once
	benchData []byte
	benchKeys int
)

// benchFile builds a 200k-key file mixing the encodings a Redis 7 server
// writes: strings, listpack hashes/zsets/sets, quicklists, intsets, plain
// hashes and zsets above the listpack limits, streams, and expires.
func benchFile(b testing.TB) []byte {
	benchOnce.Do(func() {
		rng := rand.New(rand.NewSource(1))
		var buf bytes.Buffer
		w, err := NewWriter(&buf, 11)
		if err != nil {
			b.Fatal(err)
		}
		w.WriteAux([]byte("redis-ver"), []byte("7.2.4"))
		w.SelectDB(0)
		word := func(n int) []byte {
			s := make([]byte, n)
			for i := range s {
				s[i] = byte('a' + rng.Intn(26))
			}
			return s
		}
		for i := 0; i < 200_000; i++ {
			key := []byte("key:" + strconv.Itoa(i))
			var exp int64
			if i%5 == 0 {
				exp = 1800000000000 + int64(i)
			}
			var t byte
			var v []byte
			switch r := i % 100; {
			case r < 35:
				t, v = TypeCodeString, AppendString(nil, word(10+rng.Intn(100)))
			case r < 45:
				t, v = TypeCodeString, AppendString(nil, []byte(strconv.Itoa(rng.Int())))
			case r < 60:
				var items [][]byte
				for j := 0; j < 10; j++ {
					items = append(items, word(6), word(12))
				}
				t, v = TypeCodeHashListpack, AppendString(nil, encodeListpack(items))
			case r < 70:
				var items [][]byte
				for j := 0; j < 10; j++ {
					items = append(items, word(8), []byte(strconv.Itoa(rng.Intn(1000))))
				}
				t, v = TypeCodeZSetListpack, AppendString(nil, encodeListpack(items))
			case r < 80:
				var items [][]byte
				for j := 0; j < 20; j++ {
					items = append(items, word(15))
				}
				t, v = TypeCodeListQuicklist2, quicklist2(items, 128)
			case r < 85:
				var items [][]byte
				for j := 0; j < 15; j++ {
					items = append(items, word(7))
				}
				t, v = TypeCodeSetListpack, AppendString(nil, encodeListpack(items))
			case r < 92:
				fields := make([]HashField, 150)
				for j := range fields {
					fields[j] = HashField{Field: word(10), Value: word(20)}
				}
				t, v, _ = EncodeValue(&Hash{Fields: fields}, 11)
			case r < 97:
				m := make([]ZMember, 150)
				for j := range m {
					m[j] = ZMember{Member: word(10), Score: rng.Float64()}
				}
				t, v, _ = EncodeValue(&ZSet{Members: m}, 11)
			default:
				var es []StreamEntry
				for j := 0; j < 20; j++ {
					es = append(es, StreamEntry{ID: StreamID{uint64(1e12 + j), 0}, Fields: [][]byte{[]byte("f"), word(10)}})
				}
				t, v, _ = EncodeValue(&Stream{Entries: es, HasMeta: true, Length: 20, LastID: es[19].ID}, 11)
			}
			if err := w.WriteRaw(t, key, v, exp); err != nil {
				b.Fatal(err)
			}
			benchKeys++
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		benchData = buf.Bytes()
	})
	return benchData
}

func BenchmarkReader(b *testing.B) { benchReader(b, Options{}) }

// BenchmarkReaderRaw reads the same file with RawValues, as the importer does.
func BenchmarkReaderRaw(b *testing.B) { benchReader(b, Options{RawValues: true}) }

func benchReader(b *testing.B, opts Options) {
	data := benchFile(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd, err := NewReader(bytes.NewReader(data), opts)
		if err != nil {
			b.Fatal(err)
		}
		keys := 0
		for {
			e, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if e.Kind == KindKey && e.Last {
				keys++
			}
		}
		if keys != benchKeys {
			b.Fatalf("%d keys, want %d", keys, benchKeys)
		}
	}
	b.ReportMetric(float64(benchKeys), "keys/op")
}
