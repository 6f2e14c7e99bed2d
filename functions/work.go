package functions

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/pace"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// NewFallback builds the per-key fallback for DUMP payloads the target refuses (cross-version
// copies), the same one the CLI uses.
var NewFallback func(*redisconn.Conn) copier.FallbackFunc = fallback.New

// copyMessage is the body of a copy queue message: one batch. Kind "verify" (with Run) makes
// it a verification batch: the same queue and function, so a verification needs no deployment
// of its own.
type copyMessage struct {
	Migration string     `json:"migration"`
	Batch     plan.Batch `json:"batch"`
	Kind      string     `json:"kind,omitempty"`
	Run       string     `json:"run,omitempty"`
	// TTLToleranceMs travels with a verify batch so it does not depend on which run is latest.
	TTLToleranceMs int64 `json:"ttlToleranceMs,omitempty"`
	// ParentDelivery is the delivery of the batch that sent this big-key batch off. After a
	// first delivery, that batch may have copied the key inline before it grew big.
	ParentDelivery int `json:"parentDelivery,omitempty"`
	// Key and Step name the plan step that cut a copy batch, so its result can roll the step up
	// (state.RollStep). Resume is set on the batches the n-th resume sent again.
	Key    string `json:"key,omitempty"`
	Step   int    `json:"step,omitempty"`
	Resume int    `json:"resume,omitempty"`
	// Chain, Target and Owner travel with a repair batch (kind "repair", Run = the pass): the
	// chain it repairs, whether its keys are target names (keys the source may lack), and the
	// source master whose keys are the chain's.
	Chain  string `json:"chain,omitempty"`
	Target bool   `json:"target,omitempty"`
	Owner  string `json:"owner,omitempty"`
}

// Message kinds (the "kind" application property, and the body's kind for verification).
const (
	kindCopy   = "copy"
	kindPlan   = "plan"
	kindVerify = "verify"
	kindRepair = "repair"
)

// hasRun: verification and repair messages belong to a run (a pass), copy messages do not.
func hasRun(kind string) bool { return kind == kindVerify || kind == kindRepair }

// copyMessageID is the Service Bus MessageId of a batch: the deterministic batch id, prefixed
// with the migration id because duplicate detection spans the whole queue.
func copyMessageID(id, batch string) string { return id + "." + batch }

// resumeSuffix makes the ids of the messages the n-th resume sends: the original ids are likely
// still in the queue's duplicate-detection window (the messages were lost, not forgotten), so a
// resend under them would be dropped. Results stay exact because they are create-if-absent.
func resumeSuffix(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(".r%d", n)
}

// messageBinding is the name of the message binding in the Service Bus function.json files.
const messageBinding = "msg"

// lastDelivery: the host will dead-letter the message if this delivery fails.
func (a *App) lastDelivery(m *hostproto.ServiceBusMessage) bool {
	return m.DeliveryCount >= a.maxDeliveries
}

// shardScope is what a plan step works on: a copy's shard progress and copy batches, or a
// verification run's shard progress and verify batches. The step logic is the same for both.
type shardScope struct {
	name    string // for logs: the shard key, with the run for a verification
	get     func(ctx context.Context) (*state.ShardProgress, error)
	update  func(ctx context.Context, fn func(*state.ShardProgress) (bool, error)) (*state.ShardProgress, error)
	message func(b plan.Batch, step int) queue.Message
	next    func(next plan.Cursor) queue.Message
	// getStep and createStep, when set, keep each step's batches in a step manifest written
	// before they are sent (a copy, a repair pass), so replays and resumes send the same
	// batches (and a copy's results roll up by step).
	getStep    func(ctx context.Context, step int) (*state.StepManifest, error)
	createStep func(ctx context.Context, m *state.StepManifest) (*state.StepManifest, error)
	// target: the step scans the target (a repair pass's keys the source may lack).
	target bool
	// sample, when set, replaces the SCAN step (a sampling verification).
	sample func(ctx context.Context, src *redisconn.Conn, cur plan.Cursor, p *state.ShardProgress) ([]plan.Batch, plan.Cursor, int, error)
}

