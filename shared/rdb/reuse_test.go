package rdb

import (
	"bytes"
	"io"
	"reflect"
	"testing"
)

// With ReuseEntries, Next hands out one Entry over and over, and what it holds is what a reader
// without the option gives. The payloads built from the values (Dump, which writes its trailer
// in place after the value's captured bytes) stay intact after the whole file is read: the
// captures cut from one slab do not overlap.
func TestReuseEntriesSameAsNew(t *testing.T) {
	// The bench file is what an import reads (mostly values come raw); the synthetic files hold
	// every encoding, read raw, in small parts and decoded.
	files := append([][]byte{benchFile(t)}, syntheticFiles(t)...)
	for fi, data := range files {
		configs := []Options{{RawValues: true}, {RawValues: true, ChunkElements: 3, ChunkBytes: 100}, {}}
		if fi == 0 {
			configs = configs[:1]
		}
		for ci, o := range configs {
			fresh := readAll(t, data, o, false)
			reused := readAll(t, data, o, true)
			if len(fresh.entries) != len(reused.entries) || fresh.err != reused.err {
				t.Fatalf("file %d config %d: %d entries ending %v, reused %d ending %v",
					fi, ci, len(fresh.entries), fresh.err, len(reused.entries), reused.err)
			}
			for i, a := range fresh.entries {
				if b := reused.entries[i]; !reflect.DeepEqual(a, b) {
					t.Fatalf("file %d config %d entry %d (key %q): reused entry differs:\n%+v\n%+v", fi, ci, i, a.Key, a, b)
				}
				if a.Raw == nil {
					continue
				}
				if want := BuildDump(a.TypeByte, a.Raw, 11); !bytes.Equal(reused.dumps[i], want) {
					t.Fatalf("file %d config %d entry %d (key %q): payload changed after the file was read", fi, ci, i, a.Key)
				}
			}
		}
	}
}

type readResult struct {
	entries []Entry
	dumps   [][]byte
	err     error
}

// readAll reads data to its end, keeping a copy of each entry and the DUMP payload built from it
// as soon as it came.
func readAll(t *testing.T, data []byte, o Options, reuse bool) readResult {
	t.Helper()
	o.ReuseEntries = reuse
	rd, err := NewReader(bytes.NewReader(data), o)
	if err != nil {
		t.Fatal(err)
	}
	var out readResult
	var last *Entry
	for {
		e, err := rd.Next()
		if err != nil {
			if err != io.EOF {
				out.err = err
			}
			return out
		}
		if reuse && last != nil && e != last {
			t.Fatal("ReuseEntries: Next returned a new entry")
		}
		last = e
		out.entries = append(out.entries, *e)
		out.dumps = append(out.dumps, e.Dump(11))
	}
}
