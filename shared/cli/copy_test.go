package cli

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func bulkKeys(t *testing.T) int {
	if testing.Short() {
		return 10000
	}
	return 100000
}

// fill writes every type plus the bulk profile into c and returns the key count.
func fill(t *testing.T, c redis.UniversalClient, n int) int {
	t.Helper()
	all, err := testenv.FillAllTypes(ctx, c, "t:")
	if err != nil {
		t.Fatalf("fill all types: %v", err)
	}
	if err := testenv.FillBulk(ctx, c, "b:", n, 1); err != nil {
		t.Fatalf("fill bulk: %v", err)
	}
	return all + n
}

func TestCopyTopologies(t *testing.T) {
	cases := []struct {
		name              string
		srcCluster, dstCl bool
		batchKeys         string
	}{
		{"standalone-to-standalone", false, false, "500"},
		{"standalone-to-cluster", false, true, "1000"}, // 1,000-key batches straddle every slot
		{"cluster-to-standalone", true, false, "500"},
		{"cluster-to-cluster", true, true, "1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var srcURL, dstURL string
			var srcNodes, dstNodes []*redis.Client
			var srcClient redis.UniversalClient
			if tc.srcCluster {
				cl := testenv.StartCluster(t)
				srcURL, srcClient, srcNodes = cl.URL(), cl.Client(t), testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr)
			} else {
				s := testenv.StartRedis(t)
				srcURL, srcClient, srcNodes = s.URL(), s.Client(t, 0), []*redis.Client{s.Client(t, 0)}
			}
			if tc.dstCl {
				cl := testenv.StartCluster(t)
				dstURL, dstNodes = cl.URL(), testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr)
			} else {
				s := testenv.StartRedis(t)
				dstURL, dstNodes = s.URL(), []*redis.Client{s.Client(t, 0)}
			}
			n := fill(t, srcClient, bulkKeys(t))
			code, sum, _ := runJSON(t, "copy", "--source", srcURL, "--target", dstURL, "--batch-keys", tc.batchKeys)
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			if sum.KeysScanned != int64(n) || sum.KeysCopied != int64(n) || sum.KeysFailed != 0 || sum.KeysMissing != 0 {
				t.Fatalf("summary %+v, want %d keys scanned and copied", sum, n)
			}
			testenv.AssertSameData(ctx, t, srcNodes, dstNodes, nil, 1)
			if !tc.srcCluster && !tc.dstCl {
				a, _ := srcNodes[0].Do(ctx, "DEBUG", "DIGEST").Text()
				b, _ := dstNodes[0].Do(ctx, "DEBUG", "DIGEST").Text()
				if a != b || a == strings.Repeat("0", 40) {
					t.Fatalf("DEBUG DIGEST differs: source %s target %s", a, b)
				}
			}
		})
	}
}

func TestCopyEmptySource(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL())
	if code != 0 || sum.KeysScanned != 0 || sum.KeysCopied != 0 {
		t.Fatalf("exit %d, summary %+v", code, sum)
	}
}

func TestCopyExistingModes(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	for i := 0; i < 100; i++ {
		sc.Set(ctx, fmt.Sprintf("k%d", i), "source", 0)
	}
	dc.Set(ctx, "k1", "target", 0)
	dc.Set(ctx, "k2", "target", 0)

	// fail: a non-empty target is refused before anything is written.
	code, _, errs := run(t, "copy", "--source", src.URL(), "--target", dst.URL())
	if code != ExitUsage || !strings.Contains(errs, "already holds 2 keys") || !strings.Contains(errs, "--existing") {
		t.Fatalf("existing=fail: exit %d, stderr %q", code, errs)
	}
	if n := dc.DBSize(ctx).Val(); n != 2 {
		t.Fatalf("refused copy wrote keys: target has %d", n)
	}

	// skip: the target's keys stay, and are counted; the closing verification names the kept
	// keys that differ from the source (exit 1) unless the target's values are the ones wanted.
	code, sum, errs := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "skip", "--verify-full")
	if code != ExitFailures || sum.KeysCopied != 98 || sum.KeysSkipped != 2 || !strings.Contains(errs, `"k1"`) || !strings.Contains(errs, "--existing replace") {
		t.Fatalf("existing=skip: exit %d summary %+v", code, sum)
	}
	if v := dc.Get(ctx, "k1").Val(); v != "target" {
		t.Fatalf("skip overwrote k1: %q", v)
	}
	code, sum, _ = runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "skip", "--keep-target-values")
	if code != 0 || sum.KeysSkipped != 100 {
		t.Fatalf("existing=skip --keep-target-values: exit %d summary %+v", code, sum)
	}

	// replace: every key now holds the source's value.
	code, sum, _ = runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "replace")
	if code != 0 || sum.KeysCopied != 100 || sum.KeysSkipped != 0 {
		t.Fatalf("existing=replace: exit %d summary %+v", code, sum)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}

