// Package fallback writes keys whose DUMP payload the target refuses (a newer RDB version, a
// type the target does not know: Valkey 8 or Redis 7.2+ sources into Redis 7.0, say). It decodes
// the payload with our RDB codec and, per key, either RESTOREs it re-encoded in the oldest
// encoding the target reads, or rebuilds it with type commands in a same-slot scratch key
// renamed over the real one. Both keep the absolute TTL and are atomic.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/keywriter"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// New returns the copier's fallback for a target.
func New(target *redisconn.Conn) copier.FallbackFunc {
	targetRDB := target.Version.RDB
	fieldTTL := target.Version.HasFieldTTL()
	return func(ctx context.Context, dst redis.UniversalClient, key string, payload []byte, expireAtMs int64, replace bool) error {
		e, _, err := rdb.DecodeDump(payload)
		if err != nil {
			return fmt.Errorf("decoding the DUMP payload: %w", err)
		}
		if e.Type == rdb.TypeModule {
			return fmt.Errorf("module value (%s): the target does not load it and it cannot be rewritten with commands", e.Module.Name)
		}
		if re, err := rdb.EncodeDump(e.Value, targetRDB); err == nil && !rdb.HasFieldTTLs(e.Value) {
			args := []any{"RESTORE", key, expireAtMs, re}
			if expireAtMs > 0 {
				args = append(args, "ABSTTL")
			}
			if replace {
				args = append(args, "REPLACE")
			}
			cmd := redisconn.NewOnce(ctx, args...)
			_ = dst.Process(ctx, cmd)
			err := cmd.Err()
			switch {
			case err == nil:
				return nil
			case strings.HasPrefix(err.Error(), "BUSYKEY"):
				return copier.ErrExists
			}
			// Refused again: rebuild it with commands below.
		}
		mode := keywriter.Fail
		if replace {
			mode = keywriter.Replace
		}
		b := keywriter.New(dst, key)
		dropped, err := b.AddValue(ctx, e.Value, keywriter.ValueOptions{FieldTTL: fieldTTL})
		if err != nil {
			b.Abort(ctx)
			return err
		}
		if err := b.Commit(ctx, expireAtMs, mode); err != nil {
			if errors.Is(err, keywriter.ErrExists) {
				return copier.ErrExists
			}
			return err
		}
		if dropped > 0 {
			return fmt.Errorf("%w: %d hash field TTLs dropped (the target has no field TTLs)", ErrPartial, dropped)
		}
		return nil
	}
}

// ErrPartial: the key was written but something the target cannot hold was left out.
var ErrPartial = errors.New("written without")

// Reencoder returns the copier's Reencode for a target: decode a refused payload and encode the
// value again in the oldest encoding the target reads. Values that need commands (modules, hash
// field TTLs) return an error and go to the per-key fallback.
func Reencoder(target *redisconn.Conn) func([]byte) ([]byte, error) {
	targetRDB := target.Version.RDB
	return func(payload []byte) ([]byte, error) {
		e, _, err := rdb.DecodeDump(payload)
		if err != nil {
			return nil, err
		}
		if e.Type == rdb.TypeModule || rdb.HasFieldTTLs(e.Value) {
			return nil, errors.New("needs commands")
		}
		return rdb.EncodeDump(e.Value, targetRDB)
	}
}
