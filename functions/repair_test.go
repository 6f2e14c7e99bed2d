package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// gapMutations changes the source and the target while no chain captures, so only a repair
// pass can find the differences; it returns how many keys differ. Ranges of b:k:<i> keys are
// disjoint per call (base).
func gapMutations(ctx context.Context, t *testing.T, src, dst onlineEndpoint, base int, tag string, change, del, expire, corrupt, add, extra int) int {
	t.Helper()
	do := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < change; i++ {
		do(src.keys.Set(ctx, fmt.Sprintf("b:k:%d", base+i), "changed while capture was down", 0).Err())
	}
	for i := 0; i < del; i++ {
		do(src.keys.Del(ctx, fmt.Sprintf("b:k:%d", base+100+i)).Err())
	}
	for i := 0; i < expire; i++ {
		do(src.keys.PExpire(ctx, fmt.Sprintf("b:k:%d", base+200+i), 10*time.Minute).Err())
	}
	for i := 0; i < corrupt; i++ {
		do(dst.keys.Set(ctx, fmt.Sprintf("b:k:%d", base+300+i), "corrupted in the target", 0).Err())
	}
	for i := 0; i < add; i++ {
		do(src.keys.Set(ctx, fmt.Sprintf("%s:add:%d", tag, i), i, time.Hour).Err())
	}
	for i := 0; i < extra; i++ {
		do(dst.keys.Set(ctx, fmt.Sprintf("%s:extra:%d", tag, i), i, 0).Err())
	}
	return change + del + expire + corrupt + add + extra
}

