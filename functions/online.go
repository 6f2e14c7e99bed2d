package functions

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/notifyfeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/psyncfeed"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/syncer"
)

// Online migrations: a copy (plan and copy queues, as for mode "copy") plus one sync chain per
// source master on the sync queue. A chain is a sequence of SyncShard invocations, each running
// the sync engine (shared/syncer) on its master for SYNC_INVOCATION_SECONDS, handing over to the
// next without a gap and without two of them applying at once (see README, "Online migrations:
// the handover protocol"):
//
//  1. Invocation N holds the chain's lease (Holder/LeaseUntil in <id>/sync/<chain>.json,
//     renewed by If-Match writes). Near the end of its budget it sends message N+1 (MessageId
//     <id>.<chain>.g<gen>.s<N+1>) and keeps applying.
//  2. N+1 starts capturing (subscribes) first, then records NextCapturing=N+1 and waits.
//  3. N sees NextCapturing=N+1, stops its capture and appliers, writes its pending keys with
//     HandedTo=N+1 and releases the lease.
//  4. N+1 takes the lease (If-Match), loads the pending keys and applies them with everything it
//     captured since it started: a key applied twice is harmless (apply = re-copy).
//
// A duplicate or late N+1 finds Seq >= N+1 (or another generation) and steps aside. An
// invocation that finds the lease expired instead of released takes over with a gap, and so does
// one that was not capturing before its predecessor stopped: the engine runs a repair pass. A
// chain that stops checkpointing (a crash, a lost or dead-lettered continuation) is seen by
// status as stalled, restarted as a new generation by the next status call or SyncWatchdog run
// (watchdog.go), and repaired.

// Settings of the online mode.
const (
	// SettingSyncInvocationSeconds: how long one SyncShard invocation runs before it hands over
	// (default 240; keep it well under host.json's functionTimeout).
	SettingSyncInvocationSeconds = "SYNC_INVOCATION_SECONDS"
	// SettingSyncLeaseSeconds: a chain's lease lasts this long unless renewed (default 20); a
	// chain without a checkpoint for twice as long is stalled and restarted.
	SettingSyncLeaseSeconds = "SYNC_LEASE_SECONDS"
)

const kindSync = "sync"

// syncMessage is the body of a sync queue message: invocation Seq of generation Gen of a chain.
type syncMessage struct {
	Migration string `json:"migration"`
	Chain     string `json:"chain"`
	Gen       int    `json:"generation"`
	Seq       int    `json:"invocation"`
}

func syncMessageID(id, chain string, gen, seq int) string {
	return fmt.Sprintf("%s.%s.g%d.s%d", id, chain, gen, seq)
}

func (a *App) syncMsg(id, chain string, gen, seq int) queue.Message {
	body, _ := json.Marshal(syncMessage{Migration: id, Chain: chain, Gen: gen, Seq: seq})
	return queue.Message{ID: syncMessageID(id, chain, gen, seq), Body: body, Properties: map[string]any{"migration": id, "kind": kindSync}}
}

func chainKey(shard int) string { return fmt.Sprintf("c%d", shard) }

func (a *App) syncBudget() time.Duration {
	return time.Duration(a.intSetting(SettingSyncInvocationSeconds, 240)) * time.Second
}

func (a *App) syncLease() time.Duration {
	return time.Duration(a.intSetting(SettingSyncLeaseSeconds, 20)) * time.Second
}

// handoverMargin is how long before the end of its budget an invocation sends its continuation,
// and how long after it it still waits for the continuation to capture.
func handoverMargin(budget time.Duration) time.Duration {
	return min(max(budget/4, 500*time.Millisecond), 30*time.Second)
}

