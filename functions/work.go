package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// NewFallback builds the per-key fallback for DUMP payloads the target refuses (cross-version
// copies), the same one the CLI uses.
var NewFallback func(*redisconn.Conn) copier.FallbackFunc = fallback.New

// copyMessage is the body of a copy queue message: one batch.
type copyMessage struct {
	Migration string     `json:"migration"`
	Batch     plan.Batch `json:"batch"`
}

// copyMessageID is the Service Bus MessageId of a batch: the deterministic batch id, prefixed
// with the migration id because duplicate detection spans the whole queue.
func copyMessageID(id, batch string) string { return id + "." + batch }

// messageBinding is the name of the message binding in the Service Bus function.json files.
const messageBinding = "msg"

// lastDelivery: the host will dead-letter the message if this delivery fails.
func (a *App) lastDelivery(m *hostproto.ServiceBusMessage) bool {
	return m.DeliveryCount >= a.maxDeliveries
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
	if err := json.Unmarshal(msg.Body, &pm); err != nil || pm.Migration == "" || pm.Key == "" {
		return false, fmt.Errorf("message %s is not a plan message; dropped", msg.MessageID)
	}
	retry, err := a.planStep(ctx, &pm, reply)
	if err != nil && retry && a.lastDelivery(msg) {
		// The host dead-letters the message after this failure: the shard will never finish,
		// so say so in its progress.
		_, _ = a.store.UpdateShard(ctx, pm.Migration, pm.Key, func(p *state.ShardProgress) (bool, error) {
			p.Error = fmt.Sprintf("step %d failed %d times: %s", pm.Cursor.Step, msg.DeliveryCount, redact.Error(err))
			return true, nil
		})
	}
	return retry, err
}

func (a *App) planStep(ctx context.Context, pm *planMessage, reply *hostproto.Reply) (bool, error) {
	mig, err := a.store.GetMigration(ctx, pm.Migration)
	if errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("plan message for unknown migration %s; dropped", pm.Migration)
	}
	if err != nil {
		return true, err
	}
	if mig.Error != "" {
		reply.Log("migration %s failed; step not run", mig.ID)
		return false, nil
	}
	prog, err := a.store.GetShard(ctx, mig.ID, pm.Key)
	if err != nil {
		return true, err
	}
	cur := pm.Cursor
	switch {
	case prog.Step > cur.Step:
		// Already recorded. Its continuation may not have been sent (a crash in between):
		// sending it again is harmless, the queue drops the duplicate.
		if prog.Step == cur.Step+1 && !prog.Done {
			return a.sendContinuation(ctx, mig.ID, pm.Key, plan.Cursor{Shard: prog.Shard, Addr: prog.Addr, DB: prog.DB, Cursor: prog.Cursor, Step: prog.Step})
		}
		reply.Log("step %d of %s already done", cur.Step, pm.Key)
		return false, nil
	case prog.Step < cur.Step || prog.Done:
		reply.Log("step %d of %s does not follow the recorded progress (step %d); dropped", cur.Step, pm.Key, prog.Step)
		return false, nil
	}
	src, err := a.conns.get(ctx, mig, "source")
	if err != nil {
		return true, err
	}
	opts := plan.Options{Match: mig.Options.Match, Type: mig.Options.Type, BatchKeys: mig.Options.BatchKeys}
	batches, next, scanned, err := plan.Step(ctx, src.Node(cur.Addr, cur.DB), cur, opts, plan.Limits{MaxKeys: a.stepKeys, MaxTime: a.stepTime})
	if err != nil {
		return true, err
	}
	msgs := make([]queue.Message, 0, len(batches))
	for _, b := range batches {
		body, err := json.Marshal(copyMessage{Migration: mig.ID, Batch: b})
		if err != nil {
			return true, err
		}
		msgs = append(msgs, queue.Message{ID: copyMessageID(mig.ID, b.ID), Body: body,
			Properties: map[string]any{"migration": mig.ID, "kind": "copy"}})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 100)
		if err := a.sender.Send(ctx, queue.Copy, msgs[:n]); err != nil {
			return true, fmt.Errorf("sending copy batches: %s", redact.Error(err))
		}
		msgs = msgs[n:]
	}
	// Record before enqueueing the continuation: the next step must find this one recorded.
	recorded := false
	if _, err := a.store.UpdateShard(ctx, mig.ID, pm.Key, func(p *state.ShardProgress) (bool, error) {
		recorded = false
		if p.Step != cur.Step || p.Done {
			return false, nil // a duplicate delivery of this step got there first
		}
		p.Step, p.Cursor, p.Done = next.Step, next.Cursor, next.Done
		p.KeysScanned += int64(scanned)
		p.BatchesSent += int64(len(batches))
		p.Error = ""
		recorded = true
		return true, nil
	}); err != nil {
		return true, err
	}
	reply.Log("%s step %d: %d keys, %d batches, done=%v (recorded=%v)", pm.Key, cur.Step, scanned, len(batches), next.Done, recorded)
	if next.Done {
		return false, nil
	}
	return a.sendContinuation(ctx, mig.ID, pm.Key, next)
}

