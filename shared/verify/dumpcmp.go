package verify

import (
	"context"
	"errors"
	"strings"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
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
	Payload  string // the DUMP payload (empty when Big or missing), or a string's value when Str
	Str      bool   // read whole by the string-first GETRANGE: Payload is the value itself
	Type     string // from the payload's type byte; "" when not known (big, module, unknown code)
	ExpireAt int64  // unix ms; -1 none; -2 missing
	Err      error
}

// errNoMemoryUsage: the server refuses MEMORY USAGE, so keys cannot be sized before a DUMP.
var errNoMemoryUsage = errors.New("MEMORY USAGE is not allowed")

// ReadDumps sizes keys of database db (MEMORY USAGE), then reads the DUMP payload and expiry of
// those under bigBytes: a big value is never serialized whole for a check. bigBytes < 0 reads
// every payload unsized (keys known to be small; hint guesses their bytes). The reads are the copy's own
// (copier.ReadForCheck, the raw RESP path).
// strFirst > 0 reads strings shorter than that with GETRANGE first, as the copy does (Str).
// release gives the payloads' buffers back: call it once nothing reads the states' payloads.
func ReadDumps(ctx context.Context, conn *redisconn.Conn, db int, keys []string, bigBytes, hint, strFirst int64) (states []DumpState, release func(), err error) {
	bk := make([][]byte, len(keys))
	for i, k := range keys {
		bk[i] = unsafe.Slice(unsafe.StringData(k), len(k)) // only read
	}
	now := time.Now().UnixMilli()
	reads, abs, release, err := copier.ReadForCheck(ctx, conn, db, bk, bigBytes, hint, strFirst)
	if err != nil {
		release()
		return nil, func() {}, err
	}
	out := make([]DumpState, len(keys))
	for i := range reads {
		st, r := &out[i], &reads[i]
		if r.Str {
			st.ExpireAt, st.Err = expiry(r.TTL, r.TTLErr, abs, now)
			if st.Err == nil && st.ExpireAt != -2 {
				st.Present, st.Str, st.Type, st.Payload = true, true, "string", r.Payload
			}
			continue
		}
		switch err := r.SizeErr; {
		case err == redis.Nil:
			st.ExpireAt = -2
			continue
		case err != nil && isReplyErr(err) && !strings.Contains(err.Error(), "WRONGTYPE"):
			release()
			return nil, func() {}, errNoMemoryUsage
		case err != nil:
			st.Err = err
			continue
		}
		st.Present = true
		if r.Big {
			st.Big = true
			continue
		}
		switch {
		case r.DumpErr == redis.Nil:
			st.Present, st.ExpireAt = false, -2 // gone between the two reads
			continue
		case r.DumpErr != nil:
			st.Err = r.DumpErr
			continue
		}
		st.ExpireAt, st.Err = expiry(r.TTL, r.TTLErr, abs, now)
		switch {
		case st.Err != nil:
			continue
		case st.ExpireAt == -2:
			st.Present = false
			continue
		}
		st.Payload = r.Payload
		if t, ok := rdb.DumpType(r.Payload); ok && t != rdb.TypeModule {
			st.Type = t.String()
		}
	}
	return out, release, nil
}

// expiry converts a PEXPIRETIME (or PTTL, for servers before 7) reply in ms to unix ms, -1 or -2.
func expiry(raw int64, err error, abs bool, now int64) (int64, error) {
	switch {
	case err != nil:
		return 0, err
	case raw == -2:
		return -2, nil
	case raw < 0:
		return -1, nil
	case abs:
		return raw, nil
	default:
		return now + raw, nil
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
	case a.Str && b.Str:
		want.Digest, got.Digest = "data", "data"
		if a.Payload != b.Payload {
			got.Digest = "data differs"
		}
		return want, got, false
	case a.Payload == b.Payload && a.Str == b.Str:
		want.Digest, got.Digest = "dump", "dump"
		return want, got, false
	case b.Payload == "":
		return want, got, true // big in the target
	}
	ta, tb, equal, ok := compareRead(a, b)
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

// compareRead compares two reads as data: DUMP payloads decoded, a string-first value as is.
func compareRead(a, b DumpState) (typA, typB string, equal, ok bool) {
	switch {
	case a.Str:
		return compareWith(&rdb.String{Data: stringBytes(a.Payload)}, b.Payload)
	case b.Str:
		tb, ta, equal, ok := compareWith(&rdb.String{Data: stringBytes(b.Payload)}, a.Payload)
		return ta, tb, equal, ok
	}
	return decodeCompare(a.Payload, b.Payload)
}

// checkDumps is verifier.check's fast path; it returns errNoMemoryUsage when either side
// cannot size keys, and then the caller takes the digest path.
func (v *verifier) checkDumps(ctx context.Context, db, tdb int, keys, tkeys []string) error {
	var srcStates []DumpState
	var srcErr error
	srcRelease := func() {}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srcStates, srcRelease, srcErr = ReadDumps(ctx, v.src, db, keys, v.o.BigKeyBytes, 0, copier.StringFirstLen(v.o.BigKeyBytes))
	}()
	dstStates, dstRelease, err := ReadDumps(ctx, v.dst, tdb, tkeys, v.o.BigKeyBytes, 0, copier.StringFirstLen(v.o.BigKeyBytes))
	<-done
	defer dstRelease()
	defer srcRelease()
	if errors.Is(srcErr, errNoMemoryUsage) || errors.Is(err, errNoMemoryUsage) {
		return errNoMemoryUsage
	}
	if srcErr != nil {
		return readErr("reading source", srcErr)
	}
	if err != nil {
		return readErr("reading target", err)
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
