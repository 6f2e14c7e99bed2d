package copier

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// The copy's pipelined stages (GETRANGE or DUMP with PEXPIRETIME or PTTL; MEMORY USAGE; SET or
// RESTORE) have
// two implementations: go-redis pipelines, and the hand-written RESP path (raw.go) the copy
// takes when it can. Both fill the same per-key results, which the copier then judges in one
// place, so every key is counted and reported the same whichever path carried it. A key the
// raw path cannot answer for (a cluster redirect, TRYAGAIN, CLUSTERDOWN) is returned in redo and
// asked again through go-redis, which follows redirects and reloads the cluster's topology.

// reader reads keys from the source.
type reader interface {
	// sizes fills n[i] (MEMORY USAGE) or errs[i] (redis.Nil for a missing key).
	sizes(ctx context.Context, keys [][]byte, n []int64, errs []error) (redo []int, err error)
	// dumps fills the stage's per-key results.
	dumps(ctx context.Context, st *dumpStage) (redo []int, err error)
}

// writer writes RESTOREs into the target (SETs for the string-first pass's values).
type writer interface {
	restores(ctx context.Context, prefix string, replace bool, items []Payload, errs []error) (redo []int, err error)
}

// dumpStage is the DUMP + TTL read of a run of keys, or, with strLen > 0, the GETRANGE 0
// strLen-1 + TTL read of the string-first pass (see copyStrings).
type dumpStage struct {
	keys        [][]byte
	strLen      int64
	data        []string
	dumpErr     []error // redis.Nil: no such key
	ttl         []int64 // ms; -1 no expiry, -2 no key
	ttlErr      []error
	pexpiretime bool  // PEXPIRETIME (absolute) rather than PTTL
	held        int64 // estimated payload bytes (MEMORY USAGE), to size the raw path's buffer
	arena       []byte
	out         []Payload // the run's payloads (read's result)
}

// wholeString: the string-first read of key i is a string's whole value. A reply as long as
// strLen may be cut short, and an empty one may be no key at all: those are read the sized way.
func (st *dumpStage) wholeString(i int) bool {
	n := int64(len(st.data[i]))
	return st.dumpErr[i] == nil && n > 0 && n < st.strLen
}

// sub is the stage for keys idx only.
func (st *dumpStage) sub(idx []int) *dumpStage {
	o := &dumpStage{pexpiretime: st.pexpiretime, strLen: st.strLen, data: make([]string, len(idx)), dumpErr: make([]error, len(idx)),
		ttl: make([]int64, len(idx)), ttlErr: make([]error, len(idx))}
	for _, i := range idx {
		o.keys = append(o.keys, st.keys[i])
	}
	return o
}

// stageSizes sizes keys over rd; the keys rd hands back (redirected by a cluster) are sized
// again through go-redis (src).
func stageSizes(ctx context.Context, rd reader, src redis.UniversalClient, keys [][]byte, n []int64, errs []error) error {
	redo, err := rd.sizes(ctx, keys, n, errs)
	if err != nil || len(redo) == 0 {
		return err
	}
	sk := make([][]byte, len(redo))
	for j, i := range redo {
		sk[j] = keys[i]
	}
	sn, serrs := make([]int64, len(redo)), make([]error, len(redo))
	if _, err := (goReader{src}).sizes(ctx, sk, sn, serrs); err != nil {
		return err
	}
	for j, i := range redo {
		n[i], errs[i] = sn[j], serrs[j]
	}
	return nil
}

// stageDumps reads the stage's payloads and TTLs over rd, the redirected keys through src.
func stageDumps(ctx context.Context, rd reader, src redis.UniversalClient, st *dumpStage) error {
	redo, err := rd.dumps(ctx, st)
	if err != nil || len(redo) == 0 {
		return err
	}
	sub := st.sub(redo)
	if _, err := (goReader{src}).dumps(ctx, sub); err != nil {
		return err
	}
	for j, i := range redo {
		st.data[i], st.dumpErr[i], st.ttl[i], st.ttlErr[i] = sub.data[j], sub.dumpErr[j], sub.ttl[j], sub.ttlErr[j]
	}
	return nil
}

