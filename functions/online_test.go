package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

type onlineEndpoint struct {
	url   string
	nodes []*redis.Client
	keys  redis.UniversalClient
}

func onlineStandalone(t *testing.T, extra ...string) onlineEndpoint {
	s := testenv.StartRedis(t, extra...)
	return onlineEndpoint{s.URL(), []*redis.Client{s.Client(t, 0)}, s.Client(t, 0)}
}

// notifyOnlineSetup starts a standalone source with keyspace notifications on, filled with n
// mixed keys "b:..." (seed), an empty standalone target, and Azurite with the app's state store.
func notifyOnlineSetup(t *testing.T, n, seed int) (src, dst onlineEndpoint, az *testenv.Azurite, store *state.Store) {
	t.Helper()
	ctx := context.Background()
	src, dst = onlineStandalone(t, "--notify-keyspace-events", "KA"), onlineStandalone(t)
	if err := testenv.FillBulk(ctx, src.keys, "b:", n, int64(seed)); err != nil {
		t.Fatal(err)
	}
	az = testenv.StartAzurite(t)
	store, err := state.Open(ctx, az.ConnectionString, state.DefaultContainer)
	if err != nil {
		t.Fatal(err)
	}
	return src, dst, az, store
}

func onlineCluster(t *testing.T, extra ...string) onlineEndpoint {
	cl := testenv.StartCluster(t, extra...)
	return onlineEndpoint{cl.URL(), testenv.ClusterMasters(context.Background(), t, cl.Masters[0].Addr), cl.Client(t)}
}

func (a *app) onlineStatus(path string) *functions.OnlineStatus {
	a.t.Helper()
	code, _, body := a.do("GET", path, testKey, nil)
	if code != http.StatusOK {
		a.t.Fatalf("status: %d %s", code, body)
	}
	var st functions.OnlineStatus
	if err := json.Unmarshal(body, &st); err != nil {
		a.t.Fatalf("%v: %s", err, body)
	}
	if st.Online == nil {
		a.t.Fatalf("no online section: %s", body)
	}
	return &st
}

// watch polls status every 150ms until stop and fails the test if status ever says consistent
// with a gap open; it returns the states seen.
func (a *app) watch(path string) (stop func() map[string]int) {
	seen := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(150 * time.Millisecond):
			}
			code, _, body := a.do("GET", path, testKey, nil)
			var st functions.OnlineStatus
			if code != http.StatusOK || json.Unmarshal(body, &st) != nil || st.Online == nil {
				a.t.Errorf("status: %d %s", code, body)
				return
			}
			mu.Lock()
			seen[st.State]++
			for _, c := range st.Online.Shards {
				seen["chain:"+c.State]++
			}
			mu.Unlock()
			if st.State == functions.StateConsistent && st.Online.GapsOpen > 0 {
				a.t.Errorf("status says consistent with a gap open: %s", body)
			}
			if st.Online.CaughtUp && st.Online.GapsOpen > 0 {
				a.t.Errorf("status says caught up with a gap open: %s", body)
			}
			for _, c := range st.Online.Shards {
				if c.Repair != nil && (st.Online.CaughtUp || st.State == functions.StateConsistent || c.OpenGaps == 0) {
					a.t.Errorf("status says caught up, consistent or gap-free with a repair pass open: %s", body)
				}
			}
		}
	}()
	return func() map[string]int {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// waitOnline polls status until cond holds.
func (a *app) waitOnline(path string, timeout time.Duration, what string, cond func(*functions.OnlineStatus) bool) *functions.OnlineStatus {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := a.onlineStatus(path)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", " ")
			a.t.Fatalf("not %s after %v: %s", what, timeout, b)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// cutover asks for a cutover and waits for its verdict. A cutover refused because a gap opened
// while it verified (a handover that came late on a loaded machine) is asked for again once
// status shows every shard caught up, as the README tells an operator to do.
func (a *app) cutover(path string, body any) *functions.OnlineStatus {
	a.t.Helper()
	var st *functions.OnlineStatus
	for attempt := 1; attempt <= 3; attempt++ {
		asked := time.Now().Add(-time.Second) // the app's clock, not the request's arrival
		code, _, out := a.do("POST", path+"/cutover", testKey, body)
		if code != http.StatusAccepted {
			a.t.Fatalf("cutover: %d %s", code, out)
		}
		st = a.waitOnline(path, 90*time.Second, "cut over", func(st *functions.OnlineStatus) bool {
			c := st.Online.Cutover
			return c != nil && c.RequestedAt.After(asked) && (c.State == state.CutoverConsistent || c.State == state.CutoverFailed)
		})
		c := st.Online.Cutover
		if c.State == state.CutoverConsistent || !strings.Contains(c.Error, "gap") {
			return st
		}
		a.t.Logf("cutover attempt %d refused: %s", attempt, c.Error)
		a.waitOnline(path, 60*time.Second, "caught up again", caughtUp)
	}
	return st
}

func onlineApp(t *testing.T, srcURL, dstURL string, budget int, az *testenv.Azurite, fault func(hostharness.DeliveryInfo) hostharness.Fault) *app {
	return startApp(t, appOptions{azurite: az, fault: fault, settings: map[string]string{"SOURCE_REDIS": srcURL, "TARGET_REDIS": dstURL,
		"SYNC_INVOCATION_SECONDS": fmt.Sprint(budget), "SYNC_LEASE_SECONDS": "2"}})
}

func kickoffOnline(a *app) (string, string) {
	return a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 200, "mode": "online"})
}