func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkOnlineFeed picks the change feed of an online migration (want: "" or notify, psync,
// auto) and refuses one whose source cannot feed changes, naming what to change, before
// anything is written or enqueued. psync is checked as the CLI's sync starts it (the command
// table readable, every master accepting this user's PSYNC), without a snapshot being sent;
// auto takes psync where the source allows it and notify otherwise.
func (a *App) checkOnlineFeed(ctx context.Context, src *redisconn.Conn, dbs []int, want string) (string, error) {
	notify := func() error {
		_, err := notifyfeed.New(src, nil, notifyfeed.Options{DBs: dbs}).Check(ctx)
		return err
	}
	psync := func() error {
		return psyncfeed.New(src, nil, psyncfeed.Options{DBs: dbs, NoSnapshot: true}).Check(ctx)
	}
	switch want {
	case "psync":
		if err := psync(); err != nil {
			return "", fieldErrf("source", "mode online, feed psync: %s", redact.Error(err))
		}
		return "psync", nil
	case "auto":
		perr := psync()
		var refused *changefeed.RefusedError
		if perr == nil {
			return "psync", nil
		}
		if !errors.As(perr, &refused) {
			return "", fieldErrf("source", "mode online, feed auto: %s", redact.Error(perr))
		}
		if err := notify(); err != nil {
			return "", fieldErrf("source", "mode online, feed auto: neither feed can run on this source: %s; and %s", redact.Error(perr), redact.Error(err))
		}
		a.logf("MigrationStart: feed auto: %s; using the notify feed", redact.Error(perr))
		return "notify", nil
	}
	if err := notify(); err != nil {
		return "", fieldErrf("source", "mode online: %s", redact.Error(err))
	}
	return "notify", nil
}

// startOnline writes the control record and one chain record per source master and enqueues
// the first invocation of each chain; each sends its master's plan messages once its capture is
// in place, so the copy never starts before changes are captured.
func (a *App) startOnline(ctx context.Context, mig *state.Migration, masters []string, feed string) error {
	on := &state.Online{Feed: feed}
	var msgs []queue.Message
	for i, addr := range masters {
		c := &state.SyncChain{Chain: chainKey(i), Shard: i, Addr: addr, Feed: feed, Gen: 1, Seq: -1, NextCapturing: -1, HandedTo: -1,
			CheckpointAt: time.Now().UTC()}
		if err := a.store.CreateChain(ctx, mig.ID, c); err != nil {
			return err
		}
		on.Chains = append(on.Chains, c.Chain)
		msgs = append(msgs, a.syncMsg(mig.ID, c.Chain, 1, 0))
	}
	if err := a.store.CreateOnline(ctx, mig.ID, on); err != nil {
		return err
	}
	if err := a.store.MarkOnlineRunning(ctx, mig.ID); err != nil {
		return err
	}
	return a.sender.Send(ctx, queue.Sync, msgs)
}

func init() { registerTrigger("SyncShard", func(a *App) triggerFunc { return a.syncShard }) }

// syncShard is one invocation of a chain.
func (a *App) syncShard(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var sm syncMessage
	if err := json.Unmarshal(msg.Body, &sm); err != nil || sm.Migration == "" || sm.Chain == "" || sm.Gen < 1 || sm.Seq < 0 {
		return false, fmt.Errorf("message %s is not a sync message; dropped", msg.MessageID)
	}
	mig, err := a.store.GetMigration(ctx, sm.Migration)
	if errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("sync message for unknown migration %s; dropped", sm.Migration)
	}
	if err != nil {
		return true, err
	}
	inv2 := &syncInvocation{a: a, mig: mig, sm: sm, token: newToken(), reply: reply, started: time.Now()}
	return inv2.run(ctx)
}

type syncInvocation struct {
	a       *App
	mig     *state.Migration
	sm      syncMessage
	token   string
	reply   *hostproto.Reply
	started time.Time
	name    string
	addr    string // the chain's source master
	shard   int    // and its index
	counted struct{ applied, gaps, repairs int64 }
	// pf is the psync feed (nil for notify): its link's position goes into every checkpoint.
	pf *psyncfeed.Feed
	// The chain's psync counts when this invocation took the lease (only the holder changes
	// them, so base + this invocation's own counts is exact however often a write is retried).
	base struct{ continues, fullResyncs int64 }
	rp   passState
	sy   *syncer.Syncer
}

func (s *syncInvocation) logf(format string, args ...any) {
	line := s.name + ": " + fmt.Sprintf(format, args...)
	s.a.logf("SyncShard: %s", line)
	s.reply.Log("%s", line)
}

// aside reports why this delivery does nothing: another invocation owns the chain.
func aside(c *state.SyncChain, sm syncMessage) string {
	switch {
	case c.Stopped:
		return "the chain was stopped"
	case c.Gen != sm.Gen:
		return fmt.Sprintf("the chain is at generation %d", c.Gen)
	case c.Seq >= sm.Seq:
		return fmt.Sprintf("invocation %d of the chain ran already (the chain is at %d)", sm.Seq, c.Seq)
	case c.Seq < sm.Seq-1:
		return fmt.Sprintf("the chain is at invocation %d, not %d", c.Seq, sm.Seq-1)
	}
	return ""
}

