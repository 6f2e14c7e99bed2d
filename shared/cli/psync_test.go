package cli

import (
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// sync --feed psync under a mixed write load: the snapshot is the initial copy, the stream the
// rest; the replication link is killed mid-sync and continues without a gap; at the cutover the
// target equals the source key by key.
func TestSyncPsyncUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst func(*testing.T, ...string) endpoint
	}{
		{"standalone-to-standalone", standalone, standalone},
		{"cluster-to-cluster", cluster, cluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src(t, "--repl-diskless-sync-delay", "0")
			dst := tc.dst(t)
			if err := testenv.FillBulk(ctx, src.keys, "b:", 20000, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := testenv.FillAllTypes(ctx, src.keys, "t:"); err != nil {
				t.Fatal(err)
			}
			w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 4000, Seed: 5})
			time.Sleep(300 * time.Millisecond)
			r := startSync(t, "--source", src.url, "--target", dst.url, "--feed", "psync", "--json", "--verify-full")
			r.waitLog("capturing changes with the psync feed", 60*time.Second)
			time.Sleep(1500 * time.Millisecond)
			for _, n := range src.nodes {
				if err := n.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(1500 * time.Millisecond)
			n := w.Stop()
			code, res := r.finish(60 * time.Second)
			if code != 0 || !res.Matches {
				t.Fatalf("exit %d, result %+v", code, res)
			}
			if res.Status.Gaps != 0 {
				t.Fatalf("a killed link that the source continued was reported as a gap: %+v", res.Status)
			}
			if res.Status.Applied == 0 {
				t.Fatalf("no change was applied: %+v", res.Status)
			}
			t.Logf("%d writes; applied %d keys, %d gaps, %d repairs", n, res.Status.Applied, res.Status.Gaps, res.Status.Repairs)
			time.Sleep(1200 * time.Millisecond) // keys with sub-second TTLs expire on both sides
			testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 5)
		})
	}
}
