package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

const testKey = "test-function-key-0123456789"

type syncBuffer = testenv.SyncBuffer

type app struct {
	h   *hostharness.Harness
	log *syncBuffer
	t   *testing.T
}

type appOptions struct {
	settings map[string]string
	fault    func(hostharness.DeliveryInfo) hostharness.Fault
	hostJSON []byte
	azurite  *testenv.Azurite
	// eventSchema is the delivery schema of the modelled Event Grid subscription ("" = Event Grid).
	eventSchema string
	// process runs the handler as a child process (the built binary's `serve`), so a test can
	// kill it (a.h.KillHandler); lockDuration is then the queues' message lock.
	process      bool
	lockDuration time.Duration
}

// startApp starts Azurite and the whole function app behind the local host harness.
func startApp(t *testing.T, o appOptions) *app {
	t.Helper()
	az := o.azurite
	if az == nil {
		az = testenv.StartAzurite(t)
	}
	settings := map[string]string{
		"AzureWebJobsStorage":           az.ConnectionString,
		"LOCAL_FUNCTION_KEY":            testKey,
		"PLAN_STEP_MAX_KEYS":            "300",
		"SERVICEBUS_MAX_DELIVERY_COUNT": "4",
	}
	for k, v := range o.settings {
		settings[k] = v
	}
	hostJSON := o.hostJSON
	if hostJSON == nil {
		var err error
		if hostJSON, err = os.ReadFile(filepath.Join(testenv.RepoRoot(), "host.json")); err != nil {
			t.Fatal(err)
		}
	}
	log := &syncBuffer{}
	opts := hostharness.Options{
		Functions: functions.Definitions(), HostJSON: hostJSON, Settings: settings,
		NewHandler: functions.LocalHandler, Log: log, Fault: o.fault, BlobPollInterval: 200 * time.Millisecond,
		BlobEvents: functions.BlobEvents(o.eventSchema), LockDuration: o.lockDuration,
	}
	if o.process {
		opts.NewHandler, opts.Process = nil, &hostharness.ProcessOptions{Path: handlerBinary(t), Args: []string{"serve"}}
	}
	h, err := hostharness.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if t.Failed() {
			t.Logf("handler and harness output:\n%s", lastN(log.String(), 60))
		}
	})
	return &app{h: h, log: log, t: t}
}