func (a *App) scopeOf(mig *state.Migration, pm *planMessage) shardScope {
	id, key := mig.ID, pm.Key
	if pm.Kind == kindRepair {
		return a.repairScope(mig, pm)
	}
	if pm.Kind != kindVerify {
		return shardScope{
			name: key,
			get:  func(ctx context.Context) (*state.ShardProgress, error) { return a.store.GetShard(ctx, id, key) },
			update: func(ctx context.Context, fn func(*state.ShardProgress) (bool, error)) (*state.ShardProgress, error) {
				return a.store.UpdateShard(ctx, id, key, fn)
			},
			message: func(b plan.Batch, step int) queue.Message {
				body, _ := json.Marshal(copyMessage{Migration: id, Batch: b, Key: key, Step: step})
				return queue.Message{ID: copyMessageID(id, b.ID), Body: body, Properties: map[string]any{"migration": id, "kind": kindCopy}}
			},
			getStep: func(ctx context.Context, step int) (*state.StepManifest, error) {
				return a.store.GetStep(ctx, id, key, step)
			},
			createStep: func(ctx context.Context, m *state.StepManifest) (*state.StepManifest, error) {
				got, _, err := a.store.CreateStep(ctx, id, m)
				return got, err
			},
			next: func(next plan.Cursor) queue.Message {
				body, _ := json.Marshal(planMessage{Migration: id, Key: key, Cursor: next})
				return queue.Message{ID: planMessageID(id, key, next.Step), Body: body, Properties: map[string]any{"migration": id, "kind": kindPlan}}
			},
		}
	}
	run := pm.Run
	tol := int64(0)
	if mig.Verify != nil && mig.Verify.ID == run {
		tol = mig.Verify.TTLToleranceMs
	}
	sc := shardScope{
		name: run + "/" + key,
		get: func(ctx context.Context) (*state.ShardProgress, error) {
			return a.store.GetVerifyShard(ctx, id, run, key)
		},
		update: func(ctx context.Context, fn func(*state.ShardProgress) (bool, error)) (*state.ShardProgress, error) {
			return a.store.UpdateVerifyShard(ctx, id, run, key, fn)
		},
		message: func(b plan.Batch, _ int) queue.Message { return verifyBatchMessage(id, run, tol, b) },
		next: func(next plan.Cursor) queue.Message {
			body, _ := json.Marshal(planMessage{Migration: id, Key: key, Cursor: next, Kind: kindVerify, Run: run})
			return queue.Message{ID: verifyPlanMessageID(id, run, key, next.Step), Body: body,
				Properties: map[string]any{"migration": id, "kind": kindVerify}}
		},
	}
	if mig.Verify != nil && mig.Verify.ID == run && mig.Verify.Sample > 0 {
		sc.sample = func(ctx context.Context, src *redisconn.Conn, cur plan.Cursor, p *state.ShardProgress) ([]plan.Batch, plan.Cursor, int, error) {
			return sampleStep(ctx, src, cur, p.Sample, mig.Options)
		}
	}
	return sc
}

// planShard runs one bounded step of a shard's scan: it sends the batches it cut, records the
// step in the shard's progress (only if no other delivery did), and enqueues the continuation.
// Every id involved is deterministic, so a replayed step re-sends messages that the queue's
// duplicate detection drops and results that create-if-absent ignores.
func (a *App) planShard(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var pm planMessage
	if err := json.Unmarshal(msg.Body, &pm); err != nil || pm.Migration == "" || pm.Key == "" || hasRun(pm.Kind) != (pm.Run != "") {
		return false, fmt.Errorf("message %s is not a plan message; dropped", msg.MessageID)
	}
	retry, err := a.planStep(ctx, &pm, reply)
	if err != nil && retry && a.lastDelivery(msg) {
		// The host dead-letters the message after this failure: the shard will never finish,
		// so say so in its progress.
		a.markShardFailed(ctx, &pm, fmt.Sprintf("step %d failed %d times: %s", pm.Cursor.Step, msg.DeliveryCount, redact.Error(err)), false)
	}
	return retry, err
}

