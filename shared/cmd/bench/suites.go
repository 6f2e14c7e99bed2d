package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func init() {
	suites["import"] = benchImport
	suites["import-1g"] = benchImport1G
	suites["fallback"] = benchFallback
	suites["bigkeys"] = benchBigKeys
	suites["verify"] = benchVerify
	order = append(order, "import", "import-1g", "fallback", "bigkeys", "verify")
}

func mb(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/1e6) }

// importRows imports rdbFile into an empty server with the binary and compares with a native load.
func importRows(r *testenv.Runner, label, rdbFile string, keys int) []Row {
	st, err := os.Stat(rdbFile)
	if err != nil {
		r.Fatalf("%v", err)
	}
	bin, _ := testenv.RedisServerBinary()
	native := nativeLoad(r, bin, rdbFile)
	dst := testenv.StartRedis(r)
	run := runBinary(r, "import", rdbFile, "--target", dst.URL(), "--no-verify")
	got := num(run.Summary, "keys_copied") + num(run.Summary, "keys_expired")
	if int(got) != keys {
		r.Fatalf("import wrote %v of %d keys: %s", got, keys, run.Stderr)
	}
	kps := float64(keys) / run.Seconds
	fmt.Fprintf(os.Stderr, "bench %s: %.0f keys/s, %.1f MB/s, peak RSS %s; native load %.0f keys/s (%.2fs)\n",
		label, kps, float64(st.Size())/run.Seconds/1e6, mb(run.PeakRSS), float64(keys)/native, native)
	return []Row{
		{label, "keys/s (native redis-server load of the same file)", fmt.Sprintf("%.0f (%.0f)", kps, float64(keys)/native), "target >= half of native; RedisShake rdb mode ~7,300"},
		{label, "file MB/s", fmt.Sprintf("%.1f", float64(st.Size())/run.Seconds/1e6), ""},
		{label, "peak RSS of the importer", mb(run.PeakRSS), "target < 100 MB for the 1 GB file"},
	}
}

func benchImport(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src := testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench import: generating %d mixed keys...\n", keys)
	if err := testenv.FillBulk(ctx, sc, "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	if err := sc.Save(ctx).Err(); err != nil {
		r.Fatalf("save: %v", err)
	}
	return importRows(r, fmt.Sprintf("import, RDB of %dk mixed keys", keys/1000), filepath.Join(src.Dir, "dump.rdb"), keys)
}

