package functions

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// Resume: POST /api/migrations/{id}/resume sends again the work of a stalled copy that has no
// result: the plan step each unfinished shard is at, every batch of a recorded step without a
// result, and every big-key batch a recorded batch sent off without one. Steps and batches are
// deterministic (a step's batches are its manifest), so the resent work is the lost work; results
// are create-if-absent, so totals stay exact even when a message thought lost turns up.

// ResumeResponse is the 202 body.
type ResumeResponse struct {
	ID        string `json:"id"`
	StatusURL string `json:"statusUrl"`
	// Resume is the number of this resume (1 for the first): the resent messages' ids end in .r<n>.
	Resume int `json:"resume"`
	// WasState is the state the migration was in (stalled, or failed when a plan step was
	// dead-lettered).
	WasState string `json:"wasState"`
	// PlanSteps, Batches and BigBatches count the messages sent again; StepsChecked the plan
	// steps that were not rolled up and were read for missing results.
	PlanSteps    int `json:"planSteps"`
	Batches      int `json:"batches"`
	BigBatches   int `json:"bigBatches"`
	StepsChecked int `json:"stepsChecked"`
	// RepairPlanSteps and RepairBatches count the work of blocked repair passes sent again (an
	// online migration: plan steps that failed for good, dead-lettered repair batches).
	RepairPlanSteps int `json:"repairPlanSteps,omitempty"`
	RepairBatches   int `json:"repairBatches,omitempty"`
}

// migrationResume is POST /api/migrations/{id}/resume.
func (a *App) migrationResume(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.store == nil || a.sender == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage or queue configured (AzureWebJobsStorage, ServiceBusConnection)", "")
		return
	}
	if !state.ValidID(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return
	}
	// Well inside the 230 s an HTTP trigger may take.
	ctx, cancel := context.WithTimeout(r.Context(), 180*time.Second)
	defer cancel()
	res, code, err := a.resume(ctx, id)
	if err != nil {
		field := ""
		if code == http.StatusNotFound {
			field = "id"
		}
		if code == http.StatusInternalServerError {
			a.logf("MigrationResume: %s: %s", id, redact.Error(err))
		}
		writeError(w, code, redact.Error(err), field)
		return
	}
	res.StatusURL = statusURL(r, id)
	w.Header().Set("Location", res.StatusURL)
	writeJSON(w, http.StatusAccepted, res)
}

