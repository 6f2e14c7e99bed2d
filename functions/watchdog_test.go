package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// waitChain polls the chain record in the state container (not status: a status call would
// restart a stalled chain itself) until cond holds.
func waitChain(t *testing.T, store *state.Store, id string, timeout time.Duration, what string, cond func(*state.SyncChain) bool) *state.SyncChain {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := store.GetChain(context.Background(), id, "c0")
		if err != nil {
			t.Fatal(err)
		}
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(c, "", " ")
			t.Fatalf("chain not %s after %v: %s", what, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A SyncShard invocation killed mid-run (the handler runs as a child process, as under the
// host, and is SIGKILLed) while a writer loads the source. Nobody asks for the status: the
// SyncWatchdog timer finds the chain stalled and restarts it as generation 2, whose first
// invocation repairs the shard; the killed message, redelivered once its lock lapsed, steps
// aside. Status then shows the restart with the dead chain's last checkpoint, is never
// consistent or caught up with a gap open, and the target ends equal to the source key by key.
func TestOnlineWatchdogRestartsAKilledChain(t *testing.T) {
	ctx := context.Background()
	src, dst, az, store := notifyOnlineSetup(t, 2000, 1)
	// A 20 s budget: the kill lands well before the invocation sends its continuation, so
	// nothing but the watchdog (or the lapsed lock, 10 s later) can bring the chain back.
	a := startApp(t, appOptions{azurite: az, process: true, lockDuration: 10 * time.Second, settings: map[string]string{
		"SOURCE_REDIS": src.url, "TARGET_REDIS": dst.url, "SYNC_INVOCATION_SECONDS": "20", "SYNC_LEASE_SECONDS": "2",
		functions.SettingSyncWatchdogSchedule: "* * * * * *"}})
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 1000, Seed: 11, Keys: 500})
	id, path := kickoffOnline(a)
	waitChain(t, store, id, 60*time.Second, "applying before its continuation was sent", func(c *state.SyncChain) bool {
		sent, _ := a.h.Queue.Stats("sync")
		if sent > 1 {
			t.Fatalf("the first invocation sent its continuation before the copy was done: %+v", c)
		}
		return c.Gen == 1 && c.CopyDone && c.Holder != "" && c.Applied > 0
	})
	statusCalls := a.h.Invocations("MigrationStatus")
	watchdogRuns := a.h.Invocations("SyncWatchdog")
	if err := a.h.KillHandler(ctx); err != nil {
		t.Fatal(err)
	}
	dead, err := store.GetChain(ctx, id, "c0")
	if err != nil {
		t.Fatal(err)
	}
	if dead.Gen != 1 || dead.Holder == "" {
		t.Fatalf("chain right after the kill: %+v", dead)
	}
	c := waitChain(t, store, id, 30*time.Second, "restarted", func(c *state.SyncChain) bool { return c.Gen == 2 })
	if n := a.h.Invocations("MigrationStatus"); n != statusCalls {
		t.Fatalf("%d status calls while the chain was dead: the restart must come from the watchdog", n-statusCalls)
	}
	if a.h.Invocations("SyncWatchdog") <= watchdogRuns || c.Restarts != 1 || !c.StalledAt.Equal(dead.CheckpointAt) {
		t.Fatalf("restart: watchdog runs %d -> %d; chain %+v; last checkpoint before the kill %s", watchdogRuns, a.h.Invocations("SyncWatchdog"), c, dead.CheckpointAt)
	}
	// The record is written before the first message is sent and the line logged: wait for it.
	for logged := time.Now().Add(15 * time.Second); !strings.Contains(a.log.String(), "SyncWatchdog: "+id+": chain c0 stalled"); {
		if time.Now().After(logged) {
			t.Fatal("the watchdog did not log the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop := a.watch(path)
	st := a.onlineStatus(path)
	sh := st.Online.Shards[0]
	if sh.Restarts != 1 || sh.StalledAt == nil || !sh.StalledAt.Equal(dead.CheckpointAt) || st.State == functions.StateConsistent {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("status after the restart: %s", b)
	}
	// The killed invocation's message comes back after its lock lapsed and steps aside.
	deadline := time.Now().Add(30 * time.Second)
	aside := fmt.Sprintf("c0 g1.s%d: stepping aside: the chain is at generation 2", dead.Seq)
	for !strings.Contains(a.log.String(), aside) {
		if time.Now().After(deadline) {
			t.Fatal("the killed invocation's redelivery did not step aside")
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := w.Stop()
	st = a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	sh = st.Online.Shards[0]
	// (A later restart or takeover would be a machine too loaded to renew a lease; the killed
	// message's redelivery stepping aside is checked above.)
	if sh.Generation < 2 || sh.RepairsDone < 1 || sh.Restarts < 1 {
		t.Fatalf("chain after the restart: %+v", sh)
	}
	seen := stop()
	t.Logf("%d writes; chain %+v; states %v", n, sh, seen)
	time.Sleep(1200 * time.Millisecond) // sub-second TTLs expire on both sides
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 500)
}

// A continuation dead-lettered (every delivery fails): the chain stops checkpointing, and the
// watchdog, on its schedule and with no status call, restarts it with a repair pass.
func TestOnlineWatchdogRestartsADeadLetteredChain(t *testing.T) {
	ctx := context.Background()
	src, dst, az, store := notifyOnlineSetup(t, 1000, 1)
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function == "SyncShard" && strings.HasSuffix(d.MessageID, ".g1.s2") {
			return hostharness.FailBeforeCall
		}
		return hostharness.Deliver
	}
	a := startApp(t, appOptions{azurite: az, fault: fault, settings: map[string]string{
		"SOURCE_REDIS": src.url, "TARGET_REDIS": dst.url, "SYNC_INVOCATION_SECONDS": "1", "SYNC_LEASE_SECONDS": "2",
		functions.SettingSyncWatchdogSchedule: "* * * * * *"}})
	w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: 500, Seed: 13, Keys: 300})
	id, path := kickoffOnline(a)
	c := waitChain(t, store, id, 60*time.Second, "restarted", func(c *state.SyncChain) bool { return c.Gen == 2 })
	if n := a.h.Invocations("MigrationStatus"); n != 0 {
		t.Fatalf("%d status calls: the restart must come from the watchdog", n)
	}
	if dl := a.h.Queue.Peek("sync/$DeadLetterQueue"); len(dl) != 1 || !strings.HasSuffix(dl[0].ID, ".g1.s2") {
		t.Fatalf("dead-lettered: %+v", dl)
	}
	if c.Restarts != 1 || c.StalledAt.IsZero() {
		t.Fatalf("chain: %+v", c)
	}
	stop := a.watch(path)
	n := w.Stop()
	st := a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	sh := st.Online.Shards[0]
	if sh.RepairsDone < 1 || sh.Restarts < 1 || sh.StalledAt == nil {
		t.Fatalf("chain: %+v", sh)
	}
	t.Logf("%d writes; chain %+v; states %v", n, sh, stop())
	time.Sleep(1200 * time.Millisecond)
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 500)
}

// Watchdog runs and status calls at the same moment on a stalled chain restart it once: the
// restart is a conditional write of the chain record. Then a lone status call on a stalled
// chain answers it stalled, with its last checkpoint, and restarts it.
func TestOnlineWatchdogAndStatusRestartOnce(t *testing.T) {
	ctx := context.Background()
	src, dst, az, store := notifyOnlineSetup(t, 500, 1)
	fault := func(d hostharness.DeliveryInfo) hostharness.Fault {
		if d.Function == "SyncShard" && (strings.HasSuffix(d.MessageID, ".g1.s1") || strings.HasSuffix(d.MessageID, ".g2.s1")) {
			return hostharness.Lose
		}
		return hostharness.Deliver
	}
	// Once a year: the test runs the watchdog itself (RunTimer, the host's admin API).
	a := startApp(t, appOptions{azurite: az, fault: fault, settings: map[string]string{
		"SOURCE_REDIS": src.url, "TARGET_REDIS": dst.url, "SYNC_INVOCATION_SECONDS": "1", "SYNC_LEASE_SECONDS": "1",
		functions.SettingSyncWatchdogSchedule: "0 0 0 1 1 *"}})
	id, path := kickoffOnline(a)
	waitChain(t, store, id, 60*time.Second, "stalled", func(c *state.SyncChain) bool {
		return c.Gen == 1 && c.Holder == "" && time.Since(c.CheckpointAt) > 2500*time.Millisecond
	})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if status, err := a.h.RunTimer(ctx, "SyncWatchdog"); err != nil || status != 200 {
				t.Errorf("watchdog run: %d %v", status, err)
			}
		}()
		go func() {
			defer wg.Done()
			a.onlineStatus(path)
		}()
	}
	wg.Wait()
	c, err := store.GetChain(ctx, id, "c0")
	if err != nil {
		t.Fatal(err)
	}
	if c.Gen != 2 || c.Restarts != 1 {
		t.Fatalf("after 3 watchdog runs and 3 status calls at once: generation %d, %d restarts", c.Gen, c.Restarts)
	}
	if got := strings.Count(a.log.String(), ": chain c0 stalled"); got != 1 {
		t.Fatalf("%d restarts logged", got)
	}
	// Generation 2 loses its continuation too: a lone status call finds it stalled, says so
	// with the time of its last checkpoint, and restarts it.
	dead := waitChain(t, store, id, 60*time.Second, "stalled again", func(c *state.SyncChain) bool {
		return c.Gen == 2 && c.Holder == "" && c.Seq >= 0 && time.Since(c.CheckpointAt) > 2500*time.Millisecond
	})
	sh := a.onlineStatus(path).Online.Shards[0]
	if sh.State != "stalled" || !sh.LastCheckpoint.Equal(dead.CheckpointAt) || sh.Restarts != 2 || sh.StalledAt == nil || !sh.StalledAt.Equal(dead.CheckpointAt) {
		t.Fatalf("status of a stalled chain: %+v; last checkpoint %s", sh, dead.CheckpointAt)
	}
	st := a.waitOnline(path, 60*time.Second, "caught up", caughtUp)
	// Caught up may be seen at a handover (the chain hands over every budget): both are live.
	if sh := st.Online.Shards[0]; sh.Generation < 3 || (sh.State != "applying" && sh.State != "handing-over") || sh.RepairsDone < 2 {
		t.Fatalf("chain after two restarts: %+v", sh)
	}
	testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 500)

	// A stopped migration leaves the watchdog's index at its next run.
	if ids, err := store.RunningOnline(ctx); err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("running index: %v %v", ids, err)
	}
	if code, _, body := a.do("POST", path+"/stop", testKey, nil); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	a.waitOnline(path, 30*time.Second, "stopped", func(st *functions.OnlineStatus) bool { return st.State == functions.StateStopped })
	if status, err := a.h.RunTimer(ctx, "SyncWatchdog"); err != nil || status != 200 {
		t.Fatalf("watchdog run: %d %v", status, err)
	}
	if ids, err := store.RunningOnline(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("running index after the stop: %v %v", ids, err)
	}
}