// benchImport1G writes a ~1 GB RDB: 240,000 incompressible 4 KiB strings and 20 hashes of
// 2,000 fields of 500 bytes.
func benchImport1G(ctx context.Context, r *testenv.Runner, _ int) []Row {
	src := testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench import-1g: generating ~1 GB...\n")
	buf := make([]byte, 4096)
	const strings4k = 240000
	for i := 0; i < strings4k; i += 500 {
		p := sc.Pipeline()
		for j := i; j < i+500; j++ {
			_, _ = rand.Read(buf)
			p.Set(ctx, "blob:"+strconv.Itoa(j), string(buf), 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			r.Fatalf("fill: %v", err)
		}
	}
	val := make([]byte, 500)
	for h := 0; h < 20; h++ {
		args := make([]any, 0, 4000)
		for f := 0; f < 2000; f++ {
			_, _ = rand.Read(val)
			args = append(args, "f"+strconv.Itoa(f), string(val))
		}
		sc.HSet(ctx, "hash:"+strconv.Itoa(h), args...)
	}
	if err := sc.Save(ctx).Err(); err != nil {
		r.Fatalf("save: %v", err)
	}
	sc.FlushAll(ctx) // the source's memory is not needed any more
	return importRows(r, "import, ~1 GB RDB", filepath.Join(src.Dir, "dump.rdb"), strings4k+20)
}

// benchFallback moves the mixed dataset from Valkey 8.0 into redis-server 7.0: every key is
// refused by RESTORE and takes the per-key fallback.
func benchFallback(ctx context.Context, r *testenv.Runner, keys int) []Row {
	keys = min(keys, 100000)
	vbin, err := testenv.ValkeyServerBinary()
	if err != nil {
		r.Fatalf("%v", err)
	}
	src := testenv.StartServer(r, vbin)
	dst := testenv.StartRedis(r)
	if err := testenv.FillBulk(ctx, src.Client(r, 0), "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	run := runBinary(r, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	fb := num(run.Summary, "keys_fallback")
	kps := num(run.Summary, "keys_copied") / run.Seconds
	fmt.Fprintf(os.Stderr, "bench fallback: %.0f keys/s, %v of %d keys through the fallback, peak RSS %s\n", kps, fb, keys, mb(run.PeakRSS))
	return []Row{{fmt.Sprintf("copy Valkey 8.0 -> Redis 7.0, %dk mixed keys (per-key fallback)", keys/1000), "keys/s",
		fmt.Sprintf("%.0f (%.0f keys took the fallback)", kps, fb), "compare: RESTORE path in the copy row"}}
}

// benchBigKeys copies the big keys: a 2,000,000-field hash, a 1,000,000-member zset, a
// 1,000,000-item list and a 300 MB string.
func benchBigKeys(ctx context.Context, r *testenv.Runner, _ int) []Row {
	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench bigkeys: generating...\n")
	fill := func(n int, add func(p redis.Pipeliner, from, to int)) {
		for from := 0; from < n; from += 10000 {
			p := sc.Pipeline()
			add(p, from, min(from+10000, n))
			if _, err := p.Exec(ctx); err != nil {
				r.Fatalf("fill: %v", err)
			}
		}
	}
	fill(2000000, func(p redis.Pipeliner, from, to int) {
		args := make([]any, 0, 2*(to-from))
		for i := from; i < to; i++ {
			args = append(args, "field:"+strconv.Itoa(i), "value-"+strconv.Itoa(i))
		}
		p.HSet(ctx, "big:hash", args...)
	})
	fill(1000000, func(p redis.Pipeliner, from, to int) {
		zs := make([]redis.Z, 0, to-from)
		for i := from; i < to; i++ {
			zs = append(zs, redis.Z{Score: float64(i), Member: "member:" + strconv.Itoa(i)})
		}
		p.ZAdd(ctx, "big:zset", zs...)
	})
	fill(1000000, func(p redis.Pipeliner, from, to int) {
		items := make([]any, 0, to-from)
		for i := from; i < to; i++ {
			items = append(items, "item-"+strconv.Itoa(i))
		}
		p.RPush(ctx, "big:list", items...)
	})
	chunk := strings.Repeat("0123456789abcdef", 1<<16)
	for i := 0; i < 300; i++ {
		sc.Append(ctx, "big:string", chunk)
	}
	run := runBinary(r, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	if num(run.Summary, "keys_big") != 4 {
		r.Fatalf("big keys: %v", run.Summary)
	}
	mbps := num(run.Summary, "bytes") / run.Seconds / 1e6
	fmt.Fprintf(os.Stderr, "bench bigkeys: %.1f MB/s, peak RSS %s, %.1fs\n", mbps, mb(run.PeakRSS), run.Seconds)
	return []Row{
		{"copy big keys (2M-field hash, 1M zset, 1M list, 300 MB string)", "MB/s (value bytes)", fmt.Sprintf("%.1f in %.1fs", mbps, run.Seconds), ""},
		{"copy big keys", "peak RSS of the copier", mb(run.PeakRSS), "target < 200 MB"},
	}
}

func benchVerify(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	if err := testenv.FillBulk(ctx, src.Client(r, 0), "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	runBinary(r, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	full := runBinary(r, "verify", "--source", src.URL(), "--target", dst.URL(), "--full")
	sample := runBinary(r, "verify", "--source", src.URL(), "--target", dst.URL(), "--sample", "10000")
	fk := num(full.Summary, "keys_checked") / full.Seconds
	sk := num(sample.Summary, "keys_checked") / sample.Seconds
	fmt.Fprintf(os.Stderr, "bench verify: full %.0f keys/s, sample %.0f keys/s\n", fk, sk)
	return []Row{
		{fmt.Sprintf("verify --full, %dk mixed keys", keys/1000), "keys/s", fmt.Sprintf("%.0f", fk), ""},
		{"verify --sample 10000", "keys/s", fmt.Sprintf("%.0f", sk), ""},
	}
}
