package state_test

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// stepBatches cuts n batches of k keys named like plan.Step's.
func stepBatches(shard, cursor, n, k int) []plan.Batch {
	var out []plan.Batch
	for i := 0; i < n; i++ {
		b := plan.Batch{ID: fmt.Sprintf("s%d-d0-c%d-%d", shard, cursor, i), Shard: shard}
		for j := 0; j < k; j++ {
			b.Keys = append(b.Keys, []byte(fmt.Sprintf("k%d-%d-%d", cursor, i, j)))
		}
		out = append(out, b)
	}
	return out
}

// Rollups are exact under redelivery, duplicates and concurrent rollers: 3 steps of 12 batches
// (cursor 1 and 12 share a digit prefix, which must not mix their results), every result written
// twice with different counts (the first stands), big-key batches sent off by one batch, rollers
// running from 8 goroutines at every moment, before and after each step completes. The totals
// equal the sum of the first-written results, the same through rollups as by counting every
// result, and a step is rolled up only once complete.
func TestRollupExactUnderDuplicatesAndConcurrentRollers(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	const id = "roll"
	m := &state.Migration{ID: id, Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}}
	if err := st.CreateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	cursors := []int{1, 12, 123}
	var all []plan.Batch
	stepOf := map[string]int{}
	for step, c := range cursors {
		bs := stepBatches(0, c, 12, 5)
		man, created, err := st.CreateStep(ctx, id, &state.StepManifest{Key: "s0-d0", Step: step, Batches: bs, Scanned: 60})
		if err != nil || !created || man.Prefix != fmt.Sprintf("s0-d0-c%d-", c) {
			t.Fatalf("step %d: %v %v %+v", step, created, err, man)
		}
		// A replayed step that cut differently gets the first manifest back.
		again, created, err := st.CreateStep(ctx, id, &state.StepManifest{Key: "s0-d0", Step: step, Batches: bs[:3]})
		if err != nil || created || len(again.Batches) != 12 {
			t.Fatalf("second manifest of step %d: %v %v %d batches", step, created, err, len(again.Batches))
		}
		for _, b := range bs {
			stepOf[b.ID] = step
		}
		all = append(all, bs...)
	}
	if err := st.CreateShard(ctx, id, state.ShardProgress{Key: "s0-d0", Done: true, Step: 3, BatchesSent: int64(len(all)), KeysScanned: int64(5 * len(all))}); err != nil {
		t.Fatal(err)
	}

	// Rollers race with the writers the whole time.
	stop := make(chan struct{})
	var rollers sync.WaitGroup
	for g := 0; g < 8; g++ {
		rollers.Add(1)
		go func() {
			defer rollers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.RollStep(ctx, id, "s0-d0", rand.Intn(3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var want copier.Result
	var wantDone int64
	rng := rand.New(rand.NewSource(1))
	order := rng.Perm(len(all))
	// Batch 0 of step 1 sends 2 big-key batches off; step 1 is not complete until they report.
	bigParent := all[12]
	for _, i := range order {
		b := all[i]
		res := copier.Result{Copied: int64(len(b.Keys)), Bytes: 100}
		r := state.BatchResult{Batch: b.ID, Keys: len(b.Keys), Result: res}
		if i%7 == 3 {
			r.Result = copier.Result{Copied: 4, Failed: 1, Bytes: 80, Failures: []copier.KeyFailure{{Key: string(b.Keys[0]), Reason: "refused"}}}
		}
		if b.ID == bigParent.ID {
			r.Keys, r.Spawned, r.Result = 3, 2, copier.Result{Copied: 3, Bytes: 60}
		}
		// Two deliveries at once, with different outcomes: only the first write counts.
		var first state.BatchResult
		var firstOnce sync.Once
		var wg sync.WaitGroup
		for d := 1; d <= 2; d++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rr := r
				rr.Delivery = d
				if d == 2 {
					rr.Result = copier.Result{Copied: int64(len(b.Keys)), Bytes: 999}
					if i%7 == 3 {
						// Either delivery of a refused batch reports a failure, with different
						// counts, so the failures are there whichever write lands first.
						rr.Result = copier.Result{Copied: 3, Failed: 2, Bytes: 999, Failures: []copier.KeyFailure{
							{Key: string(b.Keys[0]), Reason: "refused"}, {Key: string(b.Keys[1]), Reason: "refused"}}}
					}
				}
				ok, err := st.RecordResult(ctx, id, rr)
				if err != nil {
					t.Error(err)
				}
				if ok {
					firstOnce.Do(func() { first = rr })
				}
			}()
		}
		wg.Wait()
		want.Add(first.Result)
		wantDone++
	}
	// Step 1 waits for its big-key batches.
	if ok, err := st.RollStep(ctx, id, "s0-d0", 1); err != nil || ok {
		t.Fatalf("step 1 rolled up before its big-key batches reported: %v %v", ok, err)
	}
	s, err := st.ComputeStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != state.StateCopying || s.Batches.Pending != 2 || s.Steps == nil || s.Steps.RolledUp != 2 || s.Steps.InFlight != 1 {
		t.Fatalf("before the big-key batches: %s %+v %+v", s.State, s.Batches, s.Steps)
	}
	for i := 0; i < 2; i++ {
		r := state.BatchResult{Batch: state.BigBatchID(bigParent.ID, i+1), Keys: 1, Result: copier.Result{Copied: 1, Big: 1, Bytes: 20}}
		if _, err := st.RecordResult(ctx, id, r); err != nil {
			t.Fatal(err)
		}
		want.Add(r.Result)
		wantDone++
	}
	time.Sleep(200 * time.Millisecond) // the rollers get at the complete step
	close(stop)
	rollers.Wait()

	s, err = st.ComputeStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Steps.RolledUp != 3 || s.Steps.InFlight != 0 {
		t.Fatalf("steps %+v", s.Steps)
	}
	got := state.KeyCounts{Copied: s.Keys.Copied, Failed: s.Keys.Failed, Big: s.Keys.Big}
	if got.Copied != want.Copied || got.Failed != want.Failed || got.Big != 2 || s.Bytes != want.Bytes || s.Batches.Done != wantDone ||
		s.Batches.Pending != 0 || s.State != state.StateCompletedWithFailures {
		t.Fatalf("rolled-up status %s %+v %+v bytes %d; want %+v, %d batches", s.State, s.Keys, s.Batches, s.Bytes, want, wantDone)
	}
	if len(s.Failures) != int(want.Failed) || s.Failures[0].Reason != "refused" || s.Failures[0].Batch == "" {
		t.Fatalf("failures %+v, want %d", s.Failures, want.Failed)
	}
	for _, f := range s.Failures {
		if _, ok := stepOf[f.Batch]; !ok || f.Key == "" {
			t.Fatalf("failure %+v", f)
		}
	}
	// Nothing is missing, and resuming finds nothing to send.
	if mw, err := st.Missing(ctx, id); err != nil || len(mw.Batches) != 0 || mw.Steps != 0 {
		t.Fatalf("missing after completion: %+v %v", mw, err)
	}
}

// Missing names exactly the batches without a result and the big-key batches a recorded batch
// sent off that have none.
func TestMissingWork(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	const id = "miss"
	if err := st.CreateMigration(ctx, &state.Migration{ID: id, Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}}); err != nil {
		t.Fatal(err)
	}
	bs := stepBatches(0, 7, 5, 3)
	if _, _, err := st.CreateStep(ctx, id, &state.StepManifest{Key: "s0-d0", Step: 0, Batches: bs}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2, 4} {
		r := state.BatchResult{Batch: bs[i].ID, Keys: 3, Result: copier.Result{Copied: 3}}
		if i == 2 {
			r.Keys, r.Spawned, r.Result.Copied = 1, 2, 1
			if _, err := st.RecordSpawnedBig(ctx, id, bs[i].ID, []int{0, 2}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.RecordResult(ctx, id, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.RecordResult(ctx, id, state.BatchResult{Batch: state.BigBatchID(bs[2].ID, 2), Keys: 1, Result: copier.Result{Copied: 1, Big: 1}}); err != nil {
		t.Fatal(err)
	}
	mw, err := st.Missing(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range mw.Batches {
		got = append(got, fmt.Sprintf("%s%v", b.Batch.ID, b.Big))
	}
	if fmt.Sprint(got) != "[s0-d0-c7-1[] s0-d0-c7-2[0] s0-d0-c7-3[]]" || mw.Steps != 1 {
		t.Fatalf("missing: %v (%d steps)", got, mw.Steps)
	}
}

// requestLog is a reverse proxy in front of Azurite that records each request the store makes,
// so a test can tell what a status read, not only how long it took.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "METHOD path?prefix"
}

func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.reqs
	l.reqs = nil
	return out
}

// openLoggedStore opens a store whose requests pass through a requestLog.
func openLoggedStore(t *testing.T) (*state.Store, *requestLog) {
	t.Helper()
	az := testenv.StartAzurite(t)
	target, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", az.Port))
	if err != nil {
		t.Fatal(err)
	}
	log := &requestLog{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.mu.Lock()
		log.reqs = append(log.reqs, r.Method+" "+r.URL.Path+"?"+r.URL.Query().Get("prefix"))
		log.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	conn := strings.Replace(az.ConnectionString, fmt.Sprintf("http://127.0.0.1:%d", az.Port), srv.URL, 1)
	st, err := state.Open(context.Background(), conn, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return st, log
}

// A fresh status reads nothing of a rolled-up step's results: its requests are the same whether
// 4 or 24 steps are rolled up, and none of them lists or reads a rolled-up step's results. This
// is what makes its cost grow with the batches in flight, not with every batch ever done (the
// bench's functions-status suite times it on a large container).
func TestFreshStatusReadsNoResultOfARolledUpStep(t *testing.T) {
	ctx := context.Background()
	st, log := openLoggedStore(t)
	const id = "fresh"
	if err := st.CreateMigration(ctx, &state.Migration{ID: id, Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateShard(ctx, id, state.ShardProgress{Key: "s0-d0"}); err != nil {
		t.Fatal(err)
	}
	const perStep, keys = 6, 5
	step := 0
	var sent, done int64
	// addSteps cuts n more steps; all their batches report except one batch of each in-flight
	// step (the last inflight of them), and the complete ones are rolled up.
	addSteps := func(n, inflight int) (rolled []string) {
		for i := 0; i < n; i++ {
			bs := stepBatches(0, 1000+step, perStep, keys)
			if _, _, err := st.CreateStep(ctx, id, &state.StepManifest{Key: "s0-d0", Step: step, Batches: bs, Scanned: perStep * keys}); err != nil {
				t.Fatal(err)
			}
			open := i >= n-inflight
			for j, b := range bs {
				if open && j == 0 {
					continue
				}
				if _, err := st.RecordResult(ctx, id, state.BatchResult{Batch: b.ID, Keys: keys, Result: copier.Result{Copied: keys, Bytes: 50}}); err != nil {
					t.Fatal(err)
				}
				done++
			}
			sent += perStep
			if !open {
				if ok, err := st.RollStep(ctx, id, "s0-d0", step); err != nil || !ok {
					t.Fatalf("roll step %d: %v %v", step, ok, err)
				}
				rolled = append(rolled, fmt.Sprintf("s0-d0-c%d-", 1000+step))
			}
			step++
		}
		if _, err := st.UpdateShard(ctx, id, "s0-d0", func(p *state.ShardProgress) (bool, error) {
			p.Done, p.Step, p.BatchesSent, p.KeysScanned = true, step, sent, sent*keys
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
		return rolled
	}
	fresh := func(rolledUp int, rolled []string) []string {
		log.take()
		s, err := st.ComputeStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		reqs := log.take()
		if s.Batches.Done != done || s.Keys.Copied != done*keys || s.Steps.RolledUp != rolledUp || s.Steps.InFlight != 2 {
			t.Fatalf("status: batches %+v keys %+v steps %+v; want %d done, %d rolled up, 2 in flight", s.Batches, s.Keys, s.Steps, done, rolledUp)
		}
		for _, r := range reqs {
			for _, p := range rolled {
				if strings.Contains(r, "/results/"+p) || strings.HasSuffix(r, "?"+id+"/results/"+p) {
					t.Errorf("fresh status touched the results of rolled-up step %s: %s", p, r)
				}
			}
		}
		return reqs
	}
	rolled := addSteps(6, 2)
	before := fresh(4, rolled)
	// Twenty more steps, all rolled up; the two steps left open before are still in flight.
	rolled = append(rolled, addSteps(20, 0)...)
	after := fresh(24, rolled)
	t.Logf("fresh status requests with 4 rolled-up steps: %d; with 24: %d\n%s", len(before), len(after), strings.Join(after, "\n"))
	if len(after) != len(before) {
		t.Fatalf("a fresh status made %d requests with 4 rolled-up steps and %d with 24: it grows with the work done", len(before), len(after))
	}
}
