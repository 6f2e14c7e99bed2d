package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// importCorpus is the shared RDB corpus (see its README), relative to this package.
const importCorpus = "../../../shared/rdb-corpus"

// corpusFile returns a corpus file, skipping without the corpus unless REQUIRE_CORPUS=1.
func corpusFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(importCorpus, rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("REQUIRE_CORPUS") == "1" {
			t.Fatalf("RDB corpus required (REQUIRE_CORPUS=1): %v", err)
		}
		t.Skip("RDB corpus not present:", err)
	}
	return p
}

// saveRDB fills the server's db 0 with fill, SAVEs and returns the RDB file's path.
func saveRDB(t *testing.T, srv *testenv.Server, fill func(c *redis.Client)) string {
	t.Helper()
	fill(srv.Client(t, 0))
	if err := srv.Client(t, 0).Save(ctx).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	return filepath.Join(srv.Dir, "dump.rdb")
}

// fillRoundTrip writes every type (FillAllTypes) plus the big encodings: a list, a hash, a set
// and a zset of 5,000 elements (they arrive in parts), a 2 MB string, and keys with TTLs, some
// of them big. It returns the key count.
func fillRoundTrip(t *testing.T, c *redis.Client) int {
	t.Helper()
	n, err := testenv.FillAllTypes(ctx, c, "t:")
	if err != nil {
		t.Fatal(err)
	}
	const big = 5000
	items := make([]any, big)
	fields := make([]any, 0, 2*big)
	zs := make([]redis.Z, big)
	for i := 0; i < big; i++ {
		items[i] = "item:" + strconv.Itoa(i) + strings.Repeat("~", i%23)
		fields = append(fields, "field:"+strconv.Itoa(i), strings.Repeat("v", i%31))
		// Scores with a short exact decimal form: Valkey 8 and Redis 7.0 print a double
		// differently in DEBUG DIGEST-VALUE (shortest form vs %.17g) when it has none.
		zs[i] = redis.Z{Score: float64(i)/8 - 100, Member: "member:" + strconv.Itoa(i)}
	}
	pipe := c.Pipeline()
	pipe.RPush(ctx, "big:list", items...)
	pipe.HSet(ctx, "big:hash", fields...)
	pipe.SAdd(ctx, "big:set", items...)
	pipe.ZAdd(ctx, "big:zset", zs...)
	pipe.Set(ctx, "big:string", strings.Repeat("0123456789abcdef", 2<<20/16), 0)
	pipe.PExpire(ctx, "big:hash", 90*time.Minute)
	pipe.PExpire(ctx, "big:zset", 3*time.Hour)
	pipe.Set(ctx, "ttl:1", "one", 20*time.Minute)
	pipe.Set(ctx, "ttl:2", "two", 48*time.Hour)
	pipe.SAdd(ctx, "ttl:set", "a", "b", "c")
	pipe.PExpireAt(ctx, "ttl:set", time.Now().Add(5*time.Hour))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	return n + 8
}

// expectations read from the file with our codec: keys, those that arrive in parts (big), and
// single-part keys whose encoding a Redis 7.0 (RDB 10) lacks (re-encoded: fallback).
type rdbFacts struct{ keys, big, reencoded int64 }

func factsOf(t *testing.T, path string) rdbFacts {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := rdb.NewReader(f, rdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out rdbFacts
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != rdb.KindKey || !e.Last {
			continue
		}
		out.keys++
		switch {
		case e.Part > 0:
			out.big++
		case rdb.TypeMinVersion(e.TypeByte, rd.IsValkey()) > 10:
			out.reencoded++
		}
	}
}

func verifyField(s map[string]any, name string) int64 {
	n, _ := s[name].(float64)
	return int64(n)
}

