package functions_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// gate holds deliveries while closed; the fault hook waits on it.
type gate struct {
	mu sync.Mutex
	ch chan struct{}
}

func openGate() *gate {
	ch := make(chan struct{})
	close(ch)
	return &gate{ch: ch}
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
		g.ch = make(chan struct{})
	default:
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
	default:
		close(g.ch)
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	<-ch
}

// verify posts a verification and returns the run id.
func (a *app) verify(id string, body any) string {
	a.t.Helper()
	code, hdr, out := a.do("POST", "/api/migrations/"+id+"/verify", testKey, body)
	if code != http.StatusAccepted {
		a.t.Fatalf("verify %s: %d %s", id, code, out)
	}
	var vr functions.VerifyResponse
	if err := json.Unmarshal(out, &vr); err != nil {
		a.t.Fatal(err)
	}
	if vr.Run == "" || vr.State != state.VerifyRunning || !strings.HasSuffix(hdr.Get("Location"), "/api/migrations/"+id) {
		a.t.Fatalf("verify answer %s (Location %q)", out, hdr.Get("Location"))
	}
	return vr.Run
}

// waitVerify polls status until the verification run is over.
func (a *app) waitVerify(path, run string, timeout time.Duration) *state.Status {
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
		if v := st.Verify; v != nil && v.Run == run && v.Final() && !st.Stale {
			return &st
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("verification %s not over after %v: %s", run, timeout, body)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// A finished migration (two source dbs mapped into one with a prefix) verifies clean; after a
// missing key, a changed value, a changed type and a changed TTL are planted in the target, a new
// run fails and names each; a sample run checks about the sample. Verifying an unknown or an
// unfinished migration, or while a run is going on, is refused.
func TestVerifyRoute(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	n, err := testenv.FillAllTypes(ctx, src.Client(t, 0), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "bulk:", 800, 11); err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, src.Client(t, 1), "b:", 200, 12); err != nil {
		t.Fatal(err)
	}
	total := int64(n + 800 + 200)
	copyGate, verifyGate := openGate(), openGate()
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function == "CopyBatch" {
			if strings.Contains(string(d.Body), `"kind":"verify"`) {
				verifyGate.wait()
			} else {
				copyGate.wait()
			}
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	defer copyGate.open()
	defer verifyGate.open()

	// Unknown and malformed ids.
	for _, id := range []string{"m-nope", "Bad_Id"} {
		if code, _, body := a.do("POST", "/api/migrations/"+id+"/verify", testKey, nil); code != http.StatusNotFound || !strings.Contains(string(body), `"field":"id"`) {
			t.Fatalf("verify of %s: %d %s", id, code, body)
		}
	}
	if code, _, _ := a.do("POST", "/api/migrations/m-nope/verify", "wrong", nil); code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", code)
	}

	copyGate.shut()
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100, "dbMap": "0:0,1:0", "dbPrefix": "1:one:"})
	code, _, body := a.do("POST", "/api/migrations/"+id+"/verify", testKey, nil)
	if code != http.StatusConflict || !strings.Contains(string(body), "once it has completed") {
		t.Fatalf("verify of an unfinished migration: %d %s", code, body)
	}
	copyGate.open()
	st := a.waitFinal(path, 60*time.Second)
	checkCounts(t, st, total)
	if st.Verify != nil {
		t.Fatalf("verify before any run: %+v", st.Verify)
	}

	// Bad bodies.
	for _, c := range []struct{ body, field, msg string }{
		{`{"sample":0}`, "sample", "1..100000"},
		{`{"sample":5,"full":true}`, "full", "not both"},
		{`{"full":false}`, "sample", "number of keys"},
		{`{"ttlToleranceMs":-1}`, "ttlToleranceMs", "0.."},
		{`{"ttlToleranceMs":"1s"}`, "ttlToleranceMs", "number"},
		{`{"fast":true}`, "fast", "unknown field"},
		{`[1]`, "", "JSON object"},
	} {
		code, _, body := a.do("POST", "/api/migrations/"+id+"/verify", testKey, c.body)
		var e struct{ Error, Field string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Field != c.field || !strings.Contains(e.Error, c.msg) {
			t.Errorf("%s: %d %s; want 400 field=%q containing %q", c.body, code, body, c.field, c.msg)
		}
	}

	// Run 1: clean. A second request while it runs is refused.
	verifyGate.shut()
	run1 := a.verify(id, nil)
	if code, _, body := a.do("POST", "/api/migrations/"+id+"/verify", testKey, `{"full":true}`); code != http.StatusConflict || !strings.Contains(string(body), "still running") {
		t.Fatalf("verify during a run: %d %s", code, body)
	}
	var during state.Status
	if code, _, body := a.do("GET", path, testKey, nil); code != 200 || json.Unmarshal(body, &during) != nil ||
		during.Verify == nil || during.Verify.Run != run1 || during.Verify.State != state.VerifyRunning || during.State != state.StateCompleted {
		t.Fatalf("status during the run: %d %s", code, body)
	}
	verifyGate.open()
	st = a.waitVerify(path, run1, 60*time.Second)
	v := st.Verify
	if v.State != state.VerifyPassed || v.Mode != "full" || v.Keys.Checked != total || v.Keys.Matching != total || v.Keys.Differing() != 0 ||
		len(v.Differences) != 0 || v.ShardsPlanned != 2 || v.Batches.Sent != v.Batches.Done || v.Batches.Sent == 0 || v.TTLToleranceMs != 2000 {
		t.Fatalf("clean run: %+v", v)
	}
	if st.State != state.StateCompleted || st.Keys.Copied != total {
		t.Fatalf("the copy's status changed: %s %+v", st.State, st.Keys)
	}

	// Plant one difference of each kind (one of them under the db 1 prefix).
	d := dst.Client(t, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Del(ctx, "one:b:k:7").Err())                               // missing
	must(d.Set(ctx, "str:plain", "changed", 0).Err())                 // value
	must(d.Del(ctx, "hash:small").Err())                              // type: same name, a set now
	must(d.SAdd(ctx, "hash:small", "f1").Err())                       //
	must(d.PExpire(ctx, "str:ttl", 3*time.Hour).Err())                // ttl: 2 h later than the source's
	must(d.Set(ctx, "extra-in-target", "not in the source", 0).Err()) // not a source key: not checked

	run2 := a.verify(id, map[string]any{"full": true, "ttlToleranceMs": 1000})
	if run2 == run1 {
		t.Fatalf("the second run reused id %s", run1)
	}
	st = a.waitVerify(path, run2, 60*time.Second)
	v = st.Verify
	k := v.Keys
	if v.State != state.VerifyFailed || k.Checked != total || k.Missing != 1 || k.ValueDifferent != 1 || k.TypeDifferent != 1 ||
		k.TTLDifferent != 1 || k.Errors != 0 || k.Matching != total-4 || v.TTLToleranceMs != 1000 {
		t.Fatalf("run with planted differences: %+v", v)
	}
	want := map[string]string{"one:b:k:7": "missing", "str:plain": "value", "hash:small": "type", "str:ttl": "ttl"}
	got := map[string]string{}
	for _, df := range v.Differences {
		got[df.Key] = df.Kind
		if df.Detail == "" || df.Batch == "" {
			t.Errorf("difference without detail or batch: %+v", df)
		}
	}
	for key, kind := range want {
		if got[key] != kind {
			t.Errorf("difference of %s: got %q, want %q (all: %+v)", key, got[key], kind, v.Differences)
		}
	}

	// Run 3: a sample.
	run3 := a.verify(id, map[string]any{"sample": 150})
	st = a.waitVerify(path, run3, 60*time.Second)
	v = st.Verify
	if v.Mode != "sample of 150" || v.Keys.Checked < 100 || v.Keys.Checked > 151 || v.Keys.Checked != v.Keys.Matching+v.Keys.Differing() {
		t.Fatalf("sample run: %+v", v)
	}
	if (v.Keys.Differing() > 0) != (v.State == state.VerifyFailed) {
		t.Fatalf("sample verdict %s with %d differing", v.State, v.Keys.Differing())
	}
	// The final summary is served as is, and says the latest run.
	var after state.Status
	if _, _, body := a.do("GET", path, testKey, nil); json.Unmarshal(body, &after) != nil || after.Verify == nil || after.Verify.Run != run3 {
		t.Fatalf("status after run 3: %s", body)
	}
}