// markShardFailed records a plan step that will not run again in the shard's progress; onlyIfNew
// leaves a shard alone that moved past the step or already has an error.
func (a *App) markShardFailed(ctx context.Context, pm *planMessage, reason string, onlyIfNew bool) error {
	fn := func(p *state.ShardProgress) (bool, error) {
		if onlyIfNew && (p.Done || p.Step > pm.Cursor.Step || p.Error != "") {
			return false, nil
		}
		p.Error = reason
		return true, nil
	}
	var err error
	switch pm.Kind {
	case kindVerify:
		_, err = a.store.UpdateVerifyShard(context.WithoutCancel(ctx), pm.Migration, pm.Run, pm.Key, fn)
	case kindRepair:
		_, err = a.store.UpdateRepairShard(context.WithoutCancel(ctx), pm.Migration, pm.Run, pm.Key, fn)
	default:
		_, err = a.store.UpdateShard(context.WithoutCancel(ctx), pm.Migration, pm.Key, fn)
	}
	return err
}

func (a *App) planStep(ctx context.Context, pm *planMessage, reply *hostproto.Reply) (bool, error) {
	mig, err := a.store.GetMigration(ctx, pm.Migration)
	if errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("plan message for unknown migration %s; dropped", pm.Migration)
	}
	if err != nil {
		return true, err
	}
	switch {
	case pm.Kind == kindVerify:
		if mig.Verify != nil && mig.Verify.ID == pm.Run && mig.Verify.Error != "" {
			reply.Log("verification %s of %s failed at kickoff; step not run", pm.Run, mig.ID)
			return false, nil
		}
	case pm.Kind == kindRepair:
		if why, err := a.repairSuperseded(ctx, mig.ID, pm.Chain, pm.Run); err != nil {
			return true, err
		} else if why != "" {
			reply.Log("repair step %d of %s/%s not run: %s", pm.Cursor.Step, pm.Run, pm.Key, why)
			return false, nil
		}
	case mig.Error != "":
		reply.Log("migration %s failed; step not run", mig.ID)
		return false, nil
	}
	sc := a.scopeOf(mig, pm)
	prog, err := sc.get(ctx)
	if err != nil {
		return true, err
	}
	cur := pm.Cursor
	switch {
	case prog.Step > cur.Step:
		// Already recorded. Its continuation may not have been sent (a crash in between):
		// sending it again is harmless, the queue drops the duplicate.
		if prog.Step == cur.Step+1 && !prog.Done {
			return a.sendContinuation(ctx, sc.next(plan.Cursor{Shard: prog.Shard, Addr: prog.Addr, DB: prog.DB, Cursor: prog.Cursor, Step: prog.Step}))
		}
		reply.Log("step %d of %s already done", cur.Step, sc.name)
		return false, nil
	case prog.Step < cur.Step || prog.Done:
		reply.Log("step %d of %s does not follow the recorded progress (step %d); dropped", cur.Step, sc.name, prog.Step)
		return false, nil
	}
	side := "source"
	if sc.target {
		side = "target"
	}
	src, err := a.conns.get(ctx, mig, side)
	if err != nil {
		return true, err
	}
	var batches []plan.Batch
	var next plan.Cursor
	var scanned int
	var man *state.StepManifest
	var runID string
	if sc.getStep != nil {
		// An earlier delivery (or a crashed one) cut this step already: send what it cut.
		if man, err = sc.getStep(ctx, cur.Step); err != nil && !errors.Is(err, state.ErrNotFound) {
			return true, err
		}
	}
	if man != nil {
		batches, next, scanned = man.Batches, man.Next, man.Scanned
	} else {
		if sc.sample != nil {
			batches, next, scanned, err = sc.sample(ctx, src, cur, prog)
		} else {
			if runID, err = a.sameSourceProcess(ctx, src, cur.Addr, prog.RunID); err == nil {
				opts := plan.Options{Match: mig.Options.Match, Type: mig.Options.Type, BatchKeys: mig.Options.BatchKeys}
				if sc.target {
					// Target names carry the db prefixes: match and type are applied by the batch.
					opts = plan.Options{BatchKeys: mig.Options.BatchKeys}
				}
				batches, next, scanned, err = plan.Step(ctx, src.Node(cur.Addr, cur.DB), cur, opts, plan.Limits{MaxKeys: a.stepKeys, MaxTime: a.stepTime})
				for i := range batches {
					batches[i] = state.RepairBatchOf(batches[i], sc.target)
				}
			}
			if err == nil {
				_, err = a.sameSourceProcess(ctx, src, cur.Addr, runID)
			}
		}
		var restarted *sourceRestartedError
		if errors.As(err, &restarted) {
			// Retrying cannot help: the shard's cursor is lost for good. Fail loudly.
			reply.Log("%s step %d: %s", sc.name, cur.Step, restarted)
			return false, a.markShardFailed(ctx, pm, restarted.Error(), false)
		}
		if err != nil {
			return true, err
		}
		if sc.createStep != nil {
			// The first manifest written stands: a concurrent delivery of the step sends its batches.
			man, err = sc.createStep(ctx, &state.StepManifest{Key: pm.Key, Step: cur.Step, Cursor: cur, Next: next,
				Scanned: scanned, Batches: batches})
			if err != nil {
				return true, err
			}
			batches, next, scanned = man.Batches, man.Next, man.Scanned
		}
	}
	msgs := make([]queue.Message, 0, len(batches))
	for _, b := range batches {
		msgs = append(msgs, sc.message(b, cur.Step))
	}
	if err := a.sendAll(ctx, queue.Copy, msgs); err != nil {
		return true, fmt.Errorf("sending batches: %s", redact.Error(err))
	}
	// Record before enqueueing the continuation: the next step must find this one recorded.
	recorded := false
	if _, err := sc.update(ctx, func(p *state.ShardProgress) (bool, error) {
		recorded = false
		if p.Step != cur.Step || p.Done {
			return false, nil // a duplicate delivery of this step got there first
		}
		p.Step, p.Cursor, p.Done = next.Step, next.Cursor, next.Done
		if p.RunID == "" {
			p.RunID = runID
		}
		p.KeysScanned += int64(scanned)
		p.BatchesSent += int64(len(batches))
		p.Error = ""
		recorded = true
		return true, nil
	}); err != nil {
		return true, err
	}
	reply.Log("%s step %d: %d keys, %d batches, done=%v (recorded=%v)", sc.name, cur.Step, scanned, len(batches), next.Done, recorded)
	if next.Done {
		return false, nil
	}
	return a.sendContinuation(ctx, sc.next(next))
}

