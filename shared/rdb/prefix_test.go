package rdb

import (
	"bytes"
	"io"
	"testing"
)

// redis-server 7.x and Valkey 8 keep a key's expire/idle/freq prefix across any other opcode
// (AUX, SELECTDB, RESIZEDB, MODULE_AUX, FUNCTION, SLOT_INFO) until the next key, and drop it at
// EOF. KeyDB writes AUX "mvcc-tstamp" there. The reader does the same: the opcodes come out as
// entries of their own and the prefix lands on the next key.
func TestOpcodesBetweenPrefixAndValue(t *testing.T) {
	str := func(b []byte, k, v string) []byte {
		return AppendString(AppendString(append(b, TypeCodeString), []byte(k)), []byte(v))
	}
	ms := func(b []byte, v int64) []byte { return appendMillis(append(b, opExpireTimeMs), v) }
	var b []byte
	b = ms(b, 4102444800000)
	b = AppendString(AppendString(append(b, opAux), []byte("mvcc-tstamp")), []byte("1700000000000"))
	b = str(b, "a", "1")
	b = AppendLength(append(b, opIdle), 7)
	b = AppendLength(AppendLength(append(b, opResizeDB), 4), 1)
	b = append(b, opFreq, 9)
	b = str(b, "b", "2")
	b = ms(b, 4102444801000)
	b = AppendLength(append(b, opSelectDB), 2)
	b = AppendString(append(b, opFunction2), []byte("#!lua name=l\nredis.register_function('f', function() return 1 end)"))
	b = append(b, opModuleAux)
	b = AppendLength(b, 0x2a5b3c4d5e6f7<<10|3)
	b = append(b, modOpUInt, 2, modOpEOF)
	b = AppendLength(AppendLength(AppendLength(append(b, opSlotInfo), 1), 1), 0)
	b = str(b, "c", "3")
	b = str(b, "d", "4") // no prefix of its own: nothing carried over
	b = ms(b, 4102444802000)
	b = AppendString(AppendString(append(b, opAux), []byte("mvcc-tstamp")), []byte("1"))
	data := rdbFile("REDIS0011", b) // the dangling prefix before EOF is dropped

	es, err := readAllEntries(data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := ""
	for _, e := range es {
		kinds += e.Kind.String() + ","
	}
	if kinds != "aux,key,resizedb,key,selectdb,function,module-aux,slot-info,key,key,aux," {
		t.Fatal(kinds)
	}
	keys := map[string]*Entry{}
	for _, e := range es {
		if e.Kind == KindKey {
			keys[string(e.Key)] = e
		}
	}
	if a := keys["a"]; a.ExpireAtMs != 4102444800000 || a.DB != 0 || a.Offset != 9 {
		t.Fatalf("a: %+v", a)
	}
	if b := keys["b"]; b.Idle != 7 || b.Freq != 9 || b.ExpireAtMs != 0 {
		t.Fatalf("b: %+v", b)
	}
	if c := keys["c"]; c.ExpireAtMs != 4102444801000 || c.DB != 2 {
		t.Fatalf("c: %+v", c)
	}
	if d := keys["d"]; d.ExpireAtMs != 0 || d.Idle != -1 || d.Freq != -1 || d.DB != 2 {
		t.Fatalf("d: %+v", d)
	}

	// Resuming at a key's Offset (where its prefix starts) gives the same key again, with its
	// prefix; while an opcode sits between prefix and value, Offset is not a resume point.
	rd, err := NewReader(bytes.NewReader(data), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindSelectDB {
			if !rd.InKeyPrefix() {
				t.Fatal("InKeyPrefix false after SELECTDB inside c's prefix")
			}
			continue
		}
		if e.Kind == KindKey && string(e.Key) == "c" {
			if rd.InKeyPrefix() {
				t.Fatal("InKeyPrefix true after the key")
			}
			r2, err := NewReaderAt(bytes.NewReader(data[e.Offset:]), e.Offset, 11, false, 0, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got *Entry
			for got == nil || got.Kind != KindKey {
				if got, err = r2.Next(); err != nil {
					t.Fatal(err)
				}
			}
			if string(got.Key) != "c" || got.DB != 2 || got.ExpireAtMs != 4102444801000 {
				t.Fatalf("resumed: %+v", got)
			}
			break
		}
	}

	// A file ending right after a prefix (no EOF opcode) is still cut short.
	cut := append([]byte("REDIS0011"), ms(nil, 1)...)
	if _, err := readAllEntries(cut, Options{}); err == nil || err == io.EOF {
		t.Fatalf("cut after prefix: %v", err)
	}
}
