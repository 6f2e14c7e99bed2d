package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The copy suite is issue 11's table: one run of each way through the 200k mixed dataset, with
// keys/s, the ratio to redis-server's native RDB load measured in the same run, the CPU time per
// key of the tool (its rusage) and of each server (/proc/<pid>/stat before and after), and the
// tool's peak RSS.

// measured is one row of the table.
type measured struct {
	label, ref        string
	keys              float64
	secs              float64
	tool, src, dst    time.Duration
	hasSrc, hasDst    bool
	peak              int64
	native            float64 // keys/s of the native load
	noTool, extraNote bool
}

func (m measured) row() Row {
	kps := m.keys / m.secs
	cpu := "tool " + usPerKey(m.tool, m.keys)
	if m.noTool {
		cpu = "tool -"
	}
	if m.hasSrc {
		cpu += " / source " + usPerKey(m.src, m.keys)
	} else {
		cpu += " / source -"
	}
	if m.hasDst {
		cpu += " / target " + usPerKey(m.dst, m.keys)
	} else {
		cpu += " / target -"
	}
	v := fmt.Sprintf("%.0f keys/s, %.2fx native; CPU us/key: %s", kps, kps/m.native, cpu)
	if m.peak > 0 {
		v += "; peak RSS " + mb(m.peak)
	}
	return Row{m.label, "keys/s, x native, CPU per key, peak RSS", v, m.ref}
}

// mixedDataset starts a source and a target server, fills the source with the mixed dataset,
// saves it as an RDB file and times redis-server's own load of that file (the native row).
func mixedDataset(ctx context.Context, r *testenv.Runner, suite string, keys int) (src, dst *testenv.Server, rdbFile string, secs float64, loadCPU time.Duration) {
	src, dst = testenv.StartRedis(r), testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench %s: generating %d mixed keys...\n", suite, keys)
	if err := testenv.FillBulk(ctx, sc, "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	if err := sc.Save(ctx).Err(); err != nil {
		r.Fatalf("save: %v", err)
	}
	rdbFile = filepath.Join(src.Dir, "dump.rdb")
	bin, _ := testenv.RedisServerBinary()
	secs, loadCPU = nativeLoadCPU(r, bin, rdbFile)
	return
}

