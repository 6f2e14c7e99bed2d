package state_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func openStore(t *testing.T) *state.Store {
	t.Helper()
	az := testenv.StartAzurite(t)
	st, err := state.Open(context.Background(), az.ConnectionString, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConnectionStringDevelopmentStorage(t *testing.T) {
	if got := state.ConnectionString("UseDevelopmentStorage=true"); got != state.DevelopmentStorage {
		t.Fatalf("got %q", got)
	}
	if got := state.ConnectionString("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"); got != "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k" {
		t.Fatalf("real connection string changed: %q", got)
	}
}

// A result is recorded once: a second write of the same batch (redelivery, replay) is ignored,
// and the counts do not change.
func TestRecordResultCreateIfAbsent(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	m := &state.Migration{ID: "m1", Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}}
	if err := st.CreateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateMigration(ctx, m); err != state.ErrExists {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if err := st.CreateShard(ctx, "m1", state.ShardProgress{Key: "s0-d0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateShard(ctx, "m1", "s0-d0", func(p *state.ShardProgress) (bool, error) {
		p.Done, p.BatchesSent, p.KeysScanned = true, 1, 10
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	r := state.BatchResult{Batch: "s0-d0-c0-0", Keys: 10, Result: copier.Result{Copied: 9, Failed: 1,
		Failures: []copier.KeyFailure{{Key: "bad", Reason: "because"}}}}
	ok, err := st.RecordResult(ctx, "m1", r)
	if err != nil || !ok {
		t.Fatalf("first record: %v %v", ok, err)
	}
	r.Result = copier.Result{Copied: 10}
	ok, err = st.RecordResult(ctx, "m1", r)
	if err != nil || ok {
		t.Fatalf("second record: %v %v, want ignored", ok, err)
	}
	s, err := st.Status(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Keys.Copied != 9 || s.Keys.Failed != 1 || s.Batches.Done != 1 || s.State != state.StateCompletedWithFailures {
		t.Fatalf("status: %+v", s)
	}
	if len(s.Failures) != 1 || s.Failures[0].Key != "bad" || s.Failures[0].Reason != "because" {
		t.Fatalf("failures: %+v", s.Failures)
	}
}

// Concurrent updates of the record under If-Match lose nothing (the import checkpoint path).
func TestUpdateMigrationConcurrent(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	if err := st.CreateMigration(ctx, &state.Migration{ID: "m2", Kind: "import", Import: &state.ImportCheckpoint{Blob: "dump.rdb"}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.UpdateMigration(ctx, "m2", func(m *state.Migration) (bool, error) {
				m.Import.Offset += 100
				m.Import.Result.Copied++
				return true, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	m, err := st.GetMigration(ctx, "m2")
	if err != nil {
		t.Fatal(err)
	}
	if m.Import.Offset != 800 || m.Import.Result.Copied != 8 {
		t.Fatalf("checkpoint: %+v", m.Import)
	}
}

// Status of a migration with thousands of finished batches: exact counts from one listing with
// metadata (no GET per batch), the previous summary (Stale) while a fresh count takes longer
// than its budget, and the rolled-up summary once final. How fast is measured by `make bench`
// (functions-status, 200,000 results); here the times are logged, and only a status call that
// hangs (far beyond its 700 ms budget, even on a loaded 2-core machine) fails.
func TestStatusOfManyBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 4,000 blobs")
	}
	ctx := context.Background()
	st := openStore(t)
	const n = 4000
	const hang = 20 * time.Second
	m := &state.Migration{ID: "big", Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}, EstimatedKeys: n * 10}
	if err := st.CreateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateShard(ctx, "big", state.ShardProgress{Key: "s0-d0", Done: true, BatchesSent: n, KeysScanned: n * 10}); err != nil {
		t.Fatal(err)
	}
	// A status poll while the migration runs leaves a rolled-up summary behind.
	if s, err := st.Status(ctx, "big"); err != nil || s.State != state.StateCopying {
		t.Fatalf("status before results: %+v %v", s, err)
	}
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := state.BatchResult{Batch: fmt.Sprintf("s0-d0-c%d-0", i), Keys: 10, Result: copier.Result{Copied: 10, Bytes: 1000}}
				if i == 7 {
					r.Result = copier.Result{Copied: 9, Failed: 1, Bytes: 900, Failures: []copier.KeyFailure{{Key: "k7", Reason: "refused"}}}
				}
				if _, err := st.RecordResult(ctx, "big", r); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("wrote %d results in %v", n, time.Since(start))

	// Every answer comes within the budget: a fresh summary, or the previous one (Stale) while
	// the aggregation goes on behind it.
	var s *state.Status
	deadline := time.Now().Add(2 * time.Minute)
	for {
		t0 := time.Now()
		var err error
		s, err = st.Status(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		t.Logf("status: %v stale=%v state=%s done=%d", d, s.Stale, s.State, s.Batches.Done)
		if d > hang {
			t.Fatalf("status took %v with %d batches: it must answer from the previous summary after its 700 ms budget", d, n)
		}
		if !s.Stale && s.Final() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("status never became final")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Once final, the rolled-up summary answers with one GET.
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		again, err := st.Status(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > hang || again.Batches.Done != n {
			t.Fatalf("final status: %v, %d batches", d, again.Batches.Done)
		} else {
			t.Logf("final status of %d batches: %v", n, d)
		}
	}
	if s.Batches.Done != n || s.Keys.Copied != n*10-1 || s.Keys.Failed != 1 || s.Bytes != n*1000-100 {
		t.Fatalf("counts: %+v %+v", s.Batches, s.Keys)
	}
	if s.State != state.StateCompletedWithFailures || len(s.Failures) != 1 || s.Failures[0].Key != "k7" {
		t.Fatalf("state %s failures %+v", s.State, s.Failures)
	}
}

// The spawn record of a batch only grows (a redelivery that finds other big keys adds them), and
// a spawning batch's result counts its big-key batches as sent; a verify result is recorded once
// and rolls up into status.verify.
func TestSpawnedBigAndVerifyResults(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	m := &state.Migration{ID: "m2", Kind: "copy", CreatedAt: time.Now().UTC(), Shards: []string{"s0-d0"}}
	if err := st.CreateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateShard(ctx, "m2", state.ShardProgress{Key: "s0-d0", Done: true, BatchesSent: 1, KeysScanned: 5}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.SpawnedBig(ctx, "m2", "b0"); err != nil || got != nil {
		t.Fatalf("no record yet: %v %v", got, err)
	}
	if got, err := st.RecordSpawnedBig(ctx, "m2", "b0", []int{3, 1}); err != nil || fmt.Sprint(got) != "[1 3]" {
		t.Fatalf("first: %v %v", got, err)
	}
	if got, err := st.RecordSpawnedBig(ctx, "m2", "b0", []int{3, 4}); err != nil || fmt.Sprint(got) != "[1 3 4]" {
		t.Fatalf("union: %v %v", got, err)
	}
	if got, err := st.SpawnedBig(ctx, "m2", "b0"); err != nil || fmt.Sprint(got) != "[1 3 4]" {
		t.Fatalf("read back: %v %v", got, err)
	}
	if _, err := st.RecordResult(ctx, "m2", state.BatchResult{Batch: "b0", Keys: 2, Spawned: 3, Result: copier.Result{Copied: 2}}); err != nil {
		t.Fatal(err)
	}
	s, err := st.ComputeStatus(ctx, "m2")
	if err != nil {
		t.Fatal(err)
	}
	if s.Batches.Sent != 4 || s.Batches.Pending != 3 || s.State != state.StateCopying {
		t.Fatalf("spawned batches not counted as sent: %s %+v", s.State, s.Batches)
	}
	for _, i := range []int{1, 3, 4} {
		if _, err := st.RecordResult(ctx, "m2", state.BatchResult{Batch: fmt.Sprintf("b0-big-%d", i), Keys: 1, Result: copier.Result{Copied: 1, Big: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if s, err = st.ComputeStatus(ctx, "m2"); err != nil || s.State != state.StateCompleted || s.Keys.Big != 3 || s.Keys.Copied != 5 || s.Batches.Pending != 0 {
		t.Fatalf("after the big batches: %v %+v", err, s)
	}

	// A verification run with two batches, one of them recorded twice.
	if _, err := st.UpdateMigration(ctx, "m2", func(m *state.Migration) (bool, error) {
		m.Verify = &state.VerifyRun{ID: "v1", CreatedAt: time.Now().UTC(), TTLToleranceMs: 2000, Shards: m.Shards}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if s, err = st.ComputeStatus(ctx, "m2"); err != nil || s.Verify == nil || s.Verify.State != state.VerifyRunning || s.Final() {
		t.Fatalf("a run whose shards are not written yet is running: %v %+v", err, s.Verify)
	}
	if err := st.CreateVerifyShard(ctx, "m2", "v1", state.ShardProgress{Key: "s0-d0", Done: true, BatchesSent: 2}); err != nil {
		t.Fatal(err)
	}
	ok, err := st.RecordVerifyResult(ctx, "m2", "v1", state.VerifyResult{Batch: "a", Keys: 3, Counts: state.VerifyCounts{Checked: 3, Matching: 2, Missing: 1},
		Differences: []state.VerifyDifference{{Key: "gone", Kind: "missing", Detail: "not in the target"}}})
	if err != nil || !ok {
		t.Fatalf("record: %v %v", ok, err)
	}
	if ok, err := st.RecordVerifyResult(ctx, "m2", "v1", state.VerifyResult{Batch: "a", Keys: 3, Counts: state.VerifyCounts{Checked: 3, Matching: 3}}); err != nil || ok {
		t.Fatalf("second record of a: %v %v, want ignored", ok, err)
	}
	if _, err := st.RecordVerifyResult(ctx, "m2", "v1", state.VerifyResult{Batch: "b", Keys: 2, Counts: state.VerifyCounts{Checked: 1, Matching: 1, GoneFromSource: 1}}); err != nil {
		t.Fatal(err)
	}
	s, err = st.ComputeStatus(ctx, "m2")
	if err != nil {
		t.Fatal(err)
	}
	v := s.Verify
	if v.State != state.VerifyFailed || !s.Final() || v.Keys.Checked != 4 || v.Keys.Matching != 3 || v.Keys.Missing != 1 || v.Keys.GoneFromSource != 1 ||
		v.Batches.Done != 2 || v.Batches.Pending != 0 || len(v.Differences) != 1 || v.Differences[0].Key != "gone" || v.Differences[0].Batch != "a" {
		t.Fatalf("verify status: %+v", v)
	}
	// The copy's results are not mixed up with the run's.
	if s.Batches.Done != 4 || s.Keys.Copied != 5 {
		t.Fatalf("copy counts changed: %+v %+v", s.Batches, s.Keys)
	}
}
