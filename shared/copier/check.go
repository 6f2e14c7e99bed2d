package copier

import (
	"context"

	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Reads for a verification (shared/verify): the copy's own raw reads, so checking a key costs
// the tool what copying it costs, not a go-redis command object per command.

// KeyRead is what ReadForCheck read of one key.
type KeyRead struct {
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
// redirects are read again through go-redis, as the copy does.
func ReadForCheck(ctx context.Context, conn *redisconn.Conn, db int, keys [][]byte, big, hint int64) ([]KeyRead, bool, error) {
	side := &rawSide{conn: conn, db: db, read: true}
	if !conn.Cluster {
		side.fixed = conn.Endpoint.Addr()
	}
	rd, src := rawReader{side}, conn.Keys(db)
	n, errs := make([]int64, len(keys)), make([]error, len(keys))
	if big >= 0 {
		if err := stageSizes(ctx, rd, src, keys, n, errs); err != nil {
			return nil, false, err
		}
	}
	out := make([]KeyRead, len(keys))
	var idx []int
	for i := range keys {
		out[i].Size, out[i].SizeErr = n[i], errs[i]
		switch {
		case errs[i] != nil:
		case big > 0 && n[i] >= big:
			out[i].Big = true
		default:
			idx = append(idx, i)
		}
	}
	abs := conn.Version.Major >= 7
	if len(idx) == 0 {
		return out, abs, nil
	}
	st := &dumpStage{pexpiretime: abs, data: make([]string, len(idx)), dumpErr: make([]error, len(idx)),
		ttl: make([]int64, len(idx)), ttlErr: make([]error, len(idx)), held: max(hint, 0)}
	for _, i := range idx {
		st.keys = append(st.keys, keys[i])
		st.held += n[i]
	}
	if err := stageDumps(ctx, rd, src, st); err != nil {
		return nil, abs, err
	}
	for j, i := range idx {
		out[i].Payload, out[i].DumpErr, out[i].TTL, out[i].TTLErr = st.data[j], st.dumpErr[j], st.ttl[j], st.ttlErr[j]
	}
	return out, abs, nil
}