// Big keys found by a copy batch are copied in batches of their own (<batch>-big-<i>), also when
// the spawning batch is delivered twice or its reply is lost; status counts every batch and key
// once, and the target equals the source.
func TestBigKeysInTheirOwnBatches(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	n, err := testenv.FillAllTypes(ctx, sc, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.FillBulk(ctx, sc, "bulk:", 600, 21); err != nil {
		t.Fatal(err)
	}
	const threshold = 16 << 10
	big := map[string]bool{}
	keys, err := sc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if m, err := sc.MemoryUsage(ctx, k).Result(); err == nil && m >= threshold {
			big[k] = true
		}
	}
	if len(big) < 3 {
		t.Fatalf("want a few big keys in the dataset, got %v", big)
	}
	var mu sync.Mutex
	injected := map[string]int{}
	spawning := 0
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" || d.DeliveryCount != 1 {
			return hostharness.Deliver
		}
		var m struct {
			Batch plan.Batch `json:"batch"`
		}
		_ = json.Unmarshal(d.Body, &m)
		mu.Lock()
		defer mu.Unlock()
		if m.Batch.Big {
			injected["big-twice"]++
			return hostharness.DeliverTwice
		}
		for _, k := range m.Batch.Keys {
			if big[string(k)] {
				// Alternate between the two faults over the batches that spawn.
				spawning++
				if spawning%2 == 1 {
					injected["spawning-reply-lost"]++
					return hostharness.DropReply
				}
				injected["spawning-twice"]++
				return hostharness.DeliverTwice
			}
		}
		return hostharness.Deliver
	}
	az := testenv.StartAzurite(t)
	a := startApp(t, appOptions{azurite: az, settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	ok := `{"source":{"setting":"SOURCE_REDIS"},"target":{"setting":"TARGET_REDIS"}`
	for _, c := range []struct{ body, msg string }{
		{ok + `,"bigKeyBytes":-2}`, "or -1"},
		{ok + `,"bigKeyBytes":2199023255552}`, "1..1099511627776"},
		{ok + `,"bigKeyBytes":"16k"}`, "number"},
	} {
		code, _, body := a.do("POST", "/api/migrations", testKey, c.body)
		if code != http.StatusBadRequest || !strings.Contains(string(body), `"field":"bigKeyBytes"`) || !strings.Contains(string(body), c.msg) {
			t.Errorf("%s: %d %s", c.body, code, body)
		}
	}
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 20, "bigKeyBytes": threshold})
	st := a.waitFinal(path, 60*time.Second)
	mu.Lock()
	t.Logf("big keys %d, injected %v", len(big), injected)
	for _, f := range []string{"spawning-reply-lost", "spawning-twice", "big-twice"} {
		if injected[f] == 0 {
			t.Errorf("fault %s never injected", f)
		}
	}
	mu.Unlock()
	checkCounts(t, st, int64(n+600))
	if st.Keys.Big != int64(len(big)) {
		t.Errorf("keys.big %d, want %d", st.Keys.Big, len(big))
	}

	// The results: one per big key, named after the batch that found it.
	store, err := state.Open(ctx, az.ConnectionString, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	pager := store.Container().NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(id + "/results/")})
	var bigResults, results int
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			results++
			name := strings.TrimSuffix(strings.TrimPrefix(*it.Name, id+"/results/"), ".json")
			if !strings.Contains(name, "-big-") {
				continue
			}
			bigResults++
			r, err := store.GetResult(ctx, id, name)
			if err != nil {
				t.Fatal(err)
			}
			if r.Keys != 1 || r.Result.Big != 1 || r.Result.Copied != 1 {
				t.Errorf("big batch %s: %+v", name, r)
			}
		}
	}
	if bigResults != len(big) || int64(results) != st.Batches.Done {
		t.Fatalf("%d big-key results of %d (want %d); batches %+v", bigResults, results, len(big), st.Batches)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)

	// The copy verifies clean, big keys (digested in chunks) included.
	run := a.verify(id, nil)
	st = a.waitVerify(path, run, 60*time.Second)
	if st.Verify.State != state.VerifyPassed || st.Verify.Keys.Checked != int64(n+600) {
		t.Fatalf("verify: %+v", st.Verify)
	}
}

