package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// sync --feed psync under a mixed write load with one FLUSHDB: the snapshot is the initial copy,
// the stream the rest; the replication link is killed mid-sync and continues without a gap (the
// FLUSHDB's is the only one); at the cutover the target equals the source key by key.
func TestSyncPsyncUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst func(*testing.T, ...string) endpoint
	}{
		{"standalone-to-standalone", standalone, standalone},
		{"cluster-to-cluster", cluster, cluster},
		{"standalone-to-cluster", standalone, cluster},
		{"valkey8-to-redis70", valkey, standalone}, // the snapshot through the importer's fallback
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
			w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 4000, Seed: 5, FlushAfter: 8000})
			time.Sleep(300 * time.Millisecond)
			r := startSync(t, "--source", src.url, "--target", dst.url, "--feed", "psync", "--json", "--verify-full")
			r.waitLog("capturing changes with the psync feed", 60*time.Second)
			// Kill the links once the snapshots are in (a link killed during its snapshot is a
			// new full sync and a gap, as it must be).
			deadline := time.Now().Add(60 * time.Second)
			for !strings.Contains(r.out.String(), `"phase":"syncing"`) && !strings.Contains(r.out.String(), `"phase":"in-sync"`) {
				if time.Now().After(deadline) {
					t.Fatalf("the snapshots did not load:\n%s", r.errb.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			for _, n := range src.nodes {
				if k, err := n.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Int(); err != nil || k == 0 {
					t.Fatalf("CLIENT KILL TYPE replica: %d %v", k, err)
				}
			}
			time.Sleep(1500 * time.Millisecond)
			n := w.Stop()
			if !w.Flushed.Load() {
				t.Fatalf("the writer never ran its FLUSHDB (%d writes)", n)
			}
			code, res := r.finish(60 * time.Second)
			if code != 0 || !res.Matches {
				t.Fatalf("exit %d, result %+v", code, res)
			}
			logs := r.errb.String()
			if !strings.Contains(logs, "link ended") {
				t.Fatalf("no link was broken:\n%s", logs)
			}
			flushGaps := 0
			for _, line := range strings.Split(logs, "\n") {
				if !strings.Contains(line, "gap on shard") {
					continue
				}
				if !strings.Contains(line, "was flushed") {
					t.Fatalf("a gap besides the FLUSHDB (a killed link the source continued must not be one): %s", line)
				}
				flushGaps++
			}
			if flushGaps == 0 || res.Status.Repairs == 0 {
				t.Fatalf("the FLUSHDB was not a gap repaired (%d gap lines): %+v", flushGaps, res.Status)
			}
			if res.Status.Applied == 0 {
				t.Fatalf("no change was applied: %+v", res.Status)
			}
			t.Logf("%d writes; applied %d keys, %d gaps, %d repairs", n, res.Status.Applied, res.Status.Gaps, res.Status.Repairs)
			time.Sleep(1200 * time.Millisecond) // keys with sub-second TTLs expire on both sides
			if tc.name == "valkey8-to-redis70" {
				// A SCAN reclaims keys that expired but still count in DBSIZE.
				for _, n := range append(src.nodes, dst.nodes...) {
					it := n.Scan(ctx, 0, "*", 1000).Iterator()
					for it.Next(ctx) {
					}
					if err := it.Err(); err != nil {
						t.Fatal(err)
					}
				}
				assertSameByVerify(t, src.url, dst.url)
				return
			}
			testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 5)
		})
	}
}

// The psync feed on a source that refuses replication (an ACL user without PSYNC/REPLCONF, as
// Azure Cache, ElastiCache and AMR refuse them to everyone): exit 2, one line naming what is
// missing, no password, nothing written.
func TestSyncPsyncRefused(t *testing.T) {
	src, dst := standalone(t), standalone(t)
	if err := src.nodes[0].Do(ctx, "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "&*", "+@read", "+@connection", "+info", "+command").Err(); err != nil {
		t.Fatal(err)
	}
	src.keys.Set(ctx, "k", "v", 0)
	url := "redis://reader:s3cret-pw@" + strings.TrimPrefix(src.url, "redis://")
	code, _, errs := run(t, "sync", "--state", t.TempDir()+"/state.json", "--source", url, "--target", dst.url, "--feed", "psync", "--cutover")
	if code != 2 || !strings.Contains(errs, "+psync") || strings.Contains(errs, "s3cret-pw") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("exit %d:\n%s", code, errs)
	}
	if n, err := dst.keys.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("target holds %d keys (%v) after a refused sync", n, err)
	}
}

