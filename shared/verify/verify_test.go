package verify_test

import (
	"context"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/cli"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

var ctx = context.Background()

func open(t *testing.T, url string) *redisconn.Conn {
	t.Helper()
	ep, err := config.ParseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(ctx, ep, redisconn.Options{Role: "test", PoolSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func copyAll(t *testing.T, src, dst string) {
	t.Helper()
	if code := cli.Main([]string{"copy", "--source", src, "--target", dst, "--no-verify"}, &cli.Env{Stdout: io.Discard, Stderr: os.Stderr}); code != 0 {
		t.Fatalf("copy exit %d", code)
	}
}

// planted is one difference of each kind, planted in the target, and what it must be reported as.
var planted = map[string]string{
	"t:str:plain":     "missing",
	"t:str:binary":    "value",
	"t:hash:small":    "value",
	"t:set:small":     "value",
	"t:zset:small":    "value",
	"t:list:small":    "value",
	"t:hash:big":      "value",
	"t:stream:groups": "value",
	"t:set:intset":    "type",
	"t:str:ttl":       "ttl",
	"t:zset:big":      "ttl",
	"t:str:int":       "ttl",
	"t:str:large":     "value", // a string read by DUMP, not by the string-first GETRANGE
	"t:str:negint":    "type",  // a string read by GETRANGE in the source, a hash in the target
	"t:list:big":      "type",  // a list in the source, a string in the target
	"x:only-target":   "extra",
	"x:hash-only":     "extra",
}

func plant(t *testing.T, dc redis.UniversalClient) {
	t.Helper()
	for _, err := range []error{
		dc.Del(ctx, "t:str:plain").Err(),
		dc.Set(ctx, "t:str:binary", "changed", 0).Err(),
		dc.HSet(ctx, "t:hash:small", "f1", "changed").Err(),
		dc.SRem(ctx, "t:set:small", "x").Err(), // same size, another member
		dc.SAdd(ctx, "t:set:small", "q").Err(),
		dc.ZAdd(ctx, "t:zset:small", redis.Z{Score: 9, Member: "one"}).Err(),
		dc.LSet(ctx, "t:list:small", 0, "z").Err(),
		dc.HSet(ctx, "t:hash:big", "field-7", "changed").Err(),
		dc.XAdd(ctx, &redis.XAddArgs{Stream: "t:stream:groups", Values: []any{"extra", 1}}).Err(),
		dc.Del(ctx, "t:set:intset").Err(),
		dc.RPush(ctx, "t:set:intset", 1, 2, 3).Err(),
		dc.Expire(ctx, "t:str:ttl", 3*time.Hour).Err(),
		dc.Persist(ctx, "t:zset:big").Err(),
		dc.Expire(ctx, "t:str:int", 5*time.Hour).Err(),
		dc.SetRange(ctx, "t:str:large", 100000, "X").Err(),
		dc.Del(ctx, "t:str:negint").Err(),
		dc.HSet(ctx, "t:str:negint", "f", "-42").Err(),
		dc.Del(ctx, "t:list:big").Err(),
		dc.Set(ctx, "t:list:big", "a string now", 0).Err(),
		dc.Set(ctx, "x:only-target", "1", 0).Err(),
		dc.HSet(ctx, "x:hash-only", "a", "b").Err(),
	} {
		if err != nil {
			t.Fatalf("plant: %v", err)
		}
	}
}

// verdicts runs one verification and returns "kind key" lines, sorted.
func verdicts(t *testing.T, src, dst *redisconn.Conn, o verify.Options) (*verify.Report, []string) {
	t.Helper()
	o.MaxReported = 1000
	rep, err := verify.Run(ctx, src, dst, o)
	if err != nil {
		t.Fatalf("verify %+v: %v", o, err)
	}
	var out []string
	for _, d := range rep.Differences {
		out = append(out, d.Kind+" "+d.Key)
	}
	sort.Strings(out)
	return rep, out
}

func want() []string {
	var out []string
	for k, kind := range planted {
		out = append(out, kind+" "+k)
	}
	sort.Strings(out)
	return out
}

// checkPaths verifies an identical pair and then planted differences with every path: strings
// read whole by GETRANGE and DUMP payloads (equal bytes, or decoded and compared here), DUMP with every key sized as big (so the
// digest path decides inside the dump mode), and in-server digests of every key. All must agree
// on every key, and the identical pair must match in full.
func checkPaths(t *testing.T, srcURL, dstURL string, dc redis.UniversalClient, wantDigestFew bool) {
	src, dst := open(t, srcURL), open(t, dstURL)
	modes := []struct {
		name string
		o    verify.Options
	}{
		{"dump", verify.Options{}},
		{"dump, all big", verify.Options{BigKeyBytes: 1}},
		{"digest", verify.Options{Compare: verify.CompareDigest}},
	}
	var checked int64
	for _, m := range modes {
		rep, got := verdicts(t, src, dst, m.o)
		if !rep.Ok() || len(got) != 0 || !rep.ExtraChecked || rep.Checked == 0 || rep.Matching != rep.Checked {
			t.Fatalf("%s: identical pair: %+v", m.name, rep)
		}
		if checked != 0 && rep.Checked != checked {
			t.Fatalf("%s: checked %d keys, another path %d", m.name, rep.Checked, checked)
		}
		checked = rep.Checked
		if c, ok := dc.(*redis.Client); ok && m.name == "dump" && !strings.Contains(c.Info(ctx, "commandstats").Val(), "cmdstat_getrange:") {
			t.Fatal("dump: no string was read by the string-first GETRANGE")
		}
		if m.name == "dump" && wantDigestFew && rep.DigestKeys > 5 {
			t.Fatalf("dump: %d keys took the digest path, want only the stream (and big keys)", rep.DigestKeys)
		}
	}
	plant(t, dc)
	for _, m := range modes {
		rep, got := verdicts(t, src, dst, m.o)
		if strings.Join(got, "\n") != strings.Join(want(), "\n") {
			t.Fatalf("%s: reported\n%s\nwant\n%s", m.name, strings.Join(got, "\n"), strings.Join(want(), "\n"))
		}
		if rep.Ok() || rep.Extra != 2 || rep.Missing != 1 || rep.TypeDiff != 3 || rep.TTLDiff != 3 || rep.ValueDiff != 8 {
			t.Fatalf("%s: counts %+v", m.name, rep)
		}
		// A sample cannot see keys that exist only in the target, and says so.
		o := m.o
		o.Sample = 50
		rep, _ = verdicts(t, src, dst, o)
		if rep.ExtraChecked || rep.Extra != 0 {
			t.Fatalf("%s: sample looked for extra keys: %+v", m.name, rep)
		}
		// Extra keys allowed (a copy into a target with keys of its own): named, not failed.
		o = m.o
		o.AllowExtra = true
		rep, _ = verdicts(t, src, dst, o)
		if rep.Extra != 2 || rep.Differing() != int64(len(planted)-2) {
			t.Fatalf("%s: extra allowed: %+v", m.name, rep)
		}
	}
}

func fillSource(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	if _, err := testenv.FillAllTypes(ctx, c, "t:"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, c, "b:", 2000, 3); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyPathsAgreeStandalone(t *testing.T) {
	s, d := testenv.StartRedis(t), testenv.StartRedis(t)
	fillSource(t, s.Client(t, 0))
	copyAll(t, s.URL(), d.URL())
	checkPaths(t, s.URL(), d.URL(), d.Client(t, 0), true)
}

func TestVerifyPathsAgreeCluster(t *testing.T) {
	s, d := testenv.StartCluster(t), testenv.StartCluster(t)
	fillSource(t, s.Client(t))
	copyAll(t, s.URL(), d.URL())
	checkPaths(t, s.URL(), d.URL(), d.Client(t), true)
}

// Valkey 8 writes payloads Redis 7.0 refuses: every key is re-encoded by the copy, so no payload
// is equal and the values decide (decoded here, or digested in the servers).
func TestVerifyPathsAgreeValkey8ToRedis70(t *testing.T) {
	s, d := testenv.StartValkey(t), testenv.StartRedis(t)
	fillSource(t, s.Client(t, 0))
	copyAll(t, s.URL(), d.URL())
	checkPaths(t, s.URL(), d.URL(), d.Client(t, 0), false)
}

// A target whose small collections use other encodings: payloads differ, values do not.
func TestVerifyOtherEncodings(t *testing.T) {
	s := testenv.StartRedis(t)
	d := testenv.StartRedis(t, "--hash-max-listpack-entries", "2", "--set-max-intset-entries", "2",
		"--zset-max-listpack-entries", "2", "--list-max-listpack-size", "2")
	fillSource(t, s.Client(t, 0))
	copyAll(t, s.URL(), d.URL())
	checkPaths(t, s.URL(), d.URL(), d.Client(t, 0), false)
}

// A server that refuses MEMORY USAGE (keys cannot be sized before a DUMP): every key takes the
// digest path, with the same verdicts.
func TestVerifyWithoutMemoryUsage(t *testing.T) {
	s, d := testenv.StartRedis(t), testenv.StartRedis(t)
	fillSource(t, s.Client(t, 0))
	copyAll(t, s.URL(), d.URL())
	plant(t, d.Client(t, 0))
	if err := d.Client(t, 0).Do(ctx, "ACL", "SETUSER", "default", "-memory").Err(); err != nil {
		t.Fatal(err)
	}
	rep, got := verdicts(t, open(t, s.URL()), open(t, d.URL()), verify.Options{})
	if strings.Join(got, "\n") != strings.Join(want(), "\n") {
		t.Fatalf("reported\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want(), "\n"))
	}
	if rep.DigestKeys < rep.Checked {
		t.Fatalf("%d of %d keys by digest, want all", rep.DigestKeys, rep.Checked)
	}
}
