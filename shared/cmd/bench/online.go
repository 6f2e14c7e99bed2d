package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The online suite (issue 9, "Measured"): an online migration of the function app through the
// local host harness (the handler in this process, as `serve --local` runs it), with a short
// SyncShard budget so that the chain hands over every few seconds, under a mixed write load at
// each rate. Lag is measured per write: a probe key is written to the source every 20 ms and
// the target is polled until it holds it. Probes written within a second of a handover (the
// moment the next invocation took the lease) are compared with the others: the difference is
// what a handover costs. `go run ./shared/cmd/bench online`.

var (
	onlineSeconds = flag.Int("online-seconds", 30, "online suite: seconds measured at each write rate")
	onlineRates   = flag.String("online-rates", "5000,20000", "online suite: write rates (writes/s)")
	onlineFeeds   = flag.String("online-feeds", "notify,psync", "online suite: feeds to measure")
	onlineBudget  = flag.Int("online-budget", 5, "online suite: SYNC_INVOCATION_SECONDS (each invocation's budget)")
)

func init() {
	suites["online"] = benchOnline
	order = append(order, "online")
}

func benchOnline(ctx context.Context, r *testenv.Runner, _ int) []Row {
	az := testenv.StartAzurite(r)
	var rows []Row
	for _, feed := range strings.Split(*onlineFeeds, ",") {
		for _, rs := range strings.Split(*onlineRates, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(rs))
			if err != nil {
				r.Fatalf("-online-rates: %v", err)
			}
			rows = append(rows, onlineSteady(ctx, r, az, strings.TrimSpace(feed), rate)...)
		}
	}
	return rows
}

// lagProbe is one timestamped write and when the target first held it.
type lagProbe struct {
	key          string
	wrote, where time.Time
}

