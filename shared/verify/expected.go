package verify

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Expected is one key as a file says the target should hold it.
type Expected struct {
	Key   string   // target name
	State KeyState // type and expiry; Digest when Body is nil
	// Body is the type byte and encoded value as the file holds them (what the import RESTOREs
	// when the target reads that encoding); nil to compare State.Digest instead.
	Body       []byte
	RDBVersion int // the file's RDB version, to decode Body
}

// CheckExpected compares keys of one target db with what a file says: DUMP payloads first
// (the file's bytes equal the target's payload body: same type and value), then the values
// decoded on both sides, and in-server digests for big keys and values given by digest. It
// returns how many of the keys the target holds.
func CheckExpected(ctx context.Context, conn *redisconn.Conn, db int, items []Expected, o Options, rep *Report) (int64, error) {
	o = o.WithDefaults()
	var fast, slow []int
	for i, it := range items {
		if it.Body != nil && o.Compare != CompareDigest {
			fast = append(fast, i)
		} else {
			slow = append(slow, i)
		}
	}
	var found int64
	record := func(key string, want, got KeyState) {
		if want.Type != "none" && got.Type != "none" && want.Err == nil && got.Err == nil {
			found++
		}
		rep.Compare(key, want, got, o)
	}
	// Keys the import just wrote from small values are not sized first: they hold what the
	// import RESTOREd (a concurrent writer could have put a big value there; it would be DUMPed
	// whole, once).
	// The file's strings are read as the copy reads them, with one GETRANGE each (a string the
	// target holds under the limit), not with a DUMP.
	var sized, unsized, sizedStr, unsizedStr []int
	strLen := copier.StringFirstLen(o.BigKeyBytes)
	for _, i := range fast {
		isStr := strLen > 0 && items[i].State.Type == rdb.TypeString.String()
		switch small := o.SizeFromExpected && !o.PresenceOnly && int64(len(items[i].Body)) < o.BigKeyBytes; {
		case small && isStr:
			unsizedStr = append(unsizedStr, i)
		case small:
			unsized = append(unsized, i)
		case isStr:
			sizedStr = append(sizedStr, i)
		default:
			sized = append(sized, i)
		}
	}
	for _, part := range []struct {
		idx      []int
		big      int64
		strFirst int64
	}{{unsizedStr, -1, strLen}, {unsized, -1, 0}, {sizedStr, o.BigKeyBytes, strLen}, {sized, o.BigKeyBytes, 0}} {
		if len(part.idx) == 0 {
			continue
		}
		keys := make([]string, len(part.idx))
		var hint int64 // the payloads' bytes, about: the file's value and a DUMP trailer
		for j, i := range part.idx {
			keys[j] = items[i].Key
			hint += int64(len(items[i].Body)) + 16
		}
		states, release, err := ReadDumps(ctx, conn, db, keys, part.big, hint, part.strFirst)
		switch {
		case errors.Is(err, errNoMemoryUsage):
			slow = append(slow, part.idx...)
		case err != nil:
			return found, readErr("reading target", err)
		default:
			for j, i := range part.idx {
				want, got, isSlow := fileVerdict(items[i], states[j], o)
				if isSlow {
					slow = append(slow, i)
					continue
				}
				record(items[i].Key, want, got)
			}
		}
		release() // the verdicts keep no payload
	}
	if len(slow) == 0 {
		return found, nil
	}
	sort.Ints(slow)
	keys := make([]string, len(slow))
	for j, i := range slow {
		keys[j] = items[i].Key
		if items[i].Body != nil {
			items[i].State.Digest = bodyDigest(items[i], o.ChunkSize)
		}
	}
	got, err := ReadStates(ctx, conn, conn.Keys(db), keys, o.ChunkSize)
	if err != nil {
		return found, readErr("reading target", err)
	}
	rep.DigestKeys += int64(len(slow))
	for j, i := range slow {
		record(items[i].Key, items[i].State, got[j])
	}
	return found, nil
}

// strVerdict compares the file's value with a string the target's GETRANGE read whole.
func strVerdict(it Expected, b DumpState, want, got KeyState) (KeyState, KeyState, bool) {
	va, err := rdb.DecodeBodyView(it.Body, it.RDBVersion)
	if err != nil {
		return want, got, true
	}
	ta := rdb.TypeOf(va)
	if ta == rdb.TypeStream || ta == rdb.TypeModule {
		return want, got, true
	}
	want.Type, got.Type = ta.String(), "string"
	want.Digest, got.Digest = "data", "data"
	if s, ok := va.(*rdb.String); !ok || string(s.Data) != b.Payload {
		got.Digest = "data differs"
	}
	return want, got, false
}

