package main

import (
	"context"
	"fmt"
	"os"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The copy-cpu suite is the copy row of the copy suite alone, run -repeat times on
// one generated dataset: the quick way to watch the tool's CPU per key while changing the copy.
func init() {
	suites["copy-cpu"] = benchCopyCPU
}

func benchCopyCPU(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	sc, dc := src.Client(r, 0), dst.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench copy-cpu: generating %d mixed keys...\n", keys)
	if err := testenv.FillBulk(ctx, sc, "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	runs := max(*repeat, 1)
	var rows []Row
	for i := 0; i < runs; i++ {
		for _, bin := range binaries(r) {
			if err := dc.FlushAll(ctx).Err(); err != nil {
				r.Fatalf("flush: %v", err)
			}
			label := fmt.Sprintf("copy --no-verify, run %d%s", i+1, binaryLabel(bin))
			m := meterCPU(src.Pid(), dst.Pid())
			out := runBinaryAt(r, bin, "copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify")
			used := m.used()
			out.wantCount(r, "copy", "keys_copied", keys)
			load, _ := os.ReadFile("/proc/loadavg")
			v := fmt.Sprintf("%.0f keys/s; CPU us/key: tool %s (system %s) / source %s / target %s; peak RSS %s; loadavg %.14s",
				float64(keys)/out.Seconds, usPerKey(out.CPU, float64(keys)), usPerKey(out.SysCPU, float64(keys)), usPerKey(used[0], float64(keys)),
				usPerKey(used[1], float64(keys)), mb(out.PeakRSS), load)
			fmt.Fprintf(os.Stderr, "bench copy-cpu: %s: %s\n", label, v)
			rows = append(rows, Row{label, "keys/s, CPU per key, peak RSS", v, "goal: tool <= 3 us"})
		}
	}
	return rows
}
