package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// lateContinuation delays the next SyncShard continuation (asked for with arm) past its
// predecessor's budget and margin, so the predecessor stops before the continuation captures:
// with psync, what was written meanwhile comes from the master's backlog, or from a repair pass
// when the backlog lost it.
type lateContinuation struct {
	armed atomic.Bool
	seq   atomic.Int64 // the invocation delayed, once it was
	delay time.Duration
}

func (l *lateContinuation) fault(d hostharness.DeliveryInfo) hostharness.Fault {
	if d.Function != "SyncShard" || d.DeliveryCount != 1 || !strings.Contains(d.MessageID, ".g1.s") {
		return hostharness.Deliver
	}
	seq, err := strconv.Atoi(d.MessageID[strings.LastIndex(d.MessageID, ".s")+2:])
	if err != nil || seq == 0 || !l.armed.CompareAndSwap(true, false) {
		return hostharness.Deliver
	}
	l.seq.Store(int64(seq))
	time.Sleep(l.delay) // the harness delivers it afterwards: a slow host
	return hostharness.Deliver
}

// arm delays the next continuation and waits until its predecessor released the lease without
// handing over; it writes key then (nobody captures at that moment) and returns the delayed seq.
func (l *lateContinuation) arm(t *testing.T, store *state.Store, id string, src redis.UniversalClient, key string) int {
	t.Helper()
	ctx := context.Background()
	l.armed.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if seq := int(l.seq.Load()); seq > 0 {
			c, err := store.GetChain(ctx, id, "c0")
			if err != nil {
				t.Fatal(err)
			}
			if c.Seq == seq-1 && c.Holder == "" && c.HandedTo == -1 {
				if err := src.Set(ctx, key, "written while no invocation captured", 0).Err(); err != nil {
					t.Fatal(err)
				}
				return seq
			}
			if c.Seq >= seq {
				t.Fatalf("invocation %d took over before its predecessor stopped: %+v", seq, c)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no late continuation")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// handoverWindows writes a key hw:<seq> in the window of each handover seen during d (the
// continuation capturing, the predecessor still holding the lease) and returns the last seq.
func handoverWindows(t *testing.T, store *state.Store, id string, src redis.UniversalClient, d time.Duration) (last, windows int) {
	t.Helper()
	ctx := context.Background()
	last = -1
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		c, err := store.GetChain(ctx, id, "c0")
		if err != nil {
			t.Fatal(err)
		}
		if c.Holder != "" && c.NextCapturing == c.Seq+1 && c.Seq != last {
			last = c.Seq
			if err := src.Set(ctx, fmt.Sprintf("hw:%d", c.Seq), c.Seq, 0).Err(); err != nil {
				t.Fatal(err)
			}
			windows++
		}
	}
	return last, windows
}

func assertKeysArrived(t *testing.T, src, dst redis.UniversalClient, keys []string) {
	t.Helper()
	ctx := context.Background()
	for _, k := range keys {
		want, err := src.Get(ctx, k).Result()
		if err == redis.Nil {
			continue // the writer does not touch these keys; a test that wrote one expects it
		}
		got, err := dst.Get(ctx, k).Result()
		if err != nil || got != want {
			t.Fatalf("%s: target has %q (%v), want %q", k, got, err, want)
		}
	}
}

func psyncSetup(t *testing.T, budget int, extra ...string) (src, dst onlineEndpoint, a *app, store *state.Store, late *lateContinuation) {
	ctx := context.Background()
	src = onlineStandalone(t, append([]string{"--repl-diskless-sync-delay", "0"}, extra...)...)
	dst = onlineStandalone(t)
	if err := testenv.FillBulk(ctx, src.keys, "b:", 4000, 1); err != nil {
		t.Fatal(err)
	}
	az := testenv.StartAzurite(t)
	// Past the predecessor's budget + margin (its continuation is sent a margin before the end).
	late = &lateContinuation{delay: time.Duration(budget)*time.Second*3/4 + 500*time.Millisecond}
	a = onlineApp(t, src.url, dst.url, budget, az, late.fault)
	store, err := state.Open(ctx, az.ConnectionString, state.DefaultContainer)
	if err != nil {
		t.Fatal(err)
	}
	return src, dst, a, store, late
}

func kickoffPsync(a *app) (string, string) {
	return a.kickoff(map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"},
		"target": map[string]string{"setting": "TARGET_REDIS"}, "batchKeys": 200, "mode": "online", "feed": "psync"})
}

// finish stops the writer, waits for every change to be applied, cuts over and compares the
// target with the source key by key.
func finishOnline(t *testing.T, a *app, path string, w *testenv.Writer, src, dst onlineEndpoint) *functions.OnlineStatus {
	t.Helper()
	n := w.Stop()
	st := a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	st = a.cutover(path, nil)
	if st.State != functions.StateConsistent || st.Verify == nil || st.Verify.State != state.VerifyPassed {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("cutover: %s", b)
	}
	t.Logf("%d writes; chain %+v; psync %+v", n, st.Online.Shards[0], st.Online.Shards[0].Psync)
	time.Sleep(1200 * time.Millisecond) // sub-second TTLs expire on both sides
	testenv.AssertSameData(context.Background(), t, src.nodes, dst.nodes, nil, 500)
	return st
}

// The psync feed in the function app, with a backlog that holds every handover: a mixed write
// load, a 2 s budget (many handovers), a key written in every handover window; each
// continuation continues the replication stream (+CONTINUE) from the chain's saved position.
// A continuation delivered late (its predecessor stopped before it captured) also continues,
// so the key written while nothing captured arrives without a gap or repair. Then the cutover
// is consistent and the target equals the source key by key.
func TestOnlinePsyncUnderLoad(t *testing.T) {
	src, dst, a, store, late := psyncSetup(t, 2, "--repl-backlog-size", "64mb")
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 2000, Seed: 5, Keys: 1000})
	id, path := kickoffPsync(a)
	stop := a.watch(path)
	a.waitOnline(path, 90*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })
	last, windows := handoverWindows(t, store, id, src.keys, 8*time.Second)
	if windows < 3 {
		t.Fatalf("only %d handover windows seen", windows)
	}
	seq := late.arm(t, store, id, src.keys, "late:continue")
	a.waitOnline(path, 30*time.Second, "past the late continuation", func(st *functions.OnlineStatus) bool {
		return st.Online.Shards[0].Invocation > seq
	})
	st := finishOnline(t, a, path, w, src, dst)
	seen := stop()
	keys := []string{"late:continue"}
	for s := 0; s <= last; s++ {
		keys = append(keys, fmt.Sprintf("hw:%d", s))
	}
	assertKeysArrived(t, src.keys, dst.keys, keys)
	c := st.Online.Shards[0]
	if c.Feed != "psync" || st.Online.Feed != "psync" || c.Psync == nil || c.Psync.ReplID == "" || c.Psync.Offset <= 0 || c.Psync.MasterOffset <= 0 {
		t.Fatalf("chain status: %+v %+v", c, c.Psync)
	}
	if c.Gaps != 0 || c.Takeovers != 0 || c.Psync.FullResyncs != 0 || c.Handovers < int64(windows) || c.Psync.Continues < c.Handovers {
		t.Fatalf("with a big enough backlog every continuation continues the stream, no gap: %+v %+v", c, c.Psync)
	}
	t.Logf("%d handover windows, late continuation s%d, states %v", windows, seq, seen)
}

