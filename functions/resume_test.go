package functions_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// status reads a migration's status once.
func (a *app) status(path string) *state.Status {
	a.t.Helper()
	code, _, body := a.do("GET", path, testKey, nil)
	if code != http.StatusOK {
		a.t.Fatalf("status: %d %s", code, body)
	}
	var st state.Status
	if err := json.Unmarshal(body, &st); err != nil {
		a.t.Fatal(err)
	}
	return &st
}

// waitState polls status until it reports want.
func (a *app) waitState(path, want string, timeout time.Duration) *state.Status {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := a.status(path)
		if st.State == want && !st.Stale {
			return st
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("state %s after %v, want %s: %+v", st.State, timeout, want, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *app) resume(id string) (int, functions.ResumeResponse, string) {
	a.t.Helper()
	code, _, body := a.do("POST", "/api/migrations/"+id+"/resume", testKey, nil)
	var rr functions.ResumeResponse
	if code == http.StatusAccepted {
		if err := json.Unmarshal(body, &rr); err != nil {
			a.t.Fatal(err)
		}
	}
	return code, rr, string(body)
}

func lossHash(s string) uint32 {
	h := uint32(0)
	for _, c := range s {
		h = h*31 + uint32(c)
	}
	return h
}

// Messages lost mid-migration (a third of the copy batches, and a plan step, so the shard's scan
// stops half way): status turns stalled with the last progress time, resume sends the lost work
// again (under new message ids: the old ones are inside the queue's duplicate window), and the
// same migration completes with exact totals and a target equal to the source. Resume of a
// migration that is not stalled (just resumed, or completed) is refused with 409 and sends nothing.
func TestStalledMigrationResumes(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "z:", 2400, 11); err != nil {
		t.Fatal(err)
	}
	var losing atomic.Bool
	losing.Store(true)
	var mu sync.Mutex
	lost := map[string]int{}
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if !losing.Load() || d.DeliveryCount != 1 {
			return hostharness.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case d.Function == "PlanShard" && strings.HasSuffix(d.MessageID, ".step2"):
			lost["plan"]++
			return hostharness.Lose
		case d.Function == "CopyBatch" && lossHash(d.MessageID)%3 == 0:
			lost["copy"]++
			return hostharness.Lose
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(),
		"STALL_SECONDS": "3"}, fault: fault})
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 40})

	st := a.waitState(path, state.StateStalled, 60*time.Second)
	mu.Lock()
	t.Logf("lost: %v; stalled: %+v, last progress %v ago, steps %+v", lost, st.Batches, time.Since(st.LastProgressAt).Round(time.Millisecond), st.Steps)
	if lost["plan"] != 1 || lost["copy"] == 0 {
		t.Fatalf("losses not injected: %v", lost)
	}
	mu.Unlock()
	if st.LastProgressAt.IsZero() || time.Since(st.LastProgressAt) < 3*time.Second || st.StallAfterSeconds != 3 || st.Final() {
		t.Fatalf("stalled status: lastProgressAt %v stallAfter %v", st.LastProgressAt, st.StallAfterSeconds)
	}
	if st.Batches.Pending == 0 || st.ShardsPlanned != 0 || st.Steps == nil || st.Steps.Recorded != 2 {
		t.Fatalf("stalled at: %+v shards planned %d steps %+v", st.Batches, st.ShardsPlanned, st.Steps)
	}

	losing.Store(false)
	code, rr, body := a.resume(id)
	if code != http.StatusAccepted || rr.Resume != 1 || rr.WasState != state.StateStalled || rr.PlanSteps != 1 || rr.Batches == 0 {
		t.Fatalf("resume: %d %s", code, body)
	}
	mu.Lock()
	if rr.Batches != lost["copy"] {
		t.Errorf("resume sent %d batches, %d were lost", rr.Batches, lost["copy"])
	}
	mu.Unlock()
	// Just resumed, so not stalled: a second resume is refused and sends nothing.
	if code, _, body := a.resume(id); code != http.StatusConflict || !strings.Contains(body, "stalled") {
		t.Fatalf("second resume: %d %s", code, body)
	}
	st = a.waitFinal(path, 90*time.Second)
	checkCounts(t, st, 2400)
	if st.Resumes != 1 || st.Steps == nil || st.Steps.InFlight != 0 || st.Steps.RolledUp != st.Steps.Recorded {
		t.Fatalf("after the resume: resumes %d steps %+v", st.Resumes, st.Steps)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)

	// A finished migration: 409, nothing sent.
	sentBefore, _ := a.h.Queue.Stats("copy")
	if code, _, body := a.resume(id); code != http.StatusConflict || !strings.Contains(body, "completed") {
		t.Fatalf("resume of a completed migration: %d %s", code, body)
	}
	if sent, _ := a.h.Queue.Stats("copy"); sent != sentBefore {
		t.Fatalf("a refused resume sent %d messages", sent-sentBefore)
	}
	if code, _, _ := a.resume("m-nope"); code != http.StatusNotFound {
		t.Fatalf("resume of an unknown migration: %d", code)
	}
}

// The local host killed mid-migration and started again (serve --local keeps its queue in
// memory, so every message in flight is gone): the same migration, seen by the new host, turns
// stalled, and one resume completes it exactly.
func TestResumeAfterLocalHostRestart(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "r:", 2000, 12); err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	settings := map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(), "STALL_SECONDS": "3"}
	var delivered atomic.Int64
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		// After 12 batches the host "dies": nothing more is processed.
		if d.Function == "CopyBatch" && delivered.Add(1) > 12 {
			return hostharness.Lose
		}
		if d.Function == "PlanShard" && delivered.Load() > 12 {
			return hostharness.Lose
		}
		return hostharness.Deliver
	}
	a1 := startApp(t, appOptions{azurite: az, settings: settings, fault: fault})
	id, path := a1.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 50})
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	for delivered.Load() <= 12 && wctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	_ = a1.h.WaitIdle(wctx)
	cancel()
	a1.h.Close()

	a2 := startApp(t, appOptions{azurite: az, settings: settings})
	st := a2.waitState(path, state.StateStalled, 60*time.Second)
	if st.Batches.Done == 0 || st.Batches.Pending == 0 || st.Keys.Copied == 0 {
		t.Fatalf("stalled at: %+v %+v", st.Batches, st.Keys)
	}
	code, rr, body := a2.resume(id)
	if code != http.StatusAccepted || rr.Batches+rr.PlanSteps == 0 {
		t.Fatalf("resume: %d %s", code, body)
	}
	st = a2.waitFinal(path, 90*time.Second)
	checkCounts(t, st, 2000)
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}