func (a *App) sendContinuation(ctx context.Context, id, key string, next plan.Cursor) (bool, error) {
	body, _ := json.Marshal(planMessage{Migration: id, Key: key, Cursor: next})
	err := a.sender.Send(ctx, queue.Plan, []queue.Message{{ID: planMessageID(id, key, next.Step), Body: body,
		Properties: map[string]any{"migration": id, "kind": "plan"}}})
	if err != nil {
		return true, fmt.Errorf("enqueueing the next plan step: %s", redact.Error(err))
	}
	return false, nil
}

// copyBatch copies one batch and records its result once.
func (a *App) copyBatch(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var cm copyMessage
	if err := json.Unmarshal(msg.Body, &cm); err != nil || cm.Migration == "" || cm.Batch.ID == "" {
		return false, fmt.Errorf("message %s is not a copy message; dropped", msg.MessageID)
	}
	done, err := a.store.HasResult(ctx, cm.Migration, cm.Batch.ID)
	if err != nil {
		return true, err
	}
	if done {
		reply.Log("batch %s already recorded (delivery %d)", cm.Batch.ID, msg.DeliveryCount)
		return false, nil
	}
	res, err := a.copyOne(ctx, &cm, msg.DeliveryCount)
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
		Keys: len(cm.Batch.Keys), Result: res, Delivery: msg.DeliveryCount}); err != nil {
		return true, err
	}
	reply.Log("batch %s: %d copied, %d skipped, %d missing, %d expired, %d failed", cm.Batch.ID, res.Copied, res.Skipped, res.Missing, res.Expired, res.Failed)
	return false, nil
}

func (a *App) copyOne(ctx context.Context, cm *copyMessage, delivery int) (copier.Result, error) {
	mig, err := a.store.GetMigration(ctx, cm.Migration)
	if err != nil {
		return copier.Result{}, err
	}
	src, err := a.conns.get(ctx, mig, "source")
	if err != nil {
		return copier.Result{}, err
	}
	dst, err := a.conns.get(ctx, mig, "target")
	if err != nil {
		return copier.Result{}, err
	}
	dbMap, err := dbMapOf(mig.Options)
	if err != nil {
		return copier.Result{}, err
	}
	existing := copier.Existing(mig.Options.Existing)
	if existing == copier.ExistingFail && delivery > 1 {
		// The target was empty at kickoff; a key of this batch found there now was most likely
		// written by an earlier delivery that failed after writing it. Overwriting it with the
		// same source value keeps the counts exact instead of reporting our own key as a clash.
		existing = copier.ExistingReplace
	}
	cp := copier.New(src, dst, copier.Options{Existing: existing, DBMap: dbMap, Fallback: NewFallback(dst), Reencode: fallback.Reencoder(dst)})
	return cp.Copy(ctx, cm.Batch)
}

// recordDead writes a dead-lettered result: every key of the batch failed with reason.
func (a *App) recordDead(ctx context.Context, cm *copyMessage, delivery int, reason string) {
	r := engine.FailBatch(cm.Batch, reason)
	_, err := a.store.RecordResult(context.WithoutCancel(ctx), cm.Migration, state.BatchResult{Batch: cm.Batch.ID, Shard: cm.Batch.Shard,
		DB: cm.Batch.DB, Keys: len(cm.Batch.Keys), Result: r, DeadLettered: true, Reason: reason, Delivery: delivery, BatchKeys: cm.Batch.Keys})
	if err != nil {
		a.logf("CopyBatch: recording dead-lettered batch %s: %s", cm.Batch.ID, redact.Error(err))
	}
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
	if _, err := a.store.GetMigration(ctx, cm.Migration); errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("dead-lettered batch of unknown migration %s; dropped", cm.Migration)
	} else if err != nil {
		return true, err
	}
	r := engine.FailBatch(cm.Batch, redact.String(reason))
	created, err := a.store.RecordResult(ctx, cm.Migration, state.BatchResult{Batch: cm.Batch.ID, Shard: cm.Batch.Shard, DB: cm.Batch.DB,
		Keys: len(cm.Batch.Keys), Result: r, DeadLettered: true, Reason: redact.String(reason), Delivery: msg.DeliveryCount, BatchKeys: cm.Batch.Keys})
	if err != nil {
		return true, err
	}
	reply.Log("dead-lettered batch %s recorded=%v", cm.Batch.ID, created)
	return false, nil
}

// planDeadLetter marks a shard whose plan step was dead-lettered without PlanShard recording
// the failure, so status reports the migration as failed instead of planning forever.
func (a *App) planDeadLetter(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	var pm planMessage
	if err := json.Unmarshal(msg.Body, &pm); err != nil || pm.Migration == "" || pm.Key == "" {
		return false, fmt.Errorf("dead-lettered message %s is not a plan message; dropped", msg.MessageID)
	}
	_, err = a.store.UpdateShard(ctx, pm.Migration, pm.Key, func(p *state.ShardProgress) (bool, error) {
		if p.Done || p.Step > pm.Cursor.Step || p.Error != "" {
			return false, nil
		}
		p.Error = strings.TrimSpace(fmt.Sprintf("step %d dead-lettered: %s %s", pm.Cursor.Step, msg.DeadLetterReason, msg.DeadLetterErrorDescription))
		return true, nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	reply.Log("dead-lettered plan step %d of %s/%s", pm.Cursor.Step, pm.Migration, pm.Key)
	return false, nil
}