func lastN(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// do sends a request through the harness's public HTTP face.
func (a *app) do(method, path, key string, body any) (int, http.Header, []byte) {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, a.h.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("x-functions-key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

// kickoff posts a migration and returns its id and status path.
func (a *app) kickoff(req map[string]any) (string, string) {
	a.t.Helper()
	sr, path := a.kickoffResponse(req)
	return sr.ID, path
}

// kickoffResponse is kickoff with the whole 202 answer.
func (a *app) kickoffResponse(req map[string]any) (functions.StartResponse, string) {
	a.t.Helper()
	code, hdr, body := a.do("POST", "/api/migrations", testKey, req)
	if code != http.StatusAccepted {
		a.t.Fatalf("kickoff: %d %s", code, body)
	}
	var sr functions.StartResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		a.t.Fatal(err)
	}
	loc := hdr.Get("Location")
	if loc == "" || !strings.HasSuffix(loc, "/api/migrations/"+sr.ID) {
		a.t.Fatalf("Location %q for %s", loc, sr.ID)
	}
	return sr, strings.TrimPrefix(loc, a.h.URL)
}

// waitFinal polls status until every batch is accounted for.
func (a *app) waitFinal(path string, timeout time.Duration) *state.Status {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, _, body := a.do("GET", path, testKey, nil)
		if code != http.StatusOK {
			a.t.Fatalf("status: %d %s", code, body)
		}
		var st state.Status
		if err := json.Unmarshal(body, &st); err != nil {
			a.t.Fatal(err)
		}
		if st.Final() && !st.Stale {
			// Nothing may still be in flight: redeliveries would change nothing, but wait for them.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = a.h.WaitIdle(ctx)
			cancel()
			return &st
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("migration not final after %v: %s", timeout, body)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func checkCounts(t *testing.T, st *state.Status, want int64) {
	t.Helper()
	k := st.Keys
	if k.Copied != want || k.Failed != 0 || k.Skipped != 0 || k.Scanned != want {
		t.Fatalf("counts: %+v (want %d copied)", k, want)
	}
	if k.Copied+k.Skipped+k.Missing+k.Expired+k.Failed != k.Scanned {
		t.Fatalf("counts do not add up: %+v", k)
	}
	if st.Batches.Done != st.Batches.Sent || st.Batches.Pending != 0 || st.Batches.DeadLettered != 0 {
		t.Fatalf("batches: %+v", st.Batches)
	}
	if st.State != state.StateCompleted {
		t.Fatalf("state %s", st.State)
	}
}

func TestMigrationStandaloneEndToEnd(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	n, err := testenv.FillAllTypes(ctx, src.Client(t, 0), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "bulk:", 2000, 1); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}})
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100})
	st := a.waitFinal(path, 90*time.Second)
	checkCounts(t, st, int64(n+2000))
	if st.ID != id || st.ShardsPlanned != 1 || len(st.Shards) != 1 || !st.Shards[0].Done || st.Shards[0].Step < 2 {
		t.Fatalf("shards: %+v", st.Shards)
	}
	if st.Bytes == 0 || st.KeysPerSecond <= 0 || st.ETASeconds == nil || *st.ETASeconds != 0 {
		t.Fatalf("rate: %+v", st)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

func TestMigrationClusterSourceEndToEnd(t *testing.T) {
	ctx := context.Background()
	cl := testenv.StartCluster(t)
	dst := testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, cl.Client(t), "c:", 1500, 2); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": cl.URL(), "TARGET_REDIS": dst.URL()}})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 50})
	st := a.waitFinal(path, 90*time.Second)
	checkCounts(t, st, 1500)
	if st.ShardsTotal != 3 || st.ShardsPlanned != 3 {
		t.Fatalf("want one shard per master: %+v", st.Shards)
	}
	testenv.AssertSameData(ctx, t, testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr), []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

// Copier invocations failing on their first delivery (before and after doing the work), the
// same message delivered twice, and a plan step replayed: counts stay exact, nothing is lost.
func TestInjectedFailuresKeepCountsExact(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "f:", 2400, 3); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	injected := map[string]int{}
	replayed := make(chan struct{})
	var replayOnce sync.Once
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function == "PlanShard" && d.DeliveryCount == 2 && strings.HasSuffix(d.MessageID, ".step1") {
			replayOnce.Do(func() { close(replayed) })
		}
		if d.Function == "PlanShard" && d.DeliveryCount == 1 && strings.HasSuffix(d.MessageID, ".step2") {
			// Hold step 2 until step 1's replay has run: the replay then finds step 1 recorded and
			// step 2 not, and must send step 2's message again (duplicate detection drops it).
			// Without this, step 2 may finish first and the replay has nothing to re-send.
			select {
			case <-replayed:
				time.Sleep(300 * time.Millisecond)
			case <-time.After(10 * time.Second):
			}
		}
		mu.Lock()
		defer mu.Unlock()
		// Unsigned: a negative hash would only ever hit h%5 == 0, and some faults never happen.
		h := uint32(0)
		for _, c := range d.MessageID {
			h = h*31 + uint32(c)
		}
		switch {
		case d.Function == "PlanShard" && d.DeliveryCount == 1 && strings.HasSuffix(d.MessageID, ".step1"):
			injected["plan-replay"]++
			return hostharness.DropReply // the step ran, its reply is lost: the step is replayed
		case d.Function == "PlanShard" && d.DeliveryCount == 1 && (strings.HasSuffix(d.MessageID, ".step2") || strings.HasSuffix(d.MessageID, ".step4")):
			injected["plan-concurrent"]++
			return hostharness.DuplicateNow // the same step runs twice at once
		case d.Function == "CopyBatch" && d.DeliveryCount == 1 && h%5 == 0:
			injected["fail-before"]++
			return hostharness.FailBeforeCall
		case d.Function == "CopyBatch" && d.DeliveryCount == 1 && h%5 == 1:
			injected["fail-after"]++
			return hostharness.DropReply // copied, then "crashed": redelivered onto its own keys
		case d.Function == "CopyBatch" && d.DeliveryCount == 1 && h%5 == 2:
			injected["twice"]++
			return hostharness.DeliverTwice
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 40})
	st := a.waitFinal(path, 120*time.Second)
	mu.Lock()
	t.Logf("injected: %v", injected)
	for _, k := range []string{"plan-replay", "plan-concurrent", "fail-before", "fail-after", "twice"} {
		if injected[k] == 0 {
			t.Errorf("fault %s never injected", k)
		}
	}
	mu.Unlock()
	checkCounts(t, st, 2400)
	_, planDups := a.h.Queue.Stats("plan")
	_, copyDups := a.h.Queue.Stats("copy")
	t.Logf("duplicates dropped by the queue: plan %d, copy %d", planDups, copyDups)
	if planDups+copyDups == 0 {
		t.Errorf("replayed plan steps re-sent nothing (duplicate detection dropped no message)")
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

// A batch that fails every delivery ends dead-lettered, visible in status with its reason and
// its keys; the rest of the migration completes.
func TestBatchFailingEveryDeliveryIsDeadLettered(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "d:", 600, 4); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	victim := ""
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" {
			return hostharness.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		if victim == "" {
			victim = d.MessageID
		}
		if d.MessageID == victim {
			return hostharness.FailBeforeCall // the handler never sees it: the host's dead-letter path
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100})
	st := a.waitFinal(path, 90*time.Second)
	if st.State != state.StateCompletedWithFailures || st.Batches.DeadLettered != 1 || st.Batches.Pending != 0 {
		t.Fatalf("state %s batches %+v", st.State, st.Batches)
	}
	if len(st.DeadLettered) != 1 || !strings.Contains(st.DeadLettered[0].Reason, "MaxDeliveryCountExceeded") ||
		!strings.HasSuffix(victim, st.DeadLettered[0].Batch) {
		t.Fatalf("dead-lettered %+v (victim %s)", st.DeadLettered, victim)
	}
	dead := int64(st.DeadLettered[0].Keys)
	if st.Keys.Failed != dead || st.Keys.Copied != 600-dead || len(st.Failures) == 0 || st.Failures[0].Key == "" {
		t.Fatalf("keys %+v failures %+v", st.Keys, st.Failures)
	}
	if n, _ := dst.Client(t, 0).DBSize(ctx).Result(); n != 600-dead {
		t.Fatalf("target holds %d keys, want %d", n, 600-dead)
	}
}

