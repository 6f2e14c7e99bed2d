package cli

import (
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// The target drops the copier's connections in the middle of pipelines. Batches are retried;
// keys a failed attempt already wrote are recognized as ours (the target was empty at the start),
// so nothing is lost and nothing is reported as a clash.
func TestCopySurvivesTargetDroppingConnections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
		bigKey  string
	}{{"standalone", false, "8388608"}, {"cluster", true, "8388608"}, {"cluster-chunked", true, "2000"}} {
		cluster := tc.cluster
		t.Run(tc.name, func(t *testing.T) {
			src := testenv.StartRedis(t)
			sc := src.Client(t, 0)
			n := fill(t, sc, 20000)
			var dstURL string
			var dstNodes []*redis.Client
			if cluster {
				cl := testenv.StartCluster(t)
				dstURL, dstNodes = cl.URL(), testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr)
			} else {
				s := testenv.StartRedis(t)
				dstURL, dstNodes = s.URL(), []*redis.Client{s.Client(t, 0)}
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(40 * time.Millisecond):
					}
					// Kill every normal client but this one (SKIPME yes is the default).
					for _, node := range dstNodes {
						node.Do(ctx, "CLIENT", "KILL", "TYPE", "normal")
					}
				}
			}()
			// In the chunked case the keys over 2,000 bytes are built in scratch keys piece by piece.
			code, sum, _ := runJSON(t, "copy", "--source", src.URL(), "--target", dstURL, "--batch-keys", "100", "--no-verify",
				"--big-key-bytes", tc.bigKey)
			close(stop)
			wg.Wait()
			if code != 0 || sum.KeysCopied != int64(n) || sum.KeysFailed != 0 {
				t.Fatalf("exit %d summary %+v", code, sum)
			}
			testenv.AssertSameData(ctx, t, []*redis.Client{sc}, dstNodes, nil, 1)
		})
	}
}
