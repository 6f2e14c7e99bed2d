package functions_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/blobevent"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// makeRDB fills a server with every type plus bulk keys, SAVEs it and returns the file and the
// number of keys.
func makeRDB(t *testing.T, s *testenv.Server, bulk int) ([]byte, int64) {
	t.Helper()
	ctx := context.Background()
	c := s.Client(t, 0)
	if _, err := testenv.FillAllTypes(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, c, "bulk:", bulk, 7); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	return data, n
}

// uploadRDB puts a blob into rdb-imports, as a user would; it returns the blob's ETag.
func uploadRDB(t *testing.T, az *testenv.Azurite, name string, data []byte, md map[string]string) string {
	t.Helper()
	ctx := context.Background()
	c, err := container.NewClientFromConnectionString(az.ConnectionString, functions.ImportContainer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		t.Fatal(err)
	}
	meta := map[string]*string{}
	for k, v := range md {
		meta[k] = &v
	}
	resp, err := c.NewBlockBlobClient(name).UploadBuffer(ctx, data, &blockblob.UploadBufferOptions{Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	return string(*resp.ETag)
}

// waitImport polls an import's status until it is final (the record may not exist yet).
func (a *app) waitImport(id string, timeout time.Duration) *state.Status {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, _, body := a.do("GET", "/api/migrations/"+id, testKey, nil)
		if code == http.StatusOK {
			var st state.Status
			if err := json.Unmarshal(body, &st); err != nil {
				a.t.Fatal(err)
			}
			if st.Final() && !st.Stale {
				return &st
			}
		} else if code != http.StatusNotFound {
			a.t.Fatalf("status: %d %s", code, body)
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("import %s not final after %v: %d %s", id, timeout, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkImported(t *testing.T, st *state.Status, want, size int64) {
	t.Helper()
	k := st.Keys
	if st.State != state.StateCompleted || st.Kind != "import" {
		t.Fatalf("state %s kind %s error %q", st.State, st.Kind, st.Error)
	}
	if k.Copied != want || k.Scanned != want || k.Failed != 0 || k.Skipped != 0 || k.Expired != 0 {
		t.Fatalf("counts %+v, want %d copied", k, want)
	}
	if st.Import == nil || !st.Import.Done || st.Import.Offset != size || st.Import.Size != size {
		t.Fatalf("import checkpoint %+v, want done at %d", st.Import, size)
	}
}

func sameData(t *testing.T, src, dst *testenv.Server) {
	t.Helper()
	testenv.AssertSameData(context.Background(), t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

// A blob dropped into rdb-imports raises a BlobCreated event (Event Grid schema) into the imports
// queue and is imported with the IMPORT_* defaults; the route then imports the same blob again
// under a new id by a message, and refuses what it must.
func TestImportRdbEventAndRoute(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	data, n := makeRDB(t, src, 3000)
	az := testenv.StartAzurite(t)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{
		"TARGET_REDIS": dst.URL(), functions.SettingImportTarget: "TARGET_REDIS"}})

	etag := uploadRDB(t, az, "dump.rdb", data, nil)
	id := functions.DefaultImportID(functions.ImportContainer, "dump.rdb", etag)
	st := a.waitImport(id, 60*time.Second)
	checkImported(t, st, n, int64(len(data)))
	if st.Import.Attempts != 1 || st.Import.ResumedFrom != 0 || st.Source != "blob rdb-imports/dump.rdb" {
		t.Fatalf("import %+v source %q", st.Import, st.Source)
	}
	sameData(t, src, dst)

	// The target holds the keys now: a new import must say what to do with them.
	blob := map[string]any{"blob": "rdb-imports/dump.rdb", "target": map[string]string{"setting": "TARGET_REDIS"}}
	code, _, body := a.do("POST", "/api/imports", testKey, blob)
	if code != http.StatusBadRequest || !strings.Contains(string(body), `"field":"existing"`) {
		t.Fatalf("non-empty target: %d %s", code, body)
	}
	// A completed import is not restarted under its id.
	code, _, body = a.do("POST", "/api/imports", testKey, map[string]any{"id": id})
	if code != http.StatusConflict || !strings.Contains(string(body), `"field":"id"`) {
		t.Fatalf("restart of a completed import: %d %s", code, body)
	}

	// The route re-imports the blob already in storage, replacing the keys.
	blob["existing"] = "replace"
	blob["id"] = "again"
	code, hdr, body := a.do("POST", "/api/imports", testKey, blob)
	if code != http.StatusAccepted {
		t.Fatalf("POST /api/imports: %d %s", code, body)
	}
	var resp functions.ImportResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ID != "again" || !strings.HasSuffix(hdr.Get("Location"), "/api/migrations/again") || resp.Size != int64(len(data)) {
		t.Fatalf("answer %+v, Location %q", resp, hdr.Get("Location"))
	}
	st = a.waitImport("again", 60*time.Second)
	checkImported(t, st, n, int64(len(data)))
	sameData(t, src, dst)
	// The same blob under another id, for another blob: refused by field.
	code, _, body = a.do("POST", "/api/imports", testKey, map[string]any{"id": "again", "blob": "rdb-imports/other.rdb"})
	if code != http.StatusConflict || !strings.Contains(string(body), `"field":"blob"`) {
		t.Fatalf("restart with another blob: %d %s", code, body)
	}
	// Neither trigger imported anything twice: the default import kept its own counts.
	code, _, body = a.do("GET", "/api/migrations/"+id, testKey, nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"state": "completed"`) {
		t.Fatalf("first import afterwards: %d %s", code, body)
	}
}

// interruptOnce interrupts the first invocation that checkpoints progress and returns the
// checkpoint offset it stopped after.
func interruptOnce(t *testing.T) func() int64 {
	var mu sync.Mutex
	var at int64
	remove := functions.SetImportCheckpointHook(func(id string, ck state.ImportCheckpoint) bool {
		mu.Lock()
		defer mu.Unlock()
		if at == 0 && ck.Offset > 0 && ck.Result.Copied > 0 {
			at = ck.Offset
			return true
		}
		return false
	})
	t.Cleanup(remove)
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// The first invocation stops after a checkpoint (as on a functionTimeout); the host's retry
// resumes from the recorded offset, and the counts come out exact.
func TestImportRdbInterruptedResumes(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	data, n := makeRDB(t, src, 20000)
	az := testenv.StartAzurite(t)
	stoppedAt := interruptOnce(t)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{
		"TARGET_REDIS": dst.URL(), functions.SettingImportTarget: "TARGET_REDIS", functions.SettingImportCheckpointMs: "20"}})

	// Metadata names the import: the trigger creates the record under that id.
	uploadRDB(t, az, "big.rdb", data, map[string]string{functions.MetadataMigration: "resume-me"})
	st := a.waitImport("resume-me", 90*time.Second)
	at := stoppedAt()
	if at == 0 {
		t.Fatal("the import was never interrupted")
	}
	checkImported(t, st, n, int64(len(data)))
	if st.Import.Attempts != 2 || st.Import.ResumedFrom != at || st.Import.LastError != "" {
		t.Fatalf("attempts %d, resumed from %d (interrupted after the checkpoint at %d), last error %q",
			st.Import.Attempts, st.Import.ResumedFrom, at, st.Import.LastError)
	}
	if !strings.Contains(a.log.String(), "resumes at offset") {
		t.Fatal("no resume in the log")
	}
	sameData(t, src, dst)
}

// An invocation that runs out of its time budget (IMPORT_INVOCATION_SECONDS) hands over: it sends
// the next import message to the imports queue, and the invocation it triggers goes on from the
// checkpoint, without using up the host's retries. The blob itself is never touched.
func TestImportRdbContinuesAfterTimeBudget(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	data, n := makeRDB(t, src, 10000)
	az := testenv.StartAzurite(t)
	// Slow the import down (each checkpoint takes 60 ms more) so it needs several invocations of
	// 2 s; 2 s rather than 1 leaves a loaded CI machine time to reach its first checkpoint.
	t.Cleanup(functions.SetImportCheckpointHook(func(string, state.ImportCheckpoint) bool {
		time.Sleep(60 * time.Millisecond)
		return false
	}))
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{"TARGET_REDIS": dst.URL(),
		functions.SettingImportTarget: "TARGET_REDIS", functions.SettingImportCheckpointMs: "20", functions.SettingImportSeconds: "2"}})
	uploadRDB(t, az, "long.rdb", data, map[string]string{functions.MetadataMigration: "long-one"})
	st := a.waitImport("long-one", 90*time.Second)
	checkImported(t, st, n, int64(len(data)))
	if st.Import.Continuations == 0 || st.Import.ResumedFrom == 0 || st.Import.Attempts != 1 {
		t.Fatalf("continuations %d, resumed from %d, attempts %d", st.Import.Continuations, st.Import.ResumedFrom, st.Import.Attempts)
	}
	t.Logf("%d invocations", st.Import.Continuations+1)
	sameData(t, src, dst)
}

// With one attempt allowed, an interrupted import fails with a resumable error; POST
// /api/imports {"id"} resumes it from the checkpoint.
func TestImportRdbRouteResumesFailedImport(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	data, n := makeRDB(t, src, 20000)
	az := testenv.StartAzurite(t)
	stoppedAt := interruptOnce(t)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{
		"TARGET_REDIS": dst.URL(), functions.SettingImportCheckpointMs: "20", functions.SettingImportMaxAttempts: "1"}})

	// No IMPORT_TARGET_SETTING: the upload alone imports nothing; the route starts it.
	uploadRDB(t, az, "dump.rdb", data, nil)
	code, _, body := a.do("POST", "/api/imports", testKey, map[string]any{"id": "gave-up",
		"blob": map[string]string{"name": "dump.rdb"}, "target": map[string]string{"setting": "TARGET_REDIS"}})
	if code != http.StatusAccepted {
		t.Fatalf("POST /api/imports: %d %s", code, body)
	}
	st := a.waitImport("gave-up", 60*time.Second)
	at := stoppedAt()
	if st.State != state.StateFailed || at == 0 || st.Import.Offset != at || !strings.Contains(st.Error, "POST /api/imports") {
		t.Fatalf("after the interruption: state %s, error %q, checkpoint %d (interrupted at %d)", st.State, st.Error, st.Import.Offset, at)
	}
	// A started import keeps its options.
	code, _, body = a.do("POST", "/api/imports", testKey, map[string]any{"id": "gave-up", "existing": "skip"})
	if code != http.StatusConflict || !strings.Contains(string(body), `"field":"existing"`) {
		t.Fatalf("restart with other options: %d %s", code, body)
	}
	code, _, body = a.do("POST", "/api/imports", testKey, map[string]any{"id": "gave-up"})
	if code != http.StatusAccepted {
		t.Fatalf("restart: %d %s", code, body)
	}
	var resp functions.ImportResponse
	if err := json.Unmarshal(body, &resp); err != nil || resp.ResumeFrom != at {
		t.Fatalf("restart answer %s (%v), want resumeFrom %d", body, err, at)
	}
	st = a.waitImport("gave-up", 60*time.Second)
	checkImported(t, st, n, int64(len(data)))
	if st.Import.ResumedFrom != at || st.Import.Attempts != 1 {
		t.Fatalf("resumed from %d (want %d), attempts %d", st.Import.ResumedFrom, at, st.Import.Attempts)
	}
	sameData(t, src, dst)
}

// An RDB written by Valkey 8 (VALKEY080 magic) imports into Redis 7.0 through the function; the
// event arrives in the CloudEvents 1.0 schema.
func TestImportRdbValkey8IntoRedis70(t *testing.T) {
	src := testenv.StartValkey(t)
	dst := testenv.StartRedis(t)
	data, n := makeRDB(t, src, 500)
	az := testenv.StartAzurite(t)
	a := startApp(t, appOptions{azurite: az, eventSchema: blobevent.SchemaCloudEvents, settings: map[string]string{
		"TARGET_REDIS": dst.URL(), functions.SettingImportTarget: "TARGET_REDIS"}})
	uploadRDB(t, az, "valkey.rdb", data, map[string]string{functions.MetadataMigration: "from-valkey"})
	st := a.waitImport("from-valkey", 60*time.Second)
	checkImported(t, st, n, int64(len(data)))
	sameDataAcrossServers(t, src, dst)
}

// sameDataAcrossServers is AssertSameData for a Valkey 8 source and a Redis 7.0 target. DEBUG
// DIGEST-VALUE of a sorted set hashes its scores as text, which the two servers write
// differently for non-integer scores (Valkey: shortest form; Redis 7.0: %.17g), so sorted sets
// whose digests differ are compared member by member, scores as numbers.
func sameDataAcrossServers(t *testing.T, src, dst *testenv.Server) {
	t.Helper()
	ctx := context.Background()
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	want, err := testenv.Snapshot(ctx, []*redis.Client{sc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testenv.Snapshot(ctx, []*redis.Client{dc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	zsets := 0
	for k, w := range want {
		if g, ok := got[k]; ok && w.Type == "zset" && g.Type == "zset" && g.Digest != w.Digest {
			a, err1 := sc.ZRangeWithScores(ctx, k, 0, -1).Result()
			b, err2 := dc.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err1 != nil || err2 != nil || len(a) != len(b) {
				t.Fatalf("zset %q: %v %v, %d vs %d members", k, err1, err2, len(a), len(b))
			}
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("zset %q member %d: %v vs %v", k, i, a[i], b[i])
				}
			}
			g.Digest = w.Digest
			got[k] = g
			zsets++
		}
	}
	if d := testenv.DiffSnapshots(want, got, 2000); len(d) > 0 {
		t.Fatalf("target differs from source: %v", d)
	}
	t.Logf("%d keys equal (%d sorted sets compared by members and scores)", len(want), zsets)
}

// Bad requests name their field; malformed blobs fail with the offset, without retries or panics.
func TestImportRdbBadRequestsAndCorruptBlobs(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	full := testenv.StartRedis(t)
	full.Client(t, 0).Set(context.Background(), "already", "there", 0)
	data, _ := makeRDB(t, src, 200)
	az := testenv.StartAzurite(t)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{"TARGET_REDIS": dst.URL(), "FULL_REDIS": full.URL(),
		functions.SettingImportTarget: "TARGET_REDIS"}})

	// Malformed files: garbage after a valid header, and a truncated dump.
	garbage := append([]byte("REDIS0011"), []byte(strings.Repeat("\xf0\x13garbage", 50))...)
	uploadRDB(t, az, "garbage.rdb", garbage, map[string]string{functions.MetadataMigration: "garbage"})
	uploadRDB(t, az, "truncated.rdb", data[:len(data)/2], map[string]string{functions.MetadataMigration: "truncated"})
	for _, id := range []string{"garbage", "truncated"} {
		st := a.waitImport(id, 60*time.Second)
		if st.State != state.StateFailed || !strings.Contains(st.Error, "offset") || st.Import.Attempts != 1 {
			t.Fatalf("%s: state %s, error %q, attempts %d", id, st.State, st.Error, st.Import.Attempts)
		}
		t.Logf("%s: %s", id, st.Error)
	}
	uploadRDB(t, az, "dump.rdb", data, map[string]string{functions.MetadataMigration: "imported"})
	a.waitImport("imported", 60*time.Second)

	ok := `{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS"},"existing":"replace"`
	cases := []struct {
		name, body, field, msg string
	}{
		{"not json", `{"blob":`, "", "invalid JSON"},
		{"not an object", `[1]`, "", "JSON object"},
		{"empty", ``, "", "empty body"},
		{"unknown field", ok + `,"workers":3}`, "workers", "unknown field"},
		{"duplicate key", ok + `,"existing":"skip"}`, "existing", "duplicate field"},
		{"missing blob", `{"target":{"setting":"TARGET_REDIS"}}`, "blob", "required"},
		{"missing target", `{"blob":"rdb-imports/dump.rdb"}`, "target", "required"},
		{"blob type", `{"blob":5,"target":{"setting":"TARGET_REDIS"}}`, "blob", "rdb-imports/<name>"},
		{"blob other container", `{"blob":"backups/dump.rdb","target":{"setting":"TARGET_REDIS"}}`, "blob", "rdb-imports"},
		{"blob object container", `{"blob":{"container":"backups","name":"dump.rdb"},"target":{"setting":"TARGET_REDIS"}}`, "blob.container", "rdb-imports"},
		{"blob object no name", `{"blob":{"container":"rdb-imports"},"target":{"setting":"TARGET_REDIS"}}`, "blob.name", "required"},
		{"blob unknown field", `{"blob":{"name":"dump.rdb","path":"x"},"target":{"setting":"TARGET_REDIS"}}`, "blob.path", "unknown field"},
		{"no such blob", `{"blob":"rdb-imports/nope.rdb","target":{"setting":"TARGET_REDIS"}}`, "blob", "no blob"},
		{"target type", `{"blob":"rdb-imports/dump.rdb","target":"redis://x"}`, "target", "object"},
		{"target unknown field", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS","password":"x"}}`, "target.password", "unknown field"},
		{"target two ways", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS","url":"redis://x"}}`, "target", "exactly one"},
		{"missing setting", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"NO_SUCH_REDIS"}}`, "target.setting", "is not set"},
		{"app secret as target", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"AzureWebJobsStorage"}}`, "target.setting", "not a Redis endpoint setting"},
		{"inline url refused", `{"blob":"rdb-imports/dump.rdb","target":{"url":"redis://:hunter2-secret@127.0.0.1:1"}}`, "target.url", "ALLOW_INLINE_URLS"},
		{"existing", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS"},"existing":"merge"}`, "existing", "fail, skip or replace"},
		{"dbMap", ok + `,"dbMap":"0-0"}`, "dbMap", "SOURCE_DB:TARGET_DB"},
		{"dbPrefix", ok + `,"dbPrefix":"3:x:"}`, "dbPrefix", "does not map"},
		{"db merge", ok + `,"dbMap":"0:0,1:0"}`, "dbMap", "collide"},
		{"functions", ok + `,"functions":"all"}`, "functions", "skip, load or replace"},
		{"modules", ok + `,"modules":"maybe"}`, "modules", "fail or skip"},
		{"skipChecksum type", ok + `,"skipChecksum":"yes"}`, "skipChecksum", "boolean"},
		{"id", ok + `,"id":"Bad_ID"}`, "id", "lower-case"},
		{"non-empty target", `{"blob":"rdb-imports/dump.rdb","target":{"setting":"FULL_REDIS"}}`, "existing", "already holds"},
		{"oversize", ok + `,"match":"` + strings.Repeat("x", 70<<10) + `"}`, "body", "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := a.do("POST", "/api/imports", testKey, c.body)
			var e struct{ Error, Field string }
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d %s: %v", code, body, err)
			}
			if code != http.StatusBadRequest || e.Field != c.field || !strings.Contains(e.Error, c.msg) {
				t.Fatalf("got %d field=%q error=%q; want 400 field=%q containing %q", code, e.Field, e.Error, c.field, c.msg)
			}
			if strings.Contains(string(body), "hunter2-secret") || strings.Contains(string(body), "AccountKey") {
				t.Fatalf("secret in error: %s", body)
			}
		})
	}
	if code, _, _ := a.do("POST", "/api/imports", "", `{}`); code != http.StatusUnauthorized {
		t.Fatalf("no function key: %d", code)
	}
	if strings.Contains(a.log.String(), "panic") || strings.Contains(a.log.String(), "hunter2-secret") {
		t.Fatalf("panic or secret in the log:\n%s", lastN(a.log.String(), 40))
	}
}

// The target restarts (without persistence: it comes back empty) in the middle of an import. The
// writes in flight fail, the host delivers the message again, and the next attempt resumes from
// the checkpoint: the keys before it are gone from the target, though every count says they
// were copied. The import sees the new run_id and says so: completed with failures, the restart
// listed, and a warning that keys may be lost and the file must be imported again.
func TestImportRdbTargetRestartIsReported(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	data, _ := makeRDB(t, src, 20000)
	az := testenv.StartAzurite(t)
	reached, restarted := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(functions.SetImportCheckpointHook(func(id string, ck state.ImportCheckpoint) bool {
		if ck.Offset > 0 && ck.Result.Copied > 0 {
			once.Do(func() {
				close(reached)
				<-restarted
			})
		}
		return false
	}))
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{
		"TARGET_REDIS": dst.URL(), functions.SettingImportTarget: "TARGET_REDIS", functions.SettingImportCheckpointMs: "20"}})
	uploadRDB(t, az, "restart.rdb", data, map[string]string{functions.MetadataMigration: "target-restarts"})
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the import never checkpointed")
	}
	dst.Restart(t, true)
	close(restarted)
	st := a.waitImport("target-restarts", 90*time.Second)
	if st.State != state.StateCompletedWithFailures || len(st.TargetRestarts) != 1 || st.TargetRestarts[0].Addr != dst.Addr ||
		!strings.Contains(st.Warning, "restarted during the import") || !strings.Contains(st.Warning, "import the file again") {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("status after a target restart mid-import: %s", b)
	}
	if !strings.Contains(a.log.String(), "ImportRdb: the target "+dst.Addr) {
		t.Fatalf("the restart is not in the log:\n%s", a.log.String())
	}
}
