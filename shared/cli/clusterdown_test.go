package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A cluster target that stops serving part of its slots mid-copy: one master gives up a slot
// (CLUSTER DELSLOTS) and, the cluster no longer covering every slot, answers CLUSTERDOWN for
// every key for a second and a half, then takes the slot back. Batches wait and retry: no key
// is failed for it, the copy exits 0 and the target equals the source.
func TestCopyWaitsForClusterDown(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartCluster(t)
	sc := src.Client(t, 0)
	n := fill(t, sc, 30000)
	nodes := testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr)
	owner := dst.Masters[0].Client(t, 0)
	mine := ownSlot(t, owner)
	wait := copyAsync(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "2", "--batch-keys", "50")
	if !whenTargetHolds(t, nodes, int64(n)/4, time.Minute) {
		t.Fatal("the copy ended before the cluster could go down")
	}
	if err := owner.Do(ctx, "CLUSTER", "DELSLOTS", mine).Err(); err != nil {
		t.Fatalf("CLUSTER DELSLOTS %d: %v", mine, err)
	}
	probe := redis.NewClient(&redis.Options{Addr: dst.Masters[0].Addr, MaxRetries: -1})
	defer probe.Close()
	waitFor(t, func() bool {
		err := probe.Set(ctx, "{probe}x", "1", 0).Err()
		return err != nil && strings.HasPrefix(err.Error(), "CLUSTERDOWN")
	})
	// Every batch holds keys of the down master's slots (the source's keys are spread over all
	// slots), so each one sent in this window meets CLUSTERDOWN.
	time.Sleep(1500 * time.Millisecond)
	if keysIn(nodes) >= int64(n) {
		t.Fatal("every key was written before the cluster went down: the test did not test anything")
	}
	if err := owner.Do(ctx, "CLUSTER", "ADDSLOTS", mine).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTS %d: %v", mine, err)
	}
	code, sum, errs := wait()
	if code != 0 || sum.KeysFailed != 0 || sum.KeysCopied != int64(n) || len(sum.Failures) != 0 {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	// The waits are said: how many batch attempts, and the target's own answer.
	if sum.BatchRetries == 0 || !strings.Contains(errs, "the target could not serve") || !strings.Contains(errs, "CLUSTERDOWN") {
		t.Fatalf("the copy did not say it waited for the target (batch_retries %d):\n%s", sum.BatchRetries, errs)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, nodes, nil, 1)
}

// ownSlot is the first slot the node serves.
func ownSlot(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	id := nodeID(t, c)
	for _, r := range slots {
		if len(r.Nodes) > 0 && r.Nodes[0].ID == id {
			return int64(r.Start)
		}
	}
	t.Fatal("the node serves no slot")
	return 0
}
