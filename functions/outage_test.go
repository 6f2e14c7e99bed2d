package functions_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The target goes away for 5 s in the middle of a migration and comes back (with its data: AOF,
// fsync always). Failed deliveries back off (RETRY_BASE_MS doubling) instead of burning the
// queue's deliveries at once: the outage costs delay, no batch is dead-lettered, the counts are
// exact and the target equals the source. The restart is reported until a full verification
// after it passes.
func TestTargetOutageCostsDelayNotDeadLetters(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartRedis(t)
	dst := testenv.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "o:", 3000, 11); err != nil {
		t.Fatal(err)
	}
	var copies, retried atomic.Int64
	var once sync.Once
	outage := make(chan struct{})
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" {
			return hostharness.Deliver
		}
		if d.DeliveryCount > 1 {
			retried.Add(1)
		}
		if copies.Add(1) == 10 {
			once.Do(func() {
				dst.Kill()
				t.Logf("target stopped after 10 batch deliveries")
				go func() {
					defer close(outage)
					time.Sleep(5 * time.Second)
					dst.Restart(t, true)
					t.Logf("target back")
				}()
			})
		}
		return hostharness.Deliver
	}
	// 5 deliveries: waits of about 0.5, 1, 2 and 4 s after the first four failures (7.5 s) outlast
	// the 5 s outage; redelivered at once, they would all be spent in well under a second.
	a := startApp(t, appOptions{fault: fault, settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(),
		"SERVICEBUS_MAX_DELIVERY_COUNT": "5", "RETRY_BASE_MS": "600"}})
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 50})
	st := a.waitFinal(path, 3*time.Minute)
	<-outage
	if retried.Load() == 0 {
		t.Fatal("no delivery was retried: the outage missed the migration")
	}
	if !strings.Contains(a.log.String(), "retrying in") {
		t.Fatal("no backoff in the log")
	}
	t.Logf("%d deliveries were retries; batches %+v", retried.Load(), st.Batches)
	// The target came back as another process: until a full verification after it finds every
	// key, the migration is not "completed".
	if st.State != state.StateCompletedWithFailures || len(st.TargetRestarts) != 1 {
		t.Fatalf("the target's restart went unreported: state %s, restarts %+v", st.State, st.TargetRestarts)
	}
	if run := a.verify(id, map[string]any{"full": true}); a.waitVerify(path, run, 2*time.Minute).Verify.State != state.VerifyPassed {
		t.Fatal("the full verification after the restart did not pass")
	}
	st = a.waitFinal(path, time.Minute)
	if !strings.Contains(st.Warning, "nothing was lost") {
		t.Fatalf("warning after the verification: %q", st.Warning)
	}
	checkCounts(t, st, 3000)
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}