func caughtUp(st *functions.OnlineStatus) bool {
	return st.State == functions.StateSyncing && st.Online.CaughtUp && st.Online.PendingKeys == 0
}

// The online migration end to end: a mixed write load runs during the copy and the sync, with a
// 2 s budget per SyncShard invocation (many handovers); once the writer stops and status shows
// every shard caught up, the cutover answers consistent and the target equals the source key by
// key. Status never says consistent (or caught up) with a gap open.
func TestOnlineMigrationUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  func(*testing.T, ...string) onlineEndpoint
	}{
		{"standalone", onlineStandalone},
		{"cluster", onlineCluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			src := tc.src(t, "--notify-keyspace-events", "KA")
			dst := onlineStandalone(t)
			if err := testenv.FillBulk(ctx, src.keys, "b:", 4000, 1); err != nil {
				t.Fatal(err)
			}
			w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 2000, Seed: 5, Keys: 1000})
			a := onlineApp(t, src.url, dst.url, 2, nil, nil)
			_, path := kickoffOnline(a)
			stop := a.watch(path)
			a.waitOnline(path, 90*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })
			time.Sleep(5 * time.Second) // a few handovers under load
			n := w.Stop()
			st := a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
			var handovers int64
			for _, c := range st.Online.Shards {
				handovers += c.Handovers
				if c.Feed != "notify" || c.KeysApplied == 0 || c.LastCheckpoint.IsZero() {
					t.Fatalf("chain status: %+v", c)
				}
			}
			if handovers < int64(2*len(st.Online.Shards)) {
				t.Fatalf("want several handovers per chain, got %d: %+v", handovers, st.Online.Shards)
			}
			st = a.cutover(path, nil)
			if st.State != functions.StateConsistent || st.Online.Cutover.AsOf.IsZero() || st.Verify == nil || st.Verify.State != state.VerifyPassed {
				b, _ := json.MarshalIndent(st, "", " ")
				t.Fatalf("cutover: %s", b)
			}
			seen := stop()
			t.Logf("%d writes, %d handovers, states seen %v", n, handovers, seen)
			time.Sleep(1200 * time.Millisecond) // sub-second TTLs expire on both sides
			testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 5)
		})
	}
}

