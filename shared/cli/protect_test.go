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
	for _, line := range strings.Split(c.Info(ctx, "commandstats").Val(), "\n") {
		if _, rest, ok := strings.Cut(line, ":calls="); ok {
			v, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			n += v
		}
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
