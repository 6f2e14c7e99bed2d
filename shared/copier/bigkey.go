package copier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/keywriter"
)

// Chunk sizes of the big-key path: elements per read, bytes per string range.
const (
	bigChunkElements = 1000
	bigChunkBytes    = 4 << 20
)

// copyBig copies one key in chunks (range and SCAN-family reads into a scratch key in the same
// slot, then an atomic rename with the TTL), so neither side ever holds the whole value.
// The returned error is for an unreachable server; per-key problems are recorded in res.
func (c *Copier) copyBig(ctx context.Context, src, dst redis.UniversalClient, key []byte, target string, res *Result) error {
	k := string(key)
	pipe := src.Pipeline()
	typ := pipe.Type(ctx, k)
	var ttl *redis.DurationCmd
	if c.usePExpireTime() {
		ttl = pipe.PExpireTime(ctx, k)
	} else {
		ttl = pipe.PTTL(ctx, k)
	}
	before := c.Now()
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) {
		return sourceErr(err)
	}
	if err := typ.Err(); isSourceBusy(err) {
		return sourceErr(err)
	}
	if typ.Val() == "none" {
		res.Missing++
		return nil
	}
	expireAt := int64(0)
	if raw := ttl.Val(); raw >= 0 {
		expireAt = int64(raw / time.Millisecond)
		if !c.usePExpireTime() {
			expireAt += before.UnixMilli()
		}
	}
	mode := keywriter.Fail
	switch c.Opts.Existing {
	case ExistingReplace:
		mode = keywriter.Replace
	case ExistingSkip:
		mode = keywriter.Skip
	}
	if mode != keywriter.Replace {
		// Don't move a big value only to find the name taken.
		if n, err := dst.Exists(ctx, target).Result(); err == nil && n > 0 {
			c.existing(res, []byte(target))
			return nil
		}
	}
	b := keywriter.New(dst, target)
	bytes, err := copyChunks(ctx, src, b, k, typ.Val())
	if err != nil {
		b.Abort(ctx)
		if isNetErr(err) || isSourceBusy(err) {
			return &ServerError{Err: fmt.Errorf("big key copy: %w", err)} // either side
		}
		res.fail([]byte(target), "chunked copy of a big "+typ.Val()+": "+err.Error())
		return nil
	}
	if !b.Started() {
		res.Missing++ // emptied (so deleted) while we read it
		return nil
	}
	if expireAt > 0 && expireAt <= c.Now().UnixMilli() {
		b.Abort(ctx)
		res.Expired++
		return nil
	}
	switch err := b.Commit(ctx, expireAt, mode); {
	case errors.Is(err, keywriter.ErrExists):
		c.existing(res, []byte(target))
	case err != nil && (isNetErr(err) || IsBusyReply(err)):
		return targetErr(fmt.Errorf("big key copy: %w", err))
	case err != nil:
		res.fail([]byte(target), err.Error())
	default:
		res.Copied++
		res.Big++
		res.Bytes += bytes
		if expireAt > 0 && expireAt < c.Now().UnixMilli()+nearExpiryMs {
			if n, err := dst.Exists(ctx, target).Result(); err == nil && n == 0 {
				res.Copied-- // expired on arrival (PEXPIREAT in the past deletes it)
				res.Big--
				res.Expired++
			}
		}
	}
	return nil
}

func (c *Copier) existing(res *Result, key []byte) {
	if c.Opts.Existing == ExistingSkip {
		res.Skipped++
		return
	}
	res.fail(key, "target already holds this key (use --existing skip or replace)")
}

// copyChunks reads the value piece by piece and appends each piece to the scratch key.
func copyChunks(ctx context.Context, src redis.UniversalClient, b *keywriter.Builder, k, typ string) (int64, error) {
	var total int64
	count := func(parts []string) {
		for _, p := range parts {
			total += int64(len(p))
		}
	}
	switch typ {
	case "string":
		n, err := src.StrLen(ctx, k).Result()
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, b.Do(ctx, "APPEND", "")
		}
		for off := int64(0); off < n; off += bigChunkBytes {
			part, err := src.GetRange(ctx, k, off, off+bigChunkBytes-1).Result()
			if err != nil {
				return total, err
			}
			if err := b.Do(ctx, "APPEND", part); err != nil {
				return total, err
			}
			total += int64(len(part))
		}
	case "list":
		for off := int64(0); ; off += bigChunkElements {
			items, err := src.LRange(ctx, k, off, off+bigChunkElements-1).Result()
			if err != nil {
				return total, err
			}
			if len(items) == 0 {
				break
			}
			if err := b.Do(ctx, "RPUSH", toAny(items)...); err != nil {
				return total, err
			}
			count(items)
		}
	case "set", "hash", "zset":
		var cursor uint64
		for {
			var items []string
			var err error
			switch typ {
			case "set":
				items, cursor, err = src.SScan(ctx, k, cursor, "", bigChunkElements).Result()
			case "hash":
				items, cursor, err = src.HScan(ctx, k, cursor, "", bigChunkElements).Result()
			default:
				items, cursor, err = src.ZScan(ctx, k, cursor, "", bigChunkElements).Result()
			}
			if err != nil {
				return total, err
			}
			if len(items) > 0 {
				var err error
				switch typ {
				case "set":
					err = b.Do(ctx, "SADD", toAny(items)...)
				case "hash":
					err = b.Do(ctx, "HSET", toAny(items)...)
				default:
					// ZSCAN gives member, score; ZADD wants score, member. Scores print exactly.
					args := make([]any, len(items))
					for i := 0; i+1 < len(items); i += 2 {
						args[i], args[i+1] = items[i+1], items[i]
					}
					err = b.Do(ctx, "ZADD", args...)
				}
				if err != nil {
					return total, err
				}
				count(items)
			}
			if cursor == 0 {
				break
			}
		}
	case "stream":
		return copyStream(ctx, src, b, k)
	default:
		return 0, fmt.Errorf("values of type %s cannot be copied in chunks", typ)
	}
	return total, nil
}