// sourceRestartedError: the source server scanned by a shard is another process than the one
// its earlier steps scanned.
type sourceRestartedError struct {
	addr string
}

func (e *sourceRestartedError) Error() string {
	return fmt.Sprintf("the source server %s restarted during the scan (its run_id changed): a SCAN cursor means nothing "+
		"to a new server process, so keys could be missed; start a new migration (with \"existing\": \"replace\", as "+
		"the target holds keys of this one)", e.addr)
}

// sameSourceProcess reads the run_id of the source server at addr and checks it is want (when
// want is set): the shard's cursor is only valid for the process that returned it.
func (a *App) sameSourceProcess(ctx context.Context, src *redisconn.Conn, addr, want string) (string, error) {
	id, err := src.RunID(ctx, addr)
	if err != nil {
		return "", err
	}
	if want != "" && id != want {
		return id, &sourceRestartedError{addr: addr}
	}
	return id, nil
}

// sendAll sends messages in chunks the sender can batch.
func (a *App) sendAll(ctx context.Context, q string, msgs []queue.Message) error {
	for len(msgs) > 0 {
		n := min(len(msgs), 100)
		if err := a.sender.Send(ctx, q, msgs[:n]); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

func (a *App) sendContinuation(ctx context.Context, m queue.Message) (bool, error) {
	if err := a.sender.Send(ctx, queue.Plan, []queue.Message{m}); err != nil {
		return true, fmt.Errorf("enqueueing the next plan step: %s", redact.Error(err))
	}
	return false, nil
}

// copyBatch copies one batch and records its result once. Big keys are not copied inline: each
// goes to the copy queue as a batch of its own (copied in chunks there), so small keys never wait
// behind one and a big key's copy gets a whole invocation. Those batches are sent before the
// result is recorded and the result says how many there are, so status knows every batch that
// is still to come.
func (a *App) copyBatch(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var cm copyMessage
	if err := json.Unmarshal(msg.Body, &cm); err != nil || cm.Migration == "" || cm.Batch.ID == "" || hasRun(cm.Kind) != (cm.Run != "") {
		return false, fmt.Errorf("message %s is not a copy message; dropped", msg.MessageID)
	}
	switch cm.Kind {
	case kindVerify:
		return a.verifyBatch(ctx, &cm, msg, reply)
	case kindRepair:
		return a.repairBatch(ctx, &cm, msg, reply)
	}
	done, err := a.store.HasResult(ctx, cm.Migration, cm.Batch.ID)
	if err != nil {
		return true, err
	}
	if done {
		reply.Log("batch %s already recorded (delivery %d)", cm.Batch.ID, msg.DeliveryCount)
		a.rollStep(ctx, &cm)
		return false, nil
	}
	res, spawned, err := a.copyOne(ctx, &cm, msg.DeliveryCount)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return false, fmt.Errorf("copy message for unknown migration %s; dropped", cm.Migration)
		}
		if a.lastDelivery(msg) {
			reason := fmt.Sprintf("batch failed on all %d deliveries; last error: %s", msg.DeliveryCount, redact.Error(err))
			a.recordDead(ctx, &cm, msg.DeliveryCount, reason)
		}
		return true, err
	}
	if _, err := a.store.RecordResult(ctx, cm.Migration, state.BatchResult{Batch: cm.Batch.ID, Shard: cm.Batch.Shard, DB: cm.Batch.DB,
		Keys: len(cm.Batch.Keys) - len(spawned), Result: res, Delivery: msg.DeliveryCount, Spawned: len(spawned)}); err != nil {
		return true, err
	}
	a.rollStep(ctx, &cm)
	reply.Log("batch %s: %d copied, %d skipped, %d missing, %d expired, %d failed, %d big keys sent to batches of their own",
		cm.Batch.ID, res.Copied, res.Skipped, res.Missing, res.Expired, res.Failed, len(spawned))
	return false, nil
}

