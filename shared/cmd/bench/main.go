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
	flag.StringVar(&profileDir, "cpuprofile", "", "write a CPU profile of every run of the binary into `DIR` (go tool pprof)")
	flag.StringVar(&compareBin, "compare", "", "copy-cpu and import-cpu suites: also run every row with the redis-migrate binary at `PATH`, interleaved with the repo's")
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

var (
	profileDir string
	profiles   int
	compareBin string
)

// binaries are the builds a suite that compares runs each row with, in turn: the repo's binary,
// then -compare's. Interleaved runs share the machine's load of the moment, which moves CPU per
// key by more than most changes do.
func binaries(r *testenv.Runner) []string {
	out := []string{binary(r)}
	if compareBin != "" {
		if _, err := os.Stat(compareBin); err != nil {
			r.Fatalf("-compare: %v", err)
		}
		out = append(out, compareBin)
	}
	return out
}

// binaryLabel names bin in a row when a suite compares builds.
func binaryLabel(bin string) string {
	if compareBin == "" {
		return ""
	}
	if bin == compareBin {
		return " [" + bin + "]"
	}
	return " [repo]"
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
	PeakRSS int64         // bytes
	CPU     time.Duration // the binary's own user + system time (its rusage)
	SysCPU  time.Duration // the system part of CPU
	Summary map[string]any
	Stderr  string
}

// wantCount stops the bench unless the run's summary gives field as want: a row measured on a run
// that moved the wrong number of keys would be a wrong figure.
func (run Run) wantCount(r *testenv.Runner, label, field string, want int) {
	if got := num(run.Summary, field); int(got) != want {
		r.Fatalf("%s: %s = %v, want %d\n%s", label, field, got, want, run.Stderr)
	}
}

// runBinary runs redis-migrate with args plus --json and measures wall time and peak RSS.
func runBinary(r *testenv.Runner, args ...string) Run {
	return runBinaryAt(r, binary(r), args...)
}

// runBinaryAt is runBinary with the build at bin.
func runBinaryAt(r *testenv.Runner, bin string, args ...string) Run {
	cmd := exec.Command(bin, append(args, "--json")...)
	if profileDir != "" {
		profiles++
		name := fmt.Sprintf("%02d-%s.pprof", profiles, args[0])
		cmd.Env = append(os.Environ(), "REDIS_MIGRATE_CPUPROFILE="+filepath.Join(profileDir, name))
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	run := Run{Seconds: time.Since(start).Seconds(), Stderr: errb.String()}
	if cmd.ProcessState != nil {
		run.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		run.SysCPU = cmd.ProcessState.SystemTime()
	}
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
	return loadSeconds(r, s)
}

// loadSeconds is the load time a server's log reports.
func loadSeconds(r *testenv.Runner, s *testenv.Server) float64 {
	m := regexp.MustCompile(`DB loaded from disk: ([0-9.]+) seconds`).FindStringSubmatch(s.ServerLog())
	if m == nil {
		r.Fatalf("no load time in the server log")
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	return secs
}
