package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// Verification over the queue. POST /api/migrations/{id}/verify starts a run: one plan message
// per source shard and db goes to the plan queue with kind "verify"; PlanShard scans (or samples)
// the shard in bounded steps like a copy and sends verify batches to the copy queue; CopyBatch
// checks each batch (verify.ReadStates on both sides, in-server digests) and records a result
// create-if-absent under the run. Reusing the two queues and functions keeps the deployment as
// it is: no queue, function or setting to add.

// Limits of a verification request.
const (
	maxVerifySample       = 100000
	defaultTTLToleranceMs = 2000
	maxTTLToleranceMs     = 24 * 3600 * 1000
)

// VerifyRequest is the optional body of POST /api/migrations/{id}/verify.
type VerifyRequest struct {
	Sample         *int   `json:"sample,omitempty"`
	Full           *bool  `json:"full,omitempty"`
	TTLToleranceMs *int64 `json:"ttlToleranceMs,omitempty"`
}

// VerifyResponse is the 202 body.
type VerifyResponse struct {
	ID        string `json:"id"`
	Run       string `json:"run"`
	StatusURL string `json:"statusUrl"`
	State     string `json:"state"`
	Mode      string `json:"mode"`
	Shards    int    `json:"shards"`
}

func parseVerifyRequest(body []byte) (*VerifyRequest, error) {
	var req VerifyRequest
	if len(trimSpace(body)) == 0 {
		return &req, nil // no body: a full verification
	}
	whole, _, err := parseObject(body, "", []string{"sample", "full", "ttlToleranceMs"})
	if err != nil {
		return nil, err
	}
	if err := decodeStrict(whole, &req, ""); err != nil {
		return nil, err
	}
	switch {
	case req.Sample != nil && (*req.Sample < 1 || *req.Sample > maxVerifySample):
		return nil, fieldErrf("sample", "sample %d: want 1..%d keys", *req.Sample, maxVerifySample)
	case req.Sample != nil && req.Full != nil && *req.Full:
		return nil, fieldErrf("full", "full: give sample or full, not both")
	case req.Sample == nil && req.Full != nil && !*req.Full:
		return nil, fieldErrf("sample", "sample: full is false, so give the number of keys to sample")
	case req.TTLToleranceMs != nil && (*req.TTLToleranceMs < 0 || *req.TTLToleranceMs > maxTTLToleranceMs):
		return nil, fieldErrf("ttlToleranceMs", "ttlToleranceMs %d: want 0..%d", *req.TTLToleranceMs, int64(maxTTLToleranceMs))
	}
	return &req, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func verifyPlanMessageID(id, run, key string, step int) string {
	return fmt.Sprintf("%s.%s.%s.step%d", id, run, key, step)
}

func verifyBatchMessage(id, run string, tolMs int64, b plan.Batch) queue.Message {
	body, _ := json.Marshal(copyMessage{Migration: id, Batch: b, Kind: kindVerify, Run: run, TTLToleranceMs: tolMs})
	return queue.Message{ID: id + "." + run + "." + b.ID, Body: body, Properties: map[string]any{"migration": id, "kind": kindVerify}}
}

// migrationVerify is POST /api/migrations/{id}/verify.
func (a *App) migrationVerify(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.store == nil || a.sender == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage or queue configured (AzureWebJobsStorage, ServiceBusConnection)", "")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseVerifyRequest(body)
	if err != nil {
		a.requestErrorOf("MigrationVerify", w, err)
		return
	}
	if !state.ValidID(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	run, code, err := a.startVerify(ctx, id, req)
	if err != nil {
		if code == http.StatusInternalServerError {
			a.logf("MigrationVerify: %s: %s", id, redact.Error(err))
		}
		field := ""
		if code == http.StatusNotFound {
			field = "id"
		}
		var fe *fieldError
		if errors.As(err, &fe) {
			code, field = http.StatusBadRequest, fe.field
		}
		writeError(w, code, redact.Error(err), field)
		return
	}
	loc := statusURL(r, id)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, VerifyResponse{ID: id, Run: run.ID, StatusURL: loc, State: state.VerifyRunning, Mode: run.Mode(), Shards: len(run.Shards)})
}

// copyMigration reads a copy migration and its freshly computed status (not a possibly stale
// summary: the caller's decision must be right). An unknown id is 404; an RDB import is 409,
// with importWhy saying why the route does not apply to it.
func (a *App) copyMigration(ctx context.Context, id, importWhy string) (*state.Migration, *state.Status, int, error) {
	mig, err := a.store.GetMigration(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil, http.StatusNotFound, fmt.Errorf("no migration %q", id)
	}
	if err != nil {
		return nil, nil, http.StatusInternalServerError, err
	}
	if mig.Kind != "copy" || mig.Import != nil {
		return nil, nil, http.StatusConflict, fmt.Errorf("migration %s is an RDB import: %s", id, importWhy)
	}
	st, err := a.store.ComputeStatus(ctx, id)
	if err != nil {
		return nil, nil, http.StatusInternalServerError, err
	}
	return mig, st, 0, nil
}

// startVerify refuses what cannot be verified, writes the run into the record and enqueues one
// plan message per shard. It returns the HTTP status of a refusal.
func (a *App) startVerify(ctx context.Context, id string, req *VerifyRequest) (*state.VerifyRun, int, error) {
	mig, st, code, err := a.copyMigration(ctx, id, "there is no source server to verify against "+
		"(the CLI's `redis-migrate import` verifies against the file)")
	if err != nil {
		return nil, code, err
	}
	if st.State != state.StateCompleted && st.State != state.StateCompletedWithFailures {
		return nil, http.StatusConflict, fmt.Errorf("migration %s is %s: verify it once it has completed", id, st.State)
	}
	prevRun := ""
	if st.Verify != nil {
		prevRun = st.Verify.Run
		if st.Verify.State == state.VerifyRunning || !st.Verify.Final() {
			return nil, http.StatusConflict, fmt.Errorf("verification %s of %s is still running", st.Verify.Run, id)
		}
	}
	shards, err := a.store.Shards(ctx, mig)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	sample := 0
	if req.Sample != nil {
		sample = *req.Sample
	}
	tol := int64(defaultTTLToleranceMs)
	if req.TTLToleranceMs != nil {
		tol = *req.TTLToleranceMs
	}
	wants := make([]int, len(shards))
	if sample > 0 {
		// Each shard gets its share of the sample by its size, as verify.Run divides it.
		src, err := a.conns.get(ctx, mig, "source")
		if err != nil {
			return nil, http.StatusServiceUnavailable, fmt.Errorf("source: %s", redact.Error(err))
		}
		sizes := make([]int64, len(shards))
		var total int64
		for i, p := range shards {
			n, err := src.Node(p.Addr, p.DB).DBSize(ctx).Result()
			if err != nil {
				return nil, http.StatusServiceUnavailable, fmt.Errorf("source: %s", redact.Error(err))
			}
			sizes[i], total = n, total+n
		}
		for i, n := range sizes {
			if n > 0 {
				wants[i] = max(1, int(int64(sample)*n/max(total, 1)))
			}
		}
	}
	run := &state.VerifyRun{CreatedAt: time.Now().UTC(), Sample: sample, TTLToleranceMs: tol, Shards: mig.Shards}
	conflict := false
	if _, err := a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
		cur := ""
		if m.Verify != nil {
			cur = m.Verify.ID
		}
		if conflict = cur != prevRun; conflict {
			return false, nil // another request started a run meanwhile
		}
		m.VerifyRuns++
		run.ID = fmt.Sprintf("v%d", m.VerifyRuns)
		m.Verify = run
		return true, nil
	}); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if conflict {
		return nil, http.StatusConflict, fmt.Errorf("another verification of %s started meanwhile", id)
	}
	var msgs []queue.Message
	for i, p := range shards {
		vp := state.ShardProgress{Key: p.Key, Shard: p.Shard, Addr: p.Addr, DB: p.DB, Sample: wants[i], Done: sample > 0 && wants[i] == 0}
		if err := a.store.CreateVerifyShard(ctx, id, run.ID, vp); err != nil {
			return nil, http.StatusInternalServerError, a.failVerify(ctx, id, run.ID, err)
		}
		if vp.Done {
			continue // an empty shard has nothing to sample
		}
		body, _ := json.Marshal(planMessage{Migration: id, Key: p.Key, Cursor: plan.Cursor{Shard: p.Shard, Addr: p.Addr, DB: p.DB},
			Kind: kindVerify, Run: run.ID})
		msgs = append(msgs, queue.Message{ID: verifyPlanMessageID(id, run.ID, p.Key, 0), Body: body,
			Properties: map[string]any{"migration": id, "kind": kindVerify}})
	}
	if err := a.sendAll(ctx, queue.Plan, msgs); err != nil {
		return nil, http.StatusInternalServerError, a.failVerify(ctx, id, run.ID, fmt.Errorf("enqueueing the plan messages: %s", redact.Error(err)))
	}
	a.logf("MigrationVerify: %s: run %s (%s, TTL tolerance %d ms), %d shard(s)", id, run.ID, run.Mode(), tol, len(shards))
	return run, 0, nil
}

