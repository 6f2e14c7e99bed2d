package verify

import (
	"fmt"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// setPayloads is one set of n members written in two orders, as two Redis 7.0 servers' hash
// tables iterate it.
func setPayloads(n int) (string, string) {
	var a, b rdb.Set
	for i := 0; i < n; i++ {
		a.Members = append(a.Members, []byte(fmt.Sprintf("s%dabcdef", i)))
		b.Members = append(b.Members, []byte(fmt.Sprintf("s%dabcdef", n-1-i)))
	}
	pa, _ := rdb.EncodeDump(&a, 10)
	pb, _ := rdb.EncodeDump(&b, 10)
	return string(pa), string(pb)
}

func BenchmarkDecodeCompareSet(b *testing.B) {
	pa, pb := setPayloads(30)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, equal, ok := decodeCompare(pa, pb); !equal || !ok {
			b.Fatal("differ")
		}
	}
}

func TestSameMembers(t *testing.T) {
	set := func(s ...string) [][]byte {
		var out [][]byte
		for _, m := range s {
			out = append(out, []byte(m))
		}
		return out
	}
	for _, c := range []struct {
		a, b [][]byte
		want bool
	}{
		{set(), set(), true},
		{set("a", "b", "c"), set("c", "a", "b"), true},
		{set("a", "b", "c"), set("c", "a", "d"), false},
		{set("a", "b"), set("a", "b", "c"), false},
		{set("", "x"), set("x", ""), true},
		{set("x", "x"), set("x", "y"), false},
		{set("x", "x"), set("x", "x"), true},
	} {
		if got := sameMembers(c.a, c.b); got != c.want {
			t.Fatalf("%q vs %q: %v", c.a, c.b, got)
		}
		if got := sameSorted(c.a, c.b); len(c.a) == len(c.b) && got != c.want {
			t.Fatalf("sorted %q vs %q: %v", c.a, c.b, got)
		}
	}
	pa, pb := setPayloads(30)
	if _, _, equal, ok := decodeCompare(pa, pb); !equal || !ok {
		t.Fatal("a set in two orders differs")
	}
	pc, _ := setPayloads(31)
	if _, _, equal, ok := decodeCompare(pa, pc); equal || !ok {
		t.Fatal("sets of 30 and 31 members are equal")
	}
}
