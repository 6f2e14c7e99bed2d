package testenv

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// FillAllTypes writes one or more keys of every value type and encoding the tool must carry:
// strings (binary, integer-encoded, large), lists, sets and intsets, hashes, sorted sets (small
// listpack and large skiplist encodings), a stream with consumer groups and pending entries,
// a HyperLogLog, a bitmap, binary-safe key names and keys with TTLs. It returns the key count.
// prefix lets several calls coexist; keys use hash tags only where the value needs no slot.
func FillAllTypes(ctx context.Context, c redis.UniversalClient, prefix string) (int, error) {
	p := prefix
	n := 0
	must := func(err error) error {
		if err != nil && err != redis.Nil {
			return err
		}
		n++
		return nil
	}
	binary := string([]byte{0, 1, 2, 0xff, 0xfe, '\r', '\n', 0x80})
	steps := []func() error{
		func() error { return must(c.Set(ctx, p+"str:plain", "hello world", 0).Err()) },
		func() error { return must(c.Set(ctx, p+"str:binary", binary+strings.Repeat("x", 100), 0).Err()) },
		func() error { return must(c.Set(ctx, p+"str:int", 12345678, 0).Err()) },
		func() error { return must(c.Set(ctx, p+"str:negint", -42, 0).Err()) },
		func() error { return must(c.Set(ctx, p+"str:large", strings.Repeat("abcdefghij", 20000), 0).Err()) },
		func() error { return must(c.Set(ctx, p+"str:ttl", "expires later", time.Hour).Err()) },
		func() error { return must(c.Set(ctx, p+"key:"+binary, "binary key name", 0).Err()) },
		func() error { return must(c.Set(ctx, p+"key:utf8:בדיקה", "utf8 key name", 0).Err()) },
		func() error { return must(c.RPush(ctx, p+"list:small", "a", "b", "c", 1, 2, 3).Err()) },
		func() error { return must(c.RPush(ctx, p+"list:big", seq("item", 2000)...).Err()) },
		func() error { return must(c.SAdd(ctx, p+"set:small", "x", "y", "z").Err()) },
		func() error { return must(c.SAdd(ctx, p+"set:intset", 1, 2, 3, 1000000, -5).Err()) },
		func() error { return must(c.SAdd(ctx, p+"set:big", seq("member", 1000)...).Err()) },
		func() error { return must(c.HSet(ctx, p+"hash:small", "f1", "v1", "f2", "v2", "n", 7).Err()) },
		func() error { return must(c.HSet(ctx, p+"hash:big", seq("field", 1200)...).Err()) },
		func() error {
			return must(c.ZAdd(ctx, p+"zset:small", redis.Z{Score: 1, Member: "one"}, redis.Z{Score: 2.5, Member: "two"},
				redis.Z{Score: -3, Member: "neg"}).Err())
		},
		func() error {
			zs := make([]redis.Z, 500)
			for i := range zs {
				zs[i] = redis.Z{Score: float64(i) * 1.5, Member: "m" + strconv.Itoa(i)}
			}
			return must(c.ZAdd(ctx, p+"zset:big", zs...).Err())
		},
		func() error { return must(c.Expire(ctx, p+"zset:big", 2*time.Hour).Err()) },
		func() error { n--; return fillStream(ctx, c, p+"stream:groups", &n) },
		func() error { return must(c.PFAdd(ctx, p+"hll", seq("visitor", 300)...).Err()) },
		func() error {
			if err := c.SetBit(ctx, p+"bitmap", 7, 1).Err(); err != nil {
				return err
			}
			return must(c.SetBit(ctx, p+"bitmap", 100000, 1).Err())
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func fillStream(ctx context.Context, c redis.UniversalClient, key string, n *int) error {
	for i := 0; i < 50; i++ {
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"n", i, "text", "event " + strconv.Itoa(i)}}).Err(); err != nil {
			return err
		}
	}
	if err := c.XGroupCreate(ctx, key, "workers", "0").Err(); err != nil {
		return err
	}
	if err := c.XGroupCreate(ctx, key, "audit", "$").Err(); err != nil {
		return err
	}
	// Read without ACK so the group has a pending entries list owned by two consumers.
	for _, consumer := range []string{"alice", "bob"} {
		if err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "workers", Consumer: consumer,
			Streams: []string{key, ">"}, Count: 5}).Err(); err != nil {
			return err
		}
	}
	*n++
	return nil
}

func seq(prefix string, count int) []any {
	out := make([]any, count)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// FillBulk writes count keys in a mixed profile (the benchmark's): 70% strings of 64-512 bytes, the
// rest hashes, lists, sets and zsets of 5-50 members; 20% carry a TTL of 1-3 hours. Deterministic
// for a given seed. Keys are named prefix + "k:" + index.
func FillBulk(ctx context.Context, c redis.UniversalClient, prefix string, count int, seed int64) error {
	r := rand.New(rand.NewSource(seed))
	const chunk = 1000
	letters := []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
	randBytes := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = letters[r.Intn(len(letters))]
		}
		return string(b)
	}
	for start := 0; start < count; start += chunk {
		pipe := c.Pipeline()
		for i := start; i < start+chunk && i < count; i++ {
			key := prefix + "k:" + strconv.Itoa(i)
			kind := r.Intn(100)
			members := 5 + r.Intn(46)
			switch {
			case kind < 70:
				pipe.Set(ctx, key, randBytes(64+r.Intn(449)), 0)
			case kind < 78:
				args := make([]any, 0, members*2)
				for j := 0; j < members; j++ {
					args = append(args, "f"+strconv.Itoa(j), randBytes(8+r.Intn(24)))
				}
				pipe.HSet(ctx, key, args...)
			case kind < 86:
				args := make([]any, members)
				for j := range args {
					args[j] = randBytes(8 + r.Intn(24))
				}
				pipe.RPush(ctx, key, args...)
			case kind < 93:
				args := make([]any, members)
				for j := range args {
					args[j] = "s" + strconv.Itoa(j) + randBytes(6)
				}
				pipe.SAdd(ctx, key, args...)
			default:
				zs := make([]redis.Z, members)
				for j := range zs {
					zs[j] = redis.Z{Score: r.Float64() * 1000, Member: "z" + strconv.Itoa(j) + randBytes(6)}
				}
				pipe.ZAdd(ctx, key, zs...)
			}
			if r.Intn(100) < 20 {
				pipe.Expire(ctx, key, time.Hour+time.Duration(r.Intn(7200))*time.Second)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}
