package copier

import (
	"context"

	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Reads for a verification (shared/verify): the copy's own raw reads, so checking a key costs
// the tool what copying it costs, not a go-redis command object per command.

// KeyRead is what ReadForCheck read of one key.
type KeyRead struct {
	// Str: the key is a string read whole by the string-first GETRANGE; Payload is its value,
	// not a DUMP payload, and it was not sized.
	Str     bool
	Size    int64 // MEMORY USAGE bytes
	SizeErr error // redis.Nil: no such key
	Big     bool  // sized at or above the limit: not DUMPed
	Payload string
	DumpErr error // redis.Nil: no such key
	TTL     int64 // PEXPIRETIME (unix ms) when AbsTTL, else PTTL (ms); -1 no expiry, -2 no key
	TTLErr  error
}

// ReadForCheck sizes keys of database db of conn (MEMORY USAGE, one pipeline per node), then
// reads the DUMP payload and expiry of those under big bytes (every key when big <= 0) in a
// second. With big < 0 it sizes nothing and reads every key's payload and expiry in one
// pipeline: for a caller that knows no key can be big; hint is then its guess of the payloads'
// bytes, to size their buffer at once. The payloads are strings over a buffer of their own, valid as long as the reads are
// held. It returns whether TTLs are absolute (PEXPIRETIME, servers 7 and later). Keys a cluster
// redirects are read again through go-redis, as the copy does. With strFirst > 0 every key is
// first read as the copy's string-first pass reads it (GETRANGE 0 strFirst-1 and
// the expiry): the strings shorter than strFirst are settled there (Str), the rest read as above.
// release gives the payloads' buffers back for the next reads: call it once nothing reads them.
func ReadForCheck(ctx context.Context, conn *redisconn.Conn, db int, keys [][]byte, big, hint, strFirst int64) (reads []KeyRead, abs bool, release func(), err error) {
	side := &rawSide{conn: conn, db: db, read: true}
	if !conn.Cluster {
		side.fixed = conn.Endpoint.Addr()
	}
	rd, src := rawReader{side}, conn.Keys(db)
	abs = conn.Version.Major >= 7
	var bufs [][]byte
	release = func() {
		for _, a := range bufs {
			putArena(a)
		}
	}
	out := make([]KeyRead, len(keys))
	rest := make([]int, 0, len(keys))
	if strFirst > 0 {
		st := checkStage(keys, abs, int64(len(keys))*512)
		st.strLen = strFirst
		if err := stageDumps(ctx, rd, src, st); err != nil {
			return nil, abs, release, err
		}
		bufs = append(bufs, st.arena)
		for i, v := range st.data {
			// Other types (WRONGTYPE), longer or empty strings and any other refusal are read
			// the sized way, which reports what it meets.
			if !st.wholeString(i) {
				rest = append(rest, i)
				continue
			}
			out[i] = KeyRead{Str: true, Payload: v, TTL: st.ttl[i], TTLErr: st.ttlErr[i]}
		}
	} else {
		for i := range keys {
			rest = append(rest, i)
		}
	}
	if len(rest) == 0 {
		return out, abs, release, nil
	}
	rk := keys
	if len(rest) < len(keys) {
		rk = make([][]byte, len(rest))
		for j, i := range rest {
			rk[j] = keys[i]
		}
	}
	n, errs := make([]int64, len(rk)), make([]error, len(rk))
	if big >= 0 {
		if err := stageSizes(ctx, rd, src, rk, n, errs); err != nil {
			return nil, false, release, err
		}
	}
	var idx []int
	for j, i := range rest {
		out[i].Size, out[i].SizeErr = n[j], errs[j]
		switch {
		case errs[j] != nil:
		case big > 0 && n[j] >= big:
			out[i].Big = true
		default:
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return out, abs, release, nil
	}
	dk := make([][]byte, len(idx))
	held := max(hint, 0)
	for j, i := range idx {
		dk[j] = keys[i]
		held += out[i].Size
	}
	st := checkStage(dk, abs, held)
	if err := stageDumps(ctx, rd, src, st); err != nil {
		return nil, abs, release, err
	}
	bufs = append(bufs, st.arena)
	for j, i := range idx {
		out[i].Payload, out[i].DumpErr, out[i].TTL, out[i].TTLErr = st.data[j], st.dumpErr[j], st.ttl[j], st.ttlErr[j]
	}
	return out, abs, release, nil
}

// checkStage is a read of keys for ReadForCheck, its payload buffer sized for held bytes.
func checkStage(keys [][]byte, abs bool, held int64) *dumpStage {
	n := len(keys)
	return &dumpStage{keys: keys, pexpiretime: abs, held: held,
		data: make([]string, n), dumpErr: make([]error, n), ttl: make([]int64, n), ttlErr: make([]error, n)}
}