func TestCopyDBMapAndPrefix(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	db0, db3 := src.Client(t, 0), src.Client(t, 3)
	if _, err := testenv.FillAllTypes(ctx, db0, "zero:"); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.FillAllTypes(ctx, db3, "three:"); err != nil {
		t.Fatal(err)
	}
	db3.Set(ctx, "zero:str:plain", "same name as in db 0", time.Hour)

	// No map: refused, and the message explains the flag.
	code, _, errs := run(t, "copy", "--source", src.URL(), "--target", dst.URL())
	if code != ExitUsage || !strings.Contains(errs, "db 3") || !strings.Contains(errs, "--db-map") {
		t.Fatalf("unmapped db: exit %d stderr %q", code, errs)
	}
	// Two dbs into one without prefixes: refused (keys would collide).
	code, _, errs = run(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--db-map", "0:0,3:0")
	if code != ExitUsage || !strings.Contains(errs, "collide") {
		t.Fatalf("merge without prefix: exit %d stderr %q", code, errs)
	}
	if n := dst.Client(t, 0).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("refused copy wrote %d keys", n)
	}
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--db-map", "0:0,3:0", "--db-prefix", "3:legacy:")
	if code != 0 || sum.KeysFailed != 0 {
		t.Fatalf("mapped copy: exit %d summary %+v", code, sum)
	}
	target := []*redis.Client{dst.Client(t, 0)}
	want0, _ := testenv.Snapshot(ctx, []*redis.Client{db0}, nil)
	want3, _ := testenv.Snapshot(ctx, []*redis.Client{db3}, func(k string) string { return "legacy:" + k })
	for k, v := range want3 {
		want0[k] = v
	}
	got, _ := testenv.Snapshot(ctx, target, nil)
	if d := testenv.DiffSnapshots(want0, got, 1); len(d) > 0 {
		t.Fatalf("mapped copy differs: %v", d)
	}

	// An explicit map that leaves db 3 out copies db 0 only and says so.
	dst2 := testenv.StartRedis(t)
	code, sum, errs = runJSON(t, "copy", "--source", src.URL(), "--target", dst2.URL(), "--db-map", "0:0")
	if code != 0 || sum.NotCopiedDBs["db3"] == 0 || !strings.Contains(errs, "not copied") {
		t.Fatalf("explicit partial map: exit %d summary %+v", code, sum)
	}
}

func TestCopyRefusesBadInputClearly(t *testing.T) {
	dst := testenv.StartRedis(t)
	secured := testenv.StartRedis(t, "--requirepass", "Sup3rSecretPw!")
	free, _ := testenv.FreePort()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unreachable source", []string{"--source", fmt.Sprintf("redis://:Sup3rSecretPw!@127.0.0.1:%d", free), "--target", dst.URL()}, "cannot connect"},
		{"bad scheme", []string{"--source", "http://user:Sup3rSecretPw!@127.0.0.1:1", "--target", dst.URL()}, "scheme"},
		{"not a URL", []string{"--source", "redis://user:Sup3rSecretPw!@[::1", "--target", dst.URL()}, "invalid connection URL"},
		{"bad port", []string{"--source", "redis://127.0.0.1:99999", "--target", dst.URL()}, "bad port"},
		{"wrong password", []string{"--source", "redis://default:Sup3rSecretPw!-wrong@" + secured.Addr, "--target", dst.URL()}, "authentication failed"},
		{"no password", []string{"--source", secured.URL(), "--target", dst.URL()}, "needs a password"},
		{"missing target", []string{"--source", dst.URL()}, "--target are required"},
		{"bad existing", []string{"--source", secured.URL(), "--target", dst.URL(), "--existing", "maybe"}, "fail, skip or replace"},
		{"bad db map", []string{"--source", secured.URL(), "--target", dst.URL(), "--db-map", "x"}, "SOURCE_DB:TARGET_DB"},
		{"same server", []string{"--source", dst.URL(), "--target", dst.URL()}, "same server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, append([]string{"copy"}, tc.args...)...)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d", code, ExitUsage)
			}
			if !strings.Contains(errs, tc.want) {
				t.Fatalf("stderr %q does not say %q", errs, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(errs), "\n"); lines > 0 && tc.name != "missing target" {
				t.Fatalf("error is not one line: %q", errs)
			}
			if strings.Contains(out+errs, "Sup3rSecretPw") {
				t.Fatalf("secret printed: %q", out+errs)
			}
		})
	}
	// The correct password works.
	code, _, _ := run(t, "copy", "--source", "redis://default:Sup3rSecretPw!@"+secured.Addr, "--target", dst.URL())
	if code != 0 {
		t.Fatalf("copy with the right password: exit %d", code)
	}
}

