package cli

import (
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The target cluster reshards while the copy writes into it: MOVED and ASK redirections are
// followed, and no key is lost.
func TestCopyIntoClusterWhileItReshards(t *testing.T) {
	src := testenv.StartRedis(t)
	dst := testenv.StartCluster(t)
	sc := src.Client(t, 0)
	n := fill(t, sc, 60000)

	ids := make([]string, 0, 3)
	for _, m := range dst.Masters {
		id, err := m.Client(t, 0).Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var reshardOut []byte
	var reshardErr error
	go func() {
		defer wg.Done()
		// Move 3,000 slots (with their keys, as they arrive) from the first master to the second.
		reshardOut, reshardErr = exec.Command("redis-cli", "--cluster", "reshard", dst.Masters[0].Addr,
			"--cluster-from", ids[0], "--cluster-to", ids[1], "--cluster-slots", "3000",
			"--cluster-yes", "--cluster-pipeline", "50").CombinedOutput()
	}()
	code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "4", "--batch-keys", "200", "--no-verify")
	wg.Wait()
	if reshardErr != nil {
		t.Fatalf("reshard: %v\n%s", reshardErr, lastLinesOf(string(reshardOut), 5))
	}
	if code != 0 || sum.KeysCopied != int64(n) || sum.KeysFailed != 0 {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	// Resharding moves keys with MIGRATE, which carries TTLs as relative times: a moved key's
	// expiry drifts by the few milliseconds the move took. That drift is the cluster's, not ours.
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, testenv.ClusterMasters(ctx, t, dst.Masters[0].Addr), nil, 100)
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
