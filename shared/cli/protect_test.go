package cli

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// --max-source-ops caps the commands a second the copy sends to the source.
func TestCopyMaxSourceOps(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	n := fill(t, sc, 10000)
	sc.ConfigResetStat(ctx)
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--max-source-ops", "5000", "--no-verify")
	if code != 0 || sum.KeysCopied != int64(n) {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	ops := totalCalls(sc) // commands the source served, the copy's and this INFO
	if rate := float64(ops) / sum.Seconds; rate > 5000*1.3 {
		t.Fatalf("%d commands in %.1fs: %.0f/s, over the 5,000/s asked", ops, sum.Seconds, rate)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)
	code, _, errs := run(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--max-source-ops", "-1")
	if code != ExitUsage || !strings.Contains(errs, "--max-source-ops") {
		t.Fatalf("bad --max-source-ops: exit %d %s", code, errs)
	}
}

func totalCalls(c *redis.Client) int64 {
	var n int64
	for _, v := range testenv.CommandCalls(ctx, c) {
		n += v
	}
	return n
}

// A standalone replica given as the source is read from once it is in sync with its master; a
// replica whose link to the master is down is refused before anything is written.
func TestCopyFromStandaloneReplica(t *testing.T) {
	master := testenv.StartRedis(t)
	mc := master.Client(t, 0)
	n := fill(t, mc, 5000)
	replica := testenv.StartRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	rc := replica.Client(t, 0)
	waitFor(t, func() bool {
		info := rc.Info(ctx, "replication").Val()
		return strings.Contains(info, "master_link_status:up") && rc.DBSize(ctx).Val() == int64(n)
	})
	dst := testenv.StartRedis(t)
	code, sum, errs := runJSON(t, "copy", "--source", replica.URL(), "--target", dst.URL())
	if code != 0 || sum.KeysCopied != int64(n) || !strings.Contains(errs, "the source is a replica of") {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{mc}, []*redis.Client{dst.Client(t, 0)}, nil, 1)

	master.Kill()
	waitFor(t, func() bool { return strings.Contains(rc.Info(ctx, "replication").Val(), "master_link_status:down") })
	dst2 := testenv.StartRedis(t)
	code, _, errs = run(t, "copy", "--source", replica.URL(), "--target", dst2.URL())
	if code != ExitUsage || !strings.Contains(errs, "not in sync") || dst2.Client(t, 0).DBSize(ctx).Val() != 0 {
		t.Fatalf("out-of-sync replica: exit %d\n%s", code, errs)
	}
	code, _, errs = run(t, "copy", "--source", replica.URL(), "--target", dst2.URL(), "--read-from-replica")
	if code != ExitUsage || !strings.Contains(errs, "for a cluster") {
		t.Fatalf("--read-from-replica on a standalone source: exit %d\n%s", code, errs)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --read-from-replica on a cluster whose masters each have a replica: every key is read from a
// replica (the masters see no DUMP; found sent to them by go-redis's ReadOnly routing before), the target equals the source, and a cluster without
// replicas is refused before anything is written.
func TestCopyClusterFromReplicas(t *testing.T) {
	cl := testenv.StartCluster(t)
	n := fill(t, cl.Client(t), 3000)

	dst0 := testenv.StartRedis(t)
	code, _, errs := run(t, "copy", "--source", cl.URL(), "--target", dst0.URL(), "--read-from-replica")
	if code != ExitUsage || !strings.Contains(errs, "no replica") || dst0.Client(t, 0).DBSize(ctx).Val() != 0 {
		t.Fatalf("cluster without replicas: exit %d\n%s", code, errs)
	}

	var masters []*redis.Client
	for _, m := range cl.Masters {
		mc := m.Client(t, 0)
		masters = append(masters, mc)
		id := mc.Do(ctx, "CLUSTER", "MYID").Val()
		r := testenv.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		rc := r.Client(t, 0)
		if err := rc.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", m.Port).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return strings.Contains(rc.ClusterNodes(ctx).Val(), id.(string)) })
		if err := rc.Do(ctx, "CLUSTER", "REPLICATE", id).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, mc := range masters {
		waitFor(t, func() bool {
			info := mc.Info(ctx, "replication").Val()
			return strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
		})
	}
	waitFor(t, func() bool { return strings.Count(masters[0].ClusterNodes(ctx).Val(), "slave") == 3 })
	for _, mc := range masters {
		mc.ConfigResetStat(ctx)
	}
	dst := testenv.StartRedis(t)
	// --no-verify: the closing verification reads the masters (the truth), not the replicas.
	code, sum, errs := runJSON(t, "copy", "--source", cl.URL(), "--target", dst.URL(), "--read-from-replica", "--no-verify")
	if code != 0 || sum.KeysCopied != int64(n) || !strings.Contains(errs, "in-sync replica") {
		t.Fatalf("exit %d summary %+v\n%s", code, sum, errs)
	}
	for _, mc := range masters {
		if stats := mc.Info(ctx, "commandstats").Val(); strings.Contains(stats, "cmdstat_dump:") || strings.Contains(stats, "cmdstat_getrange:") {
			t.Fatalf("a master served value reads: %s", stats)
		}
	}
	testenv.AssertSameData(ctx, t, masters, []*redis.Client{dst.Client(t, 0)}, nil, 1)
}