// rollStep rolls the batch's plan step up if this result was its last one. A failure here
// loses nothing: status and resume roll up the complete steps they find.
func (a *App) rollStep(ctx context.Context, cm *copyMessage) {
	if cm.Key == "" || hasRun(cm.Kind) {
		return
	}
	if _, err := a.store.RollStep(context.WithoutCancel(ctx), cm.Migration, cm.Key, cm.Step); err != nil {
		a.logf("CopyBatch: rolling up step %s/%d of %s: %s", cm.Key, cm.Step, cm.Migration, redact.Error(err))
	}
}

// bigBatch is the batch that copies key i of b in chunks. Its id follows the key's position in
// b, so whichever delivery of b finds the key big, it sends the same message.
func bigBatch(b plan.Batch, i int) plan.Batch {
	return plan.Batch{ID: state.BigBatchID(b.ID, i), Shard: b.Shard, DB: b.DB, Keys: [][]byte{b.Keys[i]}, Big: true}
}

// copyOne copies a batch and sends its big keys off; it returns the positions of the keys sent
// off (this delivery's and earlier ones'), which the batch's result does not count.
func (a *App) copyOne(ctx context.Context, cm *copyMessage, delivery int) (copier.Result, []int, error) {
	mig, src, dst, dbMap, err := a.batchEndpoints(ctx, cm.Migration)
	if err != nil {
		return copier.Result{}, nil, err
	}
	if cm.Resume > 0 || mig.Resumes > 0 {
		// After a resume any batch may run twice, even at once (a message thought lost was only
		// late): each delivery treats keys found in the target as its own, like a redelivery.
		delivery = max(delivery, 2)
	}
	b := cm.Batch
	// Keys an earlier delivery sent off stay sent off, even if they shrank since: their own
	// batches copy and count them.
	var spawned []int
	if delivery > 1 && !b.Big {
		if spawned, err = a.store.SpawnedBig(ctx, mig.ID, b.ID); err != nil {
			return copier.Result{}, nil, err
		}
	}
	work := b
	if len(spawned) > 0 {
		skip := map[int]bool{}
		for _, i := range spawned {
			skip[i] = true
		}
		work.Keys = nil
		for i, k := range b.Keys {
			if !skip[i] {
				work.Keys = append(work.Keys, k)
			}
		}
	}
	existing := copier.Existing(mig.Options.Existing)
	if existing == copier.ExistingFail && (delivery > 1 || cm.ParentDelivery > 1) {
		// The target was empty at kickoff; a key of this batch found there now was most likely
		// written by an earlier delivery that failed after writing it. Overwriting it with the
		// same source value keeps the counts exact instead of reporting our own key as a clash.
		existing = copier.ExistingReplace
	}
	cp := copier.New(src, dst, copier.Options{Existing: existing, DBMap: dbMap, Fallback: NewFallback(dst), Reencode: fallback.Reencoder(dst),
		BigKeyBytes: mig.Options.BigKeyBytes, DeferBigKeys: !b.Big, SourcePacer: sourcePacer(mig.Options.MaxSourceOps)})
	res, err := cp.Copy(ctx, work)
	if err != nil {
		return copier.Result{}, nil, err
	}
	a.checkTarget(ctx, "CopyBatch", mig, dst)
	if len(res.BigKeys) > 0 {
		if spawned, err = a.store.RecordSpawnedBig(ctx, mig.ID, b.ID, positions(b, res.BigKeys, spawned)); err != nil {
			return copier.Result{}, nil, err
		}
		res.BigKeys = nil
	}
	// All of them again, not only the new ones: a delivery that crashed after recording them
	// may not have sent them. Duplicate detection drops what did go out.
	if err := a.sendBig(ctx, cm, spawned, delivery); err != nil {
		return copier.Result{}, nil, err
	}
	return res, spawned, nil
}

