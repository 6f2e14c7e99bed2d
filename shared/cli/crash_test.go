package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/resume"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// killCopyMidway runs the real binary and SIGKILLs it once the target holds at least `at` keys.
func killCopyMidway(t *testing.T, dc *redis.Client, at int64, args ...string) {
	t.Helper()
	cmd := exec.Command(binaryPath(t), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for dc.DBSize(ctx).Val() < at {
		select {
		case err := <-done:
			t.Fatalf("the copy ended (%v) before it could be killed at %d keys", err, at)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the copy did not reach the kill point in time")
		}
		time.Sleep(2 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	t.Logf("killed the copy with %d keys in the target", dc.DBSize(ctx).Val())
}

// changeCopiedKeys changes n source keys that are already in the target and returns their names.
func changeCopiedKeys(t *testing.T, sc, dc *redis.Client, n int) map[string]bool {
	t.Helper()
	changed := map[string]bool{}
	iter := dc.Scan(ctx, 0, "b:k:*", 1000).Iterator()
	for iter.Next(ctx) && len(changed) < n {
		k := iter.Val()
		if err := sc.Set(ctx, k, "changed after the crash "+strconv.Itoa(len(changed)), 0).Err(); err != nil {
			t.Fatal(err)
		}
		changed[k] = true
	}
	if len(changed) < n {
		t.Fatalf("only %d copied keys to change", len(changed))
	}
	return changed
}

// Issue 12.3: a copy killed mid-way, then 200 source keys that were already copied change, then
// the rerun with --existing skip --verify-full. The kept stale copies must be reported (exit 1,
// named), never "OK"; the README's crash advice (--existing replace) then ends equal.
func TestCopyRerunAfterCrashReportsStaleSkippedKeys(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 40000)
	killCopyMidway(t, dc, int64(n)/2, "copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "1", "--batch-keys", "50", "--no-verify")
	changed := changeCopiedKeys(t, sc, dc, 200)

	code, sum, errs := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "skip", "--verify-full")
	var rep struct {
		Matching  int64 `json:"keys_matching"`
		TypeDiff  int64 `json:"keys_type_different"`
		ValueDiff int64 `json:"keys_value_different"`
		TTLDiff   int64 `json:"keys_ttl_different"`
		Missing   int64 `json:"keys_missing"`
		Diffs     []struct {
			Key string `json:"key"`
		} `json:"differences"`
	}
	raw, _ := json.Marshal(sum.Verify)
	_ = json.Unmarshal(raw, &rep)
	if code != ExitFailures || rep.TypeDiff+rep.ValueDiff+rep.TTLDiff != 200 || rep.Missing != 0 || strings.Contains(errs, "verify: OK") {
		t.Fatalf("stale skipped keys not reported: exit %d verify %+v\n%s", code, rep, errs)
	}
	for _, d := range rep.Diffs {
		if !changed[d.Key] {
			t.Fatalf("reported %q, which did not change", d.Key)
		}
	}
	if !strings.Contains(errs, "--existing replace") {
		t.Fatalf("no advice on the stale keys:\n%s", errs)
	}
	// The README's advice after a crash without a state file.
	code, _, _ = runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--existing", "replace", "--verify-full")
	if code != 0 {
		t.Fatalf("rerun with --existing replace: exit %d", code)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)
}

// dumpCalls counts the keys whose value the source served: a copy reads every key first with
// the string-first GETRANGE (a string's value, or WRONGTYPE and then a DUMP), so GETRANGE calls
// count keys once each; DUMPs are counted for a copy without that pass.
func dumpCalls(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	calls := testenv.CommandCalls(ctx, c)
	if n := calls["getrange"]; n > 0 {
		return n
	}
	return calls["dump"]
}

// Issue 12.10: `copy --state FILE` killed with SIGKILL mid-copy; the rerun with the same file
// starts after the finished plan steps (the source sees far fewer DUMPs than a full rerun), its
// totals are exactly those of one run, and the target equals the source.
func TestCopyResumesFromStateFile(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	n := fill(t, sc, 40000)
	state := filepath.Join(t.TempDir(), "copy.state")
	args := []string{"copy", "--source", src.URL(), "--target", dst.URL(), "--workers", "1", "--batch-keys", "50", "--state", state}
	killCopyMidway(t, dc, int64(n)*6/10, append(args, "--no-verify")...)
	raw, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st resume.File
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Shards) != 1 {
		t.Fatalf("state file: %v\n%s", err, raw)
	}
	done := st.Shards[0].Scanned
	if st.Shards[0].Step < 1 || done < 10000 {
		t.Fatalf("no finished plan step recorded: %s", raw)
	}
	sc.ConfigResetStat(ctx)

	// --no-verify: the verification DUMPs keys too; the data is compared below.
	code, sum, errs := runJSON(t, append(args, "--no-verify")...)
	if code != 0 || !sum.Resumed || sum.KeysScanned != int64(n) || sum.KeysCopied != int64(n) || sum.KeysFailed != 0 || sum.KeysSkipped != 0 {
		t.Fatalf("resumed run: exit %d summary %+v\n%s", code, sum, errs)
	}
	dumps := dumpCalls(t, sc)
	if dumps > int64(n)-done {
		t.Fatalf("the resumed run DUMPed %d keys; the %d keys of finished steps should not be read again (a full rerun DUMPs %d)", dumps, done, n)
	}
	t.Logf("resumed: %d DUMPs instead of %d", dumps, n)
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 1)

	// A finished state: the same command copies nothing more and repeats the totals.
	sc.ConfigResetStat(ctx)
	code, sum, _ = runJSON(t, append(args, "--no-verify")...)
	if code != 0 || sum.KeysCopied != int64(n) || dumpCalls(t, sc) != 0 {
		t.Fatalf("rerun of a finished state: exit %d summary %+v, %d DUMPs", code, sum, dumpCalls(t, sc))
	}
	// Another migration's options are refused before anything is written.
	code, _, errs = run(t, "copy", "--source", src.URL(), "--target", dst.URL(), "--match", "b:*", "--state", state)
	if code != ExitUsage || !strings.Contains(errs, "another migration") {
		t.Fatalf("state of another migration: exit %d\n%s", code, errs)
	}
}
