package cli

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// aof is a server that keeps every acknowledged write across a crash.
var aof = []string{"--appendonly", "yes", "--appendfsync", "always"}

// keysIn sums DBSIZE over nodes.
func keysIn(nodes []*redis.Client) int64 {
	var n int64
	for _, c := range nodes {
		n += c.DBSize(ctx).Val()
	}
	return n
}

// copyAsync runs a copy in the background; wait returns its outcome.
func copyAsync(t *testing.T, args ...string) (wait func() (int, engine.Summary, string)) {
	var wg sync.WaitGroup
	var code int
	var sum engine.Summary
	var errs string
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, sum, errs = runJSON(t, args...)
	}()
	return func() (int, engine.Summary, string) { wg.Wait(); return code, sum, errs }
}

// whenTargetHolds waits until the target holds at least n keys (or the copy ended).
func whenTargetHolds(t *testing.T, nodes []*redis.Client, n int64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if keysIn(nodes) >= n {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// The source (with AOF) is killed and restarted twice during a copy, standalone and a cluster
// (every master, so the shard being scanned is among them). A restarted server does not know
// the old SCAN cursor: the shard is scanned again from the start, keys already sent are not sent
// again, and batches that hit the restart (refused connections, LOADING, CLUSTERDOWN) wait and
// retry, overwriting what their own earlier attempt wrote. Meanwhile another client writes some
// of the keys into the target first: those, and only those, are reported failed, each with the
// real cause ("target already holds this key"); every other key is copied and counted once. The
// rerun the README suggests (--existing replace --verify-full) then ends equal.
func TestCopySurvivesSourceRestarts(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "standalone"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			var srcURL string
			var srcNodes []*redis.Client
			var srcClient redis.UniversalClient
			var victims []*testenv.Server
			if cluster {
				cl := testenv.StartCluster(t, aof...)
				srcURL, srcClient = cl.URL(), cl.Client(t)
				srcNodes = testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr)
				victims = cl.Masters
			} else {
				s := testenv.StartRedis(t, aof...)
				srcURL, srcClient, srcNodes, victims = s.URL(), s.Client(t, 0), []*redis.Client{s.Client(t, 0)}, []*testenv.Server{s}
			}
			dst := testenv.StartRedis(t)
			dc := dst.Client(t, 0)
			dstNodes := []*redis.Client{dc}
			n := fill(t, srcClient, 30000)
			wait := copyAsync(t, "copy", "--source", srcURL, "--target", dst.URL(), "--workers", "1", "--batch-keys", "50")
			if !whenTargetHolds(t, dstNodes, 1, time.Minute) {
				t.Fatal("the copy wrote nothing")
			}
			// Another writer gets to some keys before the copy does (after its empty-target check).
			intruded := map[string]bool{}
			for i := 7; i < 30000 && len(intruded) < 80; i += 373 {
				k := "b:k:" + strconv.Itoa(i)
				if ok, err := dc.SetNX(ctx, k, "written by someone else", 0).Result(); err != nil {
					t.Fatal(err)
				} else if ok {
					intruded[k] = true
				}
			}
			restarts := 0
			for _, at := range []int64{int64(n) / 4, int64(n) * 3 / 5} {
				if !whenTargetHolds(t, dstNodes, at, time.Minute) {
					break
				}
				for _, v := range victims {
					v.Restart(t, false) // may still answer LOADING when the copy reaches it
				}
				restarts++
			}
			code, sum, errs := wait()
			if restarts < 2 {
				t.Fatalf("the copy ended before the source could be restarted twice (%d)", restarts)
			}
			if sum.SourceRestarts == 0 {
				t.Fatalf("the source's restarts were not noticed: %+v", sum)
			}
			if strings.Contains(errs, "verification could not run") {
				t.Fatalf("the closing verification gave up on the restarted source:\n%s", errs)
			}
			// The keys that differ are exactly the keys reported failed, each for its real cause.
			want, err := testenv.Snapshot(ctx, srcNodes, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := testenv.Snapshot(ctx, dstNodes, nil)
			if err != nil {
				t.Fatal(err)
			}
			differ := map[string]bool{}
			for k, w := range want {
				if g, ok := got[k]; !ok || len(testenv.DiffSnapshots(map[string]testenv.KeyState{k: w}, map[string]testenv.KeyState{k: g}, 1)) > 0 {
					differ[k] = true
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("key %q is in the target only", k)
				}
			}
			failed := map[string]bool{}
			for _, f := range sum.Failures {
				failed[f.Key] = true
				if !strings.Contains(f.Reason, "target already holds this key") {
					t.Errorf("key %q failed for %q, not for the key another writer put there", f.Key, f.Reason)
				}
				if !intruded[f.Key] {
					t.Errorf("key %q reported failed but no other writer touched it", f.Key)
				}
			}
			for k := range differ {
				if !failed[k] {
					t.Errorf("key %q differs in the target but is not reported failed", k)
				}
			}
			for k := range failed {
				if !differ[k] {
					t.Errorf("key %q reported failed but the target holds the source's value", k)
				}
			}
			if len(differ) == 0 {
				t.Fatalf("no key was written by the other writer first (%d tried): the test did not test anything", len(intruded))
			}
			if code != ExitFailures || sum.KeysFailed != int64(len(failed)) || sum.KeysScanned != int64(n) ||
				sum.KeysCopied != int64(n-len(failed)) {
				t.Fatalf("exit %d summary %+v (%d keys differ)\n%s", code, sum, len(differ), errs)
			}
			t.Logf("%d source restarts noticed, %d keys written first by another writer, %d of them reported failed (the rest overwritten by a retried batch)",
				sum.SourceRestarts, len(intruded), len(failed))
			// The README's rerun without a state file.
			code, sum, errs = runJSON(t, "copy", "--source", srcURL, "--target", dst.URL(), "--existing", "replace", "--verify-full")
			if code != 0 || sum.KeysCopied != int64(n) {
				t.Fatalf("rerun: exit %d summary %+v\n%s", code, sum, errs)
			}
			testenv.AssertSameData(ctx, t, srcNodes, dstNodes, nil, 1)
		})
	}
}

