package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Every type takes the chunked path when the threshold is tiny; the target must still equal the
// source, stream groups, consumers and pending entries included.
func TestCopyBigKeyPathEveryType(t *testing.T) {
	for _, existing := range []string{"fail", "replace"} {
		t.Run(existing, func(t *testing.T) {
			src, dst := testenv.StartRedis(t), testenv.StartCluster(t)
			sc := src.Client(t, 0)
			if _, err := testenv.FillAllTypes(ctx, sc, "t:"); err != nil {
				t.Fatal(err)
			}
			sc.Del(ctx, "t:str:int") // an int-encoded string has no meaningful size; tested elsewhere
			// An empty stream that only has a consumer group.
			sc.XGroupCreateMkStream(ctx, "t:stream:empty", "g", "$")
			code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--big-key-bytes", "1",
				"--existing", existing, "--verify-full")
			if code != 0 || sum.KeysBig != sum.KeysCopied || sum.KeysCopied != sum.KeysScanned {
				t.Fatalf("exit %d summary %+v", code, sum)
			}
			testenv.AssertSameData(ctx, t, []*redis.Client{sc}, testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr), nil, 1)
			// Pending entries keep their owners and delivery counts.
			want := sc.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "t:stream:groups", Group: "workers", Start: "-", End: "+", Count: 100}).Val()
			got := dst.Client(t).XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "t:stream:groups", Group: "workers", Start: "-", End: "+", Count: 100}).Val()
			if len(want) != 10 || len(got) != len(want) {
				t.Fatalf("pending entries: source %d, target %d", len(want), len(got))
			}
			for i := range want {
				if want[i].ID != got[i].ID || want[i].Consumer != got[i].Consumer || want[i].RetryCount != got[i].RetryCount {
					t.Fatalf("pending entry %d: source %+v target %+v", i, want[i], got[i])
				}
			}
			if n := len(dst.Client(t).Keys(ctx, "*redis-migrate:tmp:*").Val()); n != 0 {
				t.Fatalf("%d scratch keys left behind", n)
			}
		})
	}
}

func TestCopyBigKeyRespectsExistingSkip(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	sc.RPush(ctx, "list", "a", "b", "c")
	sc.Set(ctx, "other", "x", 0)
	dc.Set(ctx, "list", "target's own", 0)
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--big-key-bytes", "1", "--existing", "skip", "--keep-target-values")
	if code != 0 || sum.KeysSkipped != 1 || sum.KeysCopied != 1 {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	if v := dc.Get(ctx, "list").Val(); v != "target's own" {
		t.Fatalf("skip replaced the key: %q", v)
	}
}

// buildBinary builds redis-migrate once per test binary, for tests that measure its memory.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func binaryPath(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "redis-migrate-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "redis-migrate")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, testenv.RepoRoot()).CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("%v: %s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatalf("build: %v", buildOnce.err)
	}
	return buildOnce.path
}

// The big keys: a 2,000,000-field hash, a 1,000,000-member zset, a 1,000,000-item list and
// a 300 MB string, copied by the real binary with its peak RSS under 200 MB.
func TestCopyBigKeysBoundedMemory(t *testing.T) {
	scale := 1
	if testing.Short() {
		scale = 20
	}
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	fill := func(key string, n int, add func(p redis.Pipeliner, from, to int)) {
		for from := 0; from < n; from += 10000 {
			p := sc.Pipeline()
			add(p, from, min(from+10000, n))
			if _, err := p.Exec(ctx); err != nil {
				t.Fatalf("fill %s: %v", key, err)
			}
		}
	}
	start := time.Now()
	fill("hash", 2000000/scale, func(p redis.Pipeliner, from, to int) {
		args := make([]any, 0, 2*(to-from))
		for i := from; i < to; i++ {
			args = append(args, "field:"+strconv.Itoa(i), "value-"+strconv.Itoa(i*7))
		}
		p.HSet(ctx, "big:hash", args...)
	})
	fill("zset", 1000000/scale, func(p redis.Pipeliner, from, to int) {
		zs := make([]redis.Z, 0, to-from)
		for i := from; i < to; i++ {
			zs = append(zs, redis.Z{Score: float64(i) * 0.3, Member: "member:" + strconv.Itoa(i)})
		}
		p.ZAdd(ctx, "big:zset", zs...)
	})
	fill("list", 1000000/scale, func(p redis.Pipeliner, from, to int) {
		items := make([]any, 0, to-from)
		for i := from; i < to; i++ {
			items = append(items, "item-"+strconv.Itoa(i))
		}
		p.RPush(ctx, "big:list", items...)
	})
	chunk := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for i := 0; i < 300/scale; i++ {
		sc.Append(ctx, "big:string", chunk)
	}
	sc.Expire(ctx, "big:hash", time.Hour)
	t.Logf("filled big keys in %s", time.Since(start))

	cmd := exec.Command(binaryPath(t), "copy", "--source", src.URL(), "--target", dst.URL(), "--json", "--verify-full")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	var sum struct {
		PeakRSS int64 `json:"peak_rss_bytes"`
	}
	if err := json.Unmarshal(out, &sum); err != nil || sum.PeakRSS == 0 {
		t.Fatalf("no peak_rss_bytes in the summary: %v\n%s", err, out)
	}
	rss := sum.PeakRSS
	t.Logf("copy peak RSS %d MB; %s", rss>>20, out)
	if !strings.Contains(string(out), `"keys_big": 4`) || !strings.Contains(string(out), `"keys_copied": 4`) {
		t.Fatalf("summary: %s", out)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)
	if rss > 200<<20 {
		t.Fatalf("copier peak RSS %d MB, want under 200 MB", rss>>20)
	}
}

// A target with a small proto-max-bulk-len cannot take big payloads in one RESTORE: such keys
// must go through the chunked path even below --big-key-bytes.
func TestCopyValuesAboveTargetProtoMaxBulkLen(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartRedis(t, "--proto-max-bulk-len", "1mb")
	sc := src.Client(t, 0)
	fields := make([]any, 0, 60000)
	for i := 0; i < 30000; i++ {
		fields = append(fields, "field-"+strconv.Itoa(i), strings.Repeat("v", 64))
	}
	sc.HSet(ctx, "wide", fields...)
	sc.Set(ctx, "long", strings.Repeat("x", 900<<10), time.Hour)
	sc.Set(ctx, "small", "s", 0)
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--verify-full")
	if code != 0 || sum.KeysCopied != 3 || sum.KeysBig != 2 {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)
}