// failVerify marks a run whose kickoff broke half way, so status says so and a new run can start.
func (a *App) failVerify(ctx context.Context, id, run string, err error) error {
	_, _ = a.store.UpdateMigration(context.WithoutCancel(ctx), id, func(m *state.Migration) (bool, error) {
		if m.Verify == nil || m.Verify.ID != run {
			return false, nil
		}
		m.Verify.Error = "kickoff failed: " + redact.Error(err)
		return true, nil
	})
	return err
}

// sampleStep draws a shard's share of a sampling verification with RANDOMKEY (MATCH applied
// after, as verify.Run does) and cuts it into batches. It is one step: the sample is bounded.
// A replayed step draws other keys, but its batches have the same ids, so the first of each
// that the queue accepted is the one checked.
func sampleStep(ctx context.Context, src *redisconn.Conn, cur plan.Cursor, want int, o state.Options) ([]plan.Batch, plan.Cursor, int, error) {
	node := src.Node(cur.Addr, cur.DB)
	seen := map[string]bool{}
	var keys []string
	for tries := 0; len(keys) < want && tries < want*3; {
		n := min(1000, want*3-tries)
		pipe := node.Pipeline()
		cmds := make([]*redis.StringCmd, n)
		for i := range cmds {
			cmds[i] = pipe.RandomKey(ctx)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, cur, 0, fmt.Errorf("RANDOMKEY on shard %d db %d: %w", cur.Shard, cur.DB, err)
		}
		tries += n
		drawn := false
		for _, c := range cmds {
			k, err := c.Result()
			if err != nil {
				continue
			}
			drawn = true
			if len(keys) == want || seen[k] || (o.Match != "" && !verify.Glob(o.Match, k)) {
				continue
			}
			seen[k] = true
			keys = append(keys, k)
		}
		if !drawn {
			break // the database is empty now
		}
	}
	batchKeys := o.BatchKeys
	if batchKeys <= 0 {
		batchKeys = 500
	}
	var batches []plan.Batch
	for len(keys) > 0 {
		n := min(len(keys), batchKeys)
		b := plan.Batch{ID: fmt.Sprintf("s%d-d%d-r-%d", cur.Shard, cur.DB, len(batches)), Shard: cur.Shard, DB: cur.DB}
		for _, k := range keys[:n] {
			b.Keys = append(b.Keys, []byte(k))
		}
		batches = append(batches, b)
		keys = keys[n:]
	}
	next := cur
	next.Step++
	next.Done = true
	return batches, next, len(seen), nil
}

