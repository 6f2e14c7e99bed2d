package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/syncer"
)

// Repair passes over the queues. A gap in a sync chain (a takeover, a restart after a stall, a
// feed that reconnected) is closed by a repair pass that many CopyBatch instances share:
//
//  1. The chain's holder records pass P in the chain record (If-Match) and sends one plan
//     message of kind "repair" per plan key: each source shard key of its master, and each
//     target master and db (keys the source lacks). MessageIds are deterministic, so a
//     duplicate start is dropped.
//  2. PlanShard scans them in bounded steps, with step manifests like a copy, and sends
//     repair batches to the copy queue.
//  3. CopyBatch compares a batch (source state against target state, as verify does) and
//     records the keys that differ, create-if-absent. It never writes to the target: only the
//     chain's holder applies, so a repair never races an applied change with a stale value.
//  4. The holder absorbs finished results (marks their keys pending in its engine, remembers
//     the batch in the chain record, hands both over at a handover) and closes the gap once
//     every batch of the pass has a result, each was absorbed, and a barrier taken after the
//     last absorption was applied. A gap that opens during a pass starts a new pass.

// repairTTLTolerance is how far expiries may differ before a repair re-copies the key, as in
// the engine's own repair.
const repairTTLTolerance = time.Second

func repairPlanMessage(id, run string, pm planMessage) queue.Message {
	body, _ := json.Marshal(pm)
	return queue.Message{ID: verifyPlanMessageID(id, run, pm.Key, pm.Cursor.Step), Body: body,
		Properties: map[string]any{"migration": id, "kind": kindRepair}}
}

func repairBatchMessageID(id, run, batch string) string { return id + "." + run + "." + batch }

// repairScope is the planner's view of a repair pass's plan key.
func (a *App) repairScope(mig *state.Migration, pm *planMessage) shardScope {
	id, key, run := mig.ID, pm.Key, pm.Run
	return shardScope{
		name: run + "/" + key,
		get: func(ctx context.Context) (*state.ShardProgress, error) {
			return a.store.GetRepairShard(ctx, id, run, key)
		},
		update: func(ctx context.Context, fn func(*state.ShardProgress) (bool, error)) (*state.ShardProgress, error) {
			return a.store.UpdateRepairShard(ctx, id, run, key, fn)
		},
		message: func(b plan.Batch, step int) queue.Message {
			body, _ := json.Marshal(copyMessage{Migration: id, Batch: b, Kind: kindRepair, Run: run, Chain: pm.Chain,
				Target: pm.Target, Owner: pm.Owner, Key: key, Step: step})
			return queue.Message{ID: repairBatchMessageID(id, run, b.ID), Body: body, Properties: map[string]any{"migration": id, "kind": kindRepair}}
		},
		next: func(next plan.Cursor) queue.Message {
			n := *pm
			n.Cursor = next
			return repairPlanMessage(id, run, n)
		},
		getStep: func(ctx context.Context, step int) (*state.StepManifest, error) {
			return a.store.GetRepairStep(ctx, id, run, key, step)
		},
		createStep: func(ctx context.Context, m *state.StepManifest) (*state.StepManifest, error) {
			return a.store.CreateRepairStep(ctx, id, run, m)
		},
		target: pm.Target,
	}
}

// repairSuperseded says why work of pass run need not be done: the chain is on another pass.
func (a *App) repairSuperseded(ctx context.Context, id, chain, run string) (string, error) {
	c, err := a.store.GetChain(ctx, id, chain)
	if errors.Is(err, state.ErrNotFound) {
		return "the chain has no record", nil
	}
	if err != nil {
		return "", err
	}
	if c.Repair == nil || c.Repair.Run != run {
		return fmt.Sprintf("the chain is past pass %s", run), nil
	}
	return "", nil
}