// targetCheckEvery is how often a sync chain reads the target's run_ids and evicted_keys.
const targetCheckEvery = 5 * time.Second

func (s *syncInvocation) run(ctx context.Context) (bool, error) {
	a, id, sm := s.a, s.mig.ID, s.sm
	s.name = fmt.Sprintf("%s/%s g%d.s%d", id, sm.Chain, sm.Gen, sm.Seq)
	budget, lease := a.syncBudget(), a.syncLease()
	margin := handoverMargin(budget)
	c, err := a.store.GetChain(ctx, id, sm.Chain)
	if errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("%s: no chain record; dropped", s.name)
	}
	if err != nil {
		return true, err
	}
	// A redelivery of the invocation that holds the lease, once that lease expired: it died.
	takeoverSelf := c.Gen == sm.Gen && c.Seq == sm.Seq && !c.Stopped && c.Holder != "" && time.Now().After(c.LeaseUntil)
	if why := aside(c, sm); why != "" && !takeoverSelf {
		s.logf("stepping aside: %s", why)
		return false, nil
	}
	on, err := a.store.GetOnline(ctx, id)
	if err != nil {
		return true, err
	}
	if on.StopRequested {
		s.logf("stepping aside: the migration was stopped")
		return false, nil
	}
	src, err := a.conns.get(ctx, s.mig, "source")
	if err != nil {
		return true, err
	}
	dst, err := a.conns.get(ctx, s.mig, "target")
	if err != nil {
		return true, err
	}
	dbMap, err := dbMapOf(s.mig.Options)
	if err != nil {
		return false, err
	}

	// 1. Capture first.
	gate := make(chan struct{})
	resume := &syncer.Checkpoint{Version: 1, Feed: "notify", InitialDone: true}
	var feed changefeed.Feed
	if c.Feed == "psync" {
		// Only the stream: the copy is the SCAN copy over the plan and copy queues, so the
		// master sends an empty snapshot (or one that is dropped) on a new link.
		// A stale position (the backlog lost it) is no gap either: the master's new stream
		// starts now, and the predecessor captures until it sees this invocation capturing.
		s.pf = psyncfeed.New(src, nil, psyncfeed.Options{Shards: []string{c.Addr}, DBs: dbMap.Sources(), NoSnapshot: true,
			ResumeOverlaps: true, Log: func(m string) { s.logf("%s", m) }})
		resume.Feed = "psync"
		if len(c.Position) > 0 {
			// Continue where the chain stands: the predecessor captures until it sees this
			// invocation capturing, so the streams overlap (re-applied keys) and nothing is missed.
			resume.Positions = map[string]changefeed.Position{c.Addr: changefeed.Position(c.Position)}
		}
		feed = s.pf
	} else {
		feed = notifyfeed.New(src, []string{c.Addr}, notifyfeed.Options{DBs: dbMap.Sources()})
	}
	cfg := syncer.Config{Source: src, Target: dst, Feed: feed,
		Plan:          plan.Options{Match: s.mig.Options.Match, Type: s.mig.Options.Type, BatchKeys: s.mig.Options.BatchKeys},
		Copy:          copier.Options{Existing: copier.ExistingReplace, DBMap: dbMap, Fallback: NewFallback(dst), Reencode: fallback.Reencoder(dst), BigKeyBytes: s.mig.Options.BigKeyBytes},
		ExplicitDBMap: s.mig.Options.ExplicitDBMap, AllowDBMerge: s.mig.Options.AllowDBMerge, Workers: 4,
		Resume:   resume,
		Handover: true, Gate: gate,
		// Repair passes fan out over the plan and copy queues (repair.go); the engine only
		// keeps the gap open and applies the differing keys the holder absorbs.
		ExternalRepair: true,
		Log:            func(m string) { s.logf("%s", m) },
	}
	sy := syncer.New(cfg)
	s.sy = sy
	if err := sy.Start(context.WithoutCancel(ctx)); err != nil {
		return true, fmt.Errorf("%s: starting capture: %s", s.name, redact.Error(err))
	}
	closed := false
	closeSy := func() {
		if !closed {
			closed = true
			_ = sy.Close()
		}
	}
	defer closeSy()
	// psync: the master continued the chain's stream from its saved position, so even a
	// predecessor that stopped before this invocation was capturing left nothing unseen (what it
	// captured but did not apply is in its pending keys). After a +FULLRESYNC instead, only a
	// predecessor still capturing (a handover) leaves no gap.
	continued := false
	if s.pf != nil {
		if ls := s.pf.Links(); len(ls) == 1 && ls[0].Resumed && ls[0].Continues > 0 && ls[0].FullSyncs == 0 {
			continued = true
		}
	}
	if sm.Gen == 1 && sm.Seq == 0 {
		// The copy of this master starts only now that its changes are captured.
		if err := a.sendPlans(ctx, s.mig, c.Shard); err != nil {
			return true, err
		}
	}
	// 2. Say we capture, then wait for the lease.
	if !takeoverSelf {
		c, err = a.store.UpdateChain(ctx, id, sm.Chain, func(c *state.SyncChain) (bool, error) {
			if aside(c, sm) != "" {
				return false, nil
			}
			c.NextCapturing = sm.Seq
			return true, nil
		})
		if err != nil {
			return true, err
		}
	}
	waitUntil := time.Now().Add(budget + 2*margin + lease)
	var took bool
	var pending []state.PendingKey
	var gapReason string
	var handed, late bool
	var inherited *state.RepairPass
	for {
		now := time.Now()
		c, err = a.store.UpdateChain(ctx, id, sm.Chain, func(c *state.SyncChain) (bool, error) {
			took, pending, gapReason, handed, late, inherited = false, nil, "", false, false, nil
			self := c.Gen == sm.Gen && c.Seq == sm.Seq && c.Holder != "" && !c.Stopped && now.After(c.LeaseUntil)
			if !self && aside(c, sm) != "" {
				return false, nil
			}
			switch {
			case self:
				gapReason = fmt.Sprintf("invocation %d died holding the lease (last checkpoint %s)", c.Seq, c.CheckpointAt.Format(time.RFC3339))
				c.Takeovers++
			case c.Holder == "":
				handed = c.HandedTo == sm.Seq
				pending = c.Pending
				late = !handed && c.Seq >= 0 && c.Seq == sm.Seq-1 && continued
				if !handed && c.Seq >= 0 && !late {
					gapReason = fmt.Sprintf("invocation %d stopped before invocation %d was capturing", c.Seq, sm.Seq)
				}
				if handed || late {
					c.Handovers++
				}
			case now.After(c.LeaseUntil):
				gapReason = fmt.Sprintf("invocation %d stopped renewing its lease (last checkpoint %s)", c.Seq, c.CheckpointAt.Format(time.RFC3339))
				c.Takeovers++
			default:
				return false, nil // held: wait
			}
			switch {
			case gapReason != "":
				// A new gap: a new repair pass covers it (and whatever the last one covered).
			case c.Seq < 0 && c.GapOpen:
				gapReason = c.GapReason // a restart after a stall
			case c.GapWaiting != "":
				// A gap the pass in progress does not cover: a new pass.
				gapReason = "handed over with a gap open: " + strings.TrimPrefix(c.GapWaiting, "handed over with a gap open: ")
			case c.GapOpen && c.Repair != nil:
				inherited = c.Repair // handed over during a pass: continue it
			case c.GapOpen:
				gapReason = "handed over with a gap open: " + strings.TrimPrefix(c.GapReason, "handed over with a gap open: ")
			}
			took = true
			s.base.continues, s.base.fullResyncs = c.Continues, c.FullResyncs
			s.psyncMetrics(c)
			c.Seq, c.Holder, c.LeaseUntil = sm.Seq, s.token, now.Add(lease)
			c.Pending, c.HandedTo, c.CheckpointAt = nil, -1, now.UTC()
			return true, nil
		})
		if err != nil {
			return true, err
		}
		if took {
			break
		}
		if why := aside(c, sm); why != "" {
			s.logf("stepping aside: %s", why)
			return false, nil
		}
		if time.Now().After(waitUntil) {
			return true, fmt.Errorf("%s: the lease is still held by invocation %d", s.name, c.Seq)
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	// 3. We hold the lease.
	var keys []syncer.DirtyKey
	for _, k := range pending {
		keys = append(keys, syncer.DirtyKey{Shard: 0, DB: k.DB, Key: k.Key})
	}
	sy.MarkPending(keys)
	s.addr, s.shard = c.Addr, c.Shard
	if gapReason != "" {
		sy.OpenGap(c.Addr, gapReason)
	} else if inherited != nil {
		s.rp.inherit(inherited)
	}
	if late {
		s.logf("invocation %d stopped before this one was capturing, but the replication stream continued from its position: no gap", sm.Seq-1)
	}
	s.logf("took the lease (handed over: %v, %d pending keys%s)", handed, len(keys), map[bool]string{true: ", gap: " + gapReason, false: ""}[gapReason != ""])
	copyDone := c.CopyDone
	gateOpen := false
	if copyDone {
		close(gate)
		gateOpen = true
	}
	lastRenew, lastTargetCheck := time.Now(), time.Now()
	var lastApplied int64
	lastAt := time.Now()
	sentNext := false
	tick := time.NewTicker(min(lease/4, 500*time.Millisecond))
	defer tick.Stop()
	stopping := false
	var stopWhy string
	var drainUntil time.Time
	for {
		select {
		case <-ctx.Done():
			// The host is shutting down: hand on what we have; the chain restarts with a repair.
			return s.release(ctx, sy, closeSy, -1, false, "the invocation was cancelled")
		case <-tick.C:
		}
		elapsed := time.Since(s.started)
		if !copyDone {
			if st, err := a.store.ComputeStatus(ctx, id); err == nil && (st.State == state.StateCompleted || st.State == state.StateCompletedWithFailures) {
				copyDone = true
			}
		}
		if copyDone && !gateOpen {
			close(gate)
			gateOpen = true
			s.logf("the copy is complete: applying changes")
		}
		if on, err := a.store.GetOnline(ctx, id); err == nil && on.StopRequested && !stopping {
			stopping, stopWhy = true, "stop requested"
			drainUntil = time.Now().Add(margin)
		}
		if !sentNext && !stopping && elapsed >= budget-margin {
			if err := a.sender.Send(ctx, queue.Sync, []queue.Message{a.syncMsg(id, sm.Chain, sm.Gen, sm.Seq+1)}); err != nil {
				s.logf("sending the continuation: %s", redact.Error(err))
			} else {
				sentNext = true
			}
		}
		// Before the status this checkpoint writes: a pass that closes now is counted in it.
		s.repairTick(ctx, sy, gateOpen, sy.Status().Shards[0].AppliedAsOf)
		st := sy.Status()
		sh := st.Shards[0]
		now := time.Now()
		rate := float64(st.Applied-lastApplied) / max(now.Sub(lastAt).Seconds(), 0.001)
		lastApplied, lastAt = st.Applied, now
		lost := false
		next := -1
		c, err = a.store.UpdateChain(ctx, id, sm.Chain, func(c *state.SyncChain) (bool, error) {
			if c.Holder != s.token {
				lost = true
				return false, nil
			}
			s.metrics(c, sh, st, rate)
			c.CopyDone = c.CopyDone || copyDone
			c.LeaseUntil = now.Add(lease)
			next = c.NextCapturing
			return true, nil
		})
		if err == nil && !lost {
			lastRenew = now
			s.markCounted(sh, st)
		} else if err != nil {
			s.logf("checkpoint: %s", redact.Error(err))
		}
		if lost {
			s.logf("lost the lease: stopping without writing anything more")
			return false, nil
		}
		if time.Since(lastTargetCheck) >= targetCheckEvery {
			// As the copy's batches do: a target that restarted or evicted keys may have lost keys
			// this chain applied, and status says so before a cutover is asked for.
			a.checkTarget(ctx, "SyncShard", s.mig, dst)
			lastTargetCheck = time.Now()
		}
		if time.Since(lastRenew) > lease*3/4 {
			// The lease may lapse before we can renew it: stop applying now, before another
			// invocation may take it.
			closeSy()
			s.logf("could not renew the lease for %.1fs: stopped", time.Since(lastRenew).Seconds())
			return true, errors.New("lease renewal failed")
		}
		switch {
		case stopping && (sh.Pending == 0 || time.Now().After(drainUntil)):
			return s.release(ctx, sy, closeSy, -1, true, stopWhy)
		case stopping:
		case sentNext && next == sm.Seq+1:
			return s.release(ctx, sy, closeSy, next, false, "handover")
		case elapsed >= budget+margin:
			return s.release(ctx, sy, closeSy, -1, false, fmt.Sprintf("budget over and invocation %d is not capturing yet", sm.Seq+1))
		}
	}
}

// markCounted records the engine's counts as written into the chain record.
func (s *syncInvocation) markCounted(sh syncer.ShardStatus, st syncer.Status) {
	s.counted.applied, s.counted.gaps, s.counted.repairs = st.Applied, sh.Gaps, sh.Repairs
}

func (s *syncInvocation) metrics(c *state.SyncChain, sh syncer.ShardStatus, st syncer.Status, rate float64) {
	now := time.Now().UTC()
	if sh.AppliedAsOf.After(c.AppliedAsOf) {
		c.AppliedAsOf = sh.AppliedAsOf.UTC()
	}
	c.PendingKeys = sh.Pending
	c.AppliedPerSec = rate
	c.GapOpen, c.GapReason = sh.GapOpen || sh.Repairing || s.rp.p != nil, sh.GapReason
	c.Repair = s.rp.p
	c.GapWaiting = ""
	if reason, ok := s.sy.WaitingGap(s.addr); ok {
		c.GapWaiting = cmp.Or(reason, "a gap")
	}
	if s.rp.p != nil {
		c.GapReason = passReason(s.rp.p)
	} else if c.GapOpen && sh.GapReason != "" && !c.CopyDone {
		c.GapReason = sh.GapReason + " (a repair pass follows once the copy is complete)"
	}
	if c.GapOpen && c.GapReason == "" {
		c.GapReason = "a repair pass is running"
	}
	if s.rp.finished != nil {
		c.LastRepair = s.rp.finished
	}
	c.CheckpointAt = now
	// Counts are per invocation in the engine; the record keeps the chain's totals. What was
	// counted moves on only once the write succeeded (markCounted), since an If-Match conflict runs
	// this again on a fresh copy of the record.
	c.Applied += st.Applied - s.counted.applied
	c.Gaps += sh.Gaps - s.counted.gaps
	c.Repairs += sh.Repairs - s.counted.repairs
	s.psyncMetrics(c)
}

// psyncMetrics writes the psync link's position and counts into the chain record.
func (s *syncInvocation) psyncMetrics(c *state.SyncChain) {
	if s.pf == nil {
		return
	}
	ls := s.pf.Links()
	if len(ls) != 1 {
		return
	}
	l := ls[0]
	if l.Position != nil {
		c.Position = json.RawMessage(psyncfeed.EncodePosition(*l.Position))
	}
	if l.MasterOffset >= 0 {
		c.MasterOffset = l.MasterOffset
	}
	// The first link of a chain without a position asks for a snapshot: not a resync.
	fulls := int64(l.FullSyncs)
	if !l.Resumed && fulls > 0 {
		fulls--
	}
	c.Continues, c.FullResyncs = s.base.continues+int64(l.Continues), s.base.fullResyncs+fulls
}

// release stops capture and apply, writes the pending keys and releases the lease. handedTo is
// the continuation seen capturing before capture stopped (-1: none, it will open a gap).
func (s *syncInvocation) release(ctx context.Context, sy *syncer.Syncer, closeSy func(), handedTo int, stop bool, why string) (bool, error) {
	closeSy()
	st := sy.Status()
	sh := st.Shards[0]
	cp := sy.Checkpoint(true)
	var pend []state.PendingKey
	for _, k := range cp.Pending {
		pend = append(pend, state.PendingKey{DB: k.DB, Key: k.Key})
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.a.store.UpdateChain(ctx, s.mig.ID, s.sm.Chain, func(c *state.SyncChain) (bool, error) {
		if c.Holder != s.token {
			return false, nil
		}
		s.metrics(c, sh, st, 0)
		c.PendingKeys = len(pend)
		c.Holder, c.Pending, c.HandedTo = "", pend, handedTo
		c.Stopped = stop
		return true, nil
	})
	if err != nil {
		return true, err
	}
	s.logf("released the lease after %.1fs (%s): %d pending keys handed on, %d keys applied", time.Since(s.started).Seconds(), why, len(pend), st.Applied)
	return false, nil
}

// sendPlans enqueues the first plan step of every shard key of source master shard.
func (a *App) sendPlans(ctx context.Context, mig *state.Migration, shard int) error {
	shards, err := a.store.Shards(ctx, mig)
	if err != nil {
		return err
	}
	var msgs []queue.Message
	for _, p := range shards {
		if p.Shard != shard {
			continue
		}
		body, _ := json.Marshal(planMessage{Migration: mig.ID, Key: p.Key, Cursor: plan.Cursor{Shard: p.Shard, Addr: p.Addr, DB: p.DB}})
		msgs = append(msgs, queue.Message{ID: planMessageID(mig.ID, p.Key, 0), Body: body,
			Properties: map[string]any{"migration": mig.ID, "kind": kindPlan}})
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := a.sender.Send(ctx, queue.Plan, msgs); err != nil {
		return fmt.Errorf("enqueueing the plan messages: %s", redact.Error(err))
	}
	return nil
}
