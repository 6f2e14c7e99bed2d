package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The instructions rows count what a server executes per key under valgrind's callgrind: user
// space instructions, the same for the same commands however busy the machine is. CPU time is
// not: on this two-core VM the servers share cores (and the host's) with the tool, and the same
// commands cost a server 10-20% more time while the others run. In production the tool, the
// source and the target run on machines of their own, so these counts are the fairer comparison
// of the copy's cost on the source with the floor's (goal 3), and of what bounds each way
// through when each side has a machine of its own.

func init() {
	suites["instructions"] = benchInstructions // run by the copy suite too; alone for repeats
}

func benchInstructions(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst, rdbFile, _, _ := mixedDataset(ctx, r, "instructions", keys)
	return instructionRows(ctx, r, src, dst, rdbFile, keys)
}

// instructionRows runs the source's floor and the copy into dst against a source under callgrind
// loaded from rdbFile, then the copy from src and both imports of rdbFile into an empty target
// under callgrind.
func instructionRows(ctx context.Context, r *testenv.Runner, src, dst *testenv.Server, rdbFile string, keys int) []Row {
	const what = "server instructions per key (callgrind, user space)"
	if _, err := exec.LookPath("valgrind"); err != nil {
		return []Row{{"server instructions per key", what, "skipped: valgrind is not installed (apt-get install valgrind)", ""}}
	}
	if _, err := exec.LookPath("callgrind_control"); err != nil {
		return []Row{{"server instructions per key", what, "skipped: callgrind_control is not installed", ""}}
	}
	n := float64(keys)
	perKey := func(ir int64) string { return fmt.Sprintf("%.0f instructions/key", float64(ir)/n) }
	flush := func(s *testenv.Server) {
		if err := s.Client(r, 0).FlushAll(ctx).Err(); err != nil {
			r.Fatalf("flush: %v", err)
		}
	}
	var rows []Row
	add := func(label string, ir int64, ref string) {
		rows = append(rows, Row{label, what, perKey(ir), ref})
		fmt.Fprintf(os.Stderr, "bench instructions: %s: %s\n", label, perKey(ir))
	}

	// The source: the floor, then the copy as it runs (SCAN included).
	cgSrc := startCallgrind(r, rdbFile)
	sc := cgSrc.Client(r, 0)
	inScanOrder := scanAll(ctx, r, sc)
	floorIr := cgSrc.count(r, func() { floor(ctx, r, sc, inScanOrder) })
	add("source: DUMP + PEXPIRETIME in SCAN order, raw pipelines of 256 (the floor; SCAN not counted)", floorIr, "")
	flush(dst)
	var out Run
	copyIr := cgSrc.count(r, func() {
		out = runBinary(r, "copy", "--source", cgSrc.URL(), "--target", dst.URL(), "--no-verify")
	})
	out.wantCount(r, "copy (source under callgrind)", "keys_copied", keys)
	add("source: copy --no-verify as it runs, SCAN included", copyIr,
		fmt.Sprintf("goal 3: no higher than the floor (%.2fx)", float64(copyIr)/float64(floorIr)))
	cgSrc.Stop()

	// The target: what each way through costs the one thread that writes (and reads back).
	tgt := startCallgrind(r, "")
	copyDst := tgt.count(r, func() {
		out = runBinary(r, "copy", "--source", src.URL(), "--target", tgt.URL(), "--no-verify")
	})
	out.wantCount(r, "copy (target under callgrind)", "keys_copied", keys)
	add("target: copy --no-verify", copyDst, "")
	flush(tgt.Server)
	impDst := tgt.count(r, func() { out = runBinary(r, "import", rdbFile, "--target", tgt.URL(), "--no-verify") })
	out.wantCount(r, "import --no-verify (target under callgrind)", "keys_copied", keys)
	add("target: import --no-verify", impDst, "")
	flush(tgt.Server)
	verDst := tgt.count(r, func() { out = runBinary(r, "import", rdbFile, "--target", tgt.URL()) })
	out.wantCount(r, "import (target under callgrind)", "keys_copied", keys)
	add("target: import (default: full verification against the file)", verDst,
		fmt.Sprintf("%.2fx the copy's source, %.2fx the copy's target", float64(verDst)/float64(copyIr), float64(verDst)/float64(copyDst)))
	tgt.Stop()
	return rows
}

// callgrindServer is a redis-server running under callgrind, with instrumentation on from the
// start (its load included); count zeroes the counters, runs f and dumps them.
type callgrindServer struct {
	*testenv.Server
	outDir string
}

// startCallgrind starts redis-server under callgrind, loading rdbFile first when given.
func startCallgrind(r *testenv.Runner, rdbFile string) *callgrindServer {
	bin, err := testenv.RedisServerBinary()
	if err != nil {
		r.Fatalf("%v", err)
	}
	outDir := r.TempDir()
	// exec keeps the pid: callgrind_control addresses the server by it.
	wrapper := filepath.Join(outDir, "redis-server-callgrind")
	script := fmt.Sprintf("#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s/cg.out %s \"$@\"\n", outDir, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		r.Fatalf("callgrind wrapper: %v", err)
	}
	var args []string
	if rdbFile != "" {
		dir := r.TempDir()
		linkOrCopy(r, rdbFile, filepath.Join(dir, "dump.rdb"))
		args = []string{"--dir", dir, "--dbfilename", "dump.rdb"}
	}
	fmt.Fprintf(os.Stderr, "bench instructions: starting redis-server under callgrind (loading takes a while)...\n")
	// StartServer waits for the load (30 s at most: under callgrind the 200k keys take about 10).
	return &callgrindServer{Server: testenv.StartServer(r, wrapper, args...), outDir: outDir}
}

func linkOrCopy(r *testenv.Runner, from, to string) {
	if os.Link(from, to) == nil {
		return
	}
	data, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, data, 0o644)
	}
	if err != nil {
		r.Fatalf("copy %s: %v", from, err)
	}
}

// count returns the instructions the server executed while f ran.
func (s *callgrindServer) count(r *testenv.Runner, f func()) int64 {
	pid := strconv.Itoa(s.Pid())
	if out, err := exec.Command("callgrind_control", "-z", pid).CombinedOutput(); err != nil {
		r.Fatalf("callgrind_control -z: %v: %s", err, out)
	}
	before := s.dumps()
	f()
	if out, err := exec.Command("callgrind_control", "-d", pid).CombinedOutput(); err != nil {
		r.Fatalf("callgrind_control -d: %v: %s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		for name := range s.dumps() {
			if before[name] {
				continue
			}
			if ir, ok := totals(filepath.Join(s.outDir, name)); ok {
				return ir
			}
		}
		if time.Now().After(deadline) {
			r.Fatalf("callgrind wrote no dump in %s", s.outDir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dumps lists the callgrind output files written so far.
func (s *callgrindServer) dumps() map[string]bool {
	entries, _ := os.ReadDir(s.outDir)
	out := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cg.out") {
			out[e.Name()] = true
		}
	}
	return out
}

// totals reads the "totals:" line (instructions executed) of a complete callgrind dump.
func totals(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "totals: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