// chainDown loses chain's next continuation (lose is the fault's switch, cleared once a
// continuation was lost) and waits for its predecessor to release the chain without a
// handover: from then on nothing captures for the chain until status restarts it.
func chainDown(t *testing.T, store *state.Store, id, chain string, lose *atomic.Bool) *state.SyncChain {
	t.Helper()
	ctx := context.Background()
	before, err := store.GetChain(ctx, id, chain)
	if err != nil {
		t.Fatal(err)
	}
	lose.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := store.GetChain(ctx, id, chain)
		if err != nil {
			t.Fatal(err)
		}
		if !lose.Load() && c.Gen == before.Gen && c.Holder == "" && c.HandedTo == -1 && c.Seq >= before.Seq {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("chain %s never released without a handover: %+v", chain, c)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRepaired waits for the restart of the chain status lists at index shard (past generation
// gen) and for its repair pass number pass to finish, and returns the last status and the
// largest progress status showed for the pass while it ran.
func waitRepaired(a *app, path string, shard, gen, pass int, also func(*functions.OnlineStatus)) (*functions.OnlineStatus, functions.RepairStatus) {
	a.t.Helper()
	var seen functions.RepairStatus
	st := a.waitOnline(path, 90*time.Second, fmt.Sprintf("repair pass %d done", pass), func(st *functions.OnlineStatus) bool {
		c := st.Online.Shards[shard]
		if r := c.Repair; r != nil && r.Pass >= pass && (r.Pass > seen.Pass || r.Batches.Done >= seen.Batches.Done) {
			seen = *r
		}
		if also != nil {
			also(st)
		}
		return c.Generation > gen && c.LastRepair != nil && c.LastRepair.Pass >= pass && c.Repair == nil
	})
	return st, seen
}

// A gap's repair pass fans out over the plan and copy queues. Twice, a continuation is lost, so
// the chain dies and capture is down until status restarts it; while it is down keys are
// changed, deleted, given a TTL and added in the source and corrupted and planted in the target.
// The first gap comes under a write load; the second with the writer stopped, so the keys that
// differ are known exactly: its repair batches are delivered twice or twice at once, one of them
// is dead-lettered (the pass blocks, status says so, a cutover waits) until a resume sends it
// again. Status shows the passes as batches, never caught up or consistent while one is open;
// repair batches run in CopyBatch; the cutover ends consistent and the target equals the source
// key by key, TTLs included.
func TestOnlineRepairOverTheQueues(t *testing.T) {
	ctx := context.Background()
	src, dst, az, store := notifyOnlineSetup(t, 1500, 3)
	var loseNext atomic.Bool
	// From pass deadPass on (a pass superseded under load is followed by the next), each pass's
	// first batch is dead-lettered and its others are duplicated.
	var deadPass atomic.Int64
	var resumed atomic.Bool // after the resume, nothing is dead-lettered any more
	var mu sync.Mutex
	repairDeliveries := map[string]int{} // run -> CopyBatch deliveries of its repair batches
	var dups atomic.Int64
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		switch d.Function {
		case "SyncShard":
			if loseNext.Load() && d.DeliveryCount == 1 && !strings.HasSuffix(d.MessageID, ".s0") && loseNext.CompareAndSwap(true, false) {
				return hostharness.Lose
			}
		case "CopyBatch":
			var m struct{ Kind, Run string }
			if json.Unmarshal(d.Body, &m) != nil || m.Kind != "repair" {
				return hostharness.Deliver
			}
			mu.Lock()
			repairDeliveries[m.Run]++
			mu.Unlock()
			var p int64
			if _, err := fmt.Sscanf(m.Run, "c0-p%d", &p); err != nil || deadPass.Load() == 0 || p < deadPass.Load() {
				return hostharness.Deliver
			}
			switch {
			case strings.HasSuffix(d.MessageID, ".s0-d0-c0-0") && !resumed.Load():
				return hostharness.FailBeforeCall // every delivery: dead-lettered; a resend ends in .r<n>
			case d.DeliveryCount > 1:
				return hostharness.Deliver
			case dups.Add(1)%2 == 0:
				return hostharness.DuplicateNow
			default:
				return hostharness.DeliverTwice
			}
		}
		return hostharness.Deliver
	}
	// A 4 s lease: takeovers of a live chain on a loaded machine would supersede the passes.
	a := startApp(t, appOptions{azurite: az, fault: fault, settings: map[string]string{"SOURCE_REDIS": src.url, "TARGET_REDIS": dst.url,
		"SYNC_INVOCATION_SECONDS": "1", "SYNC_LEASE_SECONDS": "4"}})
	id, path := kickoffOnline(a)
	stop := a.watch(path)
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 500, Seed: 11, Keys: 300})
	a.waitOnline(path, 60*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })

	// 1. A gap under load.
	c := chainDown(t, store, id, "c0", &loseNext)
	gapMutations(ctx, t, src, dst, 0, "gap1", 30, 10, 5, 5, 10, 7)
	st, seen := waitRepaired(a, path, 0, c.Gen, c.RepairPasses+1, nil)
	last := st.Online.Shards[0].LastRepair
	if seen.Batches.Sent == 0 || seen.ShardsTotal != 2 || last.Batches == 0 || last.Differing < 67 {
		t.Fatalf("first repair pass: seen in progress %+v, finished %+v", seen, last)
	}
	t.Logf("pass %d under load: %d batches, %d keys differed; in progress status showed %+v", last.Pass, last.Batches, last.Differing, seen)
	w.Stop()
	a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	time.Sleep(1500 * time.Millisecond) // the writer's sub-second TTLs expire on both sides

	// 2. A gap with the writer stopped: the differing keys are known.
	c = chainDown(t, store, id, "c0", &loseNext)
	pass := c.RepairPasses + 1
	deadPass.Store(int64(pass))
	want := gapMutations(ctx, t, src, dst, 400, "gap2", 20, 8, 4, 3, 9, 6)
	if code, _, body := a.do("POST", path+"/cutover", testKey, nil); code != http.StatusAccepted {
		t.Fatalf("cutover: %d %s", code, body)
	}
	blocked := a.waitOnline(path, 90*time.Second, "blocked by a dead-lettered repair batch", func(st *functions.OnlineStatus) bool {
		r := st.Online.Shards[0].Repair
		return r != nil && r.Pass >= pass && r.Batches.DeadLettered == 1 && r.Blocked != ""
	})
	bc := blocked.Online.Shards[0]
	if blocked.State != functions.StateCuttingOver || blocked.Online.Cutover.State != state.CutoverWaiting || blocked.Online.CaughtUp ||
		blocked.Online.GapsOpen != 1 || !strings.Contains(bc.GapReason, "cannot complete") || !strings.Contains(bc.GapReason, "resume") {
		b, _ := json.MarshalIndent(blocked, "", " ")
		t.Fatalf("status of a blocked repair pass: %s", b)
	}
	resumed.Store(true)
	code, _, body := a.do("POST", path+"/resume", testKey, nil)
	var rr functions.ResumeResponse
	if code != http.StatusAccepted || json.Unmarshal(body, &rr) != nil || rr.RepairBatches != 1 {
		t.Fatalf("resume: %d %s", code, body)
	}
	st, seen = waitRepaired(a, path, 0, c.Gen, pass, func(st *functions.OnlineStatus) {
		if st.State == functions.StateConsistent && st.Online.Shards[0].Repair != nil {
			t.Errorf("consistent with a repair pass open")
		}
	})
	last = st.Online.Shards[0].LastRepair
	if last.Pass != pass {
		// Another gap superseded the pass (a takeover on a loaded machine): the keys the first
		// pass applied are not found again, so only the last pass's own count is exact.
		t.Logf("pass %d was superseded by pass %d; its exact count is not checked", pass, last.Pass)
	} else if last.Differing != int64(want) || last.Batches != seen.Batches.Sent {
		t.Fatalf("repair pass %d with duplicated deliveries: want exactly %d differing keys over %d batches, got %+v (in progress: %+v)",
			pass, want, seen.Batches.Sent, last, seen)
	}
	mu.Lock()
	n1, n2 := repairDeliveries[state.RepairRun("c0", pass-1)], repairDeliveries[state.RepairRun("c0", last.Pass)]
	mu.Unlock()
	if n2 <= int(last.Batches) || dups.Load() == 0 || !strings.Contains(a.log.String(), "already recorded") {
		t.Fatalf("pass %d: %d CopyBatch deliveries of its %d batches, %d duplicated", pass, n2, last.Batches, dups.Load())
	}
	st = a.waitOnline(path, 90*time.Second, "cut over", func(st *functions.OnlineStatus) bool {
		c := st.Online.Cutover
		return c != nil && (c.State == state.CutoverConsistent || c.State == state.CutoverFailed)
	})
	if st.State != functions.StateConsistent {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("cutover after the repair: %s", b)
	}
	seenStates := stop()
	t.Logf("pass %d: %d batches (%d CopyBatch deliveries; the pass before: %d), %d keys differed as planted; states %v",
		pass, last.Batches, n2, n1, last.Differing, seenStates)
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 1000)
}