func benchCopy(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst, rdbFile, secs, loadCPU := mixedDataset(ctx, r, "copy", keys)
	sc := src.Client(r, 0)
	nkps := float64(keys) / secs
	n := float64(keys)
	rows := []measured{{label: "redis-server native RDB load (the ceiling for a writer)", ref: "~200,000 keys/s, 1.00x",
		keys: n, secs: secs, dst: loadCPU, hasDst: true, noTool: true}}

	// The floor of any copy on the source: DUMP + PEXPIRETIME of every key, raw pipelines.
	names := make([]string, keys)
	for i := range names {
		names[i] = "k:" + strconv.Itoa(i)
	}
	m := meterCPU(src.Pid())
	start := time.Now()
	floor(ctx, r, sc, names)
	f := measured{label: "DUMP + PEXPIRETIME of every key, raw pipelines of 256 keys (the source's floor)", ref: "goal: copy's source CPU per key no higher",
		keys: n, secs: time.Since(start).Seconds(), src: m.used()[0], hasSrc: true, noTool: true}
	rows = append(rows, f)
	// The same floor in the order a copy meets the keys (SCAN's, taken beforehand): the values
	// are then read from all over the server's memory, not in the order they were written.
	inScanOrder := scanAll(ctx, r, sc)
	m = meterCPU(src.Pid())
	start = time.Now()
	floor(ctx, r, sc, inScanOrder)
	rows = append(rows, measured{label: "the same floor, keys in SCAN order", ref: "",
		keys: n, secs: time.Since(start).Seconds(), src: m.used()[0], hasSrc: true, noTool: true})
	// The copy's source commands, SCAN included: before the string-first pass, and now.
	m = meterCPU(src.Pid())
	start = time.Now()
	scanned := sizedFloor(ctx, r, sc)
	rows = append(rows, measured{label: "SCAN + MEMORY USAGE + DUMP + PEXPIRETIME, raw pipelines (the copy's source commands before the string-first pass)", ref: "",
		keys: float64(scanned), secs: time.Since(start).Seconds(), src: m.used()[0], hasSrc: true, noTool: true})
	m = meterCPU(src.Pid())
	start = time.Now()
	scanned = stringFirstFloor(ctx, r, sc)
	rows = append(rows, measured{label: "SCAN + GETRANGE + PEXPIRETIME, then MEMORY USAGE + DUMP + PEXPIRETIME of the keys left, raw pipelines (the copy's source commands)", ref: "goal: no higher than the floor",
		keys: float64(scanned), secs: time.Since(start).Seconds(), src: m.used()[0], hasSrc: true, noTool: true})

	run := func(label, ref string, wantKeys string, withSrc bool, args ...string) Run {
		pids := []int{dst.Pid()}
		if withSrc {
			pids = append(pids, src.Pid())
		}
		m := meterCPU(pids...)
		if os.Getenv("BENCH_CMDSTATS") != "" {
			sc.ConfigResetStat(ctx)
			dst.Client(r, 0).ConfigResetStat(ctx)
		}
		out := runBinary(r, args...)
		if os.Getenv("BENCH_CMDSTATS") != "" {
			fmt.Fprintf(os.Stderr, "%s source:\n%s\ntarget:\n%s\n", label, sc.Info(ctx, "commandstats").Val(), dst.Client(r, 0).Info(ctx, "commandstats").Val())
		}
		used := m.used()
		out.wantCount(r, label, wantKeys, keys)
		row := measured{label: label, ref: ref, keys: n, secs: out.Seconds, tool: out.CPU, dst: used[0], hasDst: true, peak: out.PeakRSS, native: nkps}
		if withSrc {
			row.src, row.hasSrc = used[1], true
		}
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "bench copy: %s: %s\n", label, row.row().Value)
		return out
	}
	flush := func() {
		if err := dst.Client(r, 0).FlushAll(ctx).Err(); err != nil {
			r.Fatalf("flush: %v", err)
		}
	}
	run("copy --no-verify", "~80,000 keys/s, 0.41x; 6.7 / 10.8 / 8.5 us; goal tool <= 3 us, source <= floor",
		"keys_copied", true, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	run("verify --full (after the copy)", "~29,000 keys/s, 0.15x; goal >= copy's keys/s",
		"keys_matching", true, "verify", "--source", src.URL(), "--target", dst.URL(), "--full")
	flush()
	run("import --no-verify", "~108,000 keys/s, 0.55x; 12.0 / - / 8.5 us; goal tool <= 5 us",
		"keys_copied", false, "import", rdbFile, "--target", dst.URL(), "--no-verify")
	flush()
	imp := run("import (default: full verification against the file)", "~20,000 keys/s, 0.10x; goal >= copy's keys/s",
		"keys_copied", false, "import", rdbFile, "--target", dst.URL())
	// The verification pass by itself, timed by the binary (its JSON's verify.seconds): the
	// rate to set beside the copy's, since the import before it is the same as the row above.
	if v, ok := imp.Summary["verify"].(map[string]any); ok {
		if secs, _ := v["seconds"].(float64); secs > 0 {
			rows = append(rows, measured{label: "the import's closing verification pass alone (its own timing)", ref: "goal >= copy's keys/s",
				keys: n, secs: secs, noTool: true, native: nkps})
		}
	}
	out := make([]Row, 0, len(rows))
	for _, m := range rows {
		m.native = nkps
		out = append(out, m.row())
	}
	return append(out, instructionRows(ctx, r, src, dst, rdbFile, keys)...)
}