// A copier that really fails (the target went away) records the batch as dead-lettered itself
// on the last delivery, with the error it saw.
func TestCopierFailureOnLastDeliveryRecordsReason(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "r:", 100, 5); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function == "CopyBatch" {
			<-release // hold copies until the target is gone
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(),
		"SERVICEBUS_MAX_DELIVERY_COUNT": "2"}, fault: fault})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100})
	dst.Stop()
	once.Do(func() { close(release) })
	st := a.waitFinal(path, 90*time.Second)
	if st.State != state.StateCompletedWithFailures || st.Batches.DeadLettered != 1 || st.Keys.Failed != 100 {
		t.Fatalf("state %s batches %+v keys %+v", st.State, st.Batches, st.Keys)
	}
	if r := st.DeadLettered[0].Reason; !strings.Contains(r, "failed on all 2 deliveries") || !strings.Contains(r, "target") {
		t.Fatalf("reason %q", r)
	}
}

func TestBadRequests(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL(), "EMPTY_REDIS": "",
		"REDIS_ENDPOINT_SETTINGS": "LEGACY_CACHE, AzureWebJobsStorage", "LEGACY_CACHE": "not a url at all"}})
	ok := `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"}`
	cases := []struct {
		name, body, field, msg string
	}{
		{"not json", `{"source":`, "", "invalid JSON"},
		{"not an object", `[1,2]`, "", "JSON object"},
		{"trailing data", ok + `} {}`, "", "after the object"},
		{"unknown field", ok + `,"workers":3}`, "workers", "unknown field"},
		{"unknown nested field", `{"source":{"setting":"SOURCE_REDIS","password":"x"},"target":{"setting":"TARGET_REDIS"}}`, "source.password", "unknown field"},
		{"unknown entra field", `{"source":{"setting":"SOURCE_REDIS"},"target":{"host":"x.redis.azure.net:10000","entra":{"objectId":"a","tenant":"t"}}}`, "target.entra.tenant", "unknown field"},
		{"missing source", `{"target":{"setting":"TARGET_REDIS"}}`, "source", "required"},
		{"source wrong type", `{"source":"redis://x","target":{"setting":"TARGET_REDIS"}}`, "source", "object"},
		{"two ways", `{"source":{"setting":"SOURCE_REDIS","url":"redis://x"},"target":{"setting":"TARGET_REDIS"}}`, "source", "exactly one"},
		{"batchKeys type", ok + `,"batchKeys":"many"}`, "batchKeys", "number"},
		{"batchKeys range", ok + `,"batchKeys":20000}`, "batchKeys", "1..10000"},
		{"existing", ok + `,"existing":"merge"}`, "existing", "fail, skip or replace"},
		{"dbMap", ok + `,"dbMap":"0-0"}`, "dbMap", "SOURCE_DB:TARGET_DB"},
		{"dbPrefix", ok + `,"dbPrefix":"3:x:"}`, "dbPrefix", "does not map"},
		{"db merge", ok + `,"dbMap":"0:0,1:0"}`, "dbMap", "collide"},
		{"type", ok + `,"type":"str ing"}`, "type", "type"},
		{"type rubbish", ok + `,"type":"rubbish"}`, "type", "want one of string, list"},
		{"duplicate key", ok + `,"match":"a*","match":"b*"}`, "match", "duplicate field"},
		{"id", ok + `,"id":"Bad_ID"}`, "id", "lower-case"},
		{"host without entra", `{"source":{"setting":"SOURCE_REDIS"},"target":{"host":"x.redis.azure.net:10000"}}`, "target.entra", "Entra"},
		{"entra without object id", `{"source":{"setting":"SOURCE_REDIS"},"target":{"host":"x.redis.azure.net:10000","entra":{"clientId":"c"}}}`, "target.entra.objectId", "object id"},
		{"bad host", `{"source":{"setting":"SOURCE_REDIS"},"target":{"host":"a/b:x","entra":{"objectId":"o"}}}`, "target.host", "host:port"},
		{"inline url refused", `{"source":{"url":"redis://:hunter2-secret@127.0.0.1:1"},"target":{"setting":"TARGET_REDIS"}}`, "source.url", "ALLOW_INLINE_URLS"},
		{"missing setting", `{"source":{"setting":"NO_SUCH_REDIS"},"target":{"setting":"TARGET_REDIS"}}`, "source.setting", "NO_SUCH_REDIS is not set"},
		{"not an endpoint setting", `{"source":{"setting":"NO_SUCH_SETTING"},"target":{"setting":"TARGET_REDIS"}}`, "source.setting", "NO_SUCH_SETTING is not a Redis endpoint setting"},
		{"empty setting", `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"EMPTY_REDIS"}}`, "target.setting", "EMPTY_REDIS is not set"},
		{"listed setting, not a URL", `{"source":{"setting":"LEGACY_CACHE"},"target":{"setting":"TARGET_REDIS"}}`, "source.setting", "LEGACY_CACHE does not hold a Redis URL"},
		{"app secret as endpoint", `{"source":{"setting":"AzureWebJobsStorage"},"target":{"setting":"TARGET_REDIS"}}`, "source.setting", "not a Redis endpoint setting"},
		{"same server", `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"SOURCE_REDIS"}}`, "target", "same server"},
		{"oversize", ok + `,"match":"` + strings.Repeat("x", 70<<10) + `"}`, "body", "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := a.do("POST", "/api/migrations", testKey, c.body)
			var e struct{ Error, Field string }
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d %s: %v", code, body, err)
			}
			if code != http.StatusBadRequest || e.Field != c.field || !strings.Contains(e.Error, c.msg) {
				t.Fatalf("got %d field=%q error=%q; want 400 field=%q containing %q", code, e.Field, e.Error, c.field, c.msg)
			}
			if strings.Contains(string(body), "hunter2-secret") || strings.Contains(string(body), "devstoreaccount1;AccountKey") {
				t.Fatalf("secret in error: %s", body)
			}
		})
	}
	// A non-empty target is refused unless told what to do with existing keys.
	dst.Client(t, 0).Set(context.Background(), "already", "there", 0)
	src.Client(t, 0).Set(context.Background(), "k", "v", 0)
	code, _, body := a.do("POST", "/api/migrations", testKey, ok+`}`)
	if code != http.StatusBadRequest || !strings.Contains(string(body), `"field":"existing"`) {
		t.Fatalf("non-empty target: %d %s", code, body)
	}
	// Status of an unknown migration.
	if code, _, body := a.do("GET", "/api/migrations/m-nope", testKey, nil); code != http.StatusNotFound || !strings.Contains(string(body), `"field":"id"`) {
		t.Fatalf("unknown id: %d %s", code, body)
	}
}