// Round trip: a dataset written by Redis 7.0 and one written by Valkey 8.0, SAVEd, imported
// with the CLI into an empty Redis 7.0: the same data (key by key and DEBUG DIGEST), exact
// counts, and a closing verification that reports OK. Valkey's RDB 11 encodings that 7.0 lacks
// (listpack sets, stream v3) must have been re-encoded (counted as fallback keys).
func TestImportRoundTrip(t *testing.T) {
	for _, kind := range []string{"redis-7.0", "valkey-8.0"} {
		t.Run(kind, func(t *testing.T) {
			var src *testenv.Server
			if kind == "redis-7.0" {
				src = testenv.StartRedis(t)
			} else {
				src = testenv.StartValkey(t)
			}
			var n int
			path := saveRDB(t, src, func(c *redis.Client) { n = fillRoundTrip(t, c) })
			facts := factsOf(t, path)
			if facts.keys != int64(n) {
				t.Fatalf("file holds %d keys, wrote %d", facts.keys, n)
			}
			if facts.big < 4 {
				t.Fatalf("want the 4 values of 5,000 elements in parts, file has %d", facts.big)
			}
			if kind == "valkey-8.0" && facts.reencoded == 0 {
				t.Fatal("the Valkey file should hold encodings Redis 7.0 lacks")
			}
			dst := testenv.StartRedis(t)
			code, sum, errs := runJSON(t, "import", path, "--target", dst.URL())
			if code != ExitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			if sum.KeysScanned != int64(n) || sum.KeysCopied != int64(n) || sum.KeysFailed != 0 || sum.KeysSkipped != 0 ||
				sum.KeysExpired != 0 || sum.KeysMissing != 0 || sum.KeysBig != facts.big || sum.KeysFallback != facts.reencoded {
				t.Fatalf("summary %+v; want %d scanned and copied, %d big, %d fallback", sum, n, facts.big, facts.reencoded)
			}
			rep, _ := sum.Verify.(map[string]any)
			if verifyField(rep, "keys_checked") != int64(n) || verifyField(rep, "keys_matching") != int64(n) || !strings.Contains(errs, "verify: OK") {
				t.Fatalf("verification %v; want all %d keys checked and matching", rep, n)
			}
			sc, dc := src.Client(t, 0), dst.Client(t, 0)
			testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 0)
			a, _ := sc.Do(ctx, "DEBUG", "DIGEST").Text()
			b, _ := dc.Do(ctx, "DEBUG", "DIGEST").Text()
			if a != b || a == strings.Repeat("0", 40) {
				t.Fatalf("DEBUG DIGEST: source %s, target %s", a, b)
			}
			zsrc, _ := sc.ZRangeWithScores(ctx, "big:zset", 0, -1).Result()
			zdst, _ := dc.ZRangeWithScores(ctx, "big:zset", 0, -1).Result()
			if len(zsrc) != 5000 || fmt.Sprint(zsrc) != fmt.Sprint(zdst) {
				t.Fatalf("big:zset differs (%d and %d members)", len(zsrc), len(zdst))
			}
			// The set written from Valkey's listpack must now be a valid Redis 7.0 value.
			if m, err := dc.SMembers(ctx, "t:set:small").Result(); err != nil || len(m) != 3 {
				t.Fatalf("t:set:small: %v %v", m, err)
			}
		})
	}
}

// The Redis 7.0 file into a 3-master cluster: batches straddle every slot, values in parts are
// built in same-slot scratch keys, and the verification reads every master.
func TestImportIntoCluster(t *testing.T) {
	src := testenv.StartRedis(t)
	var n int
	path := saveRDB(t, src, func(c *redis.Client) {
		n = fillRoundTrip(t, c)
		if err := testenv.FillBulk(ctx, c, "b:", 3000, 3); err != nil {
			t.Fatal(err)
		}
		n += 3000
	})
	facts := factsOf(t, path)
	dst := testenv.StartCluster(t)
	code, sum, errs := runJSON(t, "import", path, "--target", dst.URL())
	if code != ExitOK || sum.KeysCopied != int64(n) || sum.KeysScanned != int64(n) || sum.KeysBig != facts.big || sum.KeysFailed != 0 {
		t.Fatalf("exit %d summary %+v; want %d copied, %d big\n%s", code, sum, n, facts.big, errs)
	}
	rep, _ := sum.Verify.(map[string]any)
	if verifyField(rep, "keys_matching") != int64(n) {
		t.Fatalf("verification %v", rep)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr), nil, 0)
	// Only db 0 exists on a cluster: mapping elsewhere is refused before starting.
	code, _, errs = run(t, "import", path, "--target", dst.URL(), "--db-map", "0:1", "--existing", "replace")
	if code != ExitUsage || !strings.Contains(errs, "cluster") {
		t.Fatalf("db map to db 1 on a cluster: exit %d\n%s", code, errs)
	}
}

