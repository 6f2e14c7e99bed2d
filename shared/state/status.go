package state

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Migration states reported by status.
const (
	StatePlanning              = "planning"
	StateCopying               = "copying"
	StateCompleted             = "completed"
	StateCompletedWithFailures = "completed-with-failures"
	StateFailed                = "failed"
	// StateStalled: planning or copying, but nothing recorded for longer than the store's stall
	// bound (SetStallAfter): the work in flight was lost (a local host killed, messages
	// dead-lettered or expired). POST /api/migrations/{id}/resume sends it again.
	StateStalled = "stalled"
)

// Status is what MigrationStatus answers.
type Status struct {
	ID             string        `json:"id"`
	Kind           string        `json:"kind"`
	State          string        `json:"state"`
	Error          string        `json:"error,omitempty"`
	Source         string        `json:"source"`
	Target         string        `json:"target"`
	CreatedAt      time.Time     `json:"createdAt"`
	UpdatedAt      time.Time     `json:"updatedAt"`
	ElapsedSeconds float64       `json:"elapsedSeconds"`
	Shards         []ShardStatus `json:"shards"`
	ShardsPlanned  int           `json:"shardsPlanned"`
	ShardsTotal    int           `json:"shardsTotal"`
	Batches        BatchCounts   `json:"batches"`
	Keys           KeyCounts     `json:"keys"`
	Bytes          int64         `json:"bytes"`
	KeysPerSecond  float64       `json:"keysPerSecond"`
	ETASeconds     *float64      `json:"etaSeconds,omitempty"`
	Failures       []Failure     `json:"failures,omitempty"`
	// DeadLettered names the batches whose deliveries were exhausted, with the last reason.
	DeadLettered []DeadLetter      `json:"deadLettered,omitempty"`
	Import       *ImportCheckpoint `json:"import,omitempty"`
	// Verify is the latest verification run (POST /api/migrations/{id}/verify), if any.
	Verify *VerifyStatus `json:"verify,omitempty"`
	// AsOf is when the batch counts were aggregated; Stale says the answer is the last rolled-up
	// summary because a fresh aggregation did not finish within the status budget (it goes on in
	// the background and the next call sees it).
	AsOf  time.Time `json:"asOf"`
	Stale bool      `json:"stale,omitempty"`
	// LastProgressAt is the latest recorded progress: a plan step, a batch result, an import
	// checkpoint, or a resume. StallAfterSeconds is the bound after which a planning or copying
	// migration without progress is reported as stalled.
	LastProgressAt    time.Time `json:"lastProgressAt"`
	StallAfterSeconds float64   `json:"stallAfterSeconds,omitempty"`
	// Resumes counts POST /api/migrations/{id}/resume requests that sent work again.
	Resumes int `json:"resumes,omitempty"`
	// Steps says how many plan steps are rolled up and how many are still read result by result.
	Steps *StepCounts `json:"steps,omitempty"`
	// TargetRestarts lists target servers seen restarting (run_id changed) during the copy;
	// Warning says what that means and what to do. Such a copy ends completed-with-failures.
	TargetRestarts []TargetRestart `json:"targetRestarts,omitempty"`
	// TargetEvictions: keys the target evicted during the migration (it reached its maxmemory).
	// Such a migration ends completed-with-failures too, until a full verification after them
	// passes.
	TargetEvictions *TargetEvictions `json:"targetEvictions,omitempty"`
	Warning         string           `json:"warning,omitempty"`
}

// restartVerified says whether a full verification that passed was started after the last
// target restart of m: then every key is in the target and the restart lost nothing.
func restartVerified(m *Migration, v *VerifyStatus) bool {
	if len(m.TargetRestarts) == 0 || m.Verify == nil || v == nil || m.Verify.Sample != 0 || v.Run != m.Verify.ID || v.State != VerifyPassed {
		return false
	}
	for _, r := range m.TargetRestarts {
		if !m.Verify.CreatedAt.After(r.SeenAt) {
			return false
		}
	}
	return true
}