func TestFunctionKeys(t *testing.T) {
	a := startApp(t, appOptions{})
	for _, c := range []struct {
		name, method, path, key string
		want                    int
	}{
		{"no key", "POST", "/api/migrations", "", 401},
		{"wrong key", "POST", "/api/migrations", "nope", 401},
		{"wrong key status", "GET", "/api/migrations/m-1", "nope", 401},
		{"right key", "GET", "/api/migrations/m-1", testKey, 404},
		{"code query", "GET", "/api/migrations/m-1?code=" + testKey, "", 404},
		{"wrong method", "DELETE", "/api/migrations/m-1", testKey, 405},
		{"no route", "GET", "/api/nothing", testKey, 404},
	} {
		code, _, body := a.do(c.method, c.path, c.key, nil)
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	// The host leaves code= and x-functions-key on the request it hands the handler, so a
	// handler that logged a request's query, headers or URL would leak the key: requests that
	// fail on purpose, with the key both ways, must leave no trace of it in any log line.
	for _, p := range []string{"/api/migrations?code=" + testKey, "/api/imports?code=" + testKey, "/api/migrations/m-nope/verify?code=" + testKey,
		"/api/migrations/m-nope/resume?code=" + testKey} {
		code, _, body := a.do("POST", p, testKey, `{"nope":1}`)
		if code/100 != 4 || strings.Contains(string(body), testKey) {
			t.Errorf("POST %s: %d %s", p, code, body)
		}
	}
	if code, _, body := a.do("GET", "/api/migrations/m-nope?code="+testKey, testKey, nil); code != 404 || strings.Contains(string(body), testKey) {
		t.Errorf("GET: %d %s", code, body)
	}
	if strings.Contains(a.log.String(), testKey) {
		i := strings.Index(a.log.String(), testKey)
		t.Fatalf("the function key reached a log: ...%s...", a.log.String()[max(0, i-200):i])
	}
}

// With forwarding off in host.json the harness sends HTTP triggers as Data.req invocations and
// the handler answers in Outputs.res: the same API works.
func TestHTTPInvocationFormWithoutForwarding(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "h:", 50, 6); err != nil {
		t.Fatal(err)
	}
	hostJSON := []byte(`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler","arguments":["serve"]},
	 "enableForwardingHttpRequest":false},"extensions":{"serviceBus":{"maxConcurrentCalls":2}}}`)
	a := startApp(t, appOptions{hostJSON: hostJSON, settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}})
	code, _, body := a.do("POST", "/api/migrations", testKey, `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"},"nope":1}`)
	if code != 400 || !strings.Contains(string(body), `"field":"nope"`) {
		t.Fatalf("bad request via invocation: %d %s", code, body)
	}
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"}, "target": map[string]string{"setting": "TARGET_REDIS"}})
	st := a.waitFinal(path, 60*time.Second)
	checkCounts(t, st, 50)
	if !strings.Contains(a.log.String(), "MigrationStatus: GET") {
		t.Fatalf("harness did not log the invocation path")
	}
	// The verify route takes its id from the invocation's route parameters.
	run := a.verify(id, `{"sample":10}`)
	if st = a.waitVerify(path, run, 60*time.Second); st.Verify.State != state.VerifyPassed || st.Verify.Keys.Checked == 0 {
		t.Fatalf("verify via invocation: %+v", st.Verify)
	}
}

