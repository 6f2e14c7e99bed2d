// Package copier copies one batch of keys from a source to a target: strings under 32 KiB by
// pipelined GETRANGE and PEXPIRETIME (or PTTL) from the source and SET ... PXAT into the target,
// every other key by pipelined MEMORY USAGE, DUMP and PEXPIRETIME and RESTORE ... ABSTTL. Every
// key ends in exactly one count; a key the target refuses is reported with its name and the
// reason.
package copier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// Existing says what to do with a key that already exists in the target.
type Existing string

const (
	ExistingFail    Existing = "fail"    // refuse to start on a non-empty target; a key that appears anyway fails
	ExistingSkip    Existing = "skip"    // keep the target's key, count it as skipped
	ExistingReplace Existing = "replace" // overwrite it
)

// ParseExisting checks a --existing value.
func ParseExisting(s string) (Existing, error) {
	switch Existing(s) {
	case ExistingFail, ExistingSkip, ExistingReplace:
		return Existing(s), nil
	case "":
		return ExistingFail, nil
	}
	return "", fmt.Errorf("existing=%q: want fail, skip or replace", s)
}

// FallbackFunc writes one key the target refused to RESTORE (payload version, checksum or type)
// by other means, e.g. decoding the payload and using type commands. It returns nil on success.
type FallbackFunc func(ctx context.Context, dst redis.UniversalClient, key string, payload []byte, expireAtMs int64, replace bool) error

// Options configure a copier.
type Options struct {
	Existing Existing
	DBMap    config.DBMap
	// MaxHeldBytes bounds the DUMP payloads held in memory at once: a batch is read and written
	// in slices that stay under it. Default 32 MiB.
	MaxHeldBytes int
	// SliceKeys is the most keys read in one pipeline. Default 256.
	SliceKeys int
	Fallback  FallbackFunc
	// Reencode rewrites a refused DUMP payload for the target (see fallback.Reencoder); those keys
	// are RESTOREd again in one pipelined pass before any key falls back to type commands.
	Reencode func(payload []byte) ([]byte, error)
	// BigKeyBytes is the MEMORY USAGE from which a key is copied in chunks instead of one
	// DUMP/RESTORE. Default 8 MiB; negative turns big-key detection off.
	BigKeyBytes int64
	// SourcePacer, when set, paces the pipelines sent to the source (--max-source-ops, backoff
	// from a slow or busy source; see shared/pace).
	SourcePacer SourcePacer
	// DeferBigKeys returns big keys in Result.BigKeys instead of copying them inline, so the
	// caller can give each its own batch and small keys do not wait behind it.
	DeferBigKeys bool
	// GoRedisOnly sends every command through go-redis, never the hand-written RESP path.
	GoRedisOnly bool
}

// Result counts what happened to a batch's keys.
type Result struct {
	Copied   int64        `json:"keys_copied"`
	Skipped  int64        `json:"keys_skipped"`
	Missing  int64        `json:"keys_missing"`
	Expired  int64        `json:"keys_expired"`
	Failed   int64        `json:"keys_failed"`
	Fallback int64        `json:"keys_fallback"`
	Big      int64        `json:"keys_big"`
	Bytes    int64        `json:"bytes"`
	Failures []KeyFailure `json:"failures,omitempty"`
	// BigKeys are keys found big and deferred (DeferBigKeys); they are not counted yet.
	BigKeys [][]byte `json:"-"`
}

// KeyFailure names a key that was not copied and why.
type KeyFailure struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// MaxFailuresKept bounds the failure list carried in a result.
const MaxFailuresKept = 100

// Add folds o into r.
func (r *Result) Add(o Result) {
	r.Copied += o.Copied
	r.Skipped += o.Skipped
	r.Missing += o.Missing
	r.Expired += o.Expired
	r.Failed += o.Failed
	r.Fallback += o.Fallback
	r.Big += o.Big
	r.Bytes += o.Bytes
	for _, f := range o.Failures {
		if len(r.Failures) >= MaxFailuresKept {
			break
		}
		r.Failures = append(r.Failures, f)
	}
}

// Keys is the number of keys the result accounts for.
func (r Result) Keys() int64 { return r.Copied + r.Skipped + r.Missing + r.Expired + r.Failed }

