// Package verify proves a migration: for each source key (all of them, or a random sample) it
// checks that the target holds the key, under its mapped name and database, with the same type,
// the same value and the same expiry; in full mode it also scans the target for keys the source
// does not have. Values are compared first by their DUMP payloads (equal bytes from servers that
// write the same encoding prove equal values); keys whose payloads differ, and big keys, are
// decided by digests computed inside each server (a Lua script, chunk by chunk for big keys), so
// DEBUG (blocked on Azure Managed Redis) is never needed.
package verify

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"

	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

//go:embed digest.lua
var digestLua string

var digestScript = redis.NewScript(digestLua)

// Options for a verification run.
type Options struct {
	DBMap        config.DBMap
	Match        string
	Type         string        // check only source keys of this type (as copy --type)
	Sample       int           // check this many random keys; 0 = every key (full)
	TTLTolerance time.Duration // default 2s
	ChunkSize    int           // elements per digest chunk; default 1000
	Workers      int           // default 8
	MaxReported  int           // differences listed by name; default 50
	// PresenceOnly checks that keys exist in the target and nothing more: after a copy with
	// --existing skip the target's own values win, so only presence is a promise.
	PresenceOnly bool
	// Compare is CompareDump (default: DUMP payloads, digests where they differ) or
	// CompareDigest (digests of every key).
	Compare string
	// BigKeyBytes is the MEMORY USAGE from which a key is not DUMPed for the comparison but
	// digested in chunks. Default 8 MiB.
	BigKeyBytes int64
	// AllowExtra reports keys found only in the target (full mode) without counting them as
	// differences: a copy into a target that held keys of its own (--existing skip or replace).
	AllowExtra bool
	// SizeFromExpected (CheckExpected): every key was just written from the expected value, so
	// a value the file holds under BigKeyBytes is DUMPed without a MEMORY USAGE first.
	SizeFromExpected bool
}

// Difference is one key that does not match.
type Difference struct {
	Key    string `json:"key"`
	Kind   string `json:"kind"` // missing, type, value, ttl, error, extra
	Detail string `json:"detail"`
}

// Report is the outcome; it marshals to the --json output.
type Report struct {
	Mode       string `json:"mode"`
	Checked    int64  `json:"keys_checked"`
	Matching   int64  `json:"keys_matching"`
	Missing    int64  `json:"keys_missing"`
	TypeDiff   int64  `json:"keys_type_different"`
	ValueDiff  int64  `json:"keys_value_different"`
	TTLDiff    int64  `json:"keys_ttl_different"`
	Errors     int64  `json:"keys_error"`
	GoneSource int64  `json:"keys_gone_from_source"`
	// Extra counts keys found only in the target (full mode scans it; a sample cannot).
	Extra        int64 `json:"keys_extra"`
	ExtraChecked bool  `json:"extra_keys_checked"`
	ExtraAllowed bool  `json:"extra_keys_allowed,omitempty"` // counted, not a difference
	// DigestKeys counts the keys decided by in-server digests (payloads differed, big keys, or
	// DUMP unusable); the rest were decided by equal DUMP payloads.
	DigestKeys  int64        `json:"keys_by_digest"`
	PeakRSS     int64        `json:"peak_rss_bytes,omitempty"` // set by the CLI: the process's peak RSS
	TargetKeys  int64        `json:"target_keys"`
	SourceKeys  int64        `json:"source_keys"`
	Seconds     float64      `json:"seconds"`
	Differences []Difference `json:"differences,omitempty"`
}

// Ok is true when no checked key differs (and, unless allowed, the target has no extra key).
func (r *Report) Ok() bool {
	return r.Differing() == 0
}

// Differing counts the keys that do not match, extra keys included unless allowed.
func (r *Report) Differing() int64 {
	n := r.Missing + r.TypeDiff + r.ValueDiff + r.TTLDiff + r.Errors
	if !r.ExtraAllowed {
		n += r.Extra
	}
	return n
}

// Listed counts the keys that Differences may name (extra keys always, even when allowed).
func (r *Report) Listed() int64 {
	if r.ExtraAllowed {
		return r.Differing() + r.Extra
	}
	return r.Differing()
}