// evictionsVerified says whether a full verification that passed was started after the target
// last evicted keys: then the evictions took none of the migration's keys.
func evictionsVerified(m *Migration, v *VerifyStatus) bool {
	return m.TargetEvictions != nil && m.Verify != nil && v != nil && m.Verify.Sample == 0 && v.Run == m.Verify.ID &&
		v.State == VerifyPassed && m.Verify.CreatedAt.After(m.TargetEvictions.SeenAt)
}

// Final reports whether no later event can change the status: every batch is accounted for.
func (s *Status) Final() bool {
	if s.Verify != nil && !s.Verify.Final() {
		return false
	}
	switch s.State {
	case StateCompleted, StateCompletedWithFailures:
		return true
	case StateFailed:
		return s.Batches.Pending == 0
	}
	return false
}

// ShardStatus is one shard's planning progress.
type ShardStatus struct {
	Key         string `json:"key"`
	Shard       int    `json:"shard"`
	Addr        string `json:"addr"`
	DB          int    `json:"db"`
	Step        int    `json:"step"`
	Done        bool   `json:"done"`
	KeysScanned int64  `json:"keysScanned"`
	BatchesSent int64  `json:"batchesSent"`
	Error       string `json:"error,omitempty"`
}

// BatchCounts counts batches.
type BatchCounts struct {
	Sent         int64 `json:"sent"`
	Done         int64 `json:"done"` // results recorded, dead-lettered ones included
	DeadLettered int64 `json:"deadLettered"`
	Pending      int64 `json:"pending"`
}

// KeyCounts counts keys; every scanned key ends in exactly one of copied..failed.
type KeyCounts struct {
	Estimated int64 `json:"estimated"`
	Scanned   int64 `json:"scanned"`
	Copied    int64 `json:"copied"`
	Skipped   int64 `json:"skipped"`
	Missing   int64 `json:"missing"`
	Expired   int64 `json:"expired"`
	Failed    int64 `json:"failed"`
	Fallback  int64 `json:"fallback"`
	// Big counts the keys copied in chunks, each in its own batch.
	Big int64 `json:"big"`
}