// Nothing the app prints or answers contains a secret: a run with a Redis password, a storage
// account key and a SAS-like value configured, and errors provoked on purpose.
func TestNoSecretsInAnyOutput(t *testing.T) {
	ctx := context.Background()
	const password = "S3cret-Redis-Passw0rd-xyz"
	const sas = "sv=2024-01-01&sig=SASsignatureVALUE0123456789abcdef%3D"
	src := testenv.StartRedis(t, "--requirepass", password)
	dst := testenv.StartRedis(t, "--requirepass", password)
	srcC := redis.NewClient(&redis.Options{Addr: src.Addr, Password: password})
	defer srcC.Close()
	if err := testenv.FillBulk(ctx, srcC, "s:", 300, 7); err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	accountKey := testenv.DevStoreKey
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{
		"SOURCE_REDIS":      "redis://:" + password + "@" + src.Addr,
		"TARGET_REDIS":      "redis://default:" + password + "@" + dst.Addr,
		"WRONG_PASS_REDIS":  "redis://:" + password + "-wrong@" + dst.Addr,
		"BROKEN_REDIS":      "redis://:" + password + "@host:notaport",
		"SOME_SAS_SETTING":  sas,
		"SAS_REDIS":         sas,
		"ALLOW_INLINE_URLS": "true",
	}})
	var outputs []string
	collect := func(code int, body []byte) { outputs = append(outputs, fmt.Sprintf("%d %s", code, body)) }
	for _, body := range []string{
		`{"source":{"setting":"WRONG_PASS_REDIS"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"source":{"setting":"BROKEN_REDIS"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"source":{"setting":"SOME_SAS_SETTING"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"source":{"setting":"SAS_REDIS"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"source":{"url":"redis://:` + password + `@127.0.0.1:1"},"target":{"setting":"TARGET_REDIS"}}`,
		`{"source":{"url":"redis://:` + password + `@` + src.Addr + `?bogus=1"},"target":{"setting":"TARGET_REDIS"}}`,
	} {
		code, _, b := a.do("POST", "/api/migrations", testKey, body)
		if code != 400 {
			t.Errorf("want 400 for %s: %d %s", body, code, b)
		}
		collect(code, b)
	}
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"}, "target": map[string]string{"setting": "TARGET_REDIS"}})
	st := a.waitFinal(path, 60*time.Second)
	checkCounts(t, st, 300)
	code, _, b := a.do("GET", path, testKey, nil)
	collect(code, b)
	all := strings.Join(outputs, "\n") + "\n" + a.log.String()
	for name, secret := range map[string]string{"password": password, "account key": accountKey, "SAS signature": "SASsignatureVALUE",
		"function key": testKey} {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Errorf("%s leaked: ...%s...", name, all[max(0, i-120):min(len(all), i+40)])
		}
	}
	if len(a.log.String()) < 200 {
		t.Fatalf("captured almost no output: %q", a.log.String())
	}
}

