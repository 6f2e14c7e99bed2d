package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func init() {
	suites["protect"] = benchProtect
	order = append(order, "protect")
}

// benchProtect measures what a copy does to its source: the latency of a PING probe sent to the
// source every 5 ms while the copy runs, without a limit and with --max-source-ops.
func benchProtect(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src := testenv.StartRedis(r)
	sc := src.Client(r, 0)
	fmt.Fprintf(os.Stderr, "bench protect: generating %d mixed keys...\n", keys)
	if err := testenv.FillBulk(ctx, sc, "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	idle := probe(ctx, src, func() { time.Sleep(2 * time.Second) })
	label := fmt.Sprintf("source PING latency, copy of %dk mixed keys", keys/1000)
	rows := []Row{{label, "p50 / p99 / max, idle source", idle.String(), ""}}
	const limit = 50000
	for _, args := range [][]string{nil, {"--max-source-ops", fmt.Sprint(limit)}} {
		dst := testenv.StartRedis(r)
		var run Run
		lat := probe(ctx, src, func() {
			run = runBinary(r, append([]string{"copy", "--source", src.URL(), "--target", dst.URL(), "--no-verify"}, args...)...)
		})
		what := "during the copy, no limit"
		if args != nil {
			what = fmt.Sprintf("during the copy, --max-source-ops %d", limit)
		}
		kps := num(run.Summary, "keys_copied") / run.Seconds
		fmt.Fprintf(os.Stderr, "bench protect %s: PING %s, copy %.0f keys/s\n", what, lat, kps)
		rows = append(rows, Row{label, "p50 / p99 / max, " + what, fmt.Sprintf("%s (copy %.0f keys/s)", lat, kps), ""})
	}
	return rows
}

type latencies []time.Duration

func (l latencies) String() string {
	if len(l) == 0 {
		return "no samples"
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return fmt.Sprintf("%.2f / %.2f / %.2f ms", ms(l[len(l)/2]), ms(l[len(l)*99/100]), ms(l[len(l)-1]))
}

// probe PINGs the server every 5 ms on its own connection while f runs.
func probe(ctx context.Context, s *testenv.Server, f func()) latencies {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 1})
	defer c.Close()
	var mu sync.Mutex
	var out latencies
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			t := time.Now()
			if c.Ping(ctx).Err() == nil {
				mu.Lock()
				out = append(out, time.Since(t))
				mu.Unlock()
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	return out
}
