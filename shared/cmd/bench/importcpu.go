package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The import-cpu suite is the copy suite's two import rows alone, each run -repeat times on the
// same file: the import's CPU per key can be followed without the copy and verify rows, and the
// spread of the repeats shows how much the machine's load moves it.

var repeat = flag.Int("repeat", 1, "import-cpu suite: runs of each row")

func init() {
	suites["import-cpu"] = benchImportCPU // not in the default order: the copy suite has these rows
}

func benchImportCPU(ctx context.Context, r *testenv.Runner, keys int) []Row {
	_, dst, rdbFile, secs, loadCPU := mixedDataset(ctx, r, "import-cpu", keys)
	n := float64(keys)
	nkps := n / secs
	rows := []measured{{label: "redis-server native RDB load", keys: n, secs: secs, dst: loadCPU, hasDst: true, noTool: true, native: nkps}}
	for i := 0; i < *repeat; i++ {
		for _, c := range []struct {
			label string
			args  []string
		}{
			{"import --no-verify", []string{"import", rdbFile, "--target", dst.URL(), "--no-verify"}},
			{"import (default: full verification against the file)", []string{"import", rdbFile, "--target", dst.URL()}},
		} {
			for _, bin := range binaries(r) {
				if err := dst.Client(r, 0).FlushAll(ctx).Err(); err != nil {
					r.Fatalf("flush: %v", err)
				}
				label := c.label + binaryLabel(bin)
				m := meterCPU(dst.Pid())
				out := runBinaryAt(r, bin, c.args...)
				out.wantCount(r, label, "keys_copied", keys)
				row := measured{label: label, keys: n, secs: out.Seconds, tool: out.CPU, dst: m.used()[0], hasDst: true, peak: out.PeakRSS, native: nkps}
				fmt.Fprintf(os.Stderr, "bench import-cpu: %s: %s\n", label, row.row().Value)
				rows = append(rows, row)
			}
		}
	}
	out := make([]Row, 0, len(rows))
	for _, m := range rows {
		out = append(out, m.row())
	}
	return out
}