// resume refuses a migration that is not stalled (409) and sends its missing work again.
func (a *App) resume(ctx context.Context, id string) (*ResumeResponse, int, error) {
	mig, st, code, err := a.copyMigration(ctx, id, "it resumes from its checkpoint by itself "+
		"(POST /api/imports again restarts a failed one)")
	if err != nil {
		return nil, code, err
	}
	shards, err := a.store.Shards(ctx, mig)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	planFailed := false
	for _, p := range shards {
		planFailed = planFailed || (p.Error != "" && !p.Done)
	}
	copyDone := st.State == state.StateCompleted || st.State == state.StateCompletedWithFailures
	if mig.Mode == "online" && copyDone {
		return a.resumeRepairs(ctx, id, st.State)
	}
	switch {
	case st.State == state.StateStalled:
	case st.State == state.StateFailed && mig.Error == "" && planFailed:
		// A plan step was dead-lettered: its shard's scan is sent again from where it stood.
	case st.State == state.StateCompleted || st.State == state.StateCompletedWithFailures:
		return nil, http.StatusConflict, fmt.Errorf("migration %s is %s: nothing to resume "+
			"(dead-lettered batches have a result; copy their keys with a new migration under existing=replace)", id, st.State)
	case st.State == state.StateFailed:
		return nil, http.StatusConflict, fmt.Errorf("migration %s failed: %s; start a new migration", id, st.Error)
	default:
		ago := math.Round(time.Since(st.LastProgressAt).Seconds())
		return nil, http.StatusConflict, fmt.Errorf("migration %s is %s (last progress %.0fs ago; it is stalled after %.0fs without progress): "+
			"resume only sends the work of a stalled migration again", id, st.State, ago, st.StallAfterSeconds)
	}

	// The resume number first, before any work is sent again.
	n, err := a.takeResume(ctx, id)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	res := &ResumeResponse{ID: id, Resume: n, WasState: st.State}
	suffix := resumeSuffix(n)

	// Plan steps: each unfinished shard's next step, and a dead-lettered step's error cleared so
	// the shard counts as planning again.
	var planMsgs []queue.Message
	for _, p := range shards {
		if p.Done {
			continue
		}
		if p.Error != "" {
			step := p.Step
			if _, err := a.store.UpdateShard(ctx, id, p.Key, func(q *state.ShardProgress) (bool, error) {
				if q.Step != step || q.Done || q.Error == "" {
					return false, nil
				}
				q.Error = ""
				return true, nil
			}); err != nil {
				return nil, http.StatusInternalServerError, err
			}
		}
		cur := plan.Cursor{Shard: p.Shard, Addr: p.Addr, DB: p.DB, Cursor: p.Cursor, Step: p.Step}
		body, _ := json.Marshal(planMessage{Migration: id, Key: p.Key, Cursor: cur})
		planMsgs = append(planMsgs, queue.Message{ID: planMessageID(id, p.Key, p.Step) + suffix, Body: body,
			Properties: map[string]any{"migration": id, "kind": kindPlan}})
	}

	// Batches of recorded steps without a result.
	missing, err := a.store.Missing(ctx, id)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	res.StepsChecked = missing.Steps
	var copyMsgs []queue.Message
	for _, mb := range missing.Batches {
		cm := copyMessage{Migration: id, Batch: mb.Batch, Key: mb.Key, Step: mb.Step, Resume: n}
		if mb.Big == nil {
			body, _ := json.Marshal(cm)
			copyMsgs = append(copyMsgs, queue.Message{ID: copyMessageID(id, mb.Batch.ID) + suffix, Body: body,
				Properties: map[string]any{"migration": id, "kind": kindCopy}})
			res.Batches++
			continue
		}
		// The batch has its result; some of the big keys it sent off do not. Sent as from a
		// redelivery: the batch may have copied such a key inline before it grew big.
		big := bigMessages(&cm, mb.Big, 2)
		copyMsgs = append(copyMsgs, big...)
		res.BigBatches += len(big)
	}
	if err := a.sendAll(ctx, queue.Copy, copyMsgs); err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("sending batches: %s", redact.Error(err))
	}
	if err := a.sendAll(ctx, queue.Plan, planMsgs); err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("sending plan steps: %s", redact.Error(err))
	}
	res.PlanSteps = len(planMsgs)
	a.logf("MigrationResume: %s: resume %d of a %s migration: %d plan step(s), %d batch(es), %d big-key batch(es) sent again (%d step(s) checked)",
		id, n, st.State, res.PlanSteps, res.Batches, res.BigBatches, res.StepsChecked)
	return res, 0, nil
}

// resumeRepairs resumes an online migration whose copy is complete: the blocked repair passes
// of its chains get their dead-lettered batches and failed plan steps sent again.
func (a *App) resumeRepairs(ctx context.Context, id, was string) (*ResumeResponse, int, error) {
	blocked, err := a.repairBlocked(ctx, id)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if !blocked {
		return nil, http.StatusConflict, fmt.Errorf("migration %s: the copy is %s and no repair pass is blocked: nothing to resume", id, was)
	}
	n, err := a.takeResume(ctx, id)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	steps, batches, err := a.repairResend(ctx, id, n)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	a.logf("MigrationResume: %s: resume %d: %d repair plan step(s), %d repair batch(es) sent again", id, n, steps, batches)
	return &ResumeResponse{ID: id, Resume: n, WasState: was, RepairPlanSteps: steps, RepairBatches: batches}, 0, nil
}

// takeResume counts one more resume of migration id and returns its number: copiers of the
// migration then treat keys they find in the target as their own, and status counts the resume
// as progress.
func (a *App) takeResume(ctx context.Context, id string) (int, error) {
	n := 0
	_, err := a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
		m.Resumes++
		m.ResumedAt = time.Now().UTC()
		n = m.Resumes
		return true, nil
	})
	return n, err
}
