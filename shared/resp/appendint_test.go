package resp

import (
	"math"
	"strconv"
	"testing"
)

// appendInt's short paths write what strconv writes.
func TestAppendIntMatchesStrconv(t *testing.T) {
	for _, i := range []int64{0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 32767, 1733000000000, -1, -2, -10, -1000,
		math.MaxInt64, math.MinInt64} {
		if got, want := string(appendInt([]byte("x"), i)), "x"+strconv.FormatInt(i, 10); got != want {
			t.Errorf("appendInt(%d) = %q, want %q", i, got, want)
		}
	}
	for i := int64(0); i < 2000; i++ {
		if got, want := string(appendInt(nil, i)), strconv.FormatInt(i, 10); got != want {
			t.Fatalf("appendInt(%d) = %q, want %q", i, got, want)
		}
	}
}

// A head and its arguments are the bytes Array, String and Int write for the same words.
func TestHeadFramesAsArrayAndString(t *testing.T) {
	a, b := &Conn{}, &Conn{}
	a.Start(NewHead(4, "MEMORY", "USAGE"))
	a.Args(NewArgs("0", "32767"))
	b.Array(4)
	b.String("MEMORY")
	b.String("USAGE")
	b.Int(0)
	b.Int(32767)
	if string(a.out) != string(b.out) || a.pending != 1 || b.pending != 1 {
		t.Fatalf("head %q (pending %d), want %q (pending %d)", a.out, a.pending, b.out, b.pending)
	}
}
