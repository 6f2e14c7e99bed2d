package verify

import (
	"crypto/sha1"
	"encoding/hex"
	"math"
	"strconv"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// ValueDigest computes, from a decoded RDB value delivered in any number of parts, the same
// digest digest.lua computes inside a server, so an imported key can be checked against the
// file without reading its value back.
type ValueDigest struct {
	typ   string
	chunk int
	d     *digest
	// pending holds the current chunk of an ordered type until it is full.
	pending []byte
	items   int
	sBuf    []byte // string bytes of the current chunk
	stream  *rdb.Stream
	nEntry  int
}

// NewValueDigest starts a digest for a value of type t, with the chunk size used by ReadStates.
func NewValueDigest(t rdb.ValueType, chunk int) *ValueDigest {
	name := t.String()
	return &ValueDigest{typ: name, chunk: chunk, d: newDigest(name)}
}

func lp(b []byte) []byte {
	return append(append(strconv.AppendInt(nil, int64(len(b)), 10), ':'), b...)
}

// Add feeds one part of the value.
func (v *ValueDigest) Add(val rdb.Value) {
	switch x := val.(type) {
	case *rdb.String:
		for data := x.Data; len(data) > 0; {
			room := v.chunk*1024 - len(v.sBuf)
			n := min(room, len(data))
			v.sBuf = append(v.sBuf, data[:n]...)
			data = data[n:]
			if len(v.sBuf) == v.chunk*1024 {
				v.flushString()
			}
		}
	case *rdb.List:
		for _, it := range x.Items {
			v.ordered(lp(it))
		}
	case *rdb.Set:
		for _, m := range x.Members {
			v.xor(m)
		}
	case *rdb.Hash:
		for _, f := range x.Fields {
			v.xor(append(lp(f.Field), f.Value...))
		}
	case *rdb.ZSet:
		for _, m := range x.Members {
			v.xor(append(lp(m.Member), formatScore(m.Score)...))
		}
	case *rdb.Stream:
		for _, e := range x.Entries {
			part := lp([]byte(e.ID.String()))
			for _, f := range e.Fields {
				part = append(part, lp(f)...)
			}
			v.ordered(part)
		}
		if x.HasMeta {
			v.stream = x
		}
	}
}

func (v *ValueDigest) ordered(item []byte) {
	v.pending = append(v.pending, item...)
	v.items++
	if v.items == v.chunk {
		v.flushOrdered()
	}
}

func (v *ValueDigest) flushOrdered() {
	sum := sha1.Sum(v.pending)
	v.d.add(hex.EncodeToString(sum[:]))
	v.pending, v.items = v.pending[:0], 0
}

func (v *ValueDigest) flushString() {
	sum := sha1.Sum(v.sBuf)
	v.d.add(hex.EncodeToString(sum[:]))
	v.sBuf = v.sBuf[:0]
}

func (v *ValueDigest) xor(elem []byte) {
	sum := sha1.Sum(elem)
	v.d.add(hex.EncodeToString(sum[:8]))
}

// Sum finishes the digest in ReadStates' form ("type:hex").
func (v *ValueDigest) Sum() string {
	switch v.typ {
	case "string":
		if len(v.sBuf) > 0 || v.d.count == 0 {
			v.flushString()
		}
	case "list":
		// digest.lua always ends on a short (possibly empty) chunk.
		v.flushOrdered()
	case "stream":
		// The last chunk (possibly without entries) carries groups and length, as in digest.lua.
		groups := []string{}
		length := uint64(0)
		if s := v.stream; s != nil {
			length = s.Length
			for _, g := range s.Groups {
				groups = append(groups, string(lp(g.Name))+string(lp([]byte(g.LastID.String())))+
					string(lp([]byte(strconv.Itoa(len(g.PEL)))))+string(lp([]byte(strconv.Itoa(len(g.Consumers))))))
			}
		}
		sortStrings(groups)
		v.pending = append(v.pending, "groups:"...)
		for _, g := range groups {
			v.pending = append(v.pending, g...)
		}
		v.pending = append(v.pending, "len:"+strconv.FormatUint(length, 10)...)
		v.flushOrdered()
	case "hash", "set", "zset":
		if v.d.count == 0 {
			v.d.add("0000000000000000")
		}
	}
	return v.typ + ":" + v.d.sum()
}

// formatScore prints a score as Lua's string.format('%.17g') does.
func formatScore(f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return []byte("inf")
	case math.IsInf(f, -1):
		return []byte("-inf")
	case math.IsNaN(f):
		return []byte("nan")
	case f == 0:
		return []byte("0") // -0 and 0 are one score (a listpack stores -0 as 0)
	}
	return strconv.AppendFloat(nil, f, 'g', 17, 64)
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
