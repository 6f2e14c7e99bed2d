package verify

import (
	"bytes"
	"cmp"
	"hash/maphash"
	"slices"
	"unsafe"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// decodeCompare decodes two DUMP payloads and compares their values as data: two servers may
// write one value in different bytes (another RDB version, another encoding, or a hash table's
// own iteration order, as for sets), and then the values themselves decide, here in the tool,
// without a further round trip. ok is false when either payload cannot be decoded, or holds a
// stream or a module value: the digest path decides those.
func decodeCompare(a, b string) (typA, typB string, equal, ok bool) {
	// The values alias the payloads (strings, never changed) and are dropped before they are.
	ea, _, err := rdb.DecodeDumpView(stringBytes(a))
	if err != nil {
		return "", "", false, false
	}
	return compareWith(ea.Value, b)
}

// compareWith compares a decoded value with a DUMP payload's, as decodeCompare.
func compareWith(va rdb.Value, b string) (typA, typB string, equal, ok bool) {
	eb, _, err := rdb.DecodeDumpView(stringBytes(b))
	if err != nil {
		return "", "", false, false
	}
	ta, tb := rdb.TypeOf(va), rdb.TypeOf(eb.Value)
	if ta == rdb.TypeStream || ta == rdb.TypeModule || tb == rdb.TypeStream || tb == rdb.TypeModule {
		return "", "", false, false
	}
	if ta != tb {
		return ta.String(), tb.String(), false, true
	}
	return ta.String(), tb.String(), sameValue(va, eb.Value), true
}

// stringBytes is s's bytes without a copy, for reading only.
func stringBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// sameValue compares two decoded values of one type as data: order matters for strings and
// lists only; hash field TTLs are not compared (neither does the digest path).
func sameValue(a, b rdb.Value) bool {
	switch x := a.(type) {
	case *rdb.String:
		return bytes.Equal(x.Data, b.(*rdb.String).Data)
	case *rdb.List:
		y := b.(*rdb.List)
		if len(x.Items) != len(y.Items) {
			return false
		}
		for i := range x.Items {
			if !bytes.Equal(x.Items[i], y.Items[i]) {
				return false
			}
		}
		return true
	case *rdb.Set:
		y := b.(*rdb.Set)
		if len(x.Members) != len(y.Members) {
			return false
		}
		return sameMembers(x.Members, y.Members)
	case *rdb.Hash:
		y := b.(*rdb.Hash)
		if len(x.Fields) != len(y.Fields) {
			return false
		}
		m := make(map[string][]byte, len(x.Fields))
		for _, f := range x.Fields {
			m[string(f.Field)] = f.Value
		}
		for _, f := range y.Fields {
			v, ok := m[string(f.Field)]
			if !ok || !bytes.Equal(v, f.Value) {
				return false
			}
		}
		return len(m) == len(y.Fields)
	case *rdb.ZSet:
		y := b.(*rdb.ZSet)
		if len(x.Members) != len(y.Members) {
			return false
		}
		m := make(map[string]float64, len(x.Members))
		for _, z := range x.Members {
			m[string(z.Member)] = z.Score
		}
		for _, z := range y.Members {
			s, ok := m[string(z.Member)]
			if !ok || s != z.Score { // -0 == 0, as the digest treats them
				return false
			}
		}
		return len(m) == len(y.Members)
	}
	return false
}

// sameMembers reports whether two sets (each without repeated members) hold the same members.
// It sorts 64-bit hashes of the members rather than the members (no pointers moved, cheap
// comparisons), then compares the members the hashes pair up byte by byte, so a collision
// cannot make two different sets equal; a collision inside one set falls back to sorting the
// members themselves.
func sameMembers(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	seed := memberSeed
	ha, hb := make([]keyed, len(a)), make([]keyed, len(b))
	for i := range a {
		ha[i] = keyed{maphash.Bytes(seed, a[i]), i}
		hb[i] = keyed{maphash.Bytes(seed, b[i]), i}
	}
	byHash := func(x, y keyed) int { return cmp.Compare(x.h, y.h) }
	slices.SortFunc(ha, byHash)
	slices.SortFunc(hb, byHash)
	for i := range ha {
		if ha[i].h != hb[i].h {
			return false
		}
		if i > 0 && ha[i].h == ha[i-1].h {
			return sameSorted(a, b)
		}
		if !bytes.Equal(a[ha[i].i], b[hb[i].i]) {
			return false
		}
	}
	return true
}

type keyed struct {
	h uint64
	i int
}

var memberSeed = maphash.MakeSeed()

func sameSorted(a, b [][]byte) bool {
	sa, sb := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(sa, bytes.Compare)
	slices.SortFunc(sb, bytes.Compare)
	for i := range sa {
		if !bytes.Equal(sa[i], sb[i]) {
			return false
		}
	}
	return true
}
