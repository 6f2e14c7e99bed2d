package cli

import (
	"os"
	"runtime/debug"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole command to path (REDIS_MIGRATE_CPUPROFILE, for
// the benchmarks: `go run ./shared/cmd/bench -cpuprofile DIR copy`); the returned function stops it.
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// tuneGC trades memory for CPU in the one-shot commands: their live heap is small (bounded
// batches), so collecting at 4x the live heap instead of 2x spends far less time in the
// collector, and a soft limit of 64 MiB bounds the peak of large runs (at 96 MiB a ~1 GB import
// peaked at 96-106 MB of RSS; at 64, 79-80 MB in the same time). GOGC or GOMEMLIMIT in
// the environment win. Not for copy: its hot path allocates little since it left go-redis
// (shared/resp), and there Go's default (100) measured 10-20% less CPU than 300, the larger heap
// costing more in page faults (about 10,700 against 6,700 per 200k keys) than the collections.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(300)
	debug.SetMemoryLimit(64 << 20)
}

// writeHeapProfile writes the allocations of the whole command to path (REDIS_MIGRATE_MEMPROFILE,
// for `go tool pprof -sample_index=alloc_space`).
func writeHeapProfile(path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("allocs").WriteTo(f, 0)
}
