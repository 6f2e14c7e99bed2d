package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// The fast path compares DUMP payloads. Two servers that write the same RDB version and the same
// encoding serialize equal values to equal bytes (the payload's version and CRC64 trailer
// included), so equal payloads prove equal type and value; the expiry is compared as read. When
// the payloads differ (another server version, another encoding, a hash table's iteration order,
// or really another value) both are decoded here and compared as data. Keys big enough to take
// the chunked path, streams and module values are decided by the digest path (digest.lua), the
// same one used for every key when DUMP cannot be used at all.

// Comparison methods (Options.Compare).
const (
	CompareDump   = "dump"   // DUMP payloads first; digests only where the payloads differ
	CompareDigest = "digest" // digests of every key, computed inside each server
)

// DumpState is what the fast path read of one key on one side.
type DumpState struct {
	Present  bool
	Big      bool   // MEMORY USAGE at or above the big-key limit: not DUMPed
	Payload  string // the DUMP payload (empty when Big or missing)
	Type     string // from the payload's type byte; "" when not known (big, module, unknown code)
	ExpireAt int64  // unix ms; -1 none; -2 missing
	Err      error
}

// errNoMemoryUsage: the server refuses MEMORY USAGE, so keys cannot be sized before a DUMP.
var errNoMemoryUsage = errors.New("MEMORY USAGE is not allowed")

// ReadDumps sizes keys (MEMORY USAGE) and reads their expiry in one pipeline, then DUMPs those
// under bigBytes in a second one: a big value is never serialized whole for a check.
func ReadDumps(ctx context.Context, conn *redisconn.Conn, c redis.UniversalClient, keys []string, bigBytes int64) ([]DumpState, error) {
	out := make([]DumpState, len(keys))
	pipe := c.Pipeline()
	sizes := make([]*redis.IntCmd, len(keys))
	exps := make([]*redis.DurationCmd, len(keys))
	newTTL := conn.Version.Major >= 7
	for i, k := range keys {
		sizes[i] = pipe.MemoryUsage(ctx, k)
		if newTTL {
			exps[i] = pipe.PExpireTime(ctx, k)
		} else {
			exps[i] = pipe.PTTL(ctx, k)
		}
	}
	now := time.Now().UnixMilli()
	if _, err := pipe.Exec(ctx); err != nil && !isReplyErr(err) && err != redis.Nil {
		return nil, err
	}
	dpipe := c.Pipeline()
	dumps := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		st := &out[i]
		n, err := sizes[i].Result()
		switch {
		case err == redis.Nil:
			st.ExpireAt = -2
			continue
		case err != nil && isReplyErr(err) && !strings.Contains(err.Error(), "WRONGTYPE"):
			return nil, errNoMemoryUsage
		case err != nil:
			st.Err = err
			continue
		}
		st.Present = true
		st.ExpireAt, st.Err = expiry(exps[i], newTTL, now)
		if st.Err != nil {
			continue
		}
		if st.ExpireAt == -2 {
			st.Present = false // gone between the two reads
			continue
		}
		if bigBytes > 0 && n >= bigBytes {
			st.Big = true
			continue
		}
		dumps[i] = dpipe.Dump(ctx, k)
	}
	if _, err := dpipe.Exec(ctx); err != nil && !isReplyErr(err) && err != redis.Nil && !errors.Is(err, redis.ErrClosed) {
		return nil, err
	}
	for i := range keys {
		if dumps[i] == nil {
			continue
		}
		st := &out[i]
		p, err := dumps[i].Result()
		switch {
		case err == redis.Nil:
			st.Present, st.ExpireAt = false, -2
		case err != nil:
			st.Err = err
		default:
			st.Payload = p
			if t, ok := rdb.DumpType(p); ok && t != rdb.TypeModule {
				st.Type = t.String()
			}
		}
	}
	return out, nil
}

// expiry converts a PEXPIRETIME (or PTTL, for servers before 7) reply to unix ms, -1 or -2.
func expiry(cmd *redis.DurationCmd, newTTL bool, now int64) (int64, error) {
	raw, err := cmd.Result()
	switch {
	case err != nil:
		return 0, err
	case raw == -2:
		return -2, nil
	case raw < 0:
		return -1, nil
	case newTTL:
		return int64(raw / time.Millisecond), nil
	default:
		return now + int64(raw/time.Millisecond), nil
	}
}

// dumpVerdict decides a key from both sides' DUMP states: a state pair to compare, or slow when
// only the digest path can tell.
func dumpVerdict(a, b DumpState, o Options) (want, got KeyState, slow bool) {
	want = KeyState{Type: a.Type, ExpireAt: a.ExpireAt, Err: a.Err}
	got = KeyState{Type: b.Type, ExpireAt: b.ExpireAt, Err: b.Err}
	switch {
	case a.Err != nil || b.Err != nil:
		return want, got, false
	case !a.Present:
		want.Type = "none"
		return want, got, false
	case a.Type == "":
		return want, got, true // big or of a type the payload does not name: digests decide
	case !b.Present:
		got.Type = "none"
		return want, got, false
	case o.PresenceOnly:
		if got.Type == "" {
			got.Type = "present"
		}
		return want, got, false
	case a.Payload == b.Payload:
		want.Digest, got.Digest = "dump", "dump"
		return want, got, false
	case b.Payload == "":
		return want, got, true // big in the target
	}
	ta, tb, equal, ok := decodeCompare(a.Payload, b.Payload)
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

// checkDumps is verifier.check's fast path; it returns errNoMemoryUsage when either side
// cannot size keys, and then the caller takes the digest path.
func (v *verifier) checkDumps(ctx context.Context, db, tdb int, keys, tkeys []string) error {
	var srcStates []DumpState
	var srcErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		srcStates, srcErr = ReadDumps(ctx, v.src, v.src.Keys(db), keys, v.o.BigKeyBytes)
	}()
	dstStates, err := ReadDumps(ctx, v.dst, v.dst.Keys(tdb), tkeys, v.o.BigKeyBytes)
	<-done
	if errors.Is(srcErr, errNoMemoryUsage) || errors.Is(err, errNoMemoryUsage) {
		return errNoMemoryUsage
	}
	if srcErr != nil {
		return fmt.Errorf("reading source: %s", redact.Error(srcErr))
	}
	if err != nil {
		return fmt.Errorf("reading target: %s", redact.Error(err))
	}
	var slow []int
	v.mu.Lock()
	for i := range keys {
		want, got, isSlow := dumpVerdict(srcStates[i], dstStates[i], v.o)
		if isSlow {
			slow = append(slow, i)
			continue
		}
		v.record(tdb, tkeys[i], want, got)
	}
	v.mu.Unlock()
	if len(slow) == 0 {
		return nil
	}
	sk, tk := make([]string, len(slow)), make([]string, len(slow))
	for j, i := range slow {
		sk[j], tk[j] = keys[i], tkeys[i]
	}
	return v.checkDigests(ctx, db, tdb, sk, tk)
}
