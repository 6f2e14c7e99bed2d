// Package keywriter builds one key in the target from parts, with type commands, and makes it
// appear atomically: the parts go into a temporary key in the same cluster slot, which is then
// given the key's absolute TTL and renamed over the real name. Big keys copied in chunks, payloads
// a target refuses to RESTORE, and RDB values too large for one command all end here.
package keywriter

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Mode says what to do when the key already exists.
type Mode int

const (
	Fail    Mode = iota // leave the existing key, report ErrExists
	Skip                // leave the existing key, report ErrExists (the caller counts it skipped)
	Replace             // overwrite it
)

// ErrExists means the target already held the key and it was left alone.
var ErrExists = errors.New("target already holds this key")

// scratchTTL bounds the life of a temporary key, so a crash mid-build leaves no lasting garbage.
const scratchTTL = 24 * time.Hour

// Builder accumulates one key's value in a temporary key.
type Builder struct {
	dst     redis.UniversalClient
	Key     string
	tmp     string
	started bool
}

// New starts building key in dst.
func New(dst redis.UniversalClient, key string) *Builder {
	return &Builder{dst: dst, Key: key, tmp: TempKey(key)}
}

// TempKey names a scratch key in the same cluster slot as key: its hash tag is a short string
// chosen to hash to key's slot, so MULTI/EXEC and RENAME work on a cluster.
func TempKey(key string) string {
	sum := sha1.Sum([]byte(key))
	return "{" + slotTags()[Slot(key)] + "}redis-migrate:tmp:" + hex.EncodeToString(sum[:8])
}

// Do sends one command that adds to the value, e.g. Do(ctx, "RPUSH", items...). The key name is
// inserted as the first argument.
func (b *Builder) Do(ctx context.Context, cmd string, args ...any) error {
	pipe := b.dst.TxPipeline()
	if !b.started {
		pipe.Del(ctx, b.tmp) // a scratch key left by an earlier crashed attempt
	}
	full := append([]any{cmd, b.tmp}, args...)
	_ = pipe.Process(ctx, redisconn.NewOnce(ctx, full...))
	if !b.started {
		pipe.Expire(ctx, b.tmp, scratchTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%s into a scratch key: %w", cmd, err)
	}
	b.started = true
	return nil
}

// Pipeline runs several commands on the scratch key in one round trip; fn receives the scratch
// key name. Used for stream groups and consumers, which need several command kinds.
func (b *Builder) Pipeline(ctx context.Context, fn func(p redis.Pipeliner, tmp string)) error {
	pipe := b.dst.TxPipeline()
	_ = pipe.Process(ctx, redisconn.NewOnce(ctx, "EXISTS", b.tmp)) // makes the whole unit run once
	if !b.started {
		pipe.Del(ctx, b.tmp)
	}
	fn(pipe, b.tmp)
	if !b.started {
		pipe.Expire(ctx, b.tmp, scratchTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	b.started = true
	return nil
}

// Started reports whether any part was written (an empty value writes nothing).
func (b *Builder) Started() bool { return b.started }

// Commit gives the scratch key its TTL (expireAtMs unix ms, 0 = none) and renames it over the
// key, atomically. With Fail or Skip and an existing key, the scratch key is dropped and
// ErrExists returned.
func (b *Builder) Commit(ctx context.Context, expireAtMs int64, mode Mode) error {
	if !b.started {
		return errors.New("empty value: nothing to write")
	}
	pipe := b.dst.TxPipeline()
	_ = pipe.Process(ctx, redisconn.NewOnce(ctx, "EXISTS", b.tmp)) // a re-sent RENAME would fail
	if expireAtMs > 0 {
		pipe.PExpireAt(ctx, b.tmp, time.UnixMilli(expireAtMs))
	} else {
		pipe.Persist(ctx, b.tmp)
	}
	var renamed *redis.BoolCmd
	if mode == Replace {
		pipe.Rename(ctx, b.tmp, b.Key)
	} else {
		renamed = pipe.RenameNX(ctx, b.tmp, b.Key)
		pipe.Del(ctx, b.tmp) // still there only when the rename was refused
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Abort(ctx)
		return fmt.Errorf("renaming the scratch key over the key: %w", err)
	}
	if renamed != nil && !renamed.Val() {
		return ErrExists
	}
	return nil
}

// Abort drops the scratch key.
func (b *Builder) Abort(ctx context.Context) {
	if b.started {
		b.dst.Del(context.WithoutCancel(ctx), b.tmp)
	}
}

// Slot is the Redis Cluster hash slot of key (CRC16/XMODEM of the key or its hash tag, mod 16384).
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return int(crc16(key) % 16384)
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotTags()[s] is a short string whose slot is s. Built on first use, not at start: it costs
// about 17 ms, which every run of the binary would pay.
var slotTags = sync.OnceValue(func() *[16384]string {
	t := new([16384]string)
	left := 16384
	for i := 0; left > 0; i++ {
		s := strconv.Itoa(i)
		if slot := crc16(s) % 16384; t[slot] == "" {
			t[slot] = s
			left--
		}
	}
	return t
})