// repairBatch compares one repair batch and records its differing keys once.
func (a *App) repairBatch(ctx context.Context, cm *copyMessage, msg *hostproto.ServiceBusMessage, reply *hostproto.Reply) (bool, error) {
	done, err := a.store.HasRepairResult(ctx, cm.Migration, cm.Run, cm.Batch.ID)
	if err != nil {
		return true, err
	}
	if done {
		reply.Log("repair batch %s/%s already recorded (delivery %d)", cm.Run, cm.Batch.ID, msg.DeliveryCount)
		return false, nil
	}
	if why, err := a.repairSuperseded(ctx, cm.Migration, cm.Chain, cm.Run); err != nil {
		return true, err
	} else if why != "" {
		reply.Log("repair batch %s/%s not compared: %s", cm.Run, cm.Batch.ID, why)
		return false, nil
	}
	diff, err := a.repairOne(ctx, cm)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return false, fmt.Errorf("repair message for unknown migration %s; dropped", cm.Migration)
		}
		if a.lastDelivery(msg) {
			reason := fmt.Sprintf("repair batch failed on all %d deliveries; last error: %s", msg.DeliveryCount, redact.Error(err))
			if _, rerr := a.store.RecordRepairDead(context.WithoutCancel(ctx), cm.Migration, cm.Run, deadRepair(cm, msg, reason)); rerr != nil {
				a.logf("CopyBatch: recording dead-lettered repair batch %s: %s", cm.Batch.ID, redact.Error(rerr))
			}
		}
		return true, err
	}
	r := state.RepairResult{Batch: cm.Batch.ID, Keys: len(cm.Batch.Keys), Differing: diff, Delivery: msg.DeliveryCount}
	if _, err := a.store.RecordRepairResult(ctx, cm.Migration, cm.Run, r); err != nil {
		return true, err
	}
	side := "source"
	if cm.Target {
		side = "target"
	}
	reply.Log("repair batch %s/%s (%s side): %d keys compared, %d differ", cm.Run, cm.Batch.ID, side, len(cm.Batch.Keys), len(diff))
	return false, nil
}

// repairOne compares a batch without writing anything: source keys whose state differs in the
// target, or (a target-side batch) target keys of the chain that the source no longer has.
func (a *App) repairOne(ctx context.Context, cm *copyMessage) ([]state.PendingKey, error) {
	mig, src, dst, dbMap, err := a.batchEndpoints(ctx, cm.Migration)
	if err != nil {
		return nil, err
	}
	b := cm.Batch
	names := make([]string, len(b.Keys))
	for i, k := range b.Keys {
		names[i] = string(k)
	}
	var out []state.PendingKey
	if !cm.Target {
		diff, err := syncer.DifferingKeys(ctx, src, dst, dbMap, b.DB, names, repairTTLTolerance)
		if err != nil {
			return nil, err
		}
		for _, i := range diff {
			out = append(out, state.PendingKey{DB: b.DB, Key: b.Keys[i]})
		}
		return out, nil
	}
	gone, err := syncer.Orphans(ctx, src, dbMap, mig.Options.Match, mig.Options.Type, b.DB, names)
	if err != nil {
		return nil, err
	}
	for _, k := range gone {
		if owned, err := ownedBy(ctx, src, k.DB, string(k.Key), cm.Owner); err != nil {
			return nil, err
		} else if owned {
			out = append(out, state.PendingKey{DB: k.DB, Key: k.Key})
		}
	}
	return out, nil
}

// ownedBy reports whether key belongs to the chain of source master addr: with a cluster
// source, the master that owns the key's slot; otherwise the only master.
func ownedBy(ctx context.Context, src *redisconn.Conn, db int, key, addr string) (bool, error) {
	if !src.Cluster || len(src.Masters()) <= 1 || addr == "" {
		return true, nil
	}
	cc, ok := src.Keys(db).(*redis.ClusterClient)
	if !ok {
		return true, nil
	}
	n, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return false, fmt.Errorf("source: the master of a key's slot: %s", redact.Error(err))
	}
	return n.Options().Addr == addr, nil
}

// deadRepair is what a repair batch that ran out of deliveries leaves: its message, so a resume
// sends it again; the pass waits for it.
func deadRepair(cm *copyMessage, msg *hostproto.ServiceBusMessage, reason string) state.RepairResult {
	return state.RepairResult{Batch: cm.Batch.ID, Keys: len(cm.Batch.Keys), Delivery: msg.DeliveryCount, Reason: reason, Message: msg.Body}
}

// passState is the holder's side of the chain's repair pass.
type passState struct {
	p        *state.RepairPass
	absorbed map[string]bool
	// marked are groups of keys marked pending and not yet known to be applied: all of them are
	// once a barrier requested after the group was marked has been applied.
	marked   []markGroup
	lastLook time.Time
	finished *state.RepairDone
}

