package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The sync suite (issue 8): `redis-migrate sync` under a steady mixed write load on the source,
// for each feed: applied changes/s, lag p50/p99/max (sampled from --metrics-addr every 100 ms),
// source CPU added by the feed (the source's CPU with the sync running minus a writer-only run),
// peak RSS of the tool; then the catch-up time after the initial copy of 200k keys under 20k
// writes/s, and the cutover time (pause to "switch now") with a 10k-sample verification.
// `go run ./shared/cmd/bench -sync-seconds 10 sync`.

var (
	syncSeconds = flag.Int("sync-seconds", 10, "sync suite: seconds measured at each write rate")
	syncRates   = flag.String("sync-rates", "5000,20000,50000", "sync suite: write rates (writes/s)")
	syncFeeds   = flag.String("sync-feeds", "notify,psync", "sync suite: feeds to measure")
)

func init() {
	suites["sync"] = benchSync
}

func serverPID(r *testenv.Runner, c *redis.Client) int {
	info := c.Info(context.Background(), "server").Val()
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	r.Fatalf("no process_id in INFO server")
	return 0
}

// syncProc is a running `redis-migrate sync`.
type syncProc struct {
	cmd     *exec.Cmd
	metrics string
	errb    *strings.Builder
	out     *strings.Builder
}

func startSyncProc(r *testenv.Runner, args ...string) *syncProc {
	port, err := testenv.FreePort()
	if err != nil {
		r.Fatalf("free port: %v", err)
	}
	p := &syncProc{metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), errb: &strings.Builder{}, out: &strings.Builder{}}
	args = append([]string{"sync", "--state", r.TempDir() + "/state.json", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	p.cmd = exec.Command(binary(r), args...)
	p.cmd.Stderr, p.cmd.Stdout = p.errb, p.out
	if err := p.cmd.Start(); err != nil {
		r.Fatalf("start sync: %v", err)
	}
	return p
}

// scrape reads the tool's metrics (name -> value, summed over shards; lag: the worst shard).
func (p *syncProc) scrape() map[string]float64 {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "redis_migrate_sync_") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		if name == "redis_migrate_sync_lag_seconds" {
			if old, ok := out[name]; ok && (old < 0 || v < 0) {
				v = -1
			} else if ok && old > v {
				v = old
			}
			out[name] = v
			continue
		}
		out[name] += v
	}
	return out
}