// RunDemo is what `make demo` calls for its function-app run.
func TestRunDemo(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	n, err := testenv.FillAllTypes(ctx, src.Client(t, 0), "demo:")
	if err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	log := &syncBuffer{}
	st, err := functions.RunDemo(ctx, functions.DemoOptions{SourceURL: src.URL(), TargetURL: dst.URL(), Storage: az.ConnectionString, Log: log})
	if err != nil {
		t.Fatalf("%v\n%s", err, lastN(log.String(), 30))
	}
	if st.State != state.StateCompleted || st.Keys.Copied != int64(n) {
		t.Fatalf("%+v", st)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{src.Client(t, 0)}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

var handlerBuild struct {
	once sync.Once
	path string
	err  error
}

// handlerBinary builds the app's binary once per test run, for harnesses that start the handler
// as the host does (a child process running `serve`).
func handlerBinary(t *testing.T) string {
	t.Helper()
	handlerBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "redis-migrate-handler-")
		if err != nil {
			handlerBuild.err = err
			return
		}
		handlerBuild.path = filepath.Join(dir, "handler")
		cmd := exec.Command("go", "build", "-o", handlerBuild.path, ".")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			handlerBuild.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if handlerBuild.err != nil {
		t.Fatal(handlerBuild.err)
	}
	return handlerBuild.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if handlerBuild.path != "" {
		_ = os.RemoveAll(filepath.Dir(handlerBuild.path))
	}
	os.Exit(code)
}
