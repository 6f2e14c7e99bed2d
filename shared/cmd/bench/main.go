// Command bench is `make bench`: it measures throughput and peak memory of the real binary on
// loopback redis-servers and prints them beside the reference figures named in the issues.
// Usage: bench [-keys N] [suite ...]   (suites: copy; others register themselves)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Row is one line of the results table.
type Row struct {
	Bench, Measure, Value, Reference string
}

type suite func(ctx context.Context, r *testenv.Runner, keys int) []Row

var suites = map[string]suite{"copy": benchCopy}
var order = []string{"copy"}

func main() {
	keys := flag.Int("keys", 200000, "keys in the generated mixed dataset")
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		names = order
	}
	r := &testenv.Runner{}
	defer r.Close()
	ctx := context.Background()
	var rows []Row
	for _, n := range names {
		s, ok := suites[n]
		if !ok {
			var known []string
			for k := range suites {
				known = append(known, k)
			}
			sort.Strings(known)
			r.Fatalf("unknown suite %q (have %s)", n, strings.Join(known, ", "))
		}
		rows = append(rows, s(ctx, r, *keys)...)
	}
	fmt.Println()
	fmt.Println("| benchmark | measure | this run | reference |")
	fmt.Println("|---|---|---|---|")
	for _, row := range rows {
		fmt.Printf("| %s | %s | %s | %s |\n", row.Bench, row.Measure, row.Value, row.Reference)
	}
}

// binary is the redis-migrate binary built by `make build`.
func binary(r *testenv.Runner) string {
	p := filepath.Join(testenv.RepoRoot(), "redis-migrate")
	if _, err := os.Stat(p); err != nil {
		r.Fatalf("build the binary first (make build): %v", err)
	}
	return p
}

// Run is one timed run of the binary.
type Run struct {
	Seconds float64
	PeakRSS int64 // bytes
	Summary map[string]any
	Stderr  string
}

// runBinary runs redis-migrate with args plus --json and measures wall time and peak RSS.
func runBinary(r *testenv.Runner, args ...string) Run {
	cmd := exec.Command(binary(r), append(args, "--json")...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	run := Run{Seconds: time.Since(start).Seconds(), Stderr: errb.String()}
	if err != nil {
		r.Fatalf("redis-migrate %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	_ = json.Unmarshal([]byte(out.String()), &run.Summary)
	// The binary reports its own peak (VmHWM): a parent's rusage would also count memory the
	// child shared with the parent before exec.
	run.PeakRSS = int64(num(run.Summary, "peak_rss_bytes"))
	return run
}

func num(m map[string]any, k string) float64 {
	v, _ := m[k].(float64)
	return v
}

// nativeLoad starts a fresh redis-server on rdbFile and returns the load time its log reports.
func nativeLoad(r *testenv.Runner, bin, rdbFile string) float64 {
	dir := r.TempDir()
	data, err := os.ReadFile(rdbFile)
	if err != nil {
		r.Fatalf("read rdb: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dump.rdb"), data, 0o644); err != nil {
		r.Fatalf("write rdb: %v", err)
	}
	s := testenv.StartServer(r, bin, "--dir", dir, "--dbfilename", "dump.rdb")
	defer s.Stop()
	m := regexp.MustCompile(`DB loaded from disk: ([0-9.]+) seconds`).FindStringSubmatch(s.ServerLog())
	if m == nil {
		r.Fatalf("no load time in the server log")
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	return secs
}

func benchCopy(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench copy: generating %d mixed keys...\n", keys)
	if err := testenv.FillBulk(ctx, sc, "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	if err := sc.Save(ctx).Err(); err != nil {
		r.Fatalf("save: %v", err)
	}
	bin, _ := testenv.RedisServerBinary()
	native := nativeLoad(r, bin, filepath.Join(src.Dir, "dump.rdb"))
	// The closing verification is measured by the verify suite; here only the copy counts.
	run := runBinary(r, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
	copied := num(run.Summary, "keys_copied")
	if int(copied) != keys {
		r.Fatalf("copy moved %v of %d keys", copied, keys)
	}
	kps := copied / run.Seconds
	mbps := num(run.Summary, "bytes") / run.Seconds / 1e6
	fmt.Fprintf(os.Stderr, "bench copy: %.0f keys/s, %.1f MB/s, peak RSS %.0f MB; native load %.0f keys/s\n",
		kps, mbps, float64(run.PeakRSS)/1e6, float64(keys)/native)
	return []Row{
		{"copy, 200k mixed keys (process wall time, without the closing verification)", "keys/s", fmt.Sprintf("%.0f", kps), "target >= 100,000; RedisShake v4 scan ~30,000"},
		{"copy, 200k mixed keys", "MB/s (DUMP payload bytes)", fmt.Sprintf("%.1f", mbps), ""},
		{"copy, 200k mixed keys", "peak RSS of the copier", fmt.Sprintf("%.0f MB", float64(run.PeakRSS)/1e6), "target < 200 MB"},
		{"native redis-server RDB load, same data", "keys/s", fmt.Sprintf("%.0f", float64(keys)/native), "~170,000 (the practical ceiling)"},
	}
}
