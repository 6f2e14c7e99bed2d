package keywriter

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
)

// ValueOptions say what the target can take.
type ValueOptions struct {
	// FieldTTL: the target has HPEXPIREAT (Redis 7.4+), so hash field TTLs are kept.
	FieldTTL bool
}

// AddValue writes a decoded value (or one part of it) into the scratch key with type commands,
// in pieces of at most pieceElems elements. It returns how many hash field TTLs had to be
// dropped because the target cannot hold them.
func (b *Builder) AddValue(ctx context.Context, v rdb.Value, o ValueOptions) (droppedFieldTTLs int, err error) {
	const piece = 1000
	switch v := v.(type) {
	case *rdb.String:
		return 0, b.Do(ctx, "APPEND", v.Data)
	case *rdb.List:
		for i := 0; i < len(v.Items); i += piece {
			if err := b.Do(ctx, "RPUSH", bytesArgs(v.Items[i:min(i+piece, len(v.Items))])...); err != nil {
				return 0, err
			}
		}
	case *rdb.Set:
		for i := 0; i < len(v.Members); i += piece {
			if err := b.Do(ctx, "SADD", bytesArgs(v.Members[i:min(i+piece, len(v.Members))])...); err != nil {
				return 0, err
			}
		}
	case *rdb.ZSet:
		for i := 0; i < len(v.Members); i += piece {
			part := v.Members[i:min(i+piece, len(v.Members))]
			args := make([]any, 0, 2*len(part))
			for _, m := range part {
				args = append(args, strconv.FormatFloat(m.Score, 'g', 17, 64), m.Member)
			}
			if err := b.Do(ctx, "ZADD", args...); err != nil {
				return 0, err
			}
		}
	case *rdb.Hash:
		for i := 0; i < len(v.Fields); i += piece {
			part := v.Fields[i:min(i+piece, len(v.Fields))]
			args := make([]any, 0, 2*len(part))
			var ttls []rdb.HashField
			for _, f := range part {
				args = append(args, f.Field, f.Value)
				if f.ExpireAtMs > 0 {
					ttls = append(ttls, f)
				}
			}
			if err := b.Do(ctx, "HSET", args...); err != nil {
				return droppedFieldTTLs, err
			}
			if len(ttls) > 0 && !o.FieldTTL {
				droppedFieldTTLs += len(ttls)
				continue
			}
			for _, f := range ttls {
				if err := b.Do(ctx, "HPEXPIREAT", f.ExpireAtMs, "FIELDS", 1, f.Field); err != nil {
					return droppedFieldTTLs, err
				}
			}
		}
	case *rdb.Stream:
		return 0, b.addStream(ctx, v)
	case *rdb.Module:
		return 0, fmt.Errorf("module value (%s) can only be restored by a target that has the module", v.Name)
	default:
		return 0, fmt.Errorf("unknown value type %T", v)
	}
	return droppedFieldTTLs, nil
}

// addStream writes entries, then (on the part that carries them) the stream's IDs, groups,
// consumers and pending entries with their owners, delivery times and counts.
func (b *Builder) addStream(ctx context.Context, s *rdb.Stream) error {
	for i := 0; i < len(s.Entries); i += 500 {
		part := s.Entries[i:min(i+500, len(s.Entries))]
		if err := b.Pipeline(ctx, func(p redis.Pipeliner, tmp string) {
			for _, e := range part {
				args := append([]any{"XADD", tmp, e.ID.String()}, bytesArgs(e.Fields)...)
				p.Do(ctx, args...)
			}
		}); err != nil {
			return err
		}
	}
	if !s.HasMeta {
		return nil
	}
	return b.Pipeline(ctx, func(p redis.Pipeliner, tmp string) {
		if !b.Started() {
			p.Do(ctx, "XGROUP", "CREATE", tmp, "redis-migrate-tmp", "$", "MKSTREAM")
			p.Do(ctx, "XGROUP", "DESTROY", tmp, "redis-migrate-tmp")
		}
		setID := []any{"XSETID", tmp, s.LastID.String()}
		if s.EntriesAdded > 0 {
			setID = append(setID, "ENTRIESADDED", s.EntriesAdded, "MAXDELETEDID", s.MaxDeletedID.String())
		}
		p.Do(ctx, setID...)
		for _, g := range s.Groups {
			args := []any{"XGROUP", "CREATE", tmp, g.Name, g.LastID.String()}
			if g.EntriesRead >= 0 {
				args = append(args, "ENTRIESREAD", g.EntriesRead)
			}
			p.Do(ctx, args...)
			for _, c := range g.Consumers {
				p.Do(ctx, "XGROUP", "CREATECONSUMER", tmp, g.Name, c.Name)
			}
			for _, pe := range g.PEL {
				if pe.Consumer == nil {
					continue // an entry nobody owns cannot be claimed; it is redelivered anyway
				}
				p.Do(ctx, "XCLAIM", tmp, g.Name, pe.Consumer, 0, pe.ID.String(),
					"TIME", pe.DeliveryTime, "RETRYCOUNT", pe.DeliveryCount, "FORCE", "JUSTID")
			}
		}
	})
}

func bytesArgs(items [][]byte) []any {
	out := make([]any, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}