// Failure is a key that was not copied.
type Failure struct {
	Batch  string `json:"batch"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// DeadLetter is a batch that exhausted its deliveries.
type DeadLetter struct {
	Batch  string `json:"batch"`
	Keys   int    `json:"keys"`
	Reason string `json:"reason"`
}

// MaxFailuresShown bounds the failures (and dead-lettered batches) status lists.
const MaxFailuresShown = 20

// StatusBudget is how long Status waits for a fresh aggregation before it answers with the
// last rolled-up summary instead.
var StatusBudget = 700 * time.Millisecond

func summaryName(id string) string { return id + "/status.json" }

// Status answers a migration's status quickly, whatever its size. A final summary (every batch
// accounted for) is rolled up once into <id>/status.json and served from there with one GET.
// Otherwise a fresh aggregation runs; if it takes longer than StatusBudget the previous summary
// is returned (Stale) while the aggregation finishes in the background and rolls up its result.
func (s *Store) Status(ctx context.Context, id string) (*Status, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	var prev Status
	_, err := s.getJSON(ctx, summaryName(id), &prev)
	havePrev := err == nil
	if err != nil && err != ErrNotFound {
		return nil, err
	}
	if havePrev && prev.Final() && !s.recordChanged(ctx, id, &prev) {
		return &prev, nil
	}
	ch := s.refresh(id)
	if !havePrev {
		select {
		case r := <-ch:
			return r.st, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case r := <-ch:
		if r.err == nil {
			return r.st, nil
		}
		return nil, r.err
	case <-time.After(StatusBudget):
		prev.Stale = true
		return &prev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recordChanged reports whether the record moved on since a final summary was rolled up (a
// failed import restarted with POST /api/imports, a verification run started or its kickoff
// failed, a target restart or eviction seen by a sync chain): the summary is then recomputed.
func (s *Store) recordChanged(ctx context.Context, id string, prev *Status) bool {
	m, err := s.GetMigration(ctx, id)
	if err != nil {
		return false
	}
	if m.Resumes != prev.Resumes {
		return true
	}
	if prev.Import != nil && m.Import != nil && !m.Import.UpdatedAt.Equal(prev.Import.UpdatedAt) {
		return true
	}
	// An online migration's sync chains go on watching the target after the copy is done.
	if len(m.TargetRestarts) != len(prev.TargetRestarts) || evictedKeys(m.TargetEvictions) != evictedKeys(prev.TargetEvictions) {
		return true
	}
	switch {
	case m.Verify == nil:
		return false
	case prev.Verify == nil:
		return true
	}
	return m.Verify.ID != prev.Verify.Run || (m.Verify.Error != "" && prev.Verify.Error == "")
}

func evictedKeys(e *TargetEvictions) int64 {
	if e == nil {
		return 0
	}
	return e.Keys
}

type statusResult struct {
	st  *Status
	err error
}

// refresh runs one aggregation per migration at a time (callers share it) and rolls the result
// up. It is detached from the caller's context: a caller that stopped waiting still gets the
// summary written for the next one.
func (s *Store) refresh(id string) <-chan statusResult {
	out := make(chan statusResult, 1)
	s.mu.Lock()
	if s.inflight == nil {
		s.inflight = map[string][]chan statusResult{}
	}
	waiters, running := s.inflight[id]
	s.inflight[id] = append(waiters, out)
	s.mu.Unlock()
	if running {
		return out
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		st, err := s.ComputeStatus(ctx, id)
		if err == nil {
			_, _ = s.putJSON(ctx, summaryName(id), st, nil, nil)
		}
		s.mu.Lock()
		waiters := s.inflight[id]
		delete(s.inflight, id)
		s.mu.Unlock()
		for _, w := range waiters {
			w <- statusResult{st, err}
		}
	}()
	return out
}

// ComputeStatus aggregates a migration: the record, each shard's progress (one small blob per shard)
// and one listing of the results with their metadata; only the few results with failures are
// read, for the key names.
func (s *Store) ComputeStatus(ctx context.Context, id string) (*Status, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	// The results do not depend on the record: their listings start at once.
	var results *totals
	var resErr error
	resDone := make(chan struct{})
	go func() { defer close(resDone); results, resErr = s.batchTotals(ctx, id) }()
	m, err := s.GetMigration(ctx, id)
	if err != nil {
		<-resDone
		return nil, err
	}
	var shards []ShardProgress
	var verify *VerifyStatus
	var shardErr, verifyErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); shards, shardErr = s.Shards(ctx, m) }()
	go func() { defer wg.Done(); <-resDone }()
	if m.Verify != nil {
		wg.Add(1)
		go func() { defer wg.Done(); verify, verifyErr = s.computeVerify(ctx, m) }()
	}
	wg.Wait()
	for _, err := range []error{shardErr, resErr, verifyErr} {
		if err != nil {
			return nil, err
		}
	}

	st := &Status{ID: m.ID, Kind: m.Kind, Error: m.Error, Source: m.Source.Describe(), Target: m.Target.Describe(),
		CreatedAt: m.CreatedAt, UpdatedAt: m.CreatedAt, ShardsTotal: len(shards), Import: m.Import, Verify: verify, AsOf: time.Now().UTC()}
	st.Keys.Estimated = m.EstimatedKeys
	planningFailed := ""
	for _, p := range shards {
		st.Shards = append(st.Shards, ShardStatus{Key: p.Key, Shard: p.Shard, Addr: p.Addr, DB: p.DB, Step: p.Step,
			Done: p.Done, KeysScanned: p.KeysScanned, BatchesSent: p.BatchesSent, Error: p.Error})
		if p.Done {
			st.ShardsPlanned++
		}
		if p.Error != "" && planningFailed == "" {
			planningFailed = "planning shard " + p.Key + " failed: " + p.Error
		}
		st.Batches.Sent += p.BatchesSent
		st.Keys.Scanned += p.KeysScanned
		if p.UpdatedAt.After(st.UpdatedAt) {
			st.UpdatedAt = p.UpdatedAt
		}
	}
	total := results.res
	total.Failures = nil
	st.Batches.Done = results.done
	// Big-key batches a batch sent are sent batches too: the copy is not over until each has
	// its own result.
	st.Batches.Sent += results.spawned
	st.Batches.DeadLettered = results.dead
	st.Steps = results.steps
	st.Resumes = m.Resumes
	lastFinish := results.lastFinish
	if m.Import != nil {
		total.Add(m.Import.Result)
		st.Keys.Scanned += m.Import.Scanned
		if m.Import.UpdatedAt.After(st.UpdatedAt) {
			st.UpdatedAt = m.Import.UpdatedAt
		}
		if st.Source == "" {
			st.Source = "blob " + m.Import.Container + "/" + m.Import.Blob
		}
	}
	if t := time.UnixMilli(lastFinish).UTC(); lastFinish > 0 && t.After(st.UpdatedAt) {
		st.UpdatedAt = t
	}
	st.Keys.Copied, st.Keys.Skipped, st.Keys.Missing = total.Copied, total.Skipped, total.Missing
	st.Keys.Expired, st.Keys.Failed, st.Keys.Fallback = total.Expired, total.Failed, total.Fallback
	st.Keys.Big = total.Big
	st.Bytes = total.Bytes
	st.Batches.Pending = max(0, st.Batches.Sent-st.Batches.Done)
	if results.steps != nil {
		// Counted step by step: a result that is not one of a step's batches does not stand in
		// for one that is.
		st.Batches.Pending = max(st.Batches.Pending, results.pending)
	}

	if err := s.fillFailures(ctx, st, results.failing); err != nil {
		return nil, err
	}
	if m.Import != nil {
		for _, f := range m.Import.Result.Failures {
			if len(st.Failures) >= MaxFailuresShown {
				break
			}
			st.Failures = append(st.Failures, Failure{Batch: "import", Key: f.Key, Reason: f.Reason})
		}
	}

	// State. A batch recorded but not counted as sent (a replayed step cut it differently) is
	// still done work: "pending" never goes negative.
	allPlanned := st.ShardsPlanned == st.ShardsTotal
	importing := m.Import != nil && !m.Import.Done
	switch {
	case m.Error != "" || planningFailed != "" || (m.Import != nil && m.Import.Error != ""):
		st.State = StateFailed
		if st.Error == "" {
			st.Error = planningFailed
		}
		if st.Error == "" && m.Import != nil {
			st.Error = "import failed: " + m.Import.Error
		}
	case !allPlanned:
		st.State = StatePlanning
	case st.Batches.Pending > 0 || importing:
		st.State = StateCopying
	case st.Keys.Failed > 0 || st.Batches.DeadLettered > 0 || (len(m.TargetRestarts) > 0 && !restartVerified(m, st.Verify)) ||
		(m.TargetEvictions != nil && !evictionsVerified(m, st.Verify)):
		st.State = StateCompletedWithFailures
	default:
		st.State = StateCompleted
	}
	// What to start once the target is fixed: an online migration is started again as one (its
	// cutover's verification will not pass over the lost keys meanwhile).
	again := "copy again with a new migration"
	if m.Mode == "online" {
		again = "start a new online migration"
	}
	if len(m.TargetRestarts) > 0 {
		st.TargetRestarts = m.TargetRestarts
		if restartVerified(m, st.Verify) {
			st.Warning = fmt.Sprintf("the target %s restarted during the migration (run_id changed); the full verification %s "+
				"after it found every key: nothing was lost", m.TargetRestarts[0].Addr, m.Verify.ID)
		} else if m.Import != nil {
			st.Warning = fmt.Sprintf("the target %s restarted during the import (run_id changed): keys written before the restart "+
				"may be lost (all of them if it has no persistence); import the file again with a new import and "+
				"\"existing\": \"replace\"", m.TargetRestarts[0].Addr)
		} else {
			st.Warning = fmt.Sprintf("the target %s restarted during the migration (run_id changed): keys written before the restart "+
				"may be lost (all of them if it has no persistence); run POST /api/migrations/%s/verify with {\"full\":true}, "+
				"and %s and \"existing\": \"replace\"", m.TargetRestarts[0].Addr, m.ID, again)
		}
	}
	if e := m.TargetEvictions; e != nil {
		st.TargetEvictions = e
		var w string
		switch {
		case evictionsVerified(m, st.Verify):
			w = fmt.Sprintf("the target evicted %d keys during the migration (it reached its maxmemory); the full verification %s "+
				"after that found every key: none of the migration's keys was evicted", e.Keys, m.Verify.ID)
		case m.Import != nil:
			w = fmt.Sprintf("the target evicted %d keys during the import (it reached its maxmemory): keys counted as written may be "+
				"gone, and no error names them; give the target more memory (or maxmemory-policy noeviction) and import the file "+
				"again with a new import and \"existing\": \"replace\"", e.Keys)
		default:
			w = fmt.Sprintf("the target evicted %d keys during the migration (it reached its maxmemory): keys counted as written may "+
				"be gone, and no error names them; run POST /api/migrations/%s/verify with {\"full\":true}, give the target more "+
				"memory (or maxmemory-policy noeviction) and %s and \"existing\": \"replace\"", e.Keys, m.ID, again)
		}
		st.addWarning(w)
	}
	if m.MemoryWarning != "" && (st.State == StatePlanning || st.State == StateCopying) {
		st.addWarning("at kickoff " + m.MemoryWarning)
	}
	st.LastProgressAt = st.UpdatedAt
	if m.ResumedAt.After(st.LastProgressAt) {
		st.LastProgressAt = m.ResumedAt
	}
	if stall := s.stallAfter(); stall > 0 && m.Kind == "copy" {
		st.StallAfterSeconds = stall.Seconds()
		if (st.State == StatePlanning || st.State == StateCopying) && time.Since(st.LastProgressAt) > stall {
			st.State = StateStalled
		}
	}

	end := time.Now()
	if st.State == StateCompleted || st.State == StateCompletedWithFailures || st.State == StateFailed {
		end = st.UpdatedAt
	}
	elapsed := end.Sub(m.CreatedAt).Seconds()
	st.ElapsedSeconds = math.Round(max(elapsed, 0)*1000) / 1000
	done := total.Keys()
	if elapsed > 0 {
		st.KeysPerSecond = math.Round(float64(done)/elapsed*10) / 10
	}
	if st.State == StatePlanning || st.State == StateCopying || st.State == StateStalled {
		want := max(st.Keys.Estimated, st.Keys.Scanned)
		if im := m.Import; im != nil && im.Offset > 0 && im.Size > im.Offset && elapsed > 0 {
			// An import knows its bytes, not its keys: the rest of the file at the rate so far.
			eta := math.Round(float64(im.Size-im.Offset) / (float64(im.Offset) / elapsed))
			st.ETASeconds = &eta
		} else if st.KeysPerSecond > 0 && want > done {
			eta := math.Round(float64(want-done) / st.KeysPerSecond)
			st.ETASeconds = &eta
		}
	} else {
		zero := 0.0
		st.ETASeconds = &zero
	}
	return st, nil
}

// fillFailures reads the few results and rollups that have failures, for their key names and
// reasons.
func (s *Store) fillFailures(ctx context.Context, st *Status, refs []failRef) error {
	type named struct {
		dead     []DeadLetter
		failures []Failure
	}
	full := make([]named, len(refs))
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ref.rollup != "" {
				var r StepRollup
				if _, errs[i] = s.getJSON(ctx, ref.rollup, &r); errs[i] == nil {
					full[i].dead, full[i].failures = r.DeadLetters, r.Failures
				}
				return
			}
			r, err := s.GetResult(ctx, st.ID, ref.batch)
			if errs[i] = err; err != nil {
				return
			}
			if r.DeadLettered {
				full[i].dead = []DeadLetter{{Batch: r.Batch, Keys: r.Keys, Reason: r.Reason}}
			}
			for _, f := range r.Result.Failures {
				full[i].failures = append(full[i].failures, Failure{Batch: r.Batch, Key: f.Key, Reason: f.Reason})
			}
		}()
	}
	wg.Wait()
	for i, n := range full {
		if errs[i] != nil {
			return errs[i]
		}
		for _, d := range n.dead {
			if len(st.DeadLettered) < MaxFailuresShown {
				st.DeadLettered = append(st.DeadLettered, d)
			}
		}
		for _, f := range n.failures {
			if len(st.Failures) < MaxFailuresShown {
				st.Failures = append(st.Failures, f)
			}
		}
	}
	return nil
}

// addWarning appends w to the status's warnings, "; " between them.
func (st *Status) addWarning(w string) {
	if st.Warning != "" {
		st.Warning += "; "
	}
	st.Warning += w
}
