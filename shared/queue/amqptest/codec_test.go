package amqptest

import (
	"reflect"
	"testing"
)

func TestCodecRoundTrip(t *testing.T) {
	in := described{code: codeAttach, value: []any{
		"link", uint32(7), true, uint8(1), nil, symbol("sym"), []byte{1, 2},
		uint64(1 << 40), int32(-5), uint16(9), amqpMap{"k", "v"}, symbols{"A", "B"},
	}}
	d := &decoder{b: encode(nil, in)}
	v, err := d.value()
	if err != nil {
		t.Fatal(err)
	}
	got := v.(described)
	f := fields(got.value.(list))
	want := []any{"link", uint64(7), true, uint64(1), nil, symbol("sym"), []byte{1, 2},
		uint64(1 << 40), int64(-5), uint64(9), amqpMap{"k", "v"}, []any{symbol("A"), symbol("B")}}
	if got.code != codeAttach || !reflect.DeepEqual(f.items, want) {
		t.Fatalf("decoded %#x %#v, want %#v", got.code, f.items, want)
	}
	// A field's original encoding is kept for echoing.
	if e := encode(nil, f.encoded(6)); !reflect.DeepEqual(e, encode(nil, []byte{1, 2})) {
		t.Errorf("encoded(6) = %x", e)
	}
}

// The compact forms that peers use (list8, map8, smalluint, str8, sym8, array8) decode too.
func TestCodecCompactForms(t *testing.T) {
	b := []byte{
		0xc0, 0x15, 0x05, // list8: size 21, 5 items
		0x52, 0x03, // smalluint 3
		0xa1, 0x02, 'h', 'i', // str8
		0xa3, 0x01, 'x', // sym8
		0xc1, 0x03, 0x02, 0x43, 0x40, // map8 {0: null}
		0xe0, 0x04, 0x02, 0x50, 0x01, 0x02, // array8 of two ubytes
	}
	v, err := (&decoder{b: b}).value()
	if err != nil {
		t.Fatal(err)
	}
	want := []any{uint64(3), "hi", symbol("x"), amqpMap{uint64(0), nil}, []any{uint64(1), uint64(2)}}
	if got := v.(list).items; !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %#v, want %#v", got, want)
	}
	if _, err := (&decoder{b: b[:10]}).value(); err == nil {
		t.Error("truncated list decoded without error")
	}
}