// The backlog too small for a handover (repl-backlog-size 16 kB under 2,000 writes/s and
// ~4 MB/s of padding, a 4 s budget): continuations' PSYNCs are answered +FULLRESYNC. While the
// predecessor still captures that is no gap (the new stream starts before it stops): the handover-window keys arrive without a repair.
// A late continuation answered +FULLRESYNC has a real gap: a repair pass makes the target whole.
func TestOnlinePsyncBacklogLost(t *testing.T) {
	src, dst, a, store, late := psyncSetup(t, 4, "--repl-backlog-size", "16384")
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 2000, Seed: 7, Keys: 1000})
	// ~4 MB/s of 2 kB values besides: the backlog holds about 4 ms of them. (At 1.5 MB/s a
	// quiet machine handed over within the backlog, and the test failed there.)
	padDone := make(chan struct{})
	padStopped := make(chan struct{})
	go func() {
		defer close(padStopped)
		pad := strings.Repeat("p", 2048)
		for i := 0; ; i++ {
			select {
			case <-padDone:
				return
			case <-time.After(4 * time.Millisecond):
			}
			pipe := src.keys.Pipeline()
			for j := 0; j < 8; j++ {
				pipe.Set(context.Background(), fmt.Sprintf("pad:%d", (8*i+j)%300), pad, 0)
			}
			_, _ = pipe.Exec(context.Background())
		}
	}()
	defer func() {
		select {
		case <-padDone:
		default:
			close(padDone)
		}
		<-padStopped
	}()
	id, path := kickoffPsync(a)
	stop := a.watch(path)
	a.waitOnline(path, 90*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })
	last, windows := handoverWindows(t, store, id, src.keys, 9*time.Second)
	if windows < 2 {
		t.Fatalf("only %d handover windows seen", windows)
	}
	st := a.onlineStatus(path)
	before := st.Online.Shards[0]
	if before.Psync == nil || before.Psync.FullResyncs < 2 {
		t.Fatalf("want continuations answered +FULLRESYNC: %+v %+v", before, before.Psync)
	}
	seq := late.arm(t, store, id, src.keys, "late:resync")
	a.waitOnline(path, 40*time.Second, "repaired after the late continuation", func(st *functions.OnlineStatus) bool {
		c := st.Online.Shards[0]
		return c.Invocation >= seq && c.Gaps > before.Gaps && c.RepairsDone >= 1 && c.OpenGaps == 0
	})
	close(padDone)
	<-padStopped
	st = finishOnline(t, a, path, w, src, dst)
	seen := stop()
	keys := []string{"late:resync"}
	for s := 0; s <= last; s++ {
		keys = append(keys, fmt.Sprintf("hw:%d", s))
	}
	assertKeysArrived(t, src.keys, dst.keys, keys)
	c := st.Online.Shards[0]
	// A continuation answered +FULLRESYNC in time (its predecessor still capturing) opened no
	// gap; one that came late on a loaded machine did, like the late one the test made. Once the
	// writers stop the backlog holds a handover again: later continuations may continue.
	if c.Takeovers != 0 || c.Gaps >= c.Psync.FullResyncs || c.Psync.FullResyncs < 3 {
		t.Fatalf("chain: %+v %+v", c, c.Psync)
	}
	t.Logf("%d handover windows, late continuation s%d, states %v", windows, seq, seen)
}