type markGroup struct {
	at time.Time
	n  int64
}

// inherit continues the pass a predecessor handed over; its absorbed keys not yet applied came
// with the pending keys, already marked.
func (ps *passState) inherit(p *state.RepairPass) {
	ps.p, ps.absorbed, ps.marked = p, map[string]bool{}, nil
	for _, b := range p.Absorbed {
		ps.absorbed[b] = true
	}
	if n := p.Differing - p.Applied; n > 0 {
		ps.marked = append(ps.marked, markGroup{time.Now(), n})
	}
}

// startPass records a new pass in the chain record (conditional on holding the lease) and
// sends its plan messages. A pass in progress is replaced: the new one covers everything.
func (s *syncInvocation) startPass(ctx context.Context, reason string) error {
	a, id := s.a, s.mig.ID
	shards, err := a.store.Shards(ctx, s.mig)
	if err != nil {
		return err
	}
	var keys []string
	for _, p := range shards {
		if p.Shard == s.shard {
			keys = append(keys, p.Key)
		}
	}
	dst, err := a.conns.get(ctx, s.mig, "target")
	if err != nil {
		return err
	}
	dbMap, err := dbMapOf(s.mig.Options)
	if err != nil {
		return err
	}
	for j := range dst.Masters() {
		for _, tdb := range syncer.TargetDBs(dbMap) {
			keys = append(keys, fmt.Sprintf("t%d-d%d", j, tdb))
		}
	}
	var p *state.RepairPass
	lost := false
	if _, err := a.store.UpdateChain(ctx, id, s.sm.Chain, func(c *state.SyncChain) (bool, error) {
		if lost = c.Holder != s.token; lost {
			return false, nil
		}
		c.RepairPasses++
		p = &state.RepairPass{Pass: c.RepairPasses, Run: state.RepairRun(c.Chain, c.RepairPasses), Reason: reason,
			StartedAt: time.Now().UTC(), Keys: keys}
		c.Repair, c.GapOpen, c.GapReason = p, true, passReason(p)
		return true, nil
	}); err != nil {
		return err
	}
	if lost {
		return errors.New("lost the lease")
	}
	s.rp = passState{p: p, absorbed: map[string]bool{}}
	s.logf("repair pass %d (%s) started over the queues: %d plan keys (%s)", p.Pass, p.Run, len(keys), redact.String(reason))
	return s.sendPass(ctx)
}

// sendPass writes the pass's plan key records and sends its first plan steps; again after a
// failure (the ids are deterministic).
func (s *syncInvocation) sendPass(ctx context.Context) error {
	a, id, p := s.a, s.mig.ID, s.rp.p
	dst, err := a.conns.get(ctx, s.mig, "target")
	if err != nil {
		return err
	}
	shards, err := a.store.Shards(ctx, s.mig)
	if err != nil {
		return err
	}
	byKey := map[string]state.ShardProgress{}
	for _, sp := range shards {
		byKey[sp.Key] = sp
	}
	tmasters := dst.Masters()
	var msgs []queue.Message
	for _, key := range p.Keys {
		pm := planMessage{Migration: id, Key: key, Kind: kindRepair, Run: p.Run, Chain: s.sm.Chain}
		if sp, ok := byKey[key]; ok {
			pm.Cursor = plan.Cursor{Shard: sp.Shard, Addr: sp.Addr, DB: sp.DB}
		} else {
			var j, tdb int
			if _, err := fmt.Sscanf(key, "t%d-d%d", &j, &tdb); err != nil || j >= len(tmasters) {
				return fmt.Errorf("repair pass %s: plan key %s names no target master", p.Run, key)
			}
			pm.Cursor = plan.Cursor{Shard: j, Addr: tmasters[j], DB: tdb}
			pm.Target, pm.Owner = true, s.addr
		}
		if err := a.store.CreateRepairShard(ctx, id, p.Run, state.ShardProgress{Key: key, Shard: pm.Cursor.Shard, Addr: pm.Cursor.Addr, DB: pm.Cursor.DB}); err != nil {
			return err
		}
		msgs = append(msgs, repairPlanMessage(id, p.Run, pm))
	}
	if err := a.sendAll(ctx, queue.Plan, msgs); err != nil {
		return fmt.Errorf("sending the repair pass's plan messages: %s", redact.Error(err))
	}
	p.Sent = true
	return nil
}