func (r *Result) fail(key []byte, reason string) {
	r.Failed++
	if len(r.Failures) < MaxFailuresKept {
		r.Failures = append(r.Failures, KeyFailure{Key: PrintableKey(key), Reason: redact.String(reason)})
	}
}

// PrintableKey renders a binary key name readably and bounded: Go-quoted escapes, cut at 200 bytes.
func PrintableKey(k []byte) string {
	const max = 200
	suffix := ""
	if len(k) > max {
		k, suffix = k[:max], fmt.Sprintf("...(%d bytes)", len(k))
	}
	q := fmt.Sprintf("%q", k)
	return q[1:len(q)-1] + suffix
}

// Copier copies batches between two opened endpoints.
type Copier struct {
	Src, Dst *redisconn.Conn
	Opts     Options
	// Now is the clock; tests replace it.
	Now func() time.Time

	noMemoryUsage atomic.Bool
	noGetRange    atomic.Bool // GETRANGE refused (an ACL): no string-first pass
	limitOnce     sync.Once
}

// bigLimit settles the big-key threshold once: a payload must also fit the target's
// proto-max-bulk-len, with room to spare (DUMP payloads can exceed MEMORY USAGE a little).
func (c *Copier) bigLimit(ctx context.Context) {
	c.limitOnce.Do(func() {
		if c.Opts.BigKeyBytes < 0 || c.Dst == nil {
			return
		}
		if half := c.Dst.ProtoMaxBulkLen(ctx) / 2; half < c.Opts.BigKeyBytes {
			c.Opts.BigKeyBytes = half
		}
	})
}

// New returns a copier with defaults filled in.
func New(src, dst *redisconn.Conn, o Options) *Copier {
	if o.MaxHeldBytes <= 0 {
		o.MaxHeldBytes = 32 << 20
	}
	if o.SliceKeys <= 0 {
		o.SliceKeys = 256
	}
	if o.Existing == "" {
		o.Existing = ExistingFail
	}
	if o.BigKeyBytes == 0 {
		o.BigKeyBytes = 8 << 20
	}
	if o.DBMap.Target == nil {
		o.DBMap = config.DefaultDBMap()
	}
	return &Copier{Src: src, Dst: dst, Opts: o, Now: time.Now}
}

// Payload is one key ready for RESTORE: read from a source with DUMP, or built from an RDB file.
type Payload struct {
	Key      []byte // source key name (the db prefix is added when writing)
	Data     string // DUMP payload, or the value of a string key when Str
	Str      bool   // Data is a string's value, written with SET, not a DUMP payload
	ExpireAt int64  // unix ms, 0 = no expiry
	Idle     int64  // LRU idle seconds, -1 = unknown (RDB import only)
	Freq     int    // LFU counter, -1 = unknown (RDB import only)
}

// Copy copies one batch. It returns an error only when the batch could not be processed at all
// (a server unreachable): the caller retries the whole batch, which is safe because RESTORE of the
// same payload is idempotent with REPLACE and counted as the same key otherwise.
func (c *Copier) Copy(ctx context.Context, b plan.Batch) (Result, error) {
	var res Result
	targetDB, ok := c.Opts.DBMap.Target[b.DB]
	if !ok {
		return res, fmt.Errorf("batch %s: source db %d is not in the db map", b.ID, b.DB)
	}
	c.bigLimit(ctx)
	prefix := c.Opts.DBMap.Prefix[b.DB]
	src := c.Src.ReadKeys(b.Shard, b.DB)
	dst := c.Dst.Keys(targetDB)
	if b.Big {
		for _, k := range b.Keys {
			if err := c.copyBig(ctx, src, dst, k, prefix+string(k), &res); err != nil {
				return Result{}, err
			}
		}
		return res, nil
	}
	rd := c.readerFor(b, src)
	keys := b.Keys
	for len(keys) > 0 {
		n := min(len(keys), strFirstKeys*c.Opts.SliceKeys)
		rest, err := c.copyStrings(ctx, src, dst, rd, prefix, keys[:n], &res)
		if err != nil {
			return Result{}, err
		}
		if err := c.copySized(ctx, src, dst, rd, prefix, rest, &res); err != nil {
			return Result{}, err
		}
		keys = keys[n:]
	}
	return res, nil
}