func fileVerdict(it Expected, b DumpState, o Options) (want, got KeyState, slow bool) {
	want = it.State
	got = KeyState{Type: want.Type, ExpireAt: b.ExpireAt, Err: b.Err}
	switch {
	case b.Err != nil:
		return want, got, false
	case !b.Present:
		got.Type = "none"
		return want, got, false
	case o.PresenceOnly:
		return want, got, false
	case b.Str:
		return strVerdict(it, b, want, got)
	case b.Payload == "":
		return want, got, true // big in the target: digests decide
	case len(b.Payload) >= 10 && b.Payload[:len(b.Payload)-10] == string(it.Body):
		want.Digest, got.Digest = "dump", "dump"
		return want, got, false
	}
	va, err := rdb.DecodeBodyView(it.Body, it.RDBVersion)
	if err != nil {
		return want, got, true
	}
	ta, tb, equal, ok := compareWith(va, b.Payload)
	if !ok {
		return want, got, true
	}
	want.Type, got.Type = ta, tb
	want.Digest, got.Digest = "data", "data"
	if !equal {
		got.Digest = "data differs"
	}
	return want, got, false
}

func fileDump(it Expected) []byte {
	return rdb.BuildDump(it.Body[0], it.Body[1:], uint16(it.RDBVersion))
}

// bodyDigest is the digest.lua digest of a file value, for the keys the digest path decides.
func bodyDigest(it Expected, chunk int) string {
	e, _, err := rdb.DecodeDump(fileDump(it))
	if err != nil {
		return "undecodable: " + err.Error()
	}
	vd := NewValueDigest(e.Type, chunk)
	vd.Add(e.Value)
	return vd.Sum()
}

// KeySet remembers target key names (as 64-bit hashes, 8 bytes a key) up to a bound, so keys
// that exist only in the target can be named after a pass over a file.
type KeySet struct {
	max  int
	h    []uint64
	full bool
}

// NewKeySet remembers up to max keys.
func NewKeySet(max int) *KeySet { return &KeySet{max: max} }

// Add remembers one key; past the bound the set stops remembering and can no longer name keys.
func (s *KeySet) Add(key string) {
	if s.full {
		return
	}
	if len(s.h) >= s.max {
		s.full, s.h = true, nil
		return
	}
	s.h = append(s.h, hashKey(key))
}

func hashKey(k string) uint64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(k))
	return f.Sum64()
}

// ExtraInTarget counts (and names, up to o.MaxReported) keys of target db tdb that the file did
// not have: the target's size beyond the found keys, and, when the set remembered every key, a
// scan of the target for names it does not hold. Keys without one of prefixes (when given) or
// whose source name does not match o.Match are not the file's and not counted.
func ExtraInTarget(ctx context.Context, dst *redisconn.Conn, tdb int, found int64, set *KeySet, prefixes []string, o Options, rep *Report) error {
	o = o.WithDefaults()
	n, err := dst.DBSize(ctx, tdb)
	if err != nil {
		return readErr("target DBSIZE", err)
	}
	if n <= found {
		return nil
	}
	if set.full {
		// Keys about to expire were not compared (gone from the source) but may still be there.
		if o.Match == "" && len(prefixes) == 1 && prefixes[0] == "" && n-found > rep.GoneSource {
			n -= rep.GoneSource
			rep.Extra += n - found
			rep.Differences = append(rep.Differences, Difference{Key: fmt.Sprintf("(%d keys in db %d)", n-found, tdb), Kind: "extra",
				Detail: "the target holds more keys than the file (too many keys to name them)"})
		}
		return nil
	}
	sort.Slice(set.h, func(i, j int) bool { return set.h[i] < set.h[j] })
	for _, addr := range dst.Masters() {
		node := dst.Node(addr, tdb)
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, "", 1000).Result()
			if err != nil {
				return readErr("target SCAN", err)
			}
			for _, k := range keys {
				if !ours(k, prefixes, o.Match) {
					continue
				}
				h := hashKey(k)
				i := sort.Search(len(set.h), func(i int) bool { return set.h[i] >= h })
				if i < len(set.h) && set.h[i] == h {
					continue
				}
				rep.Extra++
				if len(rep.Differences) < o.MaxReported {
					rep.Differences = append(rep.Differences, Difference{Key: copier.PrintableKey([]byte(k)), Kind: "extra",
						Detail: "only in the target (the file has no such key)"})
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return nil
}

func ours(k string, prefixes []string, match string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(k, p) && (match == "" || Glob(match, k[len(p):])) {
			return true
		}
	}
	return false
}