// smallFile is a Redis 7.0 RDB with a few keys, one of them in parts.
func smallFile(t *testing.T) (string, *testenv.Server) {
	t.Helper()
	src := testenv.StartRedis(t)
	path := saveRDB(t, src, func(c *redis.Client) {
		items := make([]any, 3000)
		for i := range items {
			items[i] = i
		}
		pipe := c.Pipeline()
		pipe.Set(ctx, "k1", "file-1", 0)
		pipe.Set(ctx, "k2", "file-2", 0)
		pipe.HSet(ctx, "user:1", "name", "ann")
		pipe.HSet(ctx, "user:2", "name", "bob")
		pipe.RPush(ctx, "big:list", items...)
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	})
	return path, src
}

// --existing: fail refuses a non-empty target before writing anything; skip keeps the target's
// keys (small and big) and counts them skipped; replace overwrites them.
func TestImportExisting(t *testing.T) {
	path, src := smallFile(t)
	const fileKeys = 5
	prepare := func(t *testing.T) *testenv.Server {
		dst := testenv.StartRedis(t)
		c := dst.Client(t, 0)
		c.Set(ctx, "k1", "target-1", 0)
		c.RPush(ctx, "big:list", "target")
		c.Set(ctx, "other", "untouched", 0)
		return dst
	}
	t.Run("fail", func(t *testing.T) {
		dst := prepare(t)
		code, out, errs := run(t, "import", path, "--target", dst.URL())
		if code != ExitUsage || out != "" || !strings.Contains(errs, "already holds 3 keys") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Fatalf("exit %d, want %d with one line naming the non-empty target; stdout %q stderr %q", code, ExitUsage, out, errs)
		}
		if n, _ := dst.Client(t, 0).DBSize(ctx).Result(); n != 3 {
			t.Fatalf("target changed: %d keys", n)
		}
	})
	t.Run("skip", func(t *testing.T) {
		dst := prepare(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--existing", "skip")
		if code != ExitOK || sum.KeysSkipped != 2 || sum.KeysCopied != fileKeys-2 || sum.KeysFailed != 0 || sum.KeysScanned != fileKeys {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		c := dst.Client(t, 0)
		if v, _ := c.Get(ctx, "k1").Result(); v != "target-1" {
			t.Fatalf("k1 = %q, want the target's value kept", v)
		}
		if l, _ := c.LRange(ctx, "big:list", 0, -1).Result(); len(l) != 1 {
			t.Fatalf("big:list has %d items, want the target's 1 kept", len(l))
		}
		if v, _ := c.Get(ctx, "k2").Result(); v != "file-2" {
			t.Fatalf("k2 = %q", v)
		}
	})
	t.Run("replace", func(t *testing.T) {
		dst := prepare(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--existing", "replace")
		if code != ExitOK || sum.KeysCopied != fileKeys || sum.KeysSkipped != 0 || sum.KeysFailed != 0 {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		c := dst.Client(t, 0)
		if v, _ := c.Get(ctx, "other").Result(); v != "untouched" {
			t.Fatalf("other = %q: keys not in the file must stay", v)
		}
		c.Del(ctx, "other")
		testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{c}, nil, 0)
	})
}

// multiDBFile has keys in dbs 0, 1 and 3.
func multiDBFile(t *testing.T) string {
	t.Helper()
	src := testenv.StartRedis(t)
	for db, keys := range map[int][]string{0: {"a", "b"}, 1: {"c"}, 3: {"d", "e", "f"}} {
		c := src.Client(t, db)
		for _, k := range keys {
			if err := c.Set(ctx, k, fmt.Sprintf("%s@db%d", k, db), 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return saveRDB(t, src, func(*redis.Client) {})
}

func keysOf(t *testing.T, c *redis.Client) string {
	t.Helper()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		v, _ := c.Get(ctx, k).Result()
		out = append(out, k+"="+v)
	}
	return fmt.Sprint(sortStrings(out))
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// --db-map and --db-prefix on a file with several databases; without a map, a clear error
// naming the db; an explicit map leaves the other dbs out and reports them.
func TestImportDBMap(t *testing.T) {
	path := multiDBFile(t)
	t.Run("no-map", func(t *testing.T) {
		dst := testenv.StartRedis(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL())
		if code == ExitOK || !strings.Contains(errs, "keys in db 1") || !strings.Contains(errs, "--db-map") {
			t.Fatalf("exit %d; want a failure naming db 1 and --db-map\n%s", code, errs)
		}
		if sum.KeysCopied != 2 {
			t.Fatalf("summary %+v; the db 0 keys before the first db 1 key are imported", sum)
		}
	})
	t.Run("identity", func(t *testing.T) {
		dst := testenv.StartRedis(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--db-map", "0:0,1:1,3:3")
		if code != ExitOK || sum.KeysCopied != 6 {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		for db, want := range map[int]string{0: "[a=a@db0 b=b@db0]", 1: "[c=c@db1]", 3: "[d=d@db3 e=e@db3 f=f@db3]"} {
			if got := keysOf(t, dst.Client(t, db)); got != want {
				t.Fatalf("db %d: %s, want %s", db, got, want)
			}
		}
	})
	t.Run("merge-with-prefixes", func(t *testing.T) {
		dst := testenv.StartRedis(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--db-map", "0:0,1:0,3:0", "--db-prefix", "1:one:,3:three:")
		if code != ExitOK || sum.KeysCopied != 6 {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		want := "[a=a@db0 b=b@db0 one:c=c@db1 three:d=d@db3 three:e=e@db3 three:f=f@db3]"
		if got := keysOf(t, dst.Client(t, 0)); got != want {
			t.Fatalf("db 0: %s, want %s", got, want)
		}
	})
	t.Run("explicit-subset", func(t *testing.T) {
		dst := testenv.StartRedis(t)
		code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--db-map", "3:0")
		if code != ExitOK || sum.KeysCopied != 3 || sum.NotCopiedDBs["db0"] != 2 || sum.NotCopiedDBs["db1"] != 1 {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		if got := keysOf(t, dst.Client(t, 0)); got != "[d=d@db3 e=e@db3 f=f@db3]" {
			t.Fatalf("db 0: %s", got)
		}
	})
	t.Run("merge-without-prefix-refused", func(t *testing.T) {
		dst := testenv.StartRedis(t)
		code, _, errs := run(t, "import", path, "--target", dst.URL(), "--db-map", "0:0,1:0")
		if code != ExitUsage || !strings.Contains(errs, "collide") {
			t.Fatalf("exit %d, want %d refusing the merge\n%s", code, ExitUsage, errs)
		}
	})
	t.Run("corpus-multiple-databases", func(t *testing.T) {
		p := corpusFile(t, "sripathikrishnan-redis-rdb-tools/tests/dumps/multiple_databases.rdb")
		dst := testenv.StartRedis(t)
		code, sum, errs := runJSON(t, "import", p, "--target", dst.URL(), "--db-map", "0:0,2:0", "--db-prefix", "2:second:")
		if code != ExitOK || sum.KeysCopied != 2 {
			t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
		}
		if got := keysOf(t, dst.Client(t, 0)); got != "[key_in_zeroth_database=zero second:key_in_second_database=second]" {
			t.Fatalf("db 0: %s", got)
		}
	})
}

// --match imports only the keys whose name matches, and verifies only those.
func TestImportMatch(t *testing.T) {
	path, _ := smallFile(t)
	dst := testenv.StartRedis(t)
	code, sum, errs := runJSON(t, "import", path, "--target", dst.URL(), "--match", "user:*")
	if code != ExitOK || sum.KeysCopied != 2 || sum.KeysFailed != 0 {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	keys, _ := dst.Client(t, 0).Keys(ctx, "*").Result()
	if got := fmt.Sprint(sortStrings(keys)); got != "[user:1 user:2]" {
		t.Fatalf("target keys %s", got)
	}
	rep, _ := sum.Verify.(map[string]any)
	if verifyField(rep, "keys_checked") != 2 {
		t.Fatalf("verification %v; want the 2 matching keys checked", rep)
	}
}

// --functions: skip (default, reported), load (FUNCTION LIST on the target shows the library),
// replace (loads over an existing library of the same name).
func TestImportFunctions(t *testing.T) {
	for _, tc := range []struct {
		file, lib string
		keys      int64
		nlibs     int
	}{
		{"redis-librdb/test/dumps/function.rdb", "mylib", 0, 1},
		{"redis-librdb/test/dumps/function2.rdb", "mylib2", 10, 2},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			path := corpusFile(t, tc.file)
			dst := testenv.StartRedis(t)
			c := dst.Client(t, 0)
			libs := func() string {
				l, err := c.FunctionList(ctx, redis.FunctionListQuery{}).Result()
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, x := range l {
					names = append(names, x.Name)
				}
				return fmt.Sprint(sortStrings(names))
			}
			code, sum, errs := runJSON(t, "import", path, "--target", dst.URL())
			if code != ExitOK || sum.KeysCopied != tc.keys || libs() != "[]" || !strings.Contains(strings.Join(sum.Notes, "\n"), "function libraries loaded") {
				t.Fatalf("skip: exit %d summary %+v libraries %s\n%s", code, sum, libs(), errs)
			}
			c.FlushAll(ctx)
			code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--functions", "load")
			if code != ExitOK || sum.KeysCopied != tc.keys || !strings.Contains(libs(), tc.lib) {
				t.Fatalf("load: exit %d summary %+v libraries %s\n%s", code, sum, libs(), errs)
			}
			if tc.lib == "mylib" {
				if r, err := c.FCall(ctx, "myfunc", nil, "echoed").Text(); err != nil || r != "echoed" {
					t.Fatalf("FCALL myfunc: %q %v", r, err)
				}
			}
			// Loading again finds the very same library there: loaded, not an error.
			c.FlushDB(ctx) // keys only: the libraries stay
			code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--functions", "load")
			if notes := strings.Join(sum.Notes, "\n"); code != ExitOK || !strings.Contains(notes, fmt.Sprintf("%d of %d function libraries loaded", tc.nlibs, tc.nlibs)) || strings.Contains(notes, "not loaded") {
				t.Fatalf("load again: exit %d notes %q\n%s", code, sum.Notes, errs)
			}
			// A different library of the same name is not overwritten by load, only by replace.
			c.FlushDB(ctx)
			if err := c.FunctionLoadReplace(ctx, "#!lua name="+tc.lib+"\nredis.register_function('other', function() return 1 end)").Err(); err != nil {
				t.Fatal(err)
			}
			code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--functions", "load")
			if notes := strings.Join(sum.Notes, "\n"); code != ExitOK || !strings.Contains(notes, fmt.Sprintf("%d of %d function libraries loaded", tc.nlibs-1, tc.nlibs)) || !strings.Contains(notes, "already exists") {
				t.Fatalf("load over a different library: exit %d notes %q\n%s", code, sum.Notes, errs)
			}
			c.FlushDB(ctx)
			code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--functions", "replace")
			if code != ExitOK || !strings.Contains(libs(), tc.lib) || !strings.Contains(strings.Join(sum.Notes, "\n"), fmt.Sprintf("%d of %d function libraries loaded", tc.nlibs, tc.nlibs)) {
				t.Fatalf("replace: exit %d summary %+v\n%s", code, sum, errs)
			}
			l, _ := c.FunctionList(ctx, redis.FunctionListQuery{WithCode: true}).Result()
			for _, x := range l {
				if strings.Contains(x.Code, "'other'") || len(l) != tc.nlibs {
					t.Fatalf("replace did not put the file's libraries back: %+v", l)
				}
			}
		})
	}
}

// --modules: a module value the target cannot load fails by name (default) or is skipped.
func TestImportModules(t *testing.T) {
	path := corpusFile(t, "redis-librdb/test/dumps/module.rdb")
	dst := testenv.StartRedis(t)
	code, sum, errs := runJSON(t, "import", path, "--target", dst.URL())
	if code != ExitFailures || sum.KeysFailed != 1 || len(sum.Failures) != 1 || sum.Failures[0].Key != "key1" ||
		!strings.Contains(sum.Failures[0].Reason, "test__rdb") || !strings.Contains(sum.Failures[0].Reason, "--modules skip") {
		t.Fatalf("fail: exit %d summary %+v\n%s", code, sum, errs)
	}
	code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--modules", "skip")
	if code != ExitOK || sum.KeysSkipped != 1 || sum.KeysFailed != 0 || !strings.Contains(strings.Join(sum.Notes, "\n"), "test__rdb") {
		t.Fatalf("skip: exit %d summary %+v\n%s", code, sum, errs)
	}
	if n, _ := dst.Client(t, 0).DBSize(ctx).Result(); n != 0 {
		t.Fatalf("target holds %d keys", n)
	}
	// A module value beside a plain key, with a zero CRC and bytes after the RDB.
	path = corpusFile(t, "sripathikrishnan-redis-rdb-tools/tests/dumps/redis_40_with_module.rdb")
	code, sum, errs = runJSON(t, "import", path, "--target", dst.URL(), "--modules", "skip")
	if code != ExitOK || sum.KeysCopied != 1 || sum.KeysSkipped != 1 {
		t.Fatalf("redis_40_with_module: exit %d summary %+v\n%s", code, sum, errs)
	}
	if v, _ := dst.Client(t, 0).Get(ctx, "simplekey").Result(); v != "someval" {
		t.Fatalf("simplekey = %q", v)
	}
}

// Bad input: a clear one-line error, ExitUsage when refused before anything is written,
// non-zero on any failure, never a panic.
func TestImportBadInput(t *testing.T) {
	dst := testenv.StartRedis(t)
	dir := t.TempDir()
	good, _ := smallFile(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notRDB := write("notes.txt", []byte("hello, this is not an RDB file\n"))
	empty := write("empty.rdb", nil)
	truncated := write("truncated.rdb", data[:len(data)/2])
	badVersion := write("future.rdb", append([]byte("REDIS0042"), data[9:]...))
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing-file", []string{filepath.Join(dir, "nope.rdb")}, ExitUsage, "no such file"},
		{"directory", []string{dir}, ExitUsage, "is a directory"},
		{"not-rdb", []string{notRDB}, ExitUsage, "not an RDB file"},
		{"empty", []string{empty}, ExitUsage, "RDB header"},
		{"future-version", []string{badVersion}, ExitUsage, "unsupported RDB version 42"},
		{"truncated", []string{truncated}, ExitUsage, "truncated.rdb: rdb: offset"},
		{"no-file", []string{}, ExitUsage, "exactly one RDB file"},
		{"two-files", []string{good, good}, ExitUsage, "exactly one RDB file"},
		{"bad-functions", []string{good, "--functions", "maybe"}, ExitUsage, "--functions"},
		{"bad-modules", []string{good, "--modules", "maybe"}, ExitUsage, "--modules"},
		{"bad-existing", []string{good, "--existing", "merge"}, ExitUsage, "existing"},
		{"bad-db-map", []string{good, "--db-map", "x"}, ExitUsage, "--db-map"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := dst.Client(t, 0).FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"import"}, tc.args...)
			args = append(args, "--target", dst.URL())
			code, _, errs := run(t, args...)
			var errLines []string
			for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
				if strings.HasPrefix(l, "redis-migrate import:") {
					errLines = append(errLines, l)
				}
			}
			if code != tc.code || len(errLines) != 1 || !strings.Contains(errLines[0], tc.want) || strings.Contains(errs, "panic") {
				t.Fatalf("exit %d (want %d), error lines %q (want one containing %q)\n%s", code, tc.code, errLines, tc.want, errs)
			}
			if tc.code == ExitUsage {
				if n, _ := dst.Client(t, 0).DBSize(ctx).Result(); n != 0 {
					t.Fatalf("refused before starting, yet %d keys were written", n)
				}
			}
		})
	}
	// A bad target is refused before reading the file.
	code, _, errs := run(t, "import", good, "--target", "redis://127.0.0.1:1")
	if code != ExitUsage || !strings.Contains(errs, "cannot connect") {
		t.Fatalf("unreachable target: exit %d\n%s", code, errs)
	}
}