// copySized copies keys the sized way: per slice, MEMORY USAGE of every key (big keys are
// taken out), then DUMP + TTL and RESTORE in runs whose estimated size stays under the
// held-bytes budget.
func (c *Copier) copySized(ctx context.Context, src, dst redis.UniversalClient, rd reader, prefix string, keys [][]byte, res *Result) error {
	for len(keys) > 0 {
		n := min(len(keys), c.Opts.SliceKeys)
		small, sizes, err := c.sizeUp(ctx, src, dst, rd, prefix, keys[:n], res)
		if err != nil {
			return err
		}
		keys = keys[n:]
		for len(small) > 0 {
			run, held := 1, sizes[0]
			for run < len(small) && held+sizes[run] <= int64(c.Opts.MaxHeldBytes) {
				held += sizes[run]
				run++
			}
			items, st, err := c.read(ctx, src, rd, small[:run], held, res)
			if err != nil {
				return err
			}
			if err := c.Restore(ctx, dst, prefix, items, res); err != nil {
				return err
			}
			// The payloads are written: their buffer can serve the next run.
			st.release()
			small, sizes = small[run:], sizes[run:]
		}
	}
	return nil
}

// strFirstBytes bounds the string-first pass: strings shorter than this are read whole; longer
// strings, and every other type, take the sized DUMP path.
const strFirstBytes = 32 << 10

// strFirstKeys slices make one pipeline of the string-first pass: fewer round trips than one per
// slice, as most keys of most caches are strings it settles.
const strFirstKeys = 4

// StringFirstLen is the GETRANGE length of string-first reads under big-key limit big (<= 0: no
// limit), 0 when they are off. It stays under half the limit, so a string read whole is one the
// sized path would also have called small (MEMORY USAGE counts a little more than the value).
func StringFirstLen(big int64) int64 {
	n := int64(strFirstBytes)
	if big > 0 {
		n = min(n, big/2)
	}
	if n < 64 {
		return 0
	}
	return n
}

// strFirstLen is the copy's string-first length, 0 when the pass is off: StringFirstLen, also
// kept under the held-bytes budget for a whole pipeline of the pass.
func (c *Copier) strFirstLen() int64 {
	if c.noGetRange.Load() {
		return 0
	}
	n := min(StringFirstLen(c.Opts.BigKeyBytes), int64(c.Opts.MaxHeldBytes/(strFirstKeys*c.Opts.SliceKeys)))
	if n < 64 {
		return 0
	}
	return n
}

// copyStrings is the string-first pass over a slice: GETRANGE 0 strFirstLen-1 and the TTL of
// every key in one pipeline. A string shorter than that is its whole value, so it is written with
// SET, without a MEMORY USAGE to size it and without a DUMP: what a key costs the source is
// mostly the dispatch of each command, and a DUMP costs it several times a GETRANGE (README,
// goal 3). It returns the keys the pass did not settle, for the sized DUMP path: other types
// (WRONGTYPE), longer strings, and empty replies (an empty string and a missing key look alike).
func (c *Copier) copyStrings(ctx context.Context, src, dst redis.UniversalClient, rd reader, prefix string, keys [][]byte, res *Result) ([][]byte, error) {
	limit := c.strFirstLen()
	if limit == 0 || len(keys) == 0 {
		return keys, nil
	}
	st := newDumpStage(keys, c.usePExpireTime(), int64(len(keys))*512)
	st.strLen = limit
	t0 := c.waitSource(ctx, 2*len(keys))
	before := c.Now()
	err := stageDumps(ctx, rd, src, st)
	c.doneSource(t0, 2*len(keys), busyOf(busyOf(err, st.dumpErr), st.ttlErr))
	if err != nil {
		return nil, sourceErr(err)
	}
	rest := make([][]byte, 0, len(keys))
	out := st.out[:0]
	refused := 0
	for i, k := range keys {
		err, v := st.dumpErr[i], st.data[i]
		switch {
		case isSourceBusy(err):
			return nil, sourceErr(err)
		case err != nil && !isReplyError(err):
			return nil, sourceErr(err)
		case err != nil:
			if !strings.HasPrefix(err.Error(), "WRONGTYPE") {
				refused++ // e.g. an ACL without GETRANGE: the DUMP path reports what it meets
			}
			rest = append(rest, k)
			continue
		case !st.wholeString(i):
			rest = append(rest, k)
			continue
		}
		raw, err := st.ttl[i], st.ttlErr[i]
		if isSourceBusy(err) {
			return nil, sourceErr(err)
		}
		if err != nil {
			res.fail(k, "source TTL: "+err.Error())
			continue
		}
		d := Payload{Key: k, Data: v, Str: true, Idle: -1, Freq: -1}
		switch {
		case raw == -2:
			res.Expired++ // existed at GETRANGE, gone at the TTL read
			continue
		case raw < 0:
		case st.pexpiretime:
			d.ExpireAt = raw
		default:
			d.ExpireAt = before.UnixMilli() + raw
		}
		out = append(out, d)
	}
	if refused == len(keys) {
		c.noGetRange.Store(true)
	}
	clear(st.data)
	st.out = out
	if err := c.Restore(ctx, dst, prefix, out, res); err != nil {
		return nil, err
	}
	st.release()
	return rest, nil
}

