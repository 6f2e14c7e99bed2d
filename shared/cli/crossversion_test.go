package cli

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Valkey 8.0 writes RDB 11 payloads (listpack sets, stream v3) that redis-server 7.0 refuses:
// every key the copy DUMPs must take the per-key fallback and arrive identical. Strings the
// string-first pass reads whole are written with SET and need no fallback.
func TestCopyValkey8ToRedis70EveryType(t *testing.T) {
	src := testenv.StartValkey(t)
	dst := testenv.StartRedis(t)
	sc := src.Client(t, 0)
	n, err := testenv.FillAllTypes(ctx, sc, "v:")
	if err != nil {
		t.Fatal(err)
	}
	sc.XGroupCreateMkStream(ctx, "v:stream:empty", "g", "$")
	n++
	setStrings := 0
	for _, k := range sc.Keys(ctx, "*").Val() {
		if sc.Type(ctx, k).Val() == "string" {
			if l := sc.StrLen(ctx, k).Val(); l > 0 && l < 32<<10 {
				setStrings++
			}
		}
	}
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--verify-full")
	if code != 0 || sum.KeysCopied != int64(n) || sum.KeysFallback != int64(n-setStrings) || setStrings == 0 {
		t.Fatalf("exit %d, summary %+v; want all %d keys copied, %d of them through the fallback", code, sum, n, n-setStrings)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)
}

// The same pair with the big-key path: chunked reads from Valkey, commands into Redis 7.0.
func TestCopyValkey8ToRedis70BigKeys(t *testing.T) {
	src := testenv.StartValkey(t)
	dst := testenv.StartCluster(t)
	sc := src.Client(t, 0)
	if _, err := testenv.FillAllTypes(ctx, sc, "v:"); err != nil {
		t.Fatal(err)
	}
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--big-key-bytes", "2000", "--verify-full")
	if code != 0 || sum.KeysBig == 0 || sum.KeysCopied != sum.KeysScanned {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr), nil, 1)
}