// targetRunIDs is the run_id of each target master, for checkTargetRestart; a target whose
// INFO is refused is not watched.
func targetRunIDs(ctx context.Context, dst *redisconn.Conn) map[string]string {
	var out map[string]string
	for _, addr := range dst.Masters() {
		if rid, err := dst.RunID(ctx, addr); err == nil {
			if out == nil {
				out = map[string]string{}
			}
			out[addr] = rid
		}
	}
	return out
}

// checkTarget records a restart or evictions of mig's target since the start (checkTargetRestart,
// checkTargetEvictions), after a copy batch, an import checkpoint or a sync chain's tick wrote
// keys. fn names the function for the log.
func (a *App) checkTarget(ctx context.Context, fn string, mig *state.Migration, dst *redisconn.Conn) {
	a.checkTargetRestart(ctx, fn, mig, dst)
	a.checkTargetEvictions(ctx, fn, mig, dst)
}

// checkTargetRestart compares the target's run_ids with those recorded at the start, after a
// batch (or an import's checkpoint) wrote keys: a restarted target may have lost what was
// written before, so the restart is recorded once per new run_id and status reports it (as the
// CLI's copy does). fn names the function for the log.
func (a *App) checkTargetRestart(ctx context.Context, fn string, mig *state.Migration, dst *redisconn.Conn) {
	for addr, old := range mig.TargetRunIDs {
		rid, err := dst.RunID(ctx, addr)
		if err != nil || rid == old || targetRestartRecorded(mig.TargetRestarts, addr, rid) {
			continue
		}
		seen := state.TargetRestart{Addr: addr, RunID: rid, SeenAt: time.Now().UTC()}
		_, err = a.store.UpdateMigration(context.WithoutCancel(ctx), mig.ID, func(m *state.Migration) (bool, error) {
			if targetRestartRecorded(m.TargetRestarts, addr, rid) {
				return false, nil
			}
			m.TargetRestarts = append(m.TargetRestarts, seen)
			return true, nil
		})
		if err != nil {
			a.logf("%s: recording the restart of target %s for %s: %s", fn, addr, mig.ID, redact.Error(err))
			continue
		}
		mig.TargetRestarts = append(mig.TargetRestarts, seen) // a caller that checks again knows it
		a.logf("%s: the target %s of %s restarted during the migration (run_id changed): keys written before may be lost", fn, addr, mig.ID)
	}
}

// evictionsAtStart is the target's evicted_keys for Migration.TargetEvictedAtStart; nil when
// the target does not report them (then evictions are not watched).
func evictionsAtStart(ctx context.Context, dst *redisconn.Conn) *int64 {
	if n, ok := dst.Evictions(ctx); ok {
		return &n
	}
	return nil
}