// sizeUp asks the source for each key's MEMORY USAGE, counts vanished keys as missing, and takes
// big keys out of the slice: they are copied in chunks (now, or later when deferred).
func (c *Copier) sizeUp(ctx context.Context, src, dst redis.UniversalClient, rd reader, prefix string, keys [][]byte, res *Result) ([][]byte, []int64, error) {
	sizes := make([]int64, len(keys))
	if c.Opts.BigKeyBytes < 0 || c.noMemoryUsage.Load() {
		return keys, sizes, nil
	}
	errs := make([]error, len(keys))
	t0 := c.waitSource(ctx, len(keys))
	err := stageSizes(ctx, rd, src, keys, sizes, errs)
	c.doneSource(t0, len(keys), busyOf(err, errs))
	if err != nil {
		return nil, nil, sourceErr(err)
	}
	for _, err := range errs {
		if isSourceBusy(err) {
			return nil, nil, sourceErr(err)
		} else if err != nil && err != redis.Nil {
			// MEMORY USAGE is not allowed everywhere: then every key takes the DUMP path.
			c.noMemoryUsage.Store(true)
			clear(sizes)
			return keys, sizes, nil
		}
	}
	small := make([][]byte, 0, len(keys))
	smallSizes := make([]int64, 0, len(keys))
	for i, k := range keys {
		n, err := sizes[i], errs[i]
		switch {
		case err == redis.Nil:
			res.Missing++
		case n >= c.Opts.BigKeyBytes && c.Opts.DeferBigKeys:
			res.BigKeys = append(res.BigKeys, k)
		case n >= c.Opts.BigKeyBytes:
			if err := c.copyBig(ctx, src, dst, k, prefix+string(k), res); err != nil {
				return nil, nil, err
			}
		default:
			small = append(small, k)
			smallSizes = append(smallSizes, n)
		}
	}
	return small, smallSizes, nil
}

// SourcePacer is told before and after each round trip to the source.
type SourcePacer interface {
	Wait(ctx context.Context, n int)
	Done(start time.Time, n int, err error)
}

func (c *Copier) waitSource(ctx context.Context, n int) time.Time {
	if c.Opts.SourcePacer != nil {
		c.Opts.SourcePacer.Wait(ctx, n)
	}
	return time.Now()
}

func (c *Copier) doneSource(start time.Time, n int, err error) {
	if c.Opts.SourcePacer != nil {
		c.Opts.SourcePacer.Done(start, n, err)
	}
}

// busyOf is err, or else the first per-key reply of a pipeline that says the source is busy
// (BUSY, LOADING, OOM, ...): a pipeline that went through can still carry only such replies, and
// the pacer must see them to back off.
func busyOf(err error, perKey []error) error {
	if err != nil {
		return err
	}
	for _, e := range perKey {
		if isSourceBusy(e) {
			return e
		}
	}
	return nil
}

