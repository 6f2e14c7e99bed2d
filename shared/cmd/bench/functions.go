package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The function app at scale (issue 11 goal 4): a fresh status over 200,000 recorded batch
// results on Azurite, the planner's batches per second in one PlanShard invocation, and the
// copier's throughput with 1, 2, 4 and 8 concurrent CopyBatch invocations through the local host
// harness. `go run ./shared/cmd/bench functions` runs it alone; `functions-status` and
// `functions-copy` run either half.
func init() {
	suites["functions"] = benchFunctions
	suites["functions-status"] = func(ctx context.Context, r *testenv.Runner, _ int) []Row { return benchStatusAtScale(ctx, r) }
	suites["functions-copy"] = benchPlannerAndCopiers
	order = append(order, "functions")
}

func benchFunctions(ctx context.Context, r *testenv.Runner, keys int) []Row {
	rows := benchStatusAtScale(ctx, r)
	return append(rows, benchPlannerAndCopiers(ctx, r, keys)...)
}

// Status at scale: 500 plan steps (-status-steps) of 400 batches, all recorded but one batch in
// each of the last 5 steps, so 495 steps are rolled up and 5 are in flight.
// statusSteps: the status bench records statusSteps x 400 results (200,000 by default); on a
// machine where Azurite writes slowly, fewer show the same (fresh status reads no result of a
// rolled-up step).
var statusSteps = flag.Int("status-steps", 500, "plan steps of 400 results each in the functions status bench")

// azuriteDB: Azurite's in-memory metadata store walks every blob of the account on each request,
// so writing 200,000 results into it takes hours; its SQL store (AZURITE_DB) looks blobs up by
// index, like Azure Storage by name prefix. The status bench uses it when the database answers.
var azuriteDB = flag.String("azurite-db", "mysql://root@127.0.0.1:3306/redis_migrate_bench",
	"MySQL/MariaDB `DSN` for Azurite's blob metadata in the functions status bench (\"\" or unreachable: in-memory store)")