// floor DUMPs and reads the expiry of every key in pipelines of 256 keys, as the copier's reads.
func floor(ctx context.Context, r *testenv.Runner, c *redis.Client, names []string) {
	for i := 0; i < len(names); i += 256 {
		p := c.Pipeline()
		for _, k := range names[i:min(i+256, len(names))] {
			p.Dump(ctx, k)
			p.PExpireTime(ctx, k)
		}
		if _, err := p.Exec(ctx); err != nil {
			r.Fatalf("floor: %v", err)
		}
	}
}

// nativeLoadCPU starts a fresh redis-server on rdbFile and returns the load time its log reports
// and the CPU time the server used up to then (its startup included, a few milliseconds).
func nativeLoadCPU(r *testenv.Runner, bin, rdbFile string) (float64, time.Duration) {
	dir := r.TempDir()
	linkOrCopy(r, rdbFile, filepath.Join(dir, "dump.rdb"))
	s := testenv.StartServer(r, bin, "--dir", dir, "--dbfilename", "dump.rdb")
	defer s.Stop()
	cpu := procCPU(s.Pid())
	return loadSeconds(r, s), cpu
}

// scanEach SCANs c with COUNT 1000 and hands each reply's keys to f; it returns how many keys.
func scanEach(ctx context.Context, r *testenv.Runner, c *redis.Client, f func(keys []string)) int {
	var cursor uint64
	n := 0
	for {
		keys, next, err := c.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			r.Fatalf("scan: %v", err)
		}
		f(keys)
		n += len(keys)
		if cursor = next; cursor == 0 {
			return n
		}
	}
}

// scanAll is every key of c in SCAN order.
func scanAll(ctx context.Context, r *testenv.Runner, c *redis.Client) []string {
	var out []string
	scanEach(ctx, r, c, func(keys []string) { out = append(out, keys...) })
	return out
}

// stringFirstFloor sends the copy's source commands without the tool: SCAN COUNT 1000, then per
// 500 keys (a batch) GETRANGE 0 32767 + PEXPIRETIME of each in one pipeline, and for the keys that
// are not strings under 32 KiB MEMORY USAGE in one pipeline and DUMP + PEXPIRETIME in the next.
func stringFirstFloor(ctx context.Context, r *testenv.Runner, c *redis.Client) int {
	return scanEach(ctx, r, c, func(keys []string) {
		for i := 0; i < len(keys); i += 500 {
			batch := keys[i:min(i+500, len(keys))]
			p := c.Pipeline()
			reads := make([]*redis.StringCmd, len(batch))
			for j, k := range batch {
				reads[j] = p.GetRange(ctx, k, 0, 32<<10-1)
				p.PExpireTime(ctx, k)
			}
			if _, err := p.Exec(ctx); err != nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
				r.Fatalf("string-first reads: %v", err)
			}
			var rest []string
			for j, k := range batch {
				if v, err := reads[j].Result(); err != nil || len(v) == 0 || len(v) >= 32<<10 {
					rest = append(rest, k)
				}
			}
			if len(rest) > 0 {
				sizeAndFloor(ctx, r, c, rest)
			}
		}
	})
}

// sizedFloor sends the copy's source commands before the string-first pass: SCAN COUNT 1000,
// then per slice of 256 keys MEMORY USAGE in one pipeline and DUMP + PEXPIRETIME in the next.
func sizedFloor(ctx context.Context, r *testenv.Runner, c *redis.Client) int {
	return scanEach(ctx, r, c, func(keys []string) {
		for i := 0; i < len(keys); i += 256 {
			sizeAndFloor(ctx, r, c, keys[i:min(i+256, len(keys))])
		}
	})
}

// sizeAndFloor sends MEMORY USAGE of keys in one pipeline, then their DUMP + PEXPIRETIME.
func sizeAndFloor(ctx context.Context, r *testenv.Runner, c *redis.Client, keys []string) {
	p := c.Pipeline()
	for _, k := range keys {
		p.MemoryUsage(ctx, k)
	}
	if _, err := p.Exec(ctx); err != nil {
		r.Fatalf("sizing: %v", err)
	}
	floor(ctx, r, c, keys)
}