func (c *Copier) stageRestores(ctx context.Context, w writer, dst redis.UniversalClient, prefix string, items []Payload, errs []error) error {
	replace := c.Opts.Existing == ExistingReplace
	redo, err := w.restores(ctx, prefix, replace, items, errs)
	if err != nil || len(redo) == 0 {
		return err
	}
	sub := make([]Payload, len(redo))
	for j, i := range redo {
		sub[j] = items[i]
	}
	serrs := make([]error, len(redo))
	if _, err := (goWriter{dst}).restores(ctx, prefix, replace, sub, serrs); err != nil {
		return err
	}
	for j, i := range redo {
		errs[i] = serrs[j]
	}
	return nil
}

// goReader is the go-redis path of the reads.
type goReader struct{ cl redis.UniversalClient }

func (g goReader) sizes(ctx context.Context, keys [][]byte, n []int64, errs []error) ([]int, error) {
	pipe := g.cl.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.MemoryUsage(ctx, string(k))
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return nil, err
	}
	for i, cmd := range cmds {
		n[i], errs[i] = cmd.Result()
	}
	return nil, nil
}

func (g goReader) dumps(ctx context.Context, st *dumpStage) ([]int, error) {
	pipe := g.cl.Pipeline()
	dumps := make([]*redis.StringCmd, len(st.keys))
	ttls := make([]*redis.DurationCmd, len(st.keys))
	for i, k := range st.keys {
		ks := string(k)
		if st.strLen > 0 {
			dumps[i] = pipe.GetRange(ctx, ks, 0, st.strLen-1)
		} else {
			dumps[i] = pipe.Dump(ctx, ks)
		}
		if st.pexpiretime {
			ttls[i] = pipe.PExpireTime(ctx, ks)
		} else {
			ttls[i] = pipe.PTTL(ctx, ks)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return nil, err
	}
	for i := range st.keys {
		st.data[i], st.dumpErr[i] = dumps[i].Result()
		d, err := ttls[i].Result()
		// go-redis passes PTTL/PEXPIRETIME's -1 (no expiry) and -2 (no key) through unscaled.
		if d >= 0 {
			d /= time.Millisecond
		}
		st.ttl[i], st.ttlErr[i] = int64(d), err
	}
	return nil, nil
}

// goWriter is the go-redis path of the RESTOREs.
type goWriter struct{ cl redis.UniversalClient }

func (g goWriter) restores(ctx context.Context, prefix string, replace bool, items []Payload, errs []error) ([]int, error) {
	pipe := g.cl.Pipeline()
	cmds := make([]redisconn.Once, len(items))
	for i, d := range items {
		if d.Str {
			args := []any{"SET", prefix + string(d.Key), d.Data}
			if d.ExpireAt > 0 {
				args = append(args, "PXAT", d.ExpireAt)
			}
			if !replace {
				args = append(args, "NX")
			}
			cmds[i] = redisconn.NewOnce(ctx, args...)
			_ = pipe.Process(ctx, cmds[i])
			continue
		}
		args := make([]any, 4, 9)
		args[0], args[1], args[2], args[3] = "RESTORE", prefix+string(d.Key), d.ExpireAt, d.Data
		if d.ExpireAt > 0 {
			args = append(args, "ABSTTL")
		}
		if replace {
			args = append(args, "REPLACE")
		}
		if d.Idle >= 0 {
			args = append(args, "IDLETIME", d.Idle)
		} else if d.Freq >= 0 {
			args = append(args, "FREQ", d.Freq)
		}
		cmds[i] = redisconn.NewOnce(ctx, args...)
		_ = pipe.Process(ctx, cmds[i])
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return nil, err
	}
	for i, cmd := range cmds {
		errs[i] = cmd.Err()
		if errs[i] == redis.Nil && items[i].Str {
			errs[i] = errBusyKey // SET ... NX: the key exists
		}
	}
	return nil, nil
}

// errBusyKey is SET ... NX's nil reply told as RESTORE's refusal of an existing key, so both
// ways of writing a key are judged alike.
var errBusyKey = errors.New("BUSYKEY target key name already exists")
