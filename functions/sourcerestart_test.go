package functions_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A source that restarts between two plan steps (here before step 1) comes back as another process, for which the
// shard's SCAN cursor means nothing: keys could be missed. The migration must not say
// completed: the shard fails with the reason, and status names it.
func TestSourceRestartDuringPlanningFailsTheShard(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	dst := testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "r:", 5000, 3); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restarted := make(chan struct{})
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "PlanShard" {
			return hostharness.Deliver
		}
		var pm struct {
			Cursor struct {
				Step int `json:"step"`
			} `json:"cursor"`
		}
		if json.Unmarshal(d.Body, &pm) == nil && pm.Cursor.Step == 1 {
			once.Do(func() {
				src.Restart(t, true)
				close(restarted)
			})
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100})
	st := a.waitFinal(path, 90*time.Second)
	select {
	case <-restarted:
	default:
		t.Fatal("the plan never reached step 1")
	}
	if st.State != state.StateFailed || !strings.Contains(st.Error, "restarted during the scan") {
		t.Fatalf("state %s, error %q; want failed, naming the restart", st.State, st.Error)
	}
	if len(st.Shards) != 1 || !strings.Contains(st.Shards[0].Error, src.Addr) {
		t.Fatalf("shards: %+v", st.Shards)
	}
}