// Run verifies target against source.
func Run(ctx context.Context, src, dst *redisconn.Conn, o Options) (*Report, error) {
	o = o.WithDefaults()
	start := time.Now()
	rep := &Report{Mode: "full"}
	if o.Sample > 0 {
		rep.Mode = fmt.Sprintf("sample of %d", o.Sample)
	}
	v := &verifier{src: src, dst: dst, o: o, rep: rep, found: map[int]int64{}}
	rep.ExtraAllowed = o.AllowExtra

	type job struct {
		db   int
		keys []string
	}
	jobs := make(chan job, o.Workers*2)
	var wg sync.WaitGroup
	errCh := make(chan error, o.Workers+1)
	// A worker that fails stops the feeder too: with every worker gone, nothing would take the
	// next job and the run would hang (it did, on a source still restarting).
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	for i := 0; i < o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := v.check(ctx, j.db, j.keys); err != nil {
					errCh <- err
					stop()
					return
				}
			}
		}()
	}
	feedErr := func() error {
		defer close(jobs)
		dbs := o.DBMap.Sources()
		var total int64
		sizes := map[string]int64{}
		for _, addr := range src.Masters() {
			for _, db := range dbs {
				n, err := src.Node(addr, db).DBSize(ctx).Result()
				if err != nil {
					return readErr("source", err)
				}
				sizes[fmt.Sprint(addr, "/", db)] = n
				total += n
			}
		}
		rep.SourceKeys = total
		for _, db := range dbs {
			tdb := o.DBMap.Target[db]
			n, err := dst.DBSize(ctx, tdb)
			if err == nil {
				rep.TargetKeys += n
			}
		}
		for _, addr := range src.Masters() {
			for _, db := range dbs {
				node := src.Node(addr, db)
				size := sizes[fmt.Sprint(addr, "/", db)]
				if size == 0 {
					continue
				}
				if o.Sample > 0 {
					want := int(int64(o.Sample) * size / max(total, 1))
					if want == 0 {
						want = 1
					}
					keys, err := sampleKeys(ctx, node, want, o.Match)
					if err != nil {
						return err
					}
					for len(keys) > 0 {
						n := min(len(keys), 200)
						select {
						case jobs <- job{db, keys[:n]}:
						case <-ctx.Done():
							return ctx.Err()
						}
						keys = keys[n:]
					}
					continue
				}
				var cursor uint64
				for {
					keys, next, err := node.Scan(ctx, cursor, o.Match, 1000).Result()
					if err != nil {
						return readErr("source SCAN", err)
					}
					if len(keys) > 0 {
						select {
						case jobs <- job{db, keys}:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
					if cursor = next; cursor == 0 {
						break
					}
				}
			}
		}
		return nil
	}()
	wg.Wait()
	close(errCh)
	// A worker's error first: the feeder's is then only the cancellation it caused.
	if err := <-errCh; err != nil {
		return rep, err
	}
	if feedErr != nil {
		return rep, feedErr
	}
	if o.Sample == 0 {
		if err := v.scanExtras(ctx); err != nil {
			return rep, err
		}
		rep.ExtraChecked = true
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// sampleKeys picks up to n distinct random keys (RANDOMKEY, pipelined; MATCH is applied after).
func sampleKeys(ctx context.Context, node *redis.Client, n int, match string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for tries := 0; len(out) < n && tries < n*3; {
		batch := min(n-len(out), 500)
		pipe := node.Pipeline()
		cmds := make([]*redis.StringCmd, batch)
		for i := range cmds {
			cmds[i] = pipe.RandomKey(ctx)
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return nil, readErr("source RANDOMKEY", err)
		}
		tries += batch
		for _, c := range cmds {
			k, err := c.Result()
			if err == redis.Nil {
				return out, nil // empty database
			}
			if err != nil || seen[k] || (match != "" && !Glob(match, k)) || len(out) >= n {
				continue
			}
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

type verifier struct {
	src, dst *redisconn.Conn
	o        Options
	noDump   atomic.Bool // a side refused MEMORY USAGE: digests for every key
	mu       sync.Mutex
	rep      *Report
	found    map[int]int64 // by target db: checked keys present on both sides
}

// KeyState is one side's view of a key.
type KeyState struct {
	Type     string
	ExpireAt int64 // unix ms; -1 none; -2 missing
	Digest   string
	Err      error
}

func (v *verifier) check(ctx context.Context, db int, keys []string) error {
	tdb := v.o.DBMap.Target[db]
	prefix := v.o.DBMap.Prefix[db]
	tkeys := make([]string, len(keys))
	for i, k := range keys {
		tkeys[i] = prefix + k
	}
	return v.checkPair(ctx, db, tdb, keys, tkeys)
}

// CheckKeys verifies one batch of source keys of db against their target names in tdb into rep:
// DUMP payloads first, digests where only they can tell. For callers that plan their own
// batches (the function app's verify batches); o should have its defaults filled in.
func CheckKeys(ctx context.Context, src, dst *redisconn.Conn, db, tdb int, keys, tkeys []string, o Options, rep *Report) error {
	v := &verifier{src: src, dst: dst, o: o.WithDefaults(), rep: rep, found: map[int]int64{}}
	return v.checkPair(ctx, db, tdb, keys, tkeys)
}

func (v *verifier) checkPair(ctx context.Context, db, tdb int, keys, tkeys []string) error {
	if v.o.Compare != CompareDigest && !v.noDump.Load() {
		err := v.checkDumps(ctx, db, tdb, keys, tkeys)
		if !errors.Is(err, errNoMemoryUsage) {
			return err
		}
		v.noDump.Store(true)
	}
	return v.checkDigests(ctx, db, tdb, keys, tkeys)
}

// record compares one key (caller holds mu) and counts it as found when both sides have it.
func (v *verifier) record(tdb int, key string, want, got KeyState) {
	if want.Type != "none" && got.Type != "none" && want.Err == nil && got.Err == nil {
		v.found[tdb]++
	}
	v.rep.Compare(key, want, got, v.o)
}

// checkDigests decides keys by in-server digests of both sides.
func (v *verifier) checkDigests(ctx context.Context, db, tdb int, keys, tkeys []string) error {
	// Both sides at once: a big key's digest takes as long on each.
	var srcStates []KeyState
	var srcErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		srcStates, srcErr = ReadStates(ctx, v.src, v.src.Keys(db), keys, v.o.ChunkSize)
	}()
	dstStates, err := ReadStates(ctx, v.dst, v.dst.Keys(tdb), tkeys, v.o.ChunkSize)
	<-done
	if srcErr != nil {
		return readErr("reading source", srcErr)
	}
	if err != nil {
		return readErr("reading target", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.DigestKeys += int64(len(keys))
	for i := range keys {
		v.record(tdb, tkeys[i], srcStates[i], dstStates[i])
	}
	return nil
}

// Merge adds o's counts and differences (up to maxReported listed) into r.
func (r *Report) Merge(o *Report, maxReported int) {
	r.Checked += o.Checked
	r.Matching += o.Matching
	r.Missing += o.Missing
	r.TypeDiff += o.TypeDiff
	r.ValueDiff += o.ValueDiff
	r.TTLDiff += o.TTLDiff
	r.Errors += o.Errors
	r.GoneSource += o.GoneSource
	r.Extra += o.Extra
	r.DigestKeys += o.DigestKeys
	for _, d := range o.Differences {
		if len(r.Differences) >= maxReported {
			break
		}
		r.Differences = append(r.Differences, d)
	}
}

// Compare records one key: want is the source's state (or the file's), got the target's.
func (r *Report) Compare(key string, want, got KeyState, o Options) {
	tol := o.TTLTolerance.Milliseconds()
	if want.Type == "none" {
		r.GoneSource++ // deleted or expired in the source since: nothing to compare
		return
	}
	if o.Type != "" && want.Type != o.Type {
		return // left out of the copy by its type filter
	}
	r.Checked++
	switch {
	case want.Err != nil || got.Err != nil:
		r.diff(&r.Errors, key, "error", redact.Error(errors.Join(want.Err, got.Err)), o)
	case got.Type == "none" && want.ExpireAt > 0 && want.ExpireAt <= time.Now().UnixMilli()+tol:
		// Expiring as we look: the target may have dropped it a moment before the source.
		r.Checked--
		r.GoneSource++
	case got.Type == "none":
		r.diff(&r.Missing, key, "missing", "not in the target", o)
	case o.PresenceOnly:
		r.Matching++
	case got.Type != want.Type:
		r.diff(&r.TypeDiff, key, "type", fmt.Sprintf("source %s, target %s", want.Type, got.Type), o)
	case got.Digest != want.Digest && want.Digest != "":
		r.diff(&r.ValueDiff, key, "value", "value digests differ", o)
	case (want.ExpireAt < 0) != (got.ExpireAt < 0) || abs(want.ExpireAt-got.ExpireAt) > tol:
		r.diff(&r.TTLDiff, key, "ttl", fmt.Sprintf("source expires %s, target %s", when(want.ExpireAt), when(got.ExpireAt)), o)
	default:
		r.Matching++
	}
}

func (r *Report) diff(counter *int64, key, kind, detail string, o Options) {
	*counter++
	if len(r.Differences) < o.MaxReported {
		r.Differences = append(r.Differences, Difference{Key: copier.PrintableKey([]byte(key)), Kind: kind, Detail: detail})
	}
}

// WithDefaults fills in unset options.
func (o Options) WithDefaults() Options {
	if o.DBMap.Target == nil {
		o.DBMap = config.DefaultDBMap()
	}
	if o.TTLTolerance <= 0 {
		o.TTLTolerance = 2 * time.Second
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 1000
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.MaxReported <= 0 {
		o.MaxReported = 50
	}
	if o.Compare == "" {
		o.Compare = CompareDump
	}
	if o.BigKeyBytes <= 0 {
		o.BigKeyBytes = 8 << 20
	}
	return o
}

func when(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// ReadStates reads type, expiry and value digest of keys on one side. The first chunk of every
// key goes in one pipeline; keys with more chunks (big keys) continue one call at a time.
func ReadStates(ctx context.Context, conn *redisconn.Conn, c redis.UniversalClient, keys []string, chunk int) ([]KeyState, error) {
	if chunk <= 0 {
		chunk = 1000 // a zero chunk would never advance through a big key
	}
	if err := ensureScript(ctx, c); err != nil {
		return nil, err
	}
	out := make([]KeyState, len(keys))
	pipe := c.Pipeline()
	exps := make([]*redis.DurationCmd, len(keys))
	digs := make([]*redis.Cmd, len(keys))
	newTTL := conn.Version.Major >= 7
	for i, k := range keys {
		if newTTL {
			exps[i] = pipe.PExpireTime(ctx, k)
		} else {
			exps[i] = pipe.PTTL(ctx, k)
		}
		digs[i] = evalDigest(ctx, pipe, newTTL, k, "0", chunk)
	}
	now := time.Now().UnixMilli()
	if _, err := pipe.Exec(ctx); err != nil && !isReplyErr(err) {
		return nil, err
	}
	for i, k := range keys {
		st := &out[i]
		raw, err := exps[i].Result()
		switch {
		case err != nil:
			st.Err = err
		case raw == -2:
			st.ExpireAt = -2
		case raw < 0:
			st.ExpireAt = -1
		case newTTL:
			st.ExpireAt = int64(raw / time.Millisecond)
		default:
			st.ExpireAt = now + int64(raw/time.Millisecond)
		}
		res, err := digs[i].Slice()
		if err != nil {
			st.Err = err
			continue
		}
		typ, next, part, _ := parseChunk(res)
		st.Type = typ
		digest := newDigest(typ)
		digest.add(part)
		for next != "" {
			r, err := evalDigest(ctx, c, newTTL, k, next, chunk).Slice()
			if err != nil {
				st.Err = err
				break
			}
			var t2 string
			t2, next, part, _ = parseChunk(r)
			if t2 != typ {
				st.Err = fmt.Errorf("key changed type while being read")
				break
			}
			digest.add(part)
		}
		st.Digest = typ + ":" + digest.sum()
	}
	return out, nil
}

// evalDigest runs the digest script read-only where the server knows EVALSHA_RO (7.0+), so it
// also runs while writes are paused (CLIENT PAUSE WRITE blocks plain EVALSHA).
func evalDigest(ctx context.Context, c redis.Scripter, ro bool, key, cursor string, chunk int) *redis.Cmd {
	if ro {
		return c.EvalShaRO(ctx, digestScript.Hash(), []string{key}, cursor, chunk)
	}
	return c.EvalSha(ctx, digestScript.Hash(), []string{key}, cursor, chunk)
}

func parseChunk(res []any) (typ, next, part string, n int64) {
	if len(res) < 4 {
		return "", "", "", 0
	}
	typ, _ = res[0].(string)
	next, _ = res[1].(string)
	part, _ = res[2].(string)
	n, _ = res[3].(int64)
	return
}

// digest combines chunk digests: chained for ordered types, XOR for unordered ones.
type digest struct {
	xor   bool
	acc   []byte
	count int
}

func newDigest(typ string) *digest {
	return &digest{xor: typ == "hash" || typ == "set" || typ == "zset", acc: make([]byte, 20)}
}

func (d *digest) add(partHex string) {
	d.count++
	p, err := hex.DecodeString(partHex)
	if err != nil {
		p = []byte(partHex)
	}
	if d.xor && len(p) <= len(d.acc) {
		for i := range p {
			d.acc[i] ^= p[i]
		}
		return
	}
	h := sha1.New()
	h.Write(d.acc)
	h.Write(p)
	d.acc = h.Sum(nil)
}

func (d *digest) sum() string { return hex.EncodeToString(d.acc) }

var loaded sync.Map // client -> true once the script is loaded everywhere

// ensureScript loads the digest script once per client (on every shard of a cluster) so the
// pipeline can use EVALSHA.
func ensureScript(ctx context.Context, c redis.UniversalClient) error {
	if _, ok := loaded.Load(c); ok {
		return nil
	}
	if err := digestScript.Load(ctx, c).Err(); err != nil {
		return fmt.Errorf("loading the digest script: %w", err)
	}
	loaded.Store(c, true)
	return nil
}

func isReplyErr(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !strings.HasPrefix(err.Error(), "redis: ")
}

// Glob reports whether s matches a Redis glob pattern (*, ?, [..], \\).
func Glob(pattern, s string) bool {
	return matchGlob([]byte(pattern), []byte(s))
}

func matchGlob(p, s []byte) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 1 && p[1] == '*' {
				p = p[1:]
			}
			if len(p) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchGlob(p[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			s = s[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			end := 1
			for end < len(p) && p[end] != ']' {
				end++
			}
			if end >= len(p) {
				return false
			}
			class, neg := p[1:end], false
			if len(class) > 0 && class[0] == '^' {
				class, neg = class[1:], true
			}
			hit := false
			for i := 0; i < len(class); i++ {
				if i+2 < len(class) && class[i+1] == '-' {
					if s[0] >= class[i] && s[0] <= class[i+2] {
						hit = true
					}
					i += 2
				} else if class[i] == s[0] {
					hit = true
				}
			}
			if hit == neg {
				return false
			}
			s, p = s[1:], p[end:]
		case '\\':
			if len(p) > 1 {
				p = p[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || s[0] != p[0] {
				return false
			}
			s = s[1:]
		}
		p = p[1:]
	}
	return len(s) == 0
}

// ReadError is a failed read from one side during a run, already redacted. Transient says the
// server may well answer a new run (a busy reply such as LOADING, or a connection error such as
// the EOF of a server that restarted), so a caller may retry it.
type ReadError struct {
	msg       string
	Transient bool
}

func (e *ReadError) Error() string { return e.msg }

func readErr(what string, err error) error {
	return &ReadError{msg: what + ": " + redact.Error(err), Transient: copier.IsBusyReply(err) || !copier.IsReplyError(err)}
}