// A target without persistence restarts in the middle of a copy and loses every key written so
// far. The copy must not claim success: it names the restart, advises the rerun, and exits 1;
// the rerun it advises ends equal.
func TestCopyReportsTargetRestartWithoutPersistence(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 30000)
	wait := copyAsync(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "1", "--batch-keys", "50")
	if !whenTargetHolds(t, []*redis.Client{dc}, int64(n)/3, time.Minute) {
		t.Fatal("the copy ended before the target could be restarted")
	}
	dst.Restart(t, true)
	code, sum, errs := wait()
	if code == 0 || sum.TargetRestarts == 0 || !strings.Contains(errs, "restarted during the copy") || !strings.Contains(errs, "--existing replace") {
		t.Fatalf("a target restart that lost keys went unreported: exit %d summary %+v\n%s", code, sum, errs)
	}
	if got := dc.DBSize(ctx).Val(); got >= int64(n) {
		t.Fatalf("the restart lost nothing (%d keys): the test did not test anything", got)
	}
	code, _, _ = runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "replace", "--verify-full")
	if code != 0 {
		t.Fatalf("rerun: exit %d", code)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}

// A target with AOF restarts mid-copy and answers LOADING for a while (key-load-delay slows its
// load). Batches wait for it instead of failing their keys; the restart is reported, and since
// the full verification finds every key, nothing was lost and the copy exits 0.
func TestCopyWaitsForTargetLoading(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartRedis(t, append([]string{"--aof-use-rdb-preamble", "yes", "--key-load-delay", "100",
		"--loading-process-events-interval-bytes", "1024"}, aof...)...)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 30000)
	wait := copyAsync(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "2", "--batch-keys", "50", "--verify-full")
	if !whenTargetHolds(t, []*redis.Client{dc}, int64(n)/3, time.Minute) {
		t.Fatal("the copy ended before the target could be restarted")
	}
	// Rewrite the AOF so its base is an RDB preamble (key-load-delay slows RDB loading).
	if err := dc.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500 && strings.Contains(dc.Info(ctx, "persistence").Val(), "aof_rewrite_in_progress:1"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	dst.Restart(t, false)
	sawLoading := false
	probe := redis.NewClient(&redis.Options{Addr: dst.Addr, MaxRetries: -1})
	defer probe.Close()
	for i := 0; i < 200; i++ {
		err := probe.Ping(ctx).Err()
		if err != nil && strings.HasPrefix(err.Error(), "LOADING") {
			sawLoading = true
			break
		}
		if err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, sum, errs := wait()
	if !sawLoading {
		t.Fatalf("the restarted target never answered LOADING: the test did not test anything")
	}
	if code != 0 || sum.KeysFailed != 0 || sum.KeysCopied != int64(n) || sum.TargetRestarts == 0 || !strings.Contains(errs, "nothing was lost") {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}

// busyFor runs a Lua script on c that keeps the server busy for d: past busy-reply-threshold,
// every other client is answered BUSY. It returns once the server was seen answering BUSY.
func busyFor(t *testing.T, c *redis.Client, addr string, d time.Duration) (done <-chan error) {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		ch <- c.Eval(ctx, `local s = redis.call('TIME')
while true do
  local n = redis.call('TIME')
  if (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1]) then return 1 end
end`, nil, d.Microseconds()).Err()
	}()
	probe := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer probe.Close()
	for i := 0; i < 400; i++ {
		if err := probe.Ping(ctx).Err(); err != nil && strings.HasPrefix(err.Error(), "BUSY ") {
			return ch
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never answered BUSY", addr)
	return nil
}

// A source, then a target, busy running a long script (every other client answered BUSY for
// over a second) mid-copy: batches wait with backoff and retry; no key is failed, the copy
// exits 0 and the target equals the source. The source's BUSY answers also slow its reads down
// (shared/pace), which the summary counts.
func TestCopyWaitsForBusyServers(t *testing.T) {
	busy := []string{"--busy-reply-threshold", "50"}
	src, dst := testenv.StartRedis(t, busy...), testenv.StartRedis(t, busy...)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 30000)
	wait := copyAsync(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "2", "--batch-keys", "50")
	var scripts []<-chan error
	for i, at := range []int64{int64(n) / 4, int64(n) * 3 / 5} {
		if !whenTargetHolds(t, []*redis.Client{dc}, at, time.Minute) {
			t.Fatal("the copy ended before the servers could be kept busy")
		}
		if i == 0 {
			scripts = append(scripts, busyFor(t, sc, src.Addr, 1500*time.Millisecond))
		} else {
			if dc.DBSize(ctx).Val() >= int64(n) {
				t.Fatal("every key was written before the target could be kept busy: the test did not test anything")
			}
			scripts = append(scripts, busyFor(t, dc, dst.Addr, 1500*time.Millisecond))
		}
		if err := <-scripts[i]; err != nil {
			t.Fatalf("busy script: %v", err)
		}
	}
	code, sum, errs := wait()
	if code != 0 || sum.KeysFailed != 0 || sum.KeysCopied != int64(n) || len(sum.Failures) != 0 {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	// The source's BUSY answers made the reads back off (adaptive backoff), and it is said.
	if sum.SourceSlowdowns == 0 || !strings.Contains(errs, "the source answered slowly or busy") {
		t.Fatalf("no backoff from the busy source: %+v\n%s", sum, errs)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}

// The source is a replica that answers MASTERDOWN while its master is away
// (replica-serve-stale-data no): the master is killed mid-copy and started again, the replica
// resyncs, and the copy waits for it instead of failing keys; the target equals the source.
func TestCopyWaitsForReplicaMasterDown(t *testing.T) {
	master := testenv.StartRedis(t, aof...)
	mc := master.Client(t, 0)
	n := fill(t, mc, 30000)
	replica := testenv.StartRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port), "--replica-serve-stale-data", "no")
	rc := replica.Client(t, 0)
	waitFor(t, func() bool {
		return strings.Contains(rc.Info(ctx, "replication").Val(), "master_link_status:up") && rc.DBSize(ctx).Val() == int64(n)
	})
	dst := testenv.StartRedis(t)
	dc := dst.Client(t, 0)
	wait := copyAsync(t, "copy", "--source", replica.URL(), "--target", dst.URL(), "--workers", "1", "--batch-keys", "50", "--verify-full")
	if !whenTargetHolds(t, []*redis.Client{dc}, int64(n)/4, time.Minute) {
		t.Fatal("the copy ended before the master could be stopped")
	}
	master.Kill()
	probe := redis.NewClient(&redis.Options{Addr: replica.Addr, MaxRetries: -1})
	defer probe.Close()
	waitFor(t, func() bool {
		err := probe.Get(ctx, "b:k:1").Err()
		return err != nil && strings.HasPrefix(err.Error(), "MASTERDOWN")
	})
	time.Sleep(time.Second)
	master.Restart(t, true)
	code, sum, errs := wait()
	if code != 0 || sum.KeysFailed != 0 || sum.KeysCopied != int64(n) || len(sum.Failures) != 0 {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{mc}, []*redis.Client{dc}, nil, 1)
}