// Feed psync and auto at the start: a user without PSYNC is refused with the reason before
// anything is enqueued (psync; auto when notifications are off too); auto takes notify when
// psync is refused and notifications are on, and psync when the source allows it.
func TestOnlinePsyncRefusals(t *testing.T) {
	ctx := context.Background()
	src := onlineStandalone(t, "--repl-diskless-sync-delay", "0")
	dst := onlineStandalone(t)
	if err := src.nodes[0].Do(ctx, "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "&*", "+@all", "-psync", "-sync").Err(); err != nil {
		t.Fatal(err)
	}
	reader := "redis://reader:s3cret-pw@" + strings.TrimPrefix(src.url, "redis://")
	a := startApp(t, appOptions{settings: map[string]string{"SOURCE_REDIS": src.url, "READER_REDIS": reader, "TARGET_REDIS": dst.url,
		"SYNC_INVOCATION_SECONDS": "2", "SYNC_LEASE_SECONDS": "2"}})
	req := func(source, feed string) map[string]any {
		return map[string]any{"source": map[string]string{"setting": source}, "target": map[string]string{"setting": "TARGET_REDIS"},
			"mode": "online", "feed": feed}
	}
	for _, tc := range []struct {
		source, feed, field, want string
	}{
		{"READER_REDIS", "psync", "source", "+psync"},
		{"READER_REDIS", "auto", "source", "neither feed"},
		{"SOURCE_REDIS", "fast", "feed", "want notify, psync or auto"},
	} {
		code, _, body := a.do("POST", "/api/migrations", testKey, req(tc.source, tc.feed))
		var e struct{ Error, Field string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Field != tc.field || !strings.Contains(e.Error, tc.want) || strings.Contains(string(body), "s3cret-pw") {
			t.Errorf("%s %s: %d %s", tc.source, tc.feed, code, body)
		}
	}
	if n, _ := a.h.Queue.Stats("sync"); n != 0 {
		t.Fatalf("%d sync messages sent by refused requests", n)
	}
	if n, err := dst.keys.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("target holds %d keys (%v) after refusals", n, err)
	}
	// auto: psync where the source allows it; notify for the user that may not replicate.
	_, path := a.kickoff(req("SOURCE_REDIS", "auto"))
	if st := a.onlineStatus(path); st.Online.Feed != "psync" || st.Online.Shards[0].Feed != "psync" {
		t.Fatalf("auto with replication allowed: feed %s", st.Online.Feed)
	}
	if code, _, body := a.do("POST", path+"/stop", testKey, nil); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	if err := src.nodes[0].ConfigSet(ctx, "notify-keyspace-events", "KA").Err(); err != nil {
		t.Fatal(err)
	}
	_, path = a.kickoff(req("READER_REDIS", "auto"))
	if st := a.onlineStatus(path); st.Online.Feed != "notify" {
		t.Fatalf("auto with PSYNC refused: feed %s", st.Online.Feed)
	}
	if code, _, body := a.do("POST", path+"/stop", testKey, nil); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
}

// A cluster source: one psync chain per master, each continuing its own master's stream across
// handovers; cutover consistent, target equal key by key.
func TestOnlinePsyncCluster(t *testing.T) {
	ctx := context.Background()
	src := onlineCluster(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "64mb")
	dst := onlineStandalone(t)
	if err := testenv.FillBulk(ctx, src.keys, "b:", 3000, 1); err != nil {
		t.Fatal(err)
	}
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 1500, Seed: 11, Keys: 1000})
	a := onlineApp(t, src.url, dst.url, 2, nil, nil)
	_, path := kickoffPsync(a)
	a.waitOnline(path, 90*time.Second, "syncing", func(st *functions.OnlineStatus) bool { return st.State == functions.StateSyncing })
	time.Sleep(5 * time.Second) // handovers under load
	st := finishOnline(t, a, path, w, src, dst)
	if len(st.Online.Shards) != len(src.nodes) {
		t.Fatalf("%d chains for %d masters", len(st.Online.Shards), len(src.nodes))
	}
	for _, c := range st.Online.Shards {
		if c.Feed != "psync" || c.Psync == nil || c.Psync.Continues < 1 || c.Gaps != 0 || c.KeysApplied == 0 {
			t.Fatalf("chain %s: %+v %+v", c.Chain, c, c.Psync)
		}
	}
}