func TestCopyReportsRefusedKeysByName(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	for i := 0; i < 50; i++ {
		sc.Set(ctx, fmt.Sprintf("allowed:%d", i), "v", 0)
	}
	sc.Set(ctx, "denied:one", "v", 0)
	sc.HSet(ctx, "denied:two", "f", "v")
	// A target user that may only write allowed:* keys: the server refuses the others per key.
	dst.Client(t, 0).Do(ctx, "ACL", "SETUSER", "limited", "on", ">Limited-Pw-123", "~allowed:*", "+@all")
	code, sum, errs := runJSON(t, "copy", "--source", src.URL(), "--target", "redis://limited:Limited-Pw-123@"+dst.Addr)
	if code != ExitFailures {
		t.Fatalf("exit %d, want %d", code, ExitFailures)
	}
	if sum.KeysCopied != 50 || sum.KeysFailed != 2 || len(sum.Failures) != 2 {
		t.Fatalf("summary %+v", sum)
	}
	for _, k := range []string{"denied:one", "denied:two"} {
		if !strings.Contains(errs, k) {
			t.Fatalf("stderr does not name %s: %s", k, errs)
		}
	}
	if !strings.Contains(sum.Failures[0].Reason, "NOPERM") {
		t.Fatalf("reason %q does not carry the server's error", sum.Failures[0].Reason)
	}
	if strings.Contains(errs, "Limited-Pw-123") {
		t.Fatal("password printed")
	}
}

func TestCopyWhileKeysAreDeletedAndExpiring(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	const n = 30000
	pipe := sc.Pipeline()
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k:%d", i)
		switch i % 3 {
		case 0:
			pipe.Set(ctx, k, "stays", 0)
		case 1:
			pipe.Set(ctx, k, "deleted during the copy", 0)
		default:
			pipe.Set(ctx, k, "expires during the copy", time.Duration(50+i%200)*time.Millisecond)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i < n; i += 3 {
			sc.Del(ctx, fmt.Sprintf("k:%d", i))
		}
	}()
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "2", "--batch-keys", "100")
	wg.Wait()
	if code != 0 || sum.KeysFailed != 0 {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	if got := sum.KeysCopied + sum.KeysMissing + sum.KeysExpired; got != sum.KeysScanned {
		t.Fatalf("counts do not add up: %+v", sum)
	}
	// Every key that stayed is in the target with its value; no key came back to life expired.
	for i := 0; i < n; i += 3 {
		if v := dc.Get(ctx, fmt.Sprintf("k:%d", i)).Val(); v != "stays" {
			t.Fatalf("k:%d = %q in target", i, v)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for i := 2; i < n; i += 3 {
		if dc.Exists(ctx, fmt.Sprintf("k:%d", i)).Val() != 0 {
			t.Fatalf("k:%d outlived its TTL in the target", i)
		}
	}
	if int64(dc.DBSize(ctx).Val()) > sum.KeysCopied {
		t.Fatalf("target holds more keys than were copied")
	}
}

func TestCopyDryRunPrintsPlan(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "", 2000, 3); err != nil {
		t.Fatal(err)
	}
	src.Client(t, 5).Set(ctx, "x", "y", 0)
	code, out, _ := run(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--dry-run")
	if code != 0 {
		t.Fatalf("dry run exit %d", code)
	}
	for _, want := range []string{"db0: 2000 keys", "db5: 1 keys", "shards:", "to copy: about 2000 keys", "would be refused"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if dst.Client(t, 0).DBSize(ctx).Val() != 0 {
		t.Fatal("dry run wrote to the target")
	}
}

func TestCopyMatchAndTypeFilters(t *testing.T) {
	src := testenv.StartRedis(t)
	sc := src.Client(t, 0)
	if _, err := testenv.FillAllTypes(ctx, sc, "t:"); err != nil {
		t.Fatal(err)
	}
	sc.Set(ctx, "other:x", "y", 0)
	dst := testenv.StartRedis(t)
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--match", "t:hash:*")
	if code != 0 || sum.KeysCopied != 2 {
		t.Fatalf("--match: exit %d summary %+v", code, sum)
	}
	dst2 := testenv.StartRedis(t)
	code, sum, _ = runJSON(t, "copy", "--source", src.URL(), "--target", dst2.URL(), "--type", "zset")
	if code != 0 || sum.KeysCopied != 2 {
		t.Fatalf("--type: exit %d summary %+v", code, sum)
	}
	for _, k := range dst2.Client(t, 0).Keys(ctx, "*").Val() {
		if typ := dst2.Client(t, 0).Type(ctx, k).Val(); typ != "zset" {
			t.Fatalf("--type zset copied %s of type %s", k, typ)
		}
	}
}