func passReason(p *state.RepairPass) string {
	r := fmt.Sprintf("repair pass %d running (%s)", p.Pass, p.Reason)
	if p.Blocked != "" {
		r = fmt.Sprintf("repair pass %d cannot complete: %s (%s)", p.Pass, p.Blocked, p.Reason)
	}
	return r
}

// repairTick moves the chain's repair on, from the holder's tick loop: a new gap (once the copy
// is done) starts a pass; finished batches are absorbed; a complete pass closes the gap.
func (s *syncInvocation) repairTick(ctx context.Context, sy *syncer.Syncer, gateOpen bool, appliedAsOf time.Time) {
	if gateOpen {
		if reason, ok := sy.TakeGap(s.addr); ok {
			before := s.rp.p
			if err := s.startPass(ctx, reason); err != nil {
				s.logf("starting a repair pass: %s; trying again", redact.Error(err))
				if s.rp.p == before {
					sy.RetakeGap(s.addr) // not recorded: the next tick starts it
				}
				return
			}
		}
	}
	ps := &s.rp
	p := ps.p
	if p == nil {
		return
	}
	if !p.Sent {
		if err := s.sendPass(ctx); err != nil {
			s.logf("%s", redact.Error(err))
		}
		return
	}
	for len(ps.marked) > 0 && appliedAsOf.After(ps.marked[0].at) {
		p.Applied += ps.marked[0].n
		ps.marked = ps.marked[1:]
	}
	if time.Since(ps.lastLook) < 400*time.Millisecond {
		return
	}
	ps.lastLook = time.Now()
	if err := s.absorb(ctx, sy); err != nil {
		s.logf("repair pass %d: %s", p.Pass, redact.Error(err))
		return
	}
	if len(ps.marked) == 0 {
		p.Applied = p.Differing
	}
	complete := p.Blocked == "" && p.ShardsPlanned == len(p.Keys) && p.Batches.Pending == 0 && p.Batches.Done >= p.Batches.Sent &&
		int64(len(ps.absorbed)) >= p.Batches.Done && len(ps.marked) == 0
	if complete && sy.CloseGap(s.addr) {
		ps.finished = &state.RepairDone{Pass: p.Pass, Batches: p.Batches.Done, Differing: p.Differing, StartedAt: p.StartedAt, FinishedAt: time.Now().UTC()}
		ps.p = nil
		s.logf("repair pass %d done in %.1fs over the queues: %d batches, %d keys differed and were applied",
			p.Pass, time.Since(p.StartedAt).Seconds(), p.Batches.Done, p.Differing)
	}
}

// absorb marks the differing keys of the pass's new results pending and updates its progress.
func (s *syncInvocation) absorb(ctx context.Context, sy *syncer.Syncer) error {
	a, id, ps := s.a, s.mig.ID, &s.rp
	p := ps.p
	shards, err := a.store.RepairShards(ctx, id, p.Run, p.Keys)
	if err != nil {
		return err
	}
	l, err := a.store.ListRepair(ctx, id, p.Run)
	if err != nil {
		return err
	}
	batches := make([]string, 0, len(l.Results))
	for b := range l.Results {
		if !ps.absorbed[b] {
			batches = append(batches, b)
		}
	}
	sort.Strings(batches)
	var n int64
	defer func() {
		// What was marked counts, even when a later read failed.
		if n > 0 {
			p.Differing += n
			ps.marked = append(ps.marked, markGroup{time.Now(), n})
		}
	}()
	for _, b := range batches {
		if l.Results[b] > 0 {
			r, err := a.store.GetRepairResult(ctx, id, p.Run, b)
			if err != nil {
				return err
			}
			keys := make([]syncer.DirtyKey, 0, len(r.Differing))
			for _, k := range r.Differing {
				keys = append(keys, syncer.DirtyKey{Shard: 0, DB: k.DB, Key: k.Key})
			}
			sy.MarkPending(keys)
			n += int64(len(keys))
		}
		ps.absorbed[b] = true
		p.Absorbed = append(p.Absorbed, b)
	}
	planned, sent := 0, int64(0)
	var failed []string
	for _, sp := range shards {
		if sp.Done {
			planned++
		}
		if sp.Error != "" && !sp.Done {
			failed = append(failed, sp.Key+": "+sp.Error)
		}
		sent += sp.BatchesSent
	}
	done := int64(len(l.Results))
	p.ShardsPlanned = planned
	p.Batches = state.BatchCounts{Sent: sent, Done: done, DeadLettered: int64(len(l.Dead)), Pending: max(0, sent-done)}
	var blocked []string
	if len(l.Dead) > 0 {
		blocked = append(blocked, fmt.Sprintf("%d batch(es) dead-lettered", len(l.Dead)))
	}
	if len(failed) > 0 {
		blocked = append(blocked, "planning failed: "+strings.Join(failed, "; "))
	}
	if len(blocked) > 0 {
		p.Blocked = strings.Join(blocked, ", ") + "; POST .../resume sends them again"
	} else {
		p.Blocked = ""
	}
	return nil
}