// verifyBatch checks one verify batch and records its result once.
func (a *App) verifyBatch(ctx context.Context, cm *copyMessage, msg *hostproto.ServiceBusMessage, reply *hostproto.Reply) (bool, error) {
	done, err := a.store.HasVerifyResult(ctx, cm.Migration, cm.Run, cm.Batch.ID)
	if err != nil {
		return true, err
	}
	if done {
		reply.Log("verify batch %s/%s already recorded (delivery %d)", cm.Run, cm.Batch.ID, msg.DeliveryCount)
		return false, nil
	}
	r, err := a.verifyOne(ctx, cm)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return false, fmt.Errorf("verify message for unknown migration %s; dropped", cm.Migration)
		}
		if a.lastDelivery(msg) {
			reason := fmt.Sprintf("verify batch failed on all %d deliveries; last error: %s", msg.DeliveryCount, redact.Error(err))
			if _, rerr := a.store.RecordVerifyResult(context.WithoutCancel(ctx), cm.Migration, cm.Run, deadVerify(cm, msg.DeliveryCount, reason)); rerr != nil {
				a.logf("CopyBatch: recording dead-lettered verify batch %s: %s", cm.Batch.ID, redact.Error(rerr))
			}
		}
		return true, err
	}
	r.Delivery = msg.DeliveryCount
	if _, err := a.store.RecordVerifyResult(ctx, cm.Migration, cm.Run, r); err != nil {
		return true, err
	}
	c := r.Counts
	reply.Log("verify batch %s/%s: %d checked, %d matching, %d differing, %d gone from the source", cm.Run, cm.Batch.ID,
		c.Checked, c.Matching, c.Differing(), c.GoneFromSource)
	return false, nil
}