// local.settings.example.json lists every setting the app reads, and serve --local can load it.
func TestExampleSettingsListEverySetting(t *testing.T) {
	file := filepath.Join(testenv.RepoRoot(), "local.settings.example.json")
	if _, err := functions.LoadSettings(file, true); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var ls struct{ Values map[string]string }
	if err := json.Unmarshal(raw, &ls); err != nil {
		t.Fatal(err)
	}
	settings := ls.Values
	for _, name := range []string{functions.SettingStorage, functions.SettingServiceBus, functions.SettingStateContainer,
		functions.SettingAllowInlineURLs, functions.SettingMaxDeliveries, functions.SettingPlanStepSeconds, functions.SettingPlanStepMaxKeys,
		functions.SettingStallSeconds, functions.SettingLocalFunctionKey, functions.SettingEndpointSettings, functions.SettingImportTarget, functions.SettingImportExisting, functions.SettingImportDBMap,
		functions.SettingImportDBPrefix, functions.SettingImportMatch, functions.SettingImportFunctions, functions.SettingImportModules,
		functions.SettingImportSeconds, functions.SettingImportCheckpointMs, functions.SettingImportMaxAttempts,
		functions.SettingSyncInvocationSeconds, functions.SettingSyncLeaseSeconds, functions.SettingRetryBaseMs, functions.SettingRetryMaxMs} {
		if _, ok := settings[name]; !ok {
			t.Errorf("%s is missing from local.settings.example.json", name)
		}
	}
}