// With a cluster source there is one chain per source master, and a chain's repair pass looks
// only at the keys whose slot its master owns: in the target as in the source. While chain c1
// captures nothing, keys of its master are changed and added in the source, and keys are planted
// in the target, some in its master's slots and some in the other masters'. Its repair pass
// finds exactly the former and removes those planted in its own slots; the others are left for
// their own chains (which saw no gap), not deleted by a chain that does not own them.
func TestOnlineRepairClusterSourceOwnSlots(t *testing.T) {
	ctx := context.Background()
	src, dst := onlineCluster(t, "--notify-keyspace-events", "KA"), onlineStandalone(t)
	const n = 1500
	if err := testenv.FillBulk(ctx, src.keys, "b:", n, 3); err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	store, err := state.Open(ctx, az.ConnectionString, state.DefaultContainer)
	if err != nil {
		t.Fatal(err)
	}
	var loseNext atomic.Bool
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		var m struct{ Chain string }
		if d.Function == "SyncShard" && loseNext.Load() && d.DeliveryCount == 1 && !strings.HasSuffix(d.MessageID, ".s0") &&
			json.Unmarshal(d.Body, &m) == nil && m.Chain == "c1" && loseNext.CompareAndSwap(true, false) {
			return hostharness.Lose
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{azurite: az, fault: fault, settings: map[string]string{"SOURCE_REDIS": src.url, "TARGET_REDIS": dst.url,
		"SYNC_INVOCATION_SECONDS": "1", "SYNC_LEASE_SECONDS": "4"}})
	id, path := kickoffOnline(a)
	st := a.waitOnline(path, 90*time.Second, "caught up", caughtUp)
	shard := -1
	for i, c := range st.Online.Shards {
		if c.Chain == "c1" {
			shard = i
		}
	}
	if len(st.Online.Shards) != len(src.nodes) || shard < 0 {
		t.Fatalf("want one chain per source master (%d), c1 among them: %+v", len(src.nodes), st.Online.Shards)
	}
	owner := st.Online.Shards[shard].Addr
	cluster := src.keys.(*redis.ClusterClient)
	ownsKey := func(key string) bool {
		m, err := cluster.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr == owner
	}
	// keysOf picks count names of the form format (with an index) in c1's slots (own) or not.
	keysOf := func(format string, own bool, count int) []string {
		var out []string
		for i := 0; len(out) < count; i++ {
			if k := fmt.Sprintf(format, i); ownsKey(k) == own {
				out = append(out, k)
			}
		}
		return out
	}

	c := chainDown(t, store, id, "c1", &loseNext)
	changed, added := keysOf("b:k:%d", true, 10), keysOf("gap:add:%d", true, 5)
	ownExtra, otherExtra := keysOf("gap:extra:%d", true, 6), keysOf("gap:extra:%d", false, 7)
	for _, k := range changed {
		if err := src.keys.Set(ctx, k, "changed while c1 captured nothing", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range added {
		if err := src.keys.Set(ctx, k, i, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range append(append([]string(nil), ownExtra...), otherExtra...) {
		if err := dst.keys.Set(ctx, k, "only in the target", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	st, _ = waitRepaired(a, path, shard, c.Gen, c.RepairPasses+1, nil)
	want := int64(len(changed) + len(added) + len(ownExtra))
	if last := st.Online.Shards[shard].LastRepair; last.Differing != want {
		t.Fatalf("c1's repair pass: want exactly %d differing keys (%d changed, %d added in its master, %d planted in its slots; "+
			"%d planted in other slots are not its own), got %+v", want, len(changed), len(added), len(ownExtra), len(otherExtra), last)
	}
	a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	if n, err := dst.keys.Exists(ctx, ownExtra...).Result(); err != nil || n != 0 {
		t.Fatalf("keys planted in c1's slots: %d still in the target (%v)", n, err)
	}
	if n, err := dst.keys.Exists(ctx, otherExtra...).Result(); err != nil || n != int64(len(otherExtra)) {
		t.Fatalf("keys planted in other masters' slots: %d of %d left in the target (%v); c1's pass removed keys it does not own",
			n, len(otherExtra), err)
	}
	// Those belong to no gap the tool saw: take them out, then the cutover is consistent.
	if err := dst.keys.Del(ctx, otherExtra...).Err(); err != nil {
		t.Fatal(err)
	}
	st = a.cutover(path, nil)
	if st.State != functions.StateConsistent {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("cutover: %s", b)
	}
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 1000)
}