// usePExpireTime: PEXPIRETIME (Redis/Valkey 7+) gives the absolute expiry exactly; older servers
// only have PTTL, converted with the local clock.
func (c *Copier) usePExpireTime() bool { return c.Src.Version.Major >= 7 }

func (c *Copier) read(ctx context.Context, src redis.UniversalClient, rd reader, keys [][]byte, held int64, res *Result) ([]Payload, *dumpStage, error) {
	st := newDumpStage(keys, c.usePExpireTime(), held)
	t0 := c.waitSource(ctx, 2*len(keys))
	before := c.Now()
	err := stageDumps(ctx, rd, src, st)
	c.doneSource(t0, 2*len(keys), busyOf(busyOf(err, st.dumpErr), st.ttlErr))
	if err != nil {
		return nil, nil, sourceErr(err)
	}
	out := st.out[:0]
	for i, k := range keys {
		err := st.dumpErr[i]
		if err == redis.Nil {
			res.Missing++ // deleted or expired between scan and copy
			continue
		}
		if err != nil {
			if !isReplyError(err) || isSourceBusy(err) {
				return nil, nil, sourceErr(err)
			}
			res.fail(k, "source DUMP: "+err.Error())
			continue
		}
		raw, err := st.ttl[i], st.ttlErr[i]
		if isSourceBusy(err) {
			return nil, nil, sourceErr(err)
		}
		if err != nil {
			res.fail(k, "source TTL: "+err.Error())
			continue
		}
		d := Payload{Key: k, Data: st.data[i], Idle: -1, Freq: -1}
		// ttl is PTTL/PEXPIRETIME's reply in ms: -1 no expiry, -2 no key.
		switch {
		case raw == -2:
			res.Expired++ // existed at DUMP, gone at the TTL read
			continue
		case raw < 0:
			d.ExpireAt = 0
		case st.pexpiretime:
			d.ExpireAt = raw
		default:
			d.ExpireAt = before.UnixMilli() + raw
		}
		out = append(out, d)
	}
	clear(st.data)
	st.out = out
	return out, st, nil
}

// Restore writes payloads into dst (keys named prefix+Key) with pipelined RESTORE ... ABSTTL,
// counting each key and sending refused payloads through the fallback. The error is for an
// unreachable target only.
func (c *Copier) Restore(ctx context.Context, dst redis.UniversalClient, prefix string, items []Payload, res *Result) error {
	return c.restore(ctx, dst, prefix, items, res, false)
}

// restore is one pipelined pass. Payloads the target refuses are re-encoded for it and sent
// again in a second pipelined pass (reencoded); what that pass still refuses, or what cannot be
// re-encoded, goes to the per-key fallback.
func (c *Copier) restore(ctx context.Context, dst redis.UniversalClient, prefix string, items []Payload, res *Result, reencoded bool) error {
	if len(items) == 0 {
		return nil
	}
	now := c.Now().UnixMilli()
	// A key that would be written already expired is left out (Redis would drop it anyway); the
	// batch is copied only then, being the caller's.
	expired := func(d Payload) bool { return d.ExpireAt > 0 && d.ExpireAt <= now }
	sent := items
	if slices.ContainsFunc(items, expired) {
		sent = slices.DeleteFunc(slices.Clone(items), expired)
		res.Expired += int64(len(items) - len(sent))
	}
	if len(sent) == 0 {
		return nil
	}
	errs := make([]error, len(sent))
	if err := c.stageRestores(ctx, c.writerFor(dst), dst, prefix, sent, errs); err != nil {
		return targetErr(err)
	}
	// A target that is loading, busy or failing over answers every command alike: the whole
	// batch waits and is retried, no key is failed for it.
	for _, err := range errs {
		if IsBusyReply(err) {
			return targetErr(err)
		}
	}
	var again []Payload
	var near []string
	for i, d := range sent {
		err := errs[i]
		switch {
		case err == nil:
			res.Copied++
			res.Bytes += int64(len(d.Data))
			if reencoded {
				res.Fallback++
			}
			if d.ExpireAt > 0 && d.ExpireAt < now+nearExpiryMs {
				near = append(near, prefix+string(d.Key))
			}
		case strings.HasPrefix(err.Error(), "BUSYKEY"):
			if c.Opts.Existing == ExistingSkip {
				res.Skipped++
			} else {
				res.fail([]byte(prefix+string(d.Key)), "target already holds this key (use --existing skip or replace)")
			}
		case isPayloadRefusal(err) && !reencoded && c.Opts.Reencode != nil:
			if data, rerr := c.Opts.Reencode([]byte(d.Data)); rerr == nil {
				d.Data = string(data)
				again = append(again, d)
				continue
			}
			c.fallback(ctx, dst, prefix+string(d.Key), d, err, res)
		case isPayloadRefusal(err) && c.Opts.Fallback != nil:
			c.fallback(ctx, dst, prefix+string(d.Key), d, err, res)
		case isPayloadRefusal(err):
			res.fail([]byte(prefix+string(d.Key)), "target refused the DUMP payload: "+err.Error())
		case !isReplyError(err):
			return targetErr(err)
		case d.Str:
			res.fail([]byte(prefix+string(d.Key)), "target refused SET: "+err.Error())
		default:
			res.fail([]byte(prefix+string(d.Key)), "target refused RESTORE: "+err.Error())
		}
	}
	if err := c.recountExpired(ctx, dst, near, res, reencoded); err != nil {
		return err
	}
	return c.restore(ctx, dst, prefix, again, res, true)
}