// A delivery that recorded a key as sent off to a big-key batch (and sent it) but crashed before
// recording the batch's result: the redelivery leaves that key to its batch, even though it is
// not big, so every key and batch is counted once.
func TestSpawnRecordSurvivesACrashedDelivery(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc := src.Client(t, 0)
	if err := testenv.FillBulk(ctx, sc, "bulk:", 200, 31); err != nil {
		t.Fatal(err)
	}
	fields := make([]any, 0, 4000)
	for i := 0; i < 2000; i++ {
		fields = append(fields, "field-"+strings.Repeat("x", i%7), "value-"+strings.Repeat("y", 20)+string(rune('a'+i%26)), "f"+time.Duration(i).String(), i)
	}
	if err := sc.HSet(ctx, "bighash", fields...).Err(); err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	store, err := state.Open(ctx, az.ConnectionString, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	const id = "m-spawn-crash"
	var a *app
	var mu sync.Mutex
	simulated := ""
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" || d.DeliveryCount != 1 {
			return hostharness.Deliver
		}
		var m struct {
			Batch plan.Batch `json:"batch"`
		}
		_ = json.Unmarshal(d.Body, &m)
		mu.Lock()
		defer mu.Unlock()
		if simulated != "" || m.Batch.Big {
			return hostharness.Deliver
		}
		j, hasBig := -1, false
		for i, k := range m.Batch.Keys {
			if string(k) == "bighash" {
				hasBig = true
			} else if j < 0 {
				j = i
			}
		}
		if !hasBig || j < 0 {
			return hostharness.Deliver
		}
		// What the crashed delivery left behind: key j recorded and sent off (it was big then).
		if _, err := store.RecordSpawnedBig(ctx, id, m.Batch.ID, []int{j}); err != nil {
			t.Error(err)
		}
		bb := plan.Batch{ID: m.Batch.ID + "-big-" + strconv.Itoa(j), Shard: m.Batch.Shard, DB: m.Batch.DB, Keys: [][]byte{m.Batch.Keys[j]}, Big: true}
		body, _ := json.Marshal(map[string]any{"migration": id, "batch": bb})
		if err := a.h.Queue.Send(ctx, queue.Copy, []queue.Message{{ID: id + "." + bb.ID, Body: body}}); err != nil {
			t.Error(err)
		}
		simulated = m.Batch.ID
		return hostharness.FailBeforeCall
	}
	a = startApp(t, appOptions{azurite: az, settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	_, path := a.kickoff(map[string]any{"id": id, "source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 25, "bigKeyBytes": 16 << 10})
	st := a.waitFinal(path, 60*time.Second)
	mu.Lock()
	if simulated == "" {
		t.Fatal("the spawning batch was never seen")
	}
	mu.Unlock()
	checkCounts(t, st, 201)
	if st.Keys.Big != 2 {
		t.Fatalf("keys.big %d, want 2 (the big hash, and the key sent off by the crashed delivery)", st.Keys.Big)
	}
	r, err := store.GetResult(ctx, id, simulated)
	if err != nil || r.Spawned != 2 || r.Delivery != 2 {
		t.Fatalf("result of the spawning batch: %+v %v", r, err)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dst.Client(t, 0)}, nil, 2000)
}

// A verify batch that fails every delivery ends dead-lettered: the run fails, counting its keys
// as errors, with the queue's reason.
func TestVerifyBatchDeadLettered(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	if err := testenv.FillBulk(ctx, src.Client(t, 0), "v:", 300, 41); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	victim := ""
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" || !strings.Contains(string(d.Body), `"kind":"verify"`) {
			return hostharness.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		if victim == "" {
			victim = d.MessageID
		}
		if d.MessageID == victim {
			return hostharness.FailBeforeCall
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	id, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 100})
	checkCounts(t, a.waitFinal(path, 60*time.Second), 300)
	run := a.verify(id, nil)
	v := a.waitVerify(path, run, 60*time.Second).Verify
	if v.State != state.VerifyFailed || v.Batches.DeadLettered != 1 || len(v.DeadLettered) != 1 ||
		!strings.Contains(v.DeadLettered[0].Reason, "MaxDeliveryCountExceeded") || v.Keys.Errors != int64(v.DeadLettered[0].Keys) ||
		v.Keys.Checked != 300 || v.Keys.Matching != 300-v.Keys.Errors {
		t.Fatalf("verify with a dead-lettered batch: %+v", v)
	}
}

// A key copied inline by a delivery that then crashed, and big by the redelivery: its own batch
// overwrites the copy the crashed delivery left (existing fail only guards against keys that
// were there before the migration), so it is copied, not reported as a clash.
func TestKeyGrownBigAfterACrashedDelivery(t *testing.T) {
	ctx := context.Background()
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	sc, dc := src.Client(t, 0), dst.Client(t, 0)
	if err := testenv.FillBulk(ctx, sc, "bulk:", 200, 51); err != nil {
		t.Fatal(err)
	}
	if err := sc.Set(ctx, "grow", "small for now", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := false
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "CopyBatch" || d.DeliveryCount != 1 || !strings.Contains(string(d.Body), `"Z3Jvdw=="`) { // "grow" in base64
			return hostharness.Deliver
		}
		mu.Lock()
		defer mu.Unlock()
		if done {
			return hostharness.Deliver
		}
		done = true
		// What the crashed delivery left behind: "grow" copied while small. Then it grows.
		if err := dc.Set(ctx, "grow", "small for now", 0).Err(); err != nil {
			t.Error(err)
		}
		if err := sc.Set(ctx, "grow", strings.Repeat("big value ", 5000), 0).Err(); err != nil {
			t.Error(err)
		}
		return hostharness.FailBeforeCall
	}
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.URL(), "TARGET_REDIS": dst.URL()}, fault: fault})
	_, path := a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 25, "bigKeyBytes": 16 << 10})
	st := a.waitFinal(path, 60*time.Second)
	if !done {
		t.Fatal("the batch holding the key was never seen")
	}
	checkCounts(t, st, 201)
	if st.Keys.Big != 1 {
		t.Fatalf("keys.big %d, want 1", st.Keys.Big)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 2000)
}
