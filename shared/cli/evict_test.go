package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A target too small for the data, with an eviction policy (a cache's usual setting): every
// write succeeds and older keys are dropped to make room, so no key is refused and no error
// names one. The copy and the import read the target's evicted_keys before and after: they say
// how many keys it evicted and what to do, and exit 1; both warn before they write anything that
// the data will not fit (the copy from the source's used memory, the import from the file's
// size). Under noeviction the keys that do not fit are refused and failed by name. A target big
// enough says nothing.
func TestCopyAndImportReportTargetEvictions(t *testing.T) {
	src := testenv.StartRedis(t)
	n := fill(t, src.Client(t, 0), 20000) // about 8 MB of values
	small := []string{"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"}
	check := func(what string, code int, evicted int64, errs string) {
		t.Helper()
		if code != ExitFailures || evicted == 0 || !strings.Contains(errs, "the target evicted") || !strings.Contains(errs, "maxmemory") {
			t.Fatalf("%s into a target that evicts: exit %d, target_evicted_keys %d\n%s", what, code, evicted, errs)
		}
	}

	dst := testenv.StartRedis(t, small...)
	code, sum, errs := runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL())
	check("copy", code, sum.TargetEvictions, errs)
	// The copy said so before it wrote anything: the source's data against the target's room.
	if first, _, _ := strings.Cut(errs, "\n"); !strings.HasPrefix(first, "copy: warning: the source's data takes about") {
		t.Fatalf("no warning before the copy into a target too small:\n%s", errs)
	}
	if sum.KeysFailed != 0 || sum.KeysCopied != int64(n) {
		t.Fatalf("copy: every write succeeded, yet %+v", sum)
	}
	t.Logf("copy: %d keys copied, %d evicted by the target", sum.KeysCopied, sum.TargetEvictions)

	file := saveRDB(t, src, func(*redis.Client) {})
	dst = testenv.StartRedis(t, small...)
	code, sum, errs = runJSON(t, "import", file, "--target", dst.URL(), "--no-verify")
	check("import --no-verify", code, sum.TargetEvictions, errs)
	// The import said so too before it wrote anything: the file's size against the target's room.
	if first, _, _ := strings.Cut(errs, "\n"); !strings.HasPrefix(first, "import: warning: the file is") || !strings.Contains(first, "maxmemory") {
		t.Fatalf("no warning before the import into a target too small:\n%s", errs)
	}

	// noeviction: what does not fit is refused, and those keys are failed by name, with the
	// target's answer.
	dst = testenv.StartRedis(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	code, sum, errs = runJSON(t, "copy", "--source", src.URL(), "--target", dst.URL())
	if code != ExitFailures || sum.KeysFailed == 0 || sum.TargetEvictions != 0 || len(sum.Failures) == 0 ||
		!strings.Contains(sum.Failures[0].Reason, "OOM") {
		t.Fatalf("copy into a full noeviction target: exit %d, %d failed, %d evicted, failures %v", code, sum.KeysFailed, sum.TargetEvictions, sum.Failures[:min(3, len(sum.Failures))])
	}
	if sum.KeysCopied+sum.KeysFailed != int64(n) {
		t.Fatalf("copy into a full noeviction target: %d copied + %d failed, want %d keys accounted for", sum.KeysCopied, sum.KeysFailed, n)
	}

	big := testenv.StartRedis(t, "--maxmemory", "512mb", "--maxmemory-policy", "allkeys-lru")
	code, sum, errs = runJSON(t, "copy", "--source", src.URL(), "--target", big.URL())
	if code != 0 || sum.TargetEvictions != 0 || strings.Contains(errs, "evicted") || strings.Contains(errs, "warning") {
		t.Fatalf("copy into a target big enough: exit %d, target_evicted_keys %d\n%s", code, sum.TargetEvictions, errs)
	}
	big.Client(t, 0).FlushAll(context.Background())
	code, sum, errs = runJSON(t, "import", file, "--target", big.URL(), "--no-verify")
	if code != 0 || sum.TargetEvictions != 0 || strings.Contains(errs, "warning") {
		t.Fatalf("import into a target big enough: exit %d, target_evicted_keys %d\n%s", code, sum.TargetEvictions, errs)
	}
}