// checkTargetEvictions compares the target's evicted_keys with the count at the start, after a
// batch (or an import's checkpoint) wrote keys: keys it evicted may be the migration's, so the
// count is recorded (as it grows) and status reports it (as the CLI's copy does).
func (a *App) checkTargetEvictions(ctx context.Context, fn string, mig *state.Migration, dst *redisconn.Conn) {
	if mig.TargetEvictedAtStart == nil {
		return
	}
	n, ok := dst.Evictions(ctx)
	d := n - *mig.TargetEvictedAtStart
	if !ok || d <= 0 || (mig.TargetEvictions != nil && mig.TargetEvictions.Keys >= d) {
		return
	}
	seen := &state.TargetEvictions{Keys: d, SeenAt: time.Now().UTC()}
	first := false
	_, err := a.store.UpdateMigration(context.WithoutCancel(ctx), mig.ID, func(m *state.Migration) (bool, error) {
		if m.TargetEvictions != nil && m.TargetEvictions.Keys >= d {
			return false, nil
		}
		first = m.TargetEvictions == nil
		m.TargetEvictions = seen
		return true, nil
	})
	if err != nil {
		a.logf("%s: recording the target's evictions for %s: %s", fn, mig.ID, redact.Error(err))
		return
	}
	mig.TargetEvictions = seen // a caller that checks again knows it
	if first {
		a.logf("%s: the target of %s evicted keys during the migration (%d so far; it reached its maxmemory): keys written may be gone", fn, mig.ID, d)
	}
}

func targetRestartRecorded(rs []state.TargetRestart, addr, rid string) bool {
	for _, r := range rs {
		if r.Addr == addr && r.RunID == rid {
			return true
		}
	}
	return false
}

// sendBig sends the big-key batches of cm's batch for the keys at positions idx, from its
// delivery; they belong to the same plan step, and a resumed batch's carry the resume's ids.
func (a *App) sendBig(ctx context.Context, cm *copyMessage, idx []int, delivery int) error {
	msgs := bigMessages(cm, idx, delivery)
	if err := a.sendAll(ctx, queue.Copy, msgs); err != nil {
		return fmt.Errorf("sending big-key batches: %s", redact.Error(err))
	}
	return nil
}

func bigMessages(cm *copyMessage, idx []int, delivery int) []queue.Message {
	id, b := cm.Migration, cm.Batch
	msgs := make([]queue.Message, 0, len(idx))
	for _, i := range idx {
		if i < 0 || i >= len(b.Keys) {
			continue
		}
		bb := bigBatch(b, i)
		body, _ := json.Marshal(copyMessage{Migration: id, Batch: bb, ParentDelivery: delivery, Key: cm.Key, Step: cm.Step, Resume: cm.Resume})
		msgs = append(msgs, queue.Message{ID: copyMessageID(id, bb.ID) + resumeSuffix(cm.Resume), Body: body,
			Properties: map[string]any{"migration": id, "kind": kindCopy}})
	}
	return msgs
}

// positions finds the positions in b of the keys the copier deferred, skipping positions
// already sent off (a key listed twice in a batch has two positions).
func positions(b plan.Batch, big [][]byte, taken []int) []int {
	want := map[string]int{}
	for _, k := range big {
		want[string(k)]++
	}
	skip := map[int]bool{}
	for _, i := range taken {
		skip[i] = true
	}
	var out []int
	for i, k := range b.Keys {
		if !skip[i] && want[string(k)] > 0 {
			want[string(k)]--
			out = append(out, i)
		}
	}
	return out
}

// deadBatch is what a dead-lettered batch's result counts: every key it did not send off to a
// big-key batch failed with reason. Keys it recorded as sent off are sent (again) first, since the
// result counts their batches as to come; if that fails, nothing may be recorded yet.
func (a *App) deadBatch(ctx context.Context, cm *copyMessage, delivery int, reason string) (state.BatchResult, error) {
	b := cm.Batch
	var spawned []int
	if !b.Big {
		var err error
		if spawned, err = a.store.SpawnedBig(ctx, cm.Migration, b.ID); err != nil {
			return state.BatchResult{}, err
		}
		if err := a.sendBig(ctx, cm, spawned, delivery); err != nil {
			return state.BatchResult{}, err
		}
	}
	keys := b.Keys
	if len(spawned) > 0 {
		skip := map[int]bool{}
		for _, i := range spawned {
			skip[i] = true
		}
		keys = nil
		for i, k := range b.Keys {
			if !skip[i] {
				keys = append(keys, k)
			}
		}
	}
	rest := plan.Batch{ID: b.ID, Shard: b.Shard, DB: b.DB, Keys: keys}
	return state.BatchResult{Batch: b.ID, Shard: b.Shard, DB: b.DB, Keys: len(keys), Result: engine.FailBatch(rest, reason),
		DeadLettered: true, Reason: reason, Delivery: delivery, BatchKeys: keys, Spawned: len(spawned)}, nil
}