func onlineSteady(ctx context.Context, r *testenv.Runner, az *testenv.Azurite, feed string, rate int) []Row {
	src := testenv.StartRedis(r, "--notify-keyspace-events", "KA", "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "64mb")
	dst := testenv.StartRedis(r)
	defer src.Stop()
	defer dst.Stop()
	sc, dc := src.Client(r, 0), dst.Client(r, 0)
	if err := testenv.FillBulk(ctx, sc, "b:", 20000, 1); err != nil {
		r.Fatalf("fill: %v", err)
	}
	hostJSON, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "host.json"))
	if err != nil {
		r.Fatalf("%v", err)
	}
	const key = "bench-function-key-0123456789"
	h, err := hostharness.Start(ctx, hostharness.Options{Functions: functions.Definitions(), HostJSON: hostJSON,
		Settings: map[string]string{"AzureWebJobsStorage": az.ConnectionString, "LOCAL_FUNCTION_KEY": key,
			"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(), "SYNC_INVOCATION_SECONDS": strconv.Itoa(*onlineBudget)},
		NewHandler: functions.LocalHandler, Log: io.Discard})
	if err != nil {
		r.Fatalf("harness: %v", err)
	}
	defer h.Close()
	store, err := state.Open(ctx, az.ConnectionString, "migrations")
	if err != nil {
		r.Fatalf("%v", err)
	}
	id := fmt.Sprintf("bench-online-%s-%d", feed, rate)
	body := fmt.Sprintf(`{"id":%q,"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"},"mode":"online","feed":%q}`, id, feed)
	if code, out := post(h.URL+"/api/migrations", key, body); code != 202 {
		r.Fatalf("kickoff: %d %s", code, out)
	}
	wo := testenv.WriterOptions{Rate: rate, Workers: 4, Keys: 20000, Seed: int64(rate), NoShortTTL: true}
	w := testenv.StartWriter(sc, wo)
	defer w.Stop()
	// Wait for the copy and the first applied barrier.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st, err := store.ComputeStatus(ctx, id)
		c, cerr := store.GetChain(ctx, id, "c0")
		if err == nil && cerr == nil && st.State == state.StateCompleted && c.CopyDone && !c.GapOpen && time.Since(c.AppliedAsOf) < 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			r.Fatalf("online %s at %d writes/s: not syncing after 3 minutes (copy %v, chain %+v)", feed, rate, st, c)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "bench online: feed %s, %d writes/s: syncing; measuring %d s\n", feed, rate, *onlineSeconds)

	mctx, cancel := context.WithCancel(ctx)
	pctx, stopProbes := context.WithCancel(ctx)
	var wg, pwg sync.WaitGroup
	var mu sync.Mutex
	var probes []*lagProbe
	var handovers []time.Time
	var maxGaps int64
	// Probes: one write every 20 ms.
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			p := &lagProbe{key: fmt.Sprintf("lagprobe:%d", i)}
			p.wrote = time.Now()
			if err := sc.Set(ctx, p.key, p.wrote.UnixNano(), 0).Err(); err != nil {
				continue
			}
			mu.Lock()
			probes = append(probes, p)
			mu.Unlock()
		}
	}()
	// The target, polled every 5 ms for the probes it does not hold yet.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-mctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			pollProbes(ctx, dc, &mu, &probes)
		}
	}()
	// Handovers: when the next invocation takes the lease.
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := -1
		for {
			select {
			case <-mctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			c, err := store.GetChain(ctx, id, "c0")
			if err != nil {
				continue
			}
			mu.Lock()
			if c.Seq != last && c.Holder != "" {
				if last >= 0 {
					handovers = append(handovers, time.Now())
				}
				last = c.Seq
			}
			maxGaps = max(maxGaps, c.Gaps)
			mu.Unlock()
		}
	}()
	w0 := w.Writes.Load()
	start := time.Now()
	time.Sleep(time.Duration(*onlineSeconds) * time.Second)
	secs := time.Since(start).Seconds()
	writes := float64(w.Writes.Load() - w0)
	w.Stop()
	stopProbes()
	pwg.Wait()
	// Let the last probes land before the pollers stop.
	for t0 := time.Now(); time.Since(t0) < 15*time.Second; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		open := 0
		for _, p := range probes {
			if p.where.IsZero() {
				open++
			}
		}
		mu.Unlock()
		if open == 0 {
			break
		}
	}
	cancel()
	wg.Wait()
	_, _ = post(h.URL+"/api/migrations/"+id+"/stop", key, "")

	var all, near, away []float64
	lost := 0
	for _, p := range probes {
		if p.where.IsZero() {
			lost++
			continue
		}
		lag := p.where.Sub(p.wrote).Seconds()
		all = append(all, lag)
		isNear := false
		for _, ho := range handovers {
			if d := p.wrote.Sub(ho); d > -time.Second && d < time.Second {
				isNear = true
				break
			}
		}
		if isNear {
			near = append(near, lag)
		} else {
			away = append(away, lag)
		}
	}
	c, _ := store.GetChain(ctx, id, "c0")
	extra := ""
	if c != nil && c.Feed == "psync" {
		extra = fmt.Sprintf("; %d continued, %d full resyncs", c.Continues, c.FullResyncs)
	}
	fmt.Fprintf(os.Stderr, "bench online: feed %s, %d writes/s target, %.0f achieved: %d probes (%d lost), %d handovers, %d gaps%s\n",
		feed, rate, writes/secs, len(probes), lost, len(handovers), maxGaps, extra)
	label := fmt.Sprintf("function app online, feed %s, %dk writes/s target (%.0f achieved), %d s budget: %d handovers in %.0f s",
		feed, rate/1000, writes/secs, *onlineBudget, len(handovers), secs)
	return []Row{
		{label, "lag per write p50 / p99 / max (probes)", fmt.Sprintf("%s / %s / %s (%d probes, %d lost, %d gaps%s)",
			secs2(percentile(all, 0.5)), secs2(percentile(all, 0.99)), secs2(percentile(all, 1)), len(all), lost, maxGaps, extra), "goal: p99 < 1 s at 20k writes/s"},
		{label, "lag within 1 s of a handover vs away: p50, p99", fmt.Sprintf("near %s, %s (%d probes); away %s, %s (%d); extra per handover: p50 %+.2fs, p99 %+.2fs",
			secs2(percentile(near, 0.5)), secs2(percentile(near, 0.99)), len(near), secs2(percentile(away, 0.5)), secs2(percentile(away, 0.99)), len(away),
			percentile(near, 0.5)-percentile(away, 0.5), percentile(near, 0.99)-percentile(away, 0.99)), ""},
	}
}

func secs2(s float64) string {
	if s < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", s)
}

// pollProbes asks the target, in one pipeline, for every lagProbe it did not hold yet.
func pollProbes(ctx context.Context, dc *redis.Client, mu *sync.Mutex, probes *[]*lagProbe) {
	mu.Lock()
	var open []*lagProbe
	for _, p := range *probes {
		if p.where.IsZero() {
			open = append(open, p)
		}
	}
	mu.Unlock()
	if len(open) == 0 {
		return
	}
	sort.Slice(open, func(i, j int) bool { return open[i].wrote.Before(open[j].wrote) })
	pipe := dc.Pipeline()
	cmds := make([]*redis.IntCmd, len(open))
	for i, p := range open {
		cmds[i] = pipe.Exists(ctx, p.key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return
	}
	now := time.Now()
	mu.Lock()
	for i, p := range open {
		if cmds[i].Val() > 0 {
			p.where = now
		}
	}
	mu.Unlock()
}