func (p *syncProc) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (p *syncProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// waitMetric waits until metric reaches at least v.
func (p *syncProc) waitMetric(r *testenv.Runner, name string, v float64, timeout time.Duration) time.Time {
	return p.waitFor(r, fmt.Sprintf("%s >= %v", name, v), func(m map[string]float64) bool { return m[name] >= v }, timeout)
}

// waitCaughtUp waits until every shard is caught up with a lag under a second.
func (p *syncProc) waitCaughtUp(r *testenv.Runner, timeout time.Duration) time.Time {
	return p.waitFor(r, "caught up with lag < 1s", func(m map[string]float64) bool {
		l := m["redis_migrate_sync_lag_seconds"]
		return m["redis_migrate_sync_caught_up"] >= 1 && l >= 0 && l < 1
	}, timeout)
}

func (p *syncProc) waitFor(r *testenv.Runner, what string, ok func(map[string]float64) bool, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := p.scrape(); m != nil && ok(m) {
			return time.Now()
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Fatalf("sync: not %s within %s:\n%s", what, timeout, p.errb.String())
	return time.Time{}
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func benchSync(ctx context.Context, r *testenv.Runner, _ int) []Row {
	var rows []Row
	dur := time.Duration(*syncSeconds) * time.Second
	for _, feed := range strings.Split(*syncFeeds, ",") {
		best := -1.0 // the highest achieved write rate whose p99 lag stayed under 1 s
		for _, rs := range strings.Split(*syncRates, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(rs))
			if err != nil {
				r.Fatalf("-sync-rates: %v", err)
			}
			row, achieved, p99 := syncSteady(ctx, r, feed, rate, dur)
			rows = append(rows, row)
			if p99 >= 0 && p99 < 1 && achieved > best {
				best = achieved
			}
		}
		held := "none of the rates run"
		if best >= 0 {
			held = fmt.Sprintf("%.0f writes/s achieved", best)
		}
		rows = append(rows, Row{fmt.Sprintf("sync --feed %s, rates %s", feed, *syncRates), "highest write rate held with p99 lag < 1 s", held,
			"goal: at least 20k writes/s"})
	}
	rows = append(rows, syncCatchUp(ctx, r, *syncFeeds)...)
	return rows
}

func syncSource(r *testenv.Runner) (*testenv.Server, *redis.Client) {
	s := testenv.StartRedis(r, "--notify-keyspace-events", "KA", "--repl-diskless-sync-delay", "0")
	return s, s.Client(r, 0)
}

// syncSteady measures one feed at one write rate; it also returns the rate achieved and the
// p99 lag in seconds (-1: no sample).
func syncSteady(ctx context.Context, r *testenv.Runner, feed string, rate int, dur time.Duration) (Row, float64, float64) {
	src, sc := syncSource(r)
	dst := testenv.StartRedis(r)
	defer src.Stop()
	defer dst.Stop()
	if err := testenv.FillBulk(ctx, sc, "b:", 20000, 1); err != nil {
		r.Fatalf("fill: %v", err)
	}
	pid := serverPID(r, sc)
	wo := testenv.WriterOptions{Rate: rate, Workers: 4, Keys: 20000, Seed: int64(rate)}
	// Baseline: the source's CPU under the writer alone.
	w := testenv.StartWriter(sc, wo)
	time.Sleep(time.Second)
	base := meterCPU(pid)
	b0 := w.Writes.Load()
	time.Sleep(dur / 2)
	baseCPU := base.used()[0]
	baseWrites := w.Writes.Load() - b0
	w.Stop()

	p := startSyncProc(r, "--source", src.URL(), "--target", dst.URL(), "--feed", feed, "--no-verify")
	defer p.stop()
	p.waitCaughtUp(r, 2*time.Minute)
	w = testenv.StartWriter(sc, wo)
	time.Sleep(time.Second)
	m0 := p.scrape()
	cpu := meterCPU(pid)
	w0 := w.Writes.Load()
	start := time.Now()
	var lags []float64
	for time.Since(start) < dur {
		time.Sleep(100 * time.Millisecond)
		if m := p.scrape(); m != nil && m["redis_migrate_sync_lag_seconds"] >= 0 {
			lags = append(lags, m["redis_migrate_sync_lag_seconds"])
		}
	}
	secs := time.Since(start).Seconds()
	srcCPU := cpu.used()[0]
	m1 := p.scrape()
	writes := float64(w.Writes.Load() - w0)
	w.Stop()
	peak := p.peakRSS()
	applied := (m1["redis_migrate_sync_applied_keys_total"] - m0["redis_migrate_sync_applied_keys_total"]) / secs
	// CPU the source spent per second, with the sync minus without it (scaled to the same writes).
	perWrite := float64(baseCPU) / max(1, float64(baseWrites))
	added := (float64(srcCPU) - perWrite*writes) / secs / float64(time.Second) * 100
	label := fmt.Sprintf("sync --feed %s, %dk writes/s target (%.0f achieved)", feed, rate/1000, writes/secs)
	p99 := percentile(lags, 0.99)
	return Row{label, "applied keys/s; lag p50 / p99 / max; source CPU added; peak RSS",
		fmt.Sprintf("%.0f applied/s; lag %.2fs / %.2fs / %.2fs; +%.0f%% of a core; %s", applied,
			percentile(lags, 0.5), p99, percentile(lags, 1), added, mb(peak)),
		"goal: p99 lag < 1 s at 20k writes/s, RSS < 200 MB"}, writes / secs, p99
}

// syncCatchUp: 200k keys, 20k writes/s during the initial copy; then a cutover with a pause and
// a 10k-sample verification.
func syncCatchUp(ctx context.Context, r *testenv.Runner, feeds string) []Row {
	var rows []Row
	for _, feed := range strings.Split(feeds, ",") {
		src, sc := syncSource(r)
		dst := testenv.StartRedis(r)
		if err := testenv.FillBulk(ctx, sc, "b:", 200000, 2); err != nil {
			r.Fatalf("fill: %v", err)
		}
		w := testenv.StartWriter(sc, testenv.WriterOptions{Rate: 20000, Workers: 4, Keys: 20000, Seed: 7, NoShortTTL: true})
		time.Sleep(time.Second)
		start := time.Now()
		p := startSyncProc(r, "--source", src.URL(), "--target", dst.URL(), "--feed", feed, "--pause-writes", "10s", "--verify-sample", "10000", "--json")
		copied := p.waitMetric(r, "redis_migrate_sync_initial_copied_keys", 1, 5*time.Minute)
		caught := p.waitCaughtUp(r, 5*time.Minute)
		peak := p.peakRSS()
		_ = p.cmd.Process.Signal(os.Interrupt)
		err := p.cmd.Wait()
		w.Stop()
		var res struct {
			Matches   bool  `json:"matches"`
			CutoverMs int64 `json:"cutover_ms"`
		}
		out := p.out.String()
		if i := strings.LastIndex(out, "\n{\n"); i >= 0 {
			out = out[i+1:]
		}
		_ = json.Unmarshal([]byte(out), &res)
		if err != nil || !res.Matches {
			r.Fatalf("sync --feed %s cutover: %v\n%s", feed, err, p.errb.String())
		}
		rows = append(rows,
			Row{fmt.Sprintf("sync --feed %s, 200k keys under 20k writes/s", feed), "initial copy; catch-up after it; peak RSS",
				fmt.Sprintf("copy %.1fs; caught up %.2fs later; %s", copied.Sub(start).Seconds(), caught.Sub(copied).Seconds(), mb(peak)), ""},
			Row{fmt.Sprintf("sync --feed %s cutover, --pause-writes 10s --verify-sample 10000", feed), "pause to \"switch now\"",
				fmt.Sprintf("%.2fs", float64(res.CutoverMs)/1000), "goal: < 5 s"})
		src.Stop()
		dst.Stop()
	}
	return rows
}
