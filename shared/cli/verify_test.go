package cli

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

func runVerifyJSON(t *testing.T, args ...string) (int, verify.Report, string) {
	t.Helper()
	code, out, errs := run(t, append(append([]string{"verify"}, args...), "--json")...)
	var r verify.Report
	if out != "" {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out)
		}
	}
	return code, r, errs
}

// bigValues adds keys large enough to take several digest chunks.
func bigValues(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	fields := make([]any, 0, 10000)
	members := make([]any, 0, 5000)
	zs := make([]redis.Z, 0, 5000)
	for i := 0; i < 5000; i++ {
		fields = append(fields, "f"+itoa(i), "v"+itoa(i))
		members = append(members, "m"+itoa(i))
		zs = append(zs, redis.Z{Score: float64(i) / 7, Member: "z" + itoa(i)})
	}
	c.HSet(ctx, "big:hash", fields...)
	c.SAdd(ctx, "big:set", members...)
	c.ZAdd(ctx, "big:zset", zs...)
	c.RPush(ctx, "big:list", members...)
	c.Set(ctx, "big:string", strings.Repeat("0123456789", 300000), 0)
	for i := 0; i < 3000; i++ {
		c.XAdd(ctx, &redis.XAddArgs{Stream: "big:stream", Values: []any{"i", i}})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestVerifyFindsEveryKindOfDifference(t *testing.T) {
	src := testenv.StartRedis(t)
	// The target stores small collections in a different encoding: digests must not care.
	dst := testenv.StartRedis(t, "--hash-max-listpack-entries", "2", "--set-max-intset-entries", "2",
		"--zset-max-listpack-entries", "2", "--list-max-listpack-size", "2")
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 3000)
	bigValues(t, sc)
	code, _, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	if code != 0 {
		t.Fatalf("copy exit %d", code)
	}
	// Identical pair: nothing to report, in full and in sample mode.
	code, rep, _ := runVerifyJSON(t, "--source", src.URL(), "--target", dst.URL(), "--full")
	if code != 0 || !rep.Ok() || rep.Checked != int64(n+6) || rep.Matching != rep.Checked {
		t.Fatalf("identical pair: exit %d report %+v", code, rep)
	}
	code, rep, _ = runVerifyJSON(t, "--source", src.URL(), "--target", dst.URL(), "--sample", "500")
	if code != 0 || !rep.Ok() || rep.Checked < 400 {
		t.Fatalf("identical pair, sample: exit %d report %+v", code, rep)
	}

	// Plant one of each difference in the target.
	dc.Del(ctx, "t:str:plain")                    // missing
	dc.HSet(ctx, "t:hash:small", "f1", "changed") // changed value
	dc.HSet(ctx, "big:hash", "f4999", "changed")  // changed value in a big (chunked) key
	dc.Del(ctx, "t:set:small")                    // changed type
	dc.RPush(ctx, "t:set:small", "x", "y", "z")   //
	dc.Expire(ctx, "t:str:ttl", 3*time.Hour)      // TTL outside tolerance (source: 1h)
	dc.Persist(ctx, "t:zset:big")                 // TTL dropped
	dc.XAdd(ctx, &redis.XAddArgs{Stream: "big:stream", ID: "*", Values: []any{"extra", 1}})
	code, rep, errs := runVerifyJSON(t, "--source", src.URL(), "--target", dst.URL(), "--full")
	if code != ExitFailures {
		t.Fatalf("exit %d, want %d", code, ExitFailures)
	}
	if rep.Missing != 1 || rep.ValueDiff != 3 || rep.TypeDiff != 1 || rep.TTLDiff != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, k := range []string{"t:str:plain", "t:hash:small", "big:hash", "t:set:small", "t:str:ttl", "t:zset:big", "big:stream"} {
		if !strings.Contains(errs, k) {
			t.Fatalf("output does not name %s:\n%s", k, errs)
		}
	}
}

func TestVerifyClusterWithDBMap(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartCluster(t)
	if _, err := testenv.FillAllTypes(ctx, src.Client(t, 2), "two:"); err != nil {
		t.Fatal(err)
	}
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--db-map", "2:0", "--db-prefix", "2:old:", "--verify-full")
	if code != 0 || sum.Verify == nil {
		t.Fatalf("copy exit %d summary %+v", code, sum)
	}
	code, rep, _ := runVerifyJSON(t, "--source", src.URL(), "--target", dst.URL(), "--db-map", "2:0", "--db-prefix", "2:old:")
	if code != 0 || rep.Checked != 20 || !rep.Ok() {
		t.Fatalf("verify exit %d report %+v", code, rep)
	}
	dst.Client(t).Del(ctx, "old:two:hash:big")
	code, rep, _ = runVerifyJSON(t, "--source", src.URL(), "--target", dst.URL(), "--db-map", "2:0", "--db-prefix", "2:old:")
	if code != ExitFailures || rep.Missing != 1 || rep.Differences[0].Key != "old:two:hash:big" {
		t.Fatalf("verify exit %d report %+v", code, rep)
	}
}