// repairResend is the repair work a resume sends again: plan steps that failed for good and
// dead-lettered batches of the chains' current passes.
func (a *App) repairResend(ctx context.Context, id string, n int) (planSteps, batches int, err error) {
	on, err := a.store.GetOnline(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	suffix := resumeSuffix(n)
	var planMsgs, copyMsgs []queue.Message
	for _, name := range on.Chains {
		c, err := a.store.GetChain(ctx, id, name)
		if err != nil {
			return 0, 0, err
		}
		p := c.Repair
		if p == nil || !p.Sent {
			continue
		}
		shards, err := a.store.RepairShards(ctx, id, p.Run, p.Keys)
		if err != nil {
			return 0, 0, err
		}
		for _, sp := range shards {
			if sp.Done || sp.Error == "" {
				continue
			}
			step := sp.Step
			if _, err := a.store.UpdateRepairShard(ctx, id, p.Run, sp.Key, func(q *state.ShardProgress) (bool, error) {
				if q.Step != step || q.Done || q.Error == "" {
					return false, nil
				}
				q.Error = ""
				return true, nil
			}); err != nil {
				return 0, 0, err
			}
			pm := planMessage{Migration: id, Key: sp.Key, Kind: kindRepair, Run: p.Run, Chain: c.Chain,
				Cursor: plan.Cursor{Shard: sp.Shard, Addr: sp.Addr, DB: sp.DB, Cursor: sp.Cursor, Step: sp.Step}}
			if strings.HasPrefix(sp.Key, "t") {
				pm.Target, pm.Owner = true, c.Addr
			}
			m := repairPlanMessage(id, p.Run, pm)
			m.ID += suffix
			planMsgs = append(planMsgs, m)
		}
		l, err := a.store.ListRepair(ctx, id, p.Run)
		if err != nil {
			return 0, 0, err
		}
		for _, b := range l.Dead {
			d, err := a.store.GetRepairDead(ctx, id, p.Run, b)
			if err != nil {
				return 0, 0, err
			}
			copyMsgs = append(copyMsgs, queue.Message{ID: repairBatchMessageID(id, p.Run, b) + suffix, Body: d.Message,
				Properties: map[string]any{"migration": id, "kind": kindRepair}})
		}
	}
	if err := a.sendAll(ctx, queue.Copy, copyMsgs); err != nil {
		return 0, 0, fmt.Errorf("sending repair batches: %s", redact.Error(err))
	}
	if err := a.sendAll(ctx, queue.Plan, planMsgs); err != nil {
		return 0, 0, fmt.Errorf("sending repair plan steps: %s", redact.Error(err))
	}
	return len(planMsgs), len(copyMsgs), nil
}

// repairBlocked reports whether some chain's repair pass waits for work only a resume sends.
func (a *App) repairBlocked(ctx context.Context, id string) (bool, error) {
	on, err := a.store.GetOnline(ctx, id)
	if err != nil {
		return false, err
	}
	for _, name := range on.Chains {
		c, err := a.store.GetChain(ctx, id, name)
		if err != nil {
			return false, err
		}
		if c.Repair != nil && c.Repair.Blocked != "" {
			return true, nil
		}
	}
	return false, nil
}