// verifyOne compares a batch's keys in the source with their mapped names in the target, with
// the migration's db map, prefixes and type filter, as the CLI's closing verification does.
func (a *App) verifyOne(ctx context.Context, cm *copyMessage) (state.VerifyResult, error) {
	b := cm.Batch
	out := state.VerifyResult{Batch: b.ID, Shard: b.Shard, DB: b.DB, Keys: len(b.Keys)}
	mig, src, dst, dbMap, err := a.batchEndpoints(ctx, cm.Migration)
	if err != nil {
		return out, err
	}
	tdb, ok := dbMap.Target[b.DB]
	if !ok {
		return out, fmt.Errorf("verify batch %s: source db %d is not in the db map", b.ID, b.DB)
	}
	prefix := dbMap.Prefix[b.DB]
	keys := make([]string, len(b.Keys))
	tkeys := make([]string, len(b.Keys))
	for i, k := range b.Keys {
		keys[i], tkeys[i] = string(k), prefix+string(k)
	}
	tol := time.Duration(cm.TTLToleranceMs) * time.Millisecond
	if tol <= 0 {
		tol = time.Nanosecond // 0 asks for exact expiries; the options' zero would mean the default
	}
	opts := verify.Options{DBMap: dbMap, Type: mig.Options.Type, TTLTolerance: tol, MaxReported: state.MaxFailuresShown,
		PresenceOnly: copier.Existing(mig.Options.Existing) == copier.ExistingSkip}.WithDefaults()
	// DUMP payloads of both sides first; digests only where the payloads cannot tell.
	var rep verify.Report
	if err := verify.CheckKeys(ctx, src, dst, b.DB, tdb, keys, tkeys, opts, &rep); err != nil {
		return out, err
	}
	out.Counts = state.VerifyCounts{Checked: rep.Checked, Matching: rep.Matching, Missing: rep.Missing, TypeDifferent: rep.TypeDiff,
		ValueDifferent: rep.ValueDiff, TTLDifferent: rep.TTLDiff, Errors: rep.Errors, GoneFromSource: rep.GoneSource}
	for _, d := range rep.Differences {
		out.Differences = append(out.Differences, state.VerifyDifference{Key: d.Key, Kind: d.Kind, Detail: d.Detail})
	}
	return out, nil
}

// deadVerify is the result of a verify batch that ran out of deliveries: every key is an error.
func deadVerify(cm *copyMessage, delivery int, reason string) state.VerifyResult {
	r := state.VerifyResult{Batch: cm.Batch.ID, Shard: cm.Batch.Shard, DB: cm.Batch.DB, Keys: len(cm.Batch.Keys),
		DeadLettered: true, Reason: reason, Delivery: delivery}
	r.Counts.Checked = int64(len(cm.Batch.Keys))
	r.Counts.Errors = r.Counts.Checked
	return r
}