// The handover is gap-free: the test watches the chain record and writes a key in the window of
// every handover (the continuation is capturing, the predecessor still holds the lease); every
// such key reaches the target.
func TestOnlineHandoverWindowKeys(t *testing.T) {
	ctx := context.Background()
	src := onlineStandalone(t, "--notify-keyspace-events", "KA")
	dst := onlineStandalone(t)
	az := testenv.StartAzurite(t)
	a := onlineApp(t, src.url, dst.url, 1, az, nil)
	store, err := state.Open(ctx, az.ConnectionString, state.DefaultContainer)
	if err != nil {
		t.Fatal(err)
	}
	id, path := kickoffOnline(a)
	a.waitOnline(path, 60*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })
	var windows atomic.Int64
	deadline := time.Now().Add(8 * time.Second)
	lastSeq := -1
	for time.Now().Before(deadline) {
		c, err := store.GetChain(ctx, id, "c0")
		if err != nil {
			t.Fatal(err)
		}
		if c.Holder != "" && c.NextCapturing == c.Seq+1 && c.Seq != lastSeq {
			lastSeq = c.Seq
			if err := src.keys.Set(ctx, fmt.Sprintf("hw:%d", c.Seq), c.Seq, 0).Err(); err != nil {
				t.Fatal(err)
			}
			windows.Add(1)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if windows.Load() < 3 {
		t.Fatalf("only %d handover windows seen", windows.Load())
	}
	a.waitOnline(path, 30*time.Second, "caught up", caughtUp)
	for seq := 0; seq <= lastSeq; seq++ {
		want, err := src.keys.Get(ctx, fmt.Sprintf("hw:%d", seq)).Result()
		if err == redis.Nil {
			continue
		}
		got, err := dst.keys.Get(ctx, fmt.Sprintf("hw:%d", seq)).Result()
		if err != nil || got != want {
			t.Fatalf("key written in handover window %d: target has %q (%v), want %q", seq, got, err, want)
		}
	}
	st := a.onlineStatus(path)
	if st.Online.Shards[0].Takeovers != 0 || st.Online.Shards[0].Gaps != 0 {
		t.Fatalf("handovers without a fault took over or opened a gap: %+v", st.Online.Shards[0])
	}
	t.Logf("%d handover windows written into; %d handovers", windows.Load(), st.Online.Shards[0].Handovers)
}

// Faults on the sync queue: a continuation delivered twice at once (one steps aside while the
// other waits for the lease), one delivered again after it ran (late: the chain moved on), one
// that fails after its work, one lost (the chain dies: status sees it stalled and restarts it
// with a repair), one dead-lettered; and the subscription killed. The target ends equal and
// status is truthful throughout.
func TestOnlineFaults(t *testing.T) {
	ctx := context.Background()
	src := onlineStandalone(t, "--notify-keyspace-events", "KA")
	dst := onlineStandalone(t)
	if err := testenv.FillBulk(ctx, src.keys, "b:", 2000, 1); err != nil {
		t.Fatal(err)
	}
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function != "SyncShard" {
			return hostharness.Deliver
		}
		switch {
		case strings.HasSuffix(d.MessageID, ".g1.s2") && d.DeliveryCount == 1:
			return hostharness.DuplicateNow
		case strings.HasSuffix(d.MessageID, ".g1.s3") && d.DeliveryCount == 1:
			return hostharness.DeliverTwice
		case strings.HasSuffix(d.MessageID, ".g1.s4") && d.DeliveryCount == 1:
			return hostharness.DropReply
		case strings.HasSuffix(d.MessageID, ".g1.s6"):
			return hostharness.Lose
		case strings.HasSuffix(d.MessageID, ".g2.s2"):
			return hostharness.FailBeforeCall // every delivery: dead-lettered
		}
		return hostharness.Deliver
	}
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 1000, Seed: 9, Keys: 500})
	a := onlineApp(t, src.url, dst.url, 1, nil, fault)
	_, path := kickoffOnline(a)
	stop := a.watch(path)
	a.waitOnline(path, 60*time.Second, "restarted twice", func(st *functions.OnlineStatus) bool {
		return st.Online.Shards[0].Restarts >= 2
	})
	// Kill the subscription: the feed reconnects and reports a gap, repaired.
	if err := src.keys.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	n := w.Stop()
	st := a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	c := st.Online.Shards[0]
	// A gap that opens during a repair pass supersedes it (the new pass covers both), so two
	// restarts in quick succession finish at least one pass, not necessarily two.
	if c.Restarts < 2 || c.StalledAt == nil || c.RepairsDone < 1 || c.LastRepair == nil || c.Gaps < 2 {
		t.Fatalf("chain after faults: %+v", c)
	}
	st = a.cutover(path, nil)
	if st.State != functions.StateConsistent {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("cutover: %s", b)
	}
	seen := stop()
	if seen["chain:stalled"] == 0 && c.Restarts == 0 {
		t.Fatalf("no stall seen: %v", seen)
	}
	t.Logf("%d writes; chain %+v; states %v", n, c, seen)
	time.Sleep(1200 * time.Millisecond)
	// Values exactly; expiries within 500 ms: a key re-copied by a repair pass on a loaded
	// machine carries the copy's latency in its TTL (the cutover's verification tolerates 2 s).
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 500)

	// Stop ends the chains; a stopped migration refuses a cutover.
	if code, _, body := a.do("POST", path+"/stop", testKey, nil); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	a.waitOnline(path, 30*time.Second, "stopped", func(st *functions.OnlineStatus) bool { return st.State == functions.StateStopped })
	if code, _, body := a.do("POST", path+"/cutover", testKey, nil); code != http.StatusConflict {
		t.Fatalf("cutover after stop: %d %s", code, body)
	}
}

// Refusals before anything is written: notifications off, an unknown mode or feed, cutover of
// a copy migration (psync refusals: TestOnlinePsyncRefusals).
func TestOnlineRefusals(t *testing.T) {
	src := onlineStandalone(t) // notify-keyspace-events empty
	dst := onlineStandalone(t)
	a := onlineApp(t, src.url, dst.url, 2, nil, nil)
	base := map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"}, "target": map[string]string{"setting": "TARGET_REDIS"}}
	for _, tc := range []struct {
		extra map[string]any
		field string
		want  string
	}{
		{map[string]any{"mode": "online"}, "source", "notify-keyspace-events"},
		{map[string]any{"mode": "live"}, "mode", "want copy or online"},
		{map[string]any{"mode": "online", "feed": "replica"}, "feed", "want notify, psync or auto"},
		{map[string]any{"feed": "notify"}, "feed", "only used with mode online"},
	} {
		req := map[string]any{}
		for k, v := range base {
			req[k] = v
		}
		for k, v := range tc.extra {
			req[k] = v
		}
		code, _, body := a.do("POST", "/api/migrations", testKey, req)
		var e struct{ Error, Field string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Field != tc.field || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%v: %d %s", tc.extra, code, body)
		}
	}
	if n, _ := a.h.Queue.Stats("sync"); n != 0 {
		t.Fatalf("%d sync messages sent by refused requests", n)
	}
	_, path := a.kickoff(base)
	a.waitFinal(path, 60*time.Second)
	if code, _, body := a.do("POST", path+"/cutover", testKey, nil); code != http.StatusConflict || !strings.Contains(string(body), "not an online migration") {
		t.Fatalf("cutover of a copy: %d %s", code, body)
	}
}