// --type with the psync feed: the snapshot is filtered like the changes, so the target holds
// the keys of that type only (the snapshot used to bring every type along).
func TestSyncPsyncTypeFilter(t *testing.T) {
	src, dst := standalone(t, "--repl-diskless-sync-delay", "0"), standalone(t)
	if err := testenv.FillBulk(ctx, src.keys, "b:", 2000, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.FillAllTypes(ctx, src.keys, "t:"); err != nil {
		t.Fatal(err)
	}
	hashes := func(c *redis.Client) map[string]bool {
		out := map[string]bool{}
		it := c.ScanType(ctx, 0, "*", 1000, "hash").Iterator()
		for it.Next(ctx) {
			out[it.Val()] = true
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := hashes(src.nodes[0])
	if len(want) == 0 {
		t.Fatal("the source has no hash")
	}
	code, _, errs := run(t, "sync", "--state", t.TempDir()+"/state.json", "--source", src.url, "--target", dst.url,
		"--feed", "psync", "--type", "hash", "--cutover", "--verify-full")
	if code != 0 || !strings.Contains(errs, "with the psync feed") {
		t.Fatalf("exit %d:\n%s", code, errs)
	}
	n, err := dst.keys.DBSize(ctx).Result()
	if err != nil || n != int64(len(want)) {
		t.Fatalf("target holds %d keys (%v), want the source's %d hashes", n, err, len(want))
	}
	for k := range hashes(dst.nodes[0]) {
		if !want[k] {
			t.Fatalf("target hash %q is not a source hash", k)
		}
	}
}

// A psync sync killed with SIGKILL and run again continues from the replication id and offset of
// its state file when the source's backlog still holds them (no snapshot, no gap, no repair);
// when the backlog no longer does, the rerun repairs instead of copying everything again. Both
// end equal.
func TestSyncPsyncKilledAndRerun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backlog string
		down    time.Duration
	}{
		{"backlog-holds-the-gap", "64mb", time.Second},
		{"backlog-exceeded", "16kb", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := standalone(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", tc.backlog)
			dst := standalone(t)
			if err := testenv.FillBulk(ctx, src.keys, "b:", 20000, 6); err != nil {
				t.Fatal(err)
			}
			w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 3000, Seed: 21})
			defer w.Stop()
			state := t.TempDir() + "/state.json"
			args := []string{"sync", "--state", state, "--source", src.url, "--target", dst.url, "--feed", "psync", "--verify-full"}
			start := func() (*exec.Cmd, *syncBuffer) { return startBinary(t, args...) }
			cmd, errb := start()
			// Killed once the state file holds a replication position.
			deadline := time.Now().Add(60 * time.Second)
			for {
				if b, _ := os.ReadFile(state); strings.Contains(string(b), `"positions"`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no position saved:\n%s", errb.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Logf("first run (killed):\n%s", errb.String())
			time.Sleep(tc.down) // writes nobody captures but the backlog
			cmd, errb = start()
			deadline = time.Now().Add(60 * time.Second)
			for !strings.Contains(errb.String(), "capturing changes") {
				if time.Now().After(deadline) {
					t.Fatalf("the rerun did not start:\n%s", errb.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if tc.name == "backlog-exceeded" {
				deadline = time.Now().Add(60 * time.Second)
				for !strings.Contains(errb.String(), "repair of") {
					if time.Now().After(deadline) {
						t.Fatalf("no repair pass:\n%s", errb.String())
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			time.Sleep(time.Second)
			w.Stop()
			_ = cmd.Process.Signal(os.Interrupt)
			err := cmd.Wait()
			logs := errb.String()
			t.Logf("second run:\n%s", logs)
			if err != nil || !strings.Contains(logs, "switch") {
				t.Fatalf("rerun: %v", err)
			}
			switch tc.name {
			case "backlog-holds-the-gap":
				if strings.Contains(logs, "snapshot") || strings.Contains(logs, "gap on shard") || strings.Contains(logs, "repair of") {
					t.Fatalf("the source continued the stream, yet the rerun saw a snapshot or a gap")
				}
			case "backlog-exceeded":
				if !strings.Contains(logs, "could not continue from the saved replication position") ||
					!strings.Contains(logs, "the repair pass covers it") {
					t.Fatalf("the rerun did not repair after a full resynchronisation")
				}
			}
			time.Sleep(1200 * time.Millisecond)
			testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 5)
		})
	}
}
