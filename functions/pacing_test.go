package functions_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// batchReads counts the commands copy batches send to the source (GETRANGE, MEMORY USAGE, DUMP,
// PEXPIRETIME, PTTL), from INFO commandstats.
func batchReads(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	calls := testenv.CommandCalls(context.Background(), c)
	var n int64
	for _, name := range []string{"getrange", "memory|usage", "memory", "dump", "pexpiretime", "pttl"} {
		n += calls[name]
	}
	return n
}

// maxSourceOps in the start request paces the copy batches of one instance to the limit: the
// source serves the batches' reads at no more than that rate (a burst of 1/8 of a second per
// invocation aside), and the migration still completes with exact counts and an equal target.
func TestMigrationMaxSourceOps(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	const n, limit = 3000, 800
	if err := testenv.FillBulk(ctx, sc, "p:", n, 5); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}})
	sc.ConfigResetStat(ctx)
	start := time.Now()
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100, "maxSourceOps": limit})
	st := a.waitFinal(path, 3*time.Minute)
	took := time.Since(start).Seconds()
	checkCounts(t, st, n)
	reads := batchReads(t, sc)
	rate := float64(reads) / took
	t.Logf("%d batch reads from the source in %.1fs: %.0f/s (limit %d/s)", reads, took, rate, limit)
	if reads < 2*n {
		t.Fatalf("only %d batch reads counted for %d keys: commandstats names changed?", reads, n)
	}
	if rate > limit*1.3 {
		t.Fatalf("%.0f batch reads a second, over the %d/s asked", rate, limit)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

// A target without persistence restarts in the middle of a migration (paced by maxSourceOps so
// it runs for seconds) and loses what was written before. The counts are exact for what was
// written, but the migration must not end "completed": status names the restart with what to
// do, the verification it advises finds the lost keys, and the new migration with "existing":
// "replace" it advises ends equal.
func TestMigrationReportsTargetRestart(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	const n = 3000
	if err := testenv.FillBulk(ctx, sc, "r:", n, 6); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}})
	ep := func(s string) map[string]string { return map[string]string{"setting": s} }
	id, path := a.kickoff(map[string]any{"source": ep("SOURCE_REDIS"), "target": ep("TARGET_REDIS"), "batchKeys": 100, "maxSourceOps": 800})
	deadline := time.Now().Add(time.Minute)
	for dc.DBSize(ctx).Val() < n/3 {
		if time.Now().After(deadline) {
			t.Fatal("the migration did not reach a third of the keys in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dst.Restart(t, true)
	st := a.waitFinal(path, 3*time.Minute)
	if st.State != "completed-with-failures" || len(st.TargetRestarts) != 1 || st.TargetRestarts[0].Addr != dst.Addr ||
		!strings.Contains(st.Warning, "restarted during the migration") || !strings.Contains(st.Warning, `"existing": "replace"`) {
		t.Fatalf("a target restart that lost keys went unreported: state %s, restarts %+v, warning %q", st.State, st.TargetRestarts, st.Warning)
	}
	lost := n - dc.DBSize(ctx).Val()
	if lost <= 0 {
		t.Fatalf("the restart lost nothing: the test did not test anything")
	}
	t.Logf("%s; %d keys lost", st.Warning, lost)
	run := a.verify(id, map[string]any{"full": true})
	vst := a.waitVerify(path, run, 2*time.Minute)
	if vst.Verify.State != "failed" || vst.Verify.Keys.Missing != lost {
		t.Fatalf("verification after the restart: %+v, want %d missing", vst.Verify.Keys, lost)
	}
	_, path = a.kickoff(map[string]any{"source": ep("SOURCE_REDIS"), "target": ep("TARGET_REDIS"), "existing": "replace"})
	if st := a.waitFinal(path, 3*time.Minute); st.State != "completed" || len(st.TargetRestarts) != 0 {
		t.Fatalf("the advised rerun: state %s, restarts %+v", st.State, st.TargetRestarts)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 2000)
}