func benchStatusAtScale(ctx context.Context, r *testenv.Runner) []Row {
	const perStep, inflight = 400, 5
	steps := max(*statusSteps, inflight+1)
	store := "in-memory metadata"
	var az *testenv.Azurite
	if *azuriteDB != "" && testenv.SQLReachable(*azuriteDB) {
		az, store = testenv.StartAzuriteSQL(r, *azuriteDB), "SQL metadata (MySQL/MariaDB)"
	} else {
		fmt.Fprintf(os.Stderr, "bench functions: no database at -azurite-db; Azurite keeps metadata in memory (slow past ~10,000 blobs)\n")
		az = testenv.StartAzurite(r)
	}
	st, err := state.Open(ctx, az.ConnectionString, "migrations")
	if err != nil {
		r.Fatalf("state: %v", err)
	}
	const id = "bench-status"
	m := &state.Migration{ID: id, Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}, EstimatedKeys: int64(steps * perStep * 5)}
	if err := st.CreateMigration(ctx, m); err != nil {
		r.Fatalf("%v", err)
	}
	if err := st.CreateShard(ctx, id, state.ShardProgress{Key: "s0-d0", Done: true, Step: steps, BatchesSent: int64(steps * perStep),
		KeysScanned: int64(steps * perStep * 5)}); err != nil {
		r.Fatalf("%v", err)
	}
	fmt.Fprintf(os.Stderr, "bench functions: writing %d step manifests and %d batch results into Azurite...\n", steps, steps*perStep)
	start := time.Now()
	type job struct{ step, batch int }
	work := make(chan job, 1024)
	var wg sync.WaitGroup
	var failed, done atomic.Int64
	for w := 0; w < 48; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				b := fmt.Sprintf("s0-d0-c%d-%d", 1000+j.step, j.batch)
				res := copier.Result{Copied: 5, Bytes: 1500}
				if _, err := st.RecordResult(ctx, id, state.BatchResult{Batch: b, Keys: 5, Result: res}); err != nil {
					failed.Add(1)
				}
				if n := done.Add(1); n%20000 == 0 {
					fmt.Fprintf(os.Stderr, "bench functions: %d results written (%.0f/s)\n", n, float64(n)/time.Since(start).Seconds())
				}
			}
		}()
	}
	written := 0
	for s := 0; s < steps; s++ {
		var bs []plan.Batch
		for i := 0; i < perStep; i++ {
			bs = append(bs, plan.Batch{ID: fmt.Sprintf("s0-d0-c%d-%d", 1000+s, i), Keys: [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d"), []byte("e")}})
		}
		if _, _, err := st.CreateStep(ctx, id, &state.StepManifest{Key: "s0-d0", Step: s, Batches: bs, Scanned: perStep * 5}); err != nil {
			r.Fatalf("manifest: %v", err)
		}
		n := perStep
		if s >= steps-inflight {
			n-- // one batch of each of the last steps is still in flight
		}
		for i := 0; i < n; i++ {
			work <- job{s, i}
			written++
		}
	}
	close(work)
	wg.Wait()
	if failed.Load() > 0 {
		r.Fatalf("%d results failed to write", failed.Load())
	}
	writeSecs := time.Since(start).Seconds()
	// The roll CopyBatch makes after each result: here once per step, after its last result.
	start = time.Now()
	for s := 0; s < steps-inflight; s++ {
		if ok, err := st.RollStep(ctx, id, "s0-d0", s); err != nil || !ok {
			r.Fatalf("roll step %d: %v %v", s, ok, err)
		}
	}
	rollMs := time.Since(start).Seconds() * 1000 / float64(steps-inflight)
	fmt.Fprintf(os.Stderr, "bench functions: %d results in %.0f s (%.0f/s); a step rolls up in %.0f ms\n", written, writeSecs, float64(written)/writeSecs, rollMs)

	// Fresh status: ComputeStatus, which is what GET /api/migrations/{id} runs (without a budget).
	var times []float64
	var last *state.Status
	for i := 0; i < 7; i++ {
		t0 := time.Now()
		s, err := st.ComputeStatus(ctx, id)
		if err != nil {
			r.Fatalf("status: %v", err)
		}
		times = append(times, time.Since(t0).Seconds()*1000)
		last = s
	}
	if last.Batches.Done != int64(written) || last.Keys.Copied != int64(written*5) || last.Batches.Pending != inflight ||
		last.Steps.RolledUp != steps-inflight || last.Steps.InFlight != inflight {
		r.Fatalf("status counts wrong: %+v %+v %+v", last.Batches, last.Keys, last.Steps)
	}
	sort.Float64s(times)
	// What status did before the rollups: one listing of every result with its metadata.
	t0 := time.Now()
	listed := 0
	pager := st.Container().NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(id + "/results/"),
		Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			r.Fatalf("list: %v", err)
		}
		listed += len(page.Segment.BlobItems)
	}
	listSecs := time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "bench functions: fresh status %.0f ms median (%.0f max); listing all %d results %.2f s\n",
		times[len(times)/2], times[len(times)-1], listed, listSecs)
	return []Row{
		{fmt.Sprintf("function app: fresh status, %d batch results on Azurite, %s (%d steps rolled up, %d in flight)", written, store, steps-inflight, inflight),
			"ms (median of 7, max)", fmt.Sprintf("%.0f (max %.0f)", times[len(times)/2], times[len(times)-1]), "goal < 1,000 ms (issue 11)"},
		{"function app: the old status, one listing of every result", "s", fmt.Sprintf("%.2f for %d", listSecs, listed), "1.1-1.7 s for 10,000 (issue 11)"},
		{"function app: recording results into Azurite, 48 writers", "results/s", fmt.Sprintf("%.0f", float64(written)/writeSecs), ""},
		{"function app: rolling up one step of 400 batches", "ms", fmt.Sprintf("%.0f", rollMs), ""},
	}
}

