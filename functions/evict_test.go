package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// A target too small for the data, with an eviction policy: every write succeeds and older keys
// are dropped to make room, so no key is refused and no batch fails. A copy migration and an RDB
// import each read the target's evicted_keys at the start and after every batch or checkpoint:
// status ends completed-with-failures with the count and a warning, where the counts alone would
// say completed. Both kickoffs warn first that the data (the source's, or the file) will not fit.
func TestMigrationAndImportReportTargetEvictions(t *testing.T) {
	ctx := context.Background()
	small := []string{"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"}
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t, small...)
	data, n := makeRDB(t, src, 20000) // about 8 MB of values
	az := testenv.StartAzurite(t)
	imp, imp2 := testenv.StartRedis(t, small...), testenv.StartRedis(t, small...)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(),
		"IMPORT_REDIS": imp.URL(), "IMPORT2_REDIS": imp2.URL(), functions.SettingImportTarget: "IMPORT_REDIS"}})
	check := func(what string, st *state.Status, advice string) {
		t.Helper()
		if st.State != state.StateCompletedWithFailures || st.TargetEvictions == nil || st.TargetEvictions.Keys == 0 ||
			!strings.Contains(st.Warning, "evicted") || !strings.Contains(st.Warning, advice) || st.Keys.Failed != 0 || st.Keys.Copied != n {
			t.Fatalf("%s into a target that evicts: state %s, keys %+v, evictions %+v, warning %q", what, st.State, st.Keys, st.TargetEvictions, st.Warning)
		}
		t.Logf("%s: %d keys copied, %d evicted: %s", what, st.Keys.Copied, st.TargetEvictions.Keys, st.Warning)
	}

	ep := func(s string) map[string]string { return map[string]string{"setting": s} }
	// The kickoff warns before anything is written: the source's data does not fit under the
	// target's maxmemory. Status repeats it while the copy runs.
	sr, path := a.kickoffResponse(map[string]any{"source": ep("SOURCE_REDIS"), "target": ep("TARGET_REDIS"), "batchKeys": 500})
	if !strings.Contains(sr.Warning, "maxmemory") {
		t.Fatalf("kickoff into a target too small: %+v, want a warning naming maxmemory", sr)
	}
	if st := a.status(path); (st.State == state.StatePlanning || st.State == state.StateCopying) && !strings.Contains(st.Warning, "at kickoff") {
		t.Fatalf("status while copying (%s) does not repeat the kickoff's warning: %q", st.State, st.Warning)
	}
	check("copy", a.waitFinal(path, 3*time.Minute), "verify")
	if lost := n - dst.Client(t, 0).DBSize(ctx).Val(); lost <= 0 {
		t.Fatal("the target evicted none of the copy's keys: the test did not test anything")
	}

	uploadRDB(t, az, "evicts.rdb", data, map[string]string{functions.MetadataMigration: "evicts"})
	check("import", a.waitImport("evicts", 90*time.Second), "import the file again")
	// The import started by the blob event warned before it wrote anything: the file's size
	// against the target's room.
	if !strings.Contains(a.log.String(), "ImportRdb: evicts: warning: the file is") {
		t.Fatalf("no kickoff warning in the log of an import into a target too small:\n%s", lastN(a.log.String(), 30))
	}
	// POST /api/imports answers with the same warning.
	code, _, body := a.do("POST", "/api/imports", testKey, map[string]any{"id": "evicts2", "blob": "rdb-imports/evicts.rdb",
		"target": ep("IMPORT2_REDIS")})
	var resp functions.ImportResponse
	if err := json.Unmarshal(body, &resp); err != nil || code != http.StatusAccepted || !strings.Contains(resp.Warning, "maxmemory") {
		t.Fatalf("POST /api/imports into a target too small: %d %s, want a warning naming maxmemory", code, body)
	}
	check("import by POST /api/imports", a.waitImport("evicts2", 90*time.Second), "import the file again")
}

// An online migration's sync chains watch the target too: keys written into the source after
// the copy are applied to a target too small for them, which evicts older keys without an error.
// Status reports the evictions with a warning while the migration syncs, and the cutover's
// verification refuses to call the target consistent.
func TestOnlineSyncReportsTargetEvictions(t *testing.T) {
	ctx := context.Background()
	src := onlineStandalone(t, "--notify-keyspace-events", "KA")
	dst := onlineStandalone(t, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
	if err := testenv.FillBulk(ctx, src.keys, "b:", 500, 3); err != nil {
		t.Fatal(err)
	}
	a := onlineApp(t, src.url, dst.url, 30, nil, nil)
	_, path := kickoffOnline(a)
	a.waitOnline(path, 90*time.Second, "caught up", caughtUp)
	// About 8 MB of new values, written after the copy: only the sync carries them.
	pipe := src.keys.Pipeline()
	value := strings.Repeat("v", 400)
	for i := 0; i < 20000; i++ {
		pipe.Set(ctx, fmt.Sprintf("new:%d", i), value, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	st := a.waitOnline(path, 90*time.Second, "reporting the target's evictions", func(st *functions.OnlineStatus) bool {
		return st.TargetEvictions != nil && st.TargetEvictions.Keys > 0
	})
	if !strings.Contains(st.Warning, "evicted") || !strings.Contains(st.Warning, "start a new online migration") {
		t.Fatalf("evictions %+v without a warning: %q", st.TargetEvictions, st.Warning)
	}
	t.Logf("%d keys evicted: %s", st.TargetEvictions.Keys, st.Warning)
	a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	if st = a.cutover(path, nil); st.State == functions.StateConsistent || st.Online.Cutover.State != state.CutoverFailed {
		t.Fatalf("cutover into a target that evicted keys: state %s, cutover %+v", st.State, st.Online.Cutover)
	}
}