// recordDead writes a dead-lettered result: every key of the batch failed with reason.
func (a *App) recordDead(ctx context.Context, cm *copyMessage, delivery int, reason string) {
	ctx = context.WithoutCancel(ctx)
	r, err := a.deadBatch(ctx, cm, delivery, reason)
	if err == nil {
		_, err = a.store.RecordResult(ctx, cm.Migration, r)
	}
	if err != nil {
		a.logf("CopyBatch: recording dead-lettered batch %s: %s", cm.Batch.ID, redact.Error(err))
		return
	}
	a.rollStep(ctx, cm)
}

// copyDeadLetter consumes the copy queue's dead-letter queue: a batch that got there without
// CopyBatch recording it (the handler crashed or timed out on its last delivery) is recorded as
// dead-lettered with the queue's reason. When CopyBatch recorded it already, that record stands.
func (a *App) copyDeadLetter(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var cm copyMessage
	if err := json.Unmarshal(msg.Body, &cm); err != nil || cm.Migration == "" || cm.Batch.ID == "" {
		return false, fmt.Errorf("dead-lettered message %s is not a copy message; dropped", msg.MessageID)
	}
	reason := "dead-lettered"
	if msg.DeadLetterReason != "" {
		reason += ": " + msg.DeadLetterReason
	}
	if d := strings.TrimSpace(msg.DeadLetterErrorDescription); d != "" {
		reason += ": " + d
	}
	reason = redact.String(reason)
	if _, err := a.store.GetMigration(ctx, cm.Migration); errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("dead-lettered batch of unknown migration %s; dropped", cm.Migration)
	} else if err != nil {
		return true, err
	}
	var created bool
	switch cm.Kind {
	case kindVerify:
		created, err = a.store.RecordVerifyResult(ctx, cm.Migration, cm.Run, deadVerify(&cm, msg.DeliveryCount, reason))
	case kindRepair:
		created, err = a.store.RecordRepairDead(ctx, cm.Migration, cm.Run, deadRepair(&cm, msg, reason))
	default:
		var r state.BatchResult
		if r, err = a.deadBatch(ctx, &cm, msg.DeliveryCount, reason); err == nil {
			created, err = a.store.RecordResult(ctx, cm.Migration, r)
		}
	}
	if err != nil {
		return true, err
	}
	a.rollStep(ctx, &cm)
	reply.Log("dead-lettered %s batch %s recorded=%v", cmp.Or(cm.Kind, kindCopy), cm.Batch.ID, created)
	return false, nil
}

// planDeadLetter marks a shard whose plan step was dead-lettered without PlanShard recording
// the failure, so status reports the migration (or the verification) as failed instead of
// planning forever.
func (a *App) planDeadLetter(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var pm planMessage
	if err := json.Unmarshal(msg.Body, &pm); err != nil || pm.Migration == "" || pm.Key == "" || hasRun(pm.Kind) != (pm.Run != "") {
		return false, fmt.Errorf("dead-lettered message %s is not a plan message; dropped", msg.MessageID)
	}
	reason := strings.TrimSpace(fmt.Sprintf("step %d dead-lettered: %s %s", pm.Cursor.Step, msg.DeadLetterReason, msg.DeadLetterErrorDescription))
	err = a.markShardFailed(ctx, &pm, reason, true)
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	reply.Log("dead-lettered plan step %d of %s/%s", pm.Cursor.Step, pm.Migration, pm.Key)
	return false, nil
}

// copyConcurrency is how many CopyBatch invocations one instance runs at once (host.json's
// serviceBus maxConcurrentCalls).
const copyConcurrency = 8

// sourcePacer paces one invocation to its share of the migration's maxSourceOps: the limit over
// the concurrent copy invocations of an instance. It is per invocation and per instance, so with
// N instances the source may see up to N times the limit; it also backs off by itself from a
// slow or busy source, as the CLI does.
func sourcePacer(maxOps int) copier.SourcePacer {
	share := 0
	if maxOps > 0 {
		share = max(maxOps/copyConcurrency, 1)
	}
	return pace.New(pace.Options{MaxOps: share})
}
