package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/keywriter"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A cluster target in the middle of moving a slot: the big key that goes in it in chunks is
// built under a scratch key (which the moving slot's ASK sends to the importing master) and
// renamed over its name at the end, and a two-key command in a slot being moved is answered
// TRYAGAIN until the move is done (20 s here). The copy waits and retries the batch; once the
// slot has moved, the key lands: no key is failed for it, the copy says it waited, and the
// target equals the source.
func TestCopyWaitsForSlotMigration(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartCluster(t)
	sc := src.Client(t, 0)
	n := fill(t, sc, 2000)
	const big = "big:{moving}list"
	items := make([]any, 4000)
	for i := range items {
		items[i] = strings.Repeat("x", 40) + string(rune('a'+i%26))
	}
	if err := sc.RPush(ctx, big, items...).Err(); err != nil {
		t.Fatal(err)
	}
	n++
	nodes := testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr)
	slot := int64(keywriter.Slot(big))
	var owner, importer *redis.Client
	for _, c := range nodes {
		if slotOwned(t, c, slot) {
			owner = c
		} else if importer == nil {
			importer = c
		}
	}
	if owner == nil || importer == nil {
		t.Fatalf("no owner of slot %d among the masters", slot)
	}
	ownerID, importerID := nodeID(t, owner), nodeID(t, importer)
	if err := importer.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ownerID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := owner.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", importerID).Err(); err != nil {
		t.Fatal(err)
	}
	wait := copyAsync(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--big-key-bytes", "65536", "--retry-wait", "30s")
	// The scratch key reaches the importing master (asked there by the moving slot): the copy is
	// at the big key, whose rename now meets TRYAGAIN.
	scratch := keywriter.TempKey(big)
	waitFor(t, func() bool {
		n, err := existsAsking(importer, scratch)
		return err == nil && n == 1
	})
	// go-redis retries TRYAGAIN itself (16 times, backing off up to half a second): the move
	// outlasts that, so the batch fails back to the copy, which waits and retries it.
	// Meanwhile the scratch key comes and goes (a failed rename drops it, the retry builds it
	// again), but the big key itself must not appear until the move ends.
	time.Sleep(20 * time.Second)
	if n, err := existsAsking(importer, big); err != nil || n != 0 {
		t.Fatalf("the importing master holds the big key (%d, %v) while its slot is moving: the rename went through", n, err)
	}
	// The move ends: every key of the slot is on the importing master already (the target was
	// empty, so the migrating one never held any), which now owns the slot.
	for _, c := range []*redis.Client{importer, owner} {
		if err := c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", importerID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	code, sum, errs := wait()
	if code != 0 || sum.KeysFailed != 0 || sum.KeysCopied != int64(n) || len(sum.Failures) != 0 {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	if sum.BatchRetries == 0 || !strings.Contains(errs, "the target could not serve") || !strings.Contains(errs, "TRYAGAIN") {
		t.Fatalf("the copy did not say it waited for the target (batch_retries %d):\n%s", sum.BatchRetries, errs)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, nodes, nil, 1)
}

// existsAsking counts which of keys the node holds, asking as a client sent there by ASK would
// (one key at a time: a multi-key EXISTS in a moving slot is itself answered TRYAGAIN).
func existsAsking(c *redis.Client, keys ...string) (int64, error) {
	var total int64
	for _, k := range keys {
		var n *redis.IntCmd
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Do(ctx, "ASKING")
			n = p.Exists(ctx, k)
			return nil
		}); err != nil {
			return 0, err
		}
		total += n.Val()
	}
	return total, nil
}

// slotOwned reports whether the node serves slot.
func slotOwned(t *testing.T, c *redis.Client, slot int64) bool {
	t.Helper()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	id := nodeID(t, c)
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 && r.Nodes[0].ID == id {
			return true
		}
	}
	return false
}

func nodeID(t *testing.T, c *redis.Client) string {
	t.Helper()
	id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
