package importer

import (
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// plantedImport is one difference of each kind planted in the target after an import.
var plantedImport = map[string]string{
	"t:str:plain":     "missing",
	"t:str:binary":    "value",
	"t:hash:small":    "value",
	"t:set:small":     "value",
	"t:zset:small":    "value",
	"t:list:small":    "value",
	"big:list":        "value", // in parts in the file: digest path
	"t:stream:groups": "value",
	"t:set:intset":    "type",
	"t:str:ttl":       "ttl",
	"big:hash":        "ttl",
	"t:str:int":       "ttl",
	"t:str:large":     "value", // a string the target's GETRANGE cannot read whole: DUMP path
	"t:str:negint":    "type",  // a string in the file, a hash in the target
	"t:list:big":      "type",  // a list in the file, a string in the target
	"x:only-target":   "extra",
	"x:hash-only":     "extra",
}

func plantImport(t *testing.T, dc redis.UniversalClient) {
	t.Helper()
	for _, err := range []error{
		dc.Del(ctx, "t:str:plain").Err(),
		dc.Set(ctx, "t:str:binary", "changed", 0).Err(),
		dc.HSet(ctx, "t:hash:small", "f1", "changed").Err(),
		dc.SRem(ctx, "t:set:small", "x").Err(),
		dc.SAdd(ctx, "t:set:small", "q").Err(),
		dc.ZAdd(ctx, "t:zset:small", redis.Z{Score: 9, Member: "one"}).Err(),
		dc.LSet(ctx, "t:list:small", 0, "z").Err(),
		dc.LSet(ctx, "big:list", 4000, "changed").Err(),
		dc.XAdd(ctx, &redis.XAddArgs{Stream: "t:stream:groups", Values: []any{"extra", 1}}).Err(),
		dc.Del(ctx, "t:set:intset").Err(),
		dc.RPush(ctx, "t:set:intset", 1, 2, 3).Err(),
		dc.Expire(ctx, "t:str:ttl", 3*time.Hour).Err(),
		dc.Persist(ctx, "big:hash").Err(),
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

// The import's closing verification decides keys by the target's DUMP payload against the
// file's bytes, by decoded values where the bytes differ, and by digests for values in parts and
// streams; with payloads read unsized, or forced to digests for every key, it must report exactly
// the same.
func TestImportVerifyPathsAgree(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source func(testenv.TB, ...string) *testenv.Server
		target []string
	}{
		{"same server", testenv.StartRedis, nil},
		{"other encodings", testenv.StartRedis, []string{"--hash-max-listpack-entries", "2", "--set-max-intset-entries", "2",
			"--zset-max-listpack-entries", "2", "--list-max-listpack-size", "2"}},
		{"valkey 8 file into redis 7.0", testenv.StartValkey, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := saveRDB(t, tc.source(t), fillResumable(t))
			dst := testenv.StartRedis(t, tc.target...)
			conn := openConn(t, dst.URL())
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := Import(ctx, f, conn, Options{}); err != nil {
				t.Fatal(err)
			}
			// Each path: payloads sized first, payloads read unsized (the import wrote every key),
			// digests only.
			paths := map[string]Options{"dump": {VerifyCompare: verify.CompareDump}, "dump unsized": {VerifyCompare: verify.CompareDump, WroteAll: true},
				"digest": {VerifyCompare: verify.CompareDigest}}
			run := func(c string) (*verify.Report, []string) {
				t.Helper()
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				rep, err := Verify(ctx, f, conn, paths[c])
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, d := range rep.Differences {
					out = append(out, d.Kind+" "+d.Key)
				}
				sort.Strings(out)
				return rep, out
			}
			for c := range paths {
				rep, got := run(c)
				if !rep.Ok() || len(got) != 0 || rep.Checked < 4000 || rep.Matching != rep.Checked || !rep.ExtraChecked {
					t.Fatalf("%s: identical: %+v", c, rep)
				}
				if c != "digest" && !strings.Contains(dst.Client(t, 0).Info(ctx, "commandstats").Val(), "cmdstat_getrange:") {
					t.Fatalf("%s: no string was read by the string-first GETRANGE", c)
				}
				if c != "digest" && tc.name == "same server" && rep.DigestKeys > 10 {
					t.Fatalf("%s: %d keys by digest", c, rep.DigestKeys)
				}
			}
			plantImport(t, dst.Client(t, 0))
			var want []string
			for k, kind := range plantedImport {
				want = append(want, kind+" "+k)
			}
			sort.Strings(want)
			for c := range paths {
				rep, got := run(c)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("%s: reported\n%s\nwant\n%s", c, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if rep.Extra != 2 || rep.Missing != 1 || rep.TypeDiff != 3 || rep.TTLDiff != 3 || rep.ValueDiff != 8 {
					t.Fatalf("%s: counts %+v", c, rep)
				}
			}
		})
	}
}