// copyStream copies entries in ID order, then the stream's own IDs, its consumer groups, their
// consumers and pending entries (with delivery counts and idle times).
func copyStream(ctx context.Context, src redis.UniversalClient, b *keywriter.Builder, k string) (int64, error) {
	var total int64
	start := "-"
	for {
		// Raw XRANGE: go-redis's XMessage keeps fields in a map, which would lose their order.
		reply, err := src.Do(ctx, "XRANGE", k, start, "+", "COUNT", bigChunkElements).Slice()
		if err != nil {
			return total, err
		}
		if len(reply) == 0 {
			break
		}
		lastID := ""
		err = b.Pipeline(ctx, func(p redis.Pipeliner, tmp string) {
			for _, raw := range reply {
				e, _ := raw.([]any)
				if len(e) != 2 {
					continue
				}
				id, _ := e[0].(string)
				fields, _ := e[1].([]any)
				args := append([]any{"XADD", tmp, id}, fields...)
				for _, f := range fields {
					s, _ := f.(string)
					total += int64(len(s))
				}
				p.Do(ctx, args...)
				lastID = id
			}
		})
		if err != nil {
			return total, err
		}
		start = "(" + lastID
		if len(reply) < bigChunkElements {
			break
		}
	}
	info, err := src.XInfoStream(ctx, k).Result()
	if err != nil {
		return total, err
	}
	groups, err := src.XInfoGroups(ctx, k).Result()
	if err != nil {
		return total, err
	}
	type pel struct {
		group string
		p     []redis.XPendingExt
	}
	var pels []pel
	consumers := map[string][]string{}
	for _, g := range groups {
		cs, err := src.XInfoConsumers(ctx, k, g.Name).Result()
		if err != nil {
			return total, err
		}
		for _, c := range cs {
			consumers[g.Name] = append(consumers[g.Name], c.Name)
		}
		startID := "-"
		for {
			ps, err := src.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k, Group: g.Name, Start: startID, End: "+", Count: bigChunkElements}).Result()
			if err != nil {
				return total, err
			}
			if len(ps) > 0 {
				pels = append(pels, pel{g.Name, ps})
				startID = "(" + ps[len(ps)-1].ID
			}
			if len(ps) < bigChunkElements {
				break
			}
		}
	}
	err = b.Pipeline(ctx, func(p redis.Pipeliner, tmp string) {
		if !b.Started() {
			// A stream without entries: create it empty through a throwaway group.
			p.Do(ctx, "XGROUP", "CREATE", tmp, "redis-migrate-tmp", "$", "MKSTREAM")
			p.Do(ctx, "XGROUP", "DESTROY", tmp, "redis-migrate-tmp")
		}
		setID := []any{"XSETID", tmp, info.LastGeneratedID}
		if info.EntriesAdded > 0 {
			setID = append(setID, "ENTRIESADDED", info.EntriesAdded, "MAXDELETEDID", info.MaxDeletedEntryID)
		}
		p.Do(ctx, setID...)
		for _, g := range groups {
			args := []any{"XGROUP", "CREATE", tmp, g.Name, g.LastDeliveredID}
			if g.EntriesRead > 0 {
				args = append(args, "ENTRIESREAD", g.EntriesRead)
			}
			p.Do(ctx, args...)
			for _, c := range consumers[g.Name] {
				p.Do(ctx, "XGROUP", "CREATECONSUMER", tmp, g.Name, c)
			}
		}
		for _, pe := range pels {
			for _, e := range pe.p {
				p.Do(ctx, "XCLAIM", tmp, pe.group, e.Consumer, 0, e.ID,
					"IDLE", e.Idle.Milliseconds(), "RETRYCOUNT", e.RetryCount, "FORCE", "JUSTID")
			}
		}
	})
	return total, err
}

func toAny(items []string) []any {
	out := make([]any, len(items))
	for i, s := range items {
		out[i] = s
	}
	return out
}

// isNetErr: the error is about reaching a server, not about this key.
func isNetErr(err error) bool {
	return err != nil && !isReplyError(errors.Unwrap(err)) && !isReplyError(err) &&
		!strings.Contains(err.Error(), "ERR") && !strings.Contains(err.Error(), "WRONGTYPE")
}
