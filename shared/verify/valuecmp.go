package verify

import (
	"bytes"
	"sort"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// decodeCompare decodes two DUMP payloads and compares their values as data: two servers may
// write one value in different bytes (another RDB version, another encoding, or a hash table's
// own iteration order, as for sets), and then the values themselves decide, here in the tool,
// without a further round trip. ok is false when either payload cannot be decoded, or holds a
// stream or a module value: the digest path decides those.
func decodeCompare(a, b string) (typA, typB string, equal, ok bool) {
	ea, _, err := rdb.DecodeDump([]byte(a))
	if err != nil {
		return "", "", false, false
	}
	eb, _, err := rdb.DecodeDump([]byte(b))
	if err != nil {
		return "", "", false, false
	}
	ta, tb := rdb.TypeOf(ea.Value), rdb.TypeOf(eb.Value)
	if ta == rdb.TypeStream || ta == rdb.TypeModule || tb == rdb.TypeStream || tb == rdb.TypeModule {
		return "", "", false, false
	}
	if ta != tb {
		return ta.String(), tb.String(), false, true
	}
	return ta.String(), tb.String(), sameValue(ea.Value, eb.Value), true
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
		return sameSorted(x.Members, y.Members)
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

func sameSorted(a, b [][]byte) bool {
	sa, sb := append([][]byte(nil), a...), append([][]byte(nil), b...)
	sort.Slice(sa, func(i, j int) bool { return bytes.Compare(sa[i], sa[j]) < 0 })
	sort.Slice(sb, func(i, j int) bool { return bytes.Compare(sb[i], sb[j]) < 0 })
	for i := range sa {
		if !bytes.Equal(sa[i], sb[i]) {
			return false
		}
	}
	return true
}