// benchPlannerAndCopiers runs the same migration of keys mixed keys through the local host
// harness with 1, 2, 4 and 8 concurrent CopyBatch invocations (host.json maxConcurrentCalls).
// Copies are held until planning is over, so the planner is measured alone and each copy run
// starts with every batch queued.
func benchPlannerAndCopiers(ctx context.Context, r *testenv.Runner, keys int) []Row {
	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	fmt.Fprintf(os.Stderr, "bench functions: generating %d mixed keys...\n", keys)
	if err := testenv.FillBulk(ctx, src.Client(r, 0), "", keys, 7); err != nil {
		r.Fatalf("fill: %v", err)
	}
	az := testenv.StartAzurite(r)
	hostRaw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "host.json"))
	if err != nil {
		r.Fatalf("%v", err)
	}
	var rows []Row
	for _, conc := range []int{1, 2, 4, 8} {
		if err := dst.Client(r, 0).FlushAll(ctx).Err(); err != nil {
			r.Fatalf("flush: %v", err)
		}
		var hj map[string]any
		_ = json.Unmarshal(hostRaw, &hj)
		ext, _ := hj["extensions"].(map[string]any)
		sb, _ := ext["serviceBus"].(map[string]any)
		sb["maxConcurrentCalls"] = conc
		hostJSON, _ := json.Marshal(hj)

		release := make(chan struct{})
		var planStart atomic.Int64
		fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
			switch d.Function {
			case "PlanShard":
				planStart.CompareAndSwap(0, time.Now().UnixNano())
			case "CopyBatch":
				<-release
			}
			return hostharness.Deliver
		}
		const key = "bench-function-key-0123456789"
		h, err := hostharness.Start(ctx, hostharness.Options{Functions: functions.Definitions(), HostJSON: hostJSON,
			Settings: map[string]string{"AzureWebJobsStorage": az.ConnectionString, "LOCAL_FUNCTION_KEY": key,
				"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()},
			NewHandler: functions.LocalHandler, Log: io.Discard, Fault: fault})
		if err != nil {
			r.Fatalf("harness: %v", err)
		}
		store, err := state.Open(ctx, az.ConnectionString, "migrations")
		if err != nil {
			r.Fatalf("%v", err)
		}
		id := fmt.Sprintf("bench-copy-%d", conc)
		body := fmt.Sprintf(`{"id":%q,"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"}}`, id)
		if code, out := post(h.URL+"/api/migrations", key, body); code != 202 {
			r.Fatalf("kickoff: %d %s", code, out)
		}
		// Planning, with every copy held.
		var s *state.Status
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if s, err = store.ComputeStatus(ctx, id); err != nil {
				r.Fatalf("status: %v", err)
			}
			if s.ShardsPlanned == s.ShardsTotal || s.State == state.StateFailed || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s.ShardsPlanned != s.ShardsTotal {
			r.Fatalf("planning did not finish: %+v", s)
		}
		p, err := store.GetShard(ctx, id, s.Shards[0].Key)
		if err != nil {
			r.Fatalf("%v", err)
		}
		planSecs := p.UpdatedAt.Sub(time.Unix(0, planStart.Load())).Seconds()
		if conc == 1 {
			bps := float64(p.BatchesSent) / planSecs
			fmt.Fprintf(os.Stderr, "bench functions: planner %d keys, %d batches in %d step(s), %.2f s: %.0f batches/s\n",
				p.KeysScanned, p.BatchesSent, p.Step, planSecs, bps)
			rows = append(rows, Row{fmt.Sprintf("function app: planner, PlanShard over %d keys (%d batches of 500, %d step(s); SCAN, step manifest, sends)", p.KeysScanned, p.BatchesSent, p.Step),
				"batches/s (keys/s)", fmt.Sprintf("%.0f (%.0f)", bps, float64(p.KeysScanned)/planSecs), ""})
		}
		// Copy with every batch queued.
		t0 := time.Now()
		close(release)
		deadline = time.Now().Add(10 * time.Minute)
		for {
			if s, err = store.ComputeStatus(ctx, id); err != nil {
				r.Fatalf("status: %v", err)
			}
			if s.Final() || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s.State != state.StateCompleted || s.Keys.Copied != int64(keys) {
			r.Fatalf("copy x%d: %s %+v", conc, s.State, s.Keys)
		}
		secs := s.UpdatedAt.Sub(t0).Seconds()
		kps, bps := float64(keys)/secs, float64(s.Batches.Done)/secs
		fmt.Fprintf(os.Stderr, "bench functions: %d concurrent CopyBatch: %.1f s, %.0f keys/s, %.1f batches/s\n", conc, secs, kps, bps)
		rows = append(rows, Row{fmt.Sprintf("function app: copy %d keys, %d concurrent CopyBatch (harness, status rolled up)", keys, conc),
			"keys/s (batches/s)", fmt.Sprintf("%.0f (%.1f)", kps, bps), ""})
		h.Close()
	}
	return rows
}

func post(url, key, body string) (int, string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("x-functions-key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
