package copier_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

var ctx = context.Background()

func open(t *testing.T, url, role string) *redisconn.Conn {
	t.Helper()
	ep, err := config.ParseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(ctx, ep, redisconn.Options{Role: role})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stringsAndOthers fills c with strings on both sides of the string-first pass's length limit
// (32 KiB under the default options), the empty string, integers, binary bytes, TTLs, and one
// key of each other type. It returns every key, and how many the pass settles without a DUMP.
func stringsAndOthers(t *testing.T, c *redis.Client) ([][]byte, int) {
	t.Helper()
	const limit = 32 << 10
	strs := map[string]string{
		"s:empty": "", "s:one": "x", "s:embstr": strings.Repeat("e", 44), "s:raw": strings.Repeat("r", 45),
		"s:under": strings.Repeat("u", limit-1), "s:at": strings.Repeat("a", limit), "s:long": strings.Repeat("l", 200000),
		"s:int": "12345", "s:neg": "-7", "s:zeros": "007", "s:binary": "\x00\r\n\xff\xfe" + strings.Repeat("b", 30),
		"s:ttl": "expires", "s:ttl-long": strings.Repeat("t", limit+5),
	}
	settled := 0
	for k, v := range strs {
		ttl := time.Duration(0)
		if strings.HasPrefix(k, "s:ttl") {
			ttl = time.Hour
		}
		if err := c.Set(ctx, k, v, ttl).Err(); err != nil {
			t.Fatal(err)
		}
		if len(v) > 0 && len(v) < limit {
			settled++
		}
	}
	c.HSet(ctx, "o:hash", "f", "v")
	c.RPush(ctx, "o:list", "a", "b")
	c.SAdd(ctx, "o:set", "m")
	c.ZAdd(ctx, "o:zset", redis.Z{Score: 1.5, Member: "z"})
	c.XAdd(ctx, &redis.XAddArgs{Stream: "o:stream", Values: []any{"f", "v"}})
	c.Expire(ctx, "o:hash", time.Hour)
	var keys [][]byte
	for _, k := range c.Keys(ctx, "*").Val() {
		keys = append(keys, []byte(k))
	}
	return keys, settled
}

// The string-first pass: every string under the limit is read with one GETRANGE and written
// with SET (no MEMORY USAGE, no DUMP); the empty string, longer strings and other types take the
// sized DUMP path. Values, types and TTLs arrive exactly, on the raw path and through go-redis.
func TestStringFirstPass(t *testing.T) {
	for _, goRedis := range []bool{false, true} {
		t.Run("goRedisOnly="+strconv.FormatBool(goRedis), func(t *testing.T) {
			src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
			sc, dc := src.Client(t, 0), dst.Client(t, 0)
			keys, settled := stringsAndOthers(t, sc)
			sc.ConfigResetStat(ctx)
			cp := copier.New(open(t, src.URL(), "source"), open(t, dst.URL(), "target"), copier.Options{GoRedisOnly: goRedis})
			res, err := cp.Copy(ctx, plan.Batch{ID: "b", Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied != int64(len(keys)) || res.Keys() != int64(len(keys)) || res.Fallback != 0 {
				t.Fatalf("result %+v, want all %d keys copied", res, len(keys))
			}
			dumped := int64(len(keys) - settled)
			calls := testenv.CommandCalls(ctx, sc)
			if g, d, m := calls["getrange"], calls["dump"], calls["memory|usage"]; g != int64(len(keys)) || d != dumped || m != dumped {
				t.Fatalf("source served %d GETRANGE, %d DUMP, %d MEMORY USAGE; want %d, %d, %d", g, d, m, len(keys), dumped, dumped)
			}
			testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
		})
	}
}

// What the target already holds, for keys the pass writes with SET: --existing fail names the
// key (SET NX found it), skip keeps the target's value and TTL, replace overwrites another type
// and drops a TTL the source's key does not have.
func TestStringFirstPassExisting(t *testing.T) {
	for _, goRedis := range []bool{false, true} {
		t.Run("goRedisOnly="+strconv.FormatBool(goRedis), func(t *testing.T) {
			src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
			sc, dc := src.Client(t, 0), dst.Client(t, 0)
			sc.Set(ctx, "a", "source-a", 0)
			sc.Set(ctx, "b", "source-b", 0)
			sc.Set(ctx, "c", "source-c", 0)
			keys := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
			reset := func() {
				dc.FlushAll(ctx)
				dc.Set(ctx, "a", "target-a", time.Hour)
				dc.HSet(ctx, "b", "f", "target-b")
			}
			s, d := open(t, src.URL(), "source"), open(t, dst.URL(), "target")

			reset()
			res, err := copier.New(s, d, copier.Options{Existing: copier.ExistingFail, GoRedisOnly: goRedis}).Copy(ctx, plan.Batch{Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied != 1 || res.Failed != 2 || len(res.Failures) != 2 {
				t.Fatalf("fail: %+v", res)
			}
			for i, f := range res.Failures {
				if f.Key != string(keys[i]) || !strings.Contains(f.Reason, "target already holds this key") {
					t.Fatalf("fail: failure %d is %+v", i, f)
				}
			}
			if dc.Get(ctx, "a").Val() != "target-a" || dc.HGet(ctx, "b", "f").Val() != "target-b" || dc.Get(ctx, "c").Val() != "source-c" {
				t.Fatal("fail: the target's keys changed")
			}

			reset()
			res, err = copier.New(s, d, copier.Options{Existing: copier.ExistingSkip, GoRedisOnly: goRedis}).Copy(ctx, plan.Batch{Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied != 1 || res.Skipped != 2 || res.Failed != 0 {
				t.Fatalf("skip: %+v", res)
			}
			if dc.Get(ctx, "a").Val() != "target-a" || dc.TTL(ctx, "a").Val() <= 0 || dc.HGet(ctx, "b", "f").Val() != "target-b" {
				t.Fatal("skip: the target's keys changed")
			}

			reset()
			res, err = copier.New(s, d, copier.Options{Existing: copier.ExistingReplace, GoRedisOnly: goRedis}).Copy(ctx, plan.Batch{Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied != 3 || res.Keys() != 3 {
				t.Fatalf("replace: %+v", res)
			}
			testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
		})
	}
}

// A target that refuses SET is reported per key with its own words, naming SET; a source whose
// ACL refuses GETRANGE is copied through DUMP instead.
func TestStringFirstPassRefusals(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	keys, _ := stringsAndOthers(t, sc)

	dc.Do(ctx, "ACL", "SETUSER", "noset", "on", ">pw", "~*", "+@all", "-set")
	target := "redis://noset:pw@" + dst.Addr
	res, err := copier.New(open(t, src.URL(), "source"), open(t, target, "target"), copier.Options{}).Copy(ctx, plan.Batch{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed == 0 || res.Keys() != int64(len(keys)) {
		t.Fatalf("result %+v", res)
	}
	for _, f := range res.Failures {
		if !strings.HasPrefix(f.Reason, "target refused SET: NOPERM") || !strings.HasPrefix(f.Key, "s:") {
			t.Fatalf("failure %+v", f)
		}
		if dc.Exists(ctx, f.Key).Val() != 0 {
			t.Fatalf("%s reported failed but is in the target", f.Key)
		}
	}

	dc.FlushAll(ctx)
	sc.Do(ctx, "ACL", "SETUSER", "nogetrange", "on", ">pw", "~*", "+@all", "-getrange")
	source := "redis://nogetrange:pw@" + src.Addr
	res, err = copier.New(open(t, source, "source"), open(t, dst.URL(), "target"), copier.Options{}).Copy(ctx, plan.Batch{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != int64(len(keys)) {
		t.Fatalf("source without GETRANGE: %+v", res)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}