// nearExpiryMs: a key this close to its expiry may expire between our clock check and the
// target's, and RESTORE ... ABSTTL answers OK while dropping a key whose time has come.
const nearExpiryMs = 2000

// recountExpired checks that keys written close to their expiry are really there; the ones the
// target dropped as already expired move from copied to expired, so the counts stay true.
func (c *Copier) recountExpired(ctx context.Context, dst redis.UniversalClient, keys []string, res *Result, reencoded bool) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := dst.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return targetErr(err)
	}
	for _, cmd := range cmds {
		if IsBusyReply(cmd.Err()) {
			return targetErr(cmd.Err())
		}
		if cmd.Err() == nil && cmd.Val() == 0 {
			res.Copied--
			res.Expired++
			if reencoded {
				res.Fallback--
			}
		}
	}
	return nil
}

// fallback writes one refused key through Opts.Fallback (type commands); the payload may be the
// re-encoded one. Whatever goes wrong is this key's failure, reported with the reason.
func (c *Copier) fallback(ctx context.Context, dst redis.UniversalClient, key string, d Payload, refusal error, res *Result) {
	if c.Opts.Fallback == nil {
		res.fail([]byte(key), "target refused the DUMP payload: "+refusal.Error())
		return
	}
	replace := c.Opts.Existing == ExistingReplace
	if ferr := c.Opts.Fallback(ctx, dst, key, []byte(d.Data), d.ExpireAt, replace); ferr != nil {
		switch {
		case errors.Is(ferr, ErrExists) && c.Opts.Existing == ExistingSkip:
			res.Skipped++
		case errors.Is(ferr, ErrExists):
			res.fail([]byte(key), "target already holds this key (use --existing skip or replace)")
		default:
			res.fail([]byte(key), "target refused RESTORE ("+refusal.Error()+") and the fallback failed: "+ferr.Error())
		}
		return
	}
	res.Copied++
	res.Fallback++
	res.Bytes += int64(len(d.Data))
}

// ErrExists is returned by a fallback when the key exists and must not be replaced.
var ErrExists = errors.New("target already holds this key")

// isPayloadRefusal: the target cannot read this payload (newer RDB version, unknown type).
func isPayloadRefusal(err error) bool {
	m := err.Error()
	return strings.Contains(m, "payload version or checksum") || strings.Contains(m, "Bad data format")
}

// isReplyError reports whether err is an error reply from the server (about one command), as
// opposed to a network or protocol failure.
func isReplyError(err error) bool {
	if _, ok := err.(*resp.Error); ok {
		return true // the raw path's replies: no errors.As (reflection) per key
	}
	var re redis.Error
	if errors.As(err, &re) {
		// go-redis reports some I/O problems through the same interface; keep those out.
		return !strings.HasPrefix(err.Error(), "redis: ") || strings.HasPrefix(err.Error(), "redis: nil")
	}
	return err == redis.Nil
}
