package state

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
)

// A verification run (POST /api/migrations/{id}/verify) is planned and checked like a copy, so it
// keeps the same kind of state under its own folder:
//
//	<id>/verify/<run>/shards/<shard>.json    planning progress of one shard and source db
//	<id>/verify/<run>/results/<batch>.json   one per checked batch, counts in metadata
//
// The run itself (options, shards, kickoff error) is the migration record's Verify field, so a
// run is visible in status the moment it exists.

// Verification states reported in status.verify.state.
const (
	VerifyRunning = "running"
	VerifyPassed  = "passed"
	VerifyFailed  = "failed"
)

// VerifyRun is one verification run of a migration.
type VerifyRun struct {
	ID             string    `json:"id"` // "v1", "v2", ...
	CreatedAt      time.Time `json:"createdAt"`
	Sample         int       `json:"sample,omitempty"` // random keys to check; 0 = every key
	TTLToleranceMs int64     `json:"ttlToleranceMs"`
	Shards         []string  `json:"shards"`
	Error          string    `json:"error,omitempty"` // the kickoff broke half way
}

// Mode is "full" or "sample of N", as the CLI's verify report says.
func (r *VerifyRun) Mode() string {
	if r.Sample > 0 {
		return fmt.Sprintf("sample of %d", r.Sample)
	}
	return "full"
}

// VerifyCounts counts checked keys; every checked key is matching or in one difference count.
type VerifyCounts struct {
	Checked        int64 `json:"checked"`
	Matching       int64 `json:"matching"`
	Missing        int64 `json:"missing"`
	TypeDifferent  int64 `json:"typeDifferent"`
	ValueDifferent int64 `json:"valueDifferent"`
	TTLDifferent   int64 `json:"ttlDifferent"`
	Errors         int64 `json:"errors"`
	// GoneFromSource: deleted or expired in the source since the copy; not checked.
	GoneFromSource int64 `json:"goneFromSource"`
}

// Differing is the number of checked keys that do not match.
func (c VerifyCounts) Differing() int64 {
	return c.Missing + c.TypeDifferent + c.ValueDifferent + c.TTLDifferent + c.Errors
}

func (c *VerifyCounts) add(o VerifyCounts) {
	c.Checked += o.Checked
	c.Matching += o.Matching
	c.Missing += o.Missing
	c.TypeDifferent += o.TypeDifferent
	c.ValueDifferent += o.ValueDifferent
	c.TTLDifferent += o.TTLDifferent
	c.Errors += o.Errors
	c.GoneFromSource += o.GoneFromSource
}

// VerifyDifference is one key that does not match (kind: missing, type, value, ttl, error).
type VerifyDifference struct {
	Batch  string `json:"batch,omitempty"`
	Key    string `json:"key"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// VerifyResult is the outcome of one verify batch.
type VerifyResult struct {
	Batch        string             `json:"batch"`
	Shard        int                `json:"shard"`
	DB           int                `json:"db"`
	Keys         int                `json:"keys"`
	Counts       VerifyCounts       `json:"counts"`
	Differences  []VerifyDifference `json:"differences,omitempty"`
	DeadLettered bool               `json:"deadLettered,omitempty"`
	Reason       string             `json:"reason,omitempty"`
	Delivery     int                `json:"delivery"`
	FinishedAt   time.Time          `json:"finishedAt"`
}

// VerifyStatus is the verify object of a migration's status: the latest run.
type VerifyStatus struct {
	Run            string             `json:"run"`
	State          string             `json:"state"` // running, passed, failed
	Mode           string             `json:"mode"`
	TTLToleranceMs int64              `json:"ttlToleranceMs"`
	Error          string             `json:"error,omitempty"`
	StartedAt      time.Time          `json:"startedAt"`
	UpdatedAt      time.Time          `json:"updatedAt"`
	ShardsPlanned  int                `json:"shardsPlanned"`
	ShardsTotal    int                `json:"shardsTotal"`
	Batches        BatchCounts        `json:"batches"`
	Keys           VerifyCounts       `json:"keys"`
	Differences    []VerifyDifference `json:"differences,omitempty"`
	DeadLettered   []DeadLetter       `json:"deadLettered,omitempty"`
}

// Final reports whether the run is over: a verdict and no batch still to come.
func (v *VerifyStatus) Final() bool {
	return v.State != VerifyRunning && v.Batches.Pending == 0
}

func verifyBase(id, run string) string { return id + "/verify/" + run + "/" }
func verifyShardName(id, run, key string) string {
	return verifyBase(id, run) + "shards/" + key + ".json"
}
func verifyResultPrefix(id, run string) string { return verifyBase(id, run) + "results/" }
func verifyResultName(id, run, batch string) string {
	return verifyResultPrefix(id, run) + batch + ".json"
}

// CreateVerifyShard writes a run's shard progress; an existing one is kept.
func (s *Store) CreateVerifyShard(ctx context.Context, id, run string, p ShardProgress) error {
	return s.createShardAt(ctx, verifyShardName(id, run, p.Key), p)
}

// GetVerifyShard reads a run's shard progress.
func (s *Store) GetVerifyShard(ctx context.Context, id, run, key string) (*ShardProgress, error) {
	return s.getShardAt(ctx, verifyShardName(id, run, key))
}

// UpdateVerifyShard applies fn to a run's shard progress under optimistic concurrency.
func (s *Store) UpdateVerifyShard(ctx context.Context, id, run, key string, fn func(*ShardProgress) (bool, error)) (*ShardProgress, error) {
	return s.updateShardAt(ctx, verifyShardName(id, run, key), fn)
}

// HasVerifyResult reports whether a verify batch's result is recorded.
func (s *Store) HasVerifyResult(ctx context.Context, id, run, batch string) (bool, error) {
	return s.exists(ctx, verifyResultName(id, run, batch))
}

// RecordVerifyResult writes a verify batch's result if none is recorded yet; false when one was
// there already (that one stands, so a redelivered batch is counted once).
func (s *Store) RecordVerifyResult(ctx context.Context, id, run string, r VerifyResult) (bool, error) {
	if r.FinishedAt.IsZero() {
		r.FinishedAt = time.Now().UTC()
	}
	n := func(v int64) *string { return to.Ptr(strconv.FormatInt(v, 10)) }
	c := r.Counts
	meta := map[string]*string{
		"checked": n(c.Checked), "matching": n(c.Matching), "missing": n(c.Missing), "typediff": n(c.TypeDifferent),
		"valuediff": n(c.ValueDifferent), "ttldiff": n(c.TTLDifferent), "errors": n(c.Errors), "gone": n(c.GoneFromSource),
		"finished": n(r.FinishedAt.UnixMilli()),
	}
	if r.DeadLettered {
		meta["deadlettered"] = to.Ptr("1")
	}
	_, err := s.putJSON(ctx, verifyResultName(id, run, r.Batch), r, meta, createOnly())
	if err == ErrExists {
		return false, nil
	}
	return err == nil, err
}

// GetVerifyResult reads one verify batch's result.
func (s *Store) GetVerifyResult(ctx context.Context, id, run, batch string) (*VerifyResult, error) {
	var r VerifyResult
	if _, err := s.getJSON(ctx, verifyResultName(id, run, batch), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

type verifySummary struct {
	batch    string
	counts   VerifyCounts
	dead     bool
	finished int64
}

// computeVerify aggregates a run the way ComputeStatus aggregates a copy: the shards' progress,
// one listing of the results, and a read of the few results that name differences.
func (s *Store) computeVerify(ctx context.Context, m *Migration) (*VerifyStatus, error) {
	run := m.Verify
	v := &VerifyStatus{Run: run.ID, Mode: run.Mode(), TTLToleranceMs: run.TTLToleranceMs, Error: run.Error,
		StartedAt: run.CreatedAt, UpdatedAt: run.CreatedAt, ShardsTotal: len(run.Shards)}
	var shards []ShardProgress
	var results []verifySummary
	var shardErr, resErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		shards, shardErr = s.shardsAt(ctx, run.Shards, func(key string) string { return verifyShardName(m.ID, run.ID, key) }, true)
	}()
	go func() {
		defer wg.Done()
		resErr = s.listMeta(ctx, verifyResultPrefix(m.ID, run.ID), func(batch string, md metadata) {
			results = append(results, verifySummary{batch: batch, dead: md.has("deadlettered"), finished: md.num("finished"),
				counts: VerifyCounts{Checked: md.num("checked"), Matching: md.num("matching"), Missing: md.num("missing"),
					TypeDifferent: md.num("typediff"), ValueDifferent: md.num("valuediff"), TTLDifferent: md.num("ttldiff"),
					Errors: md.num("errors"), GoneFromSource: md.num("gone")}})
		})
	}()
	wg.Wait()
	if shardErr != nil {
		return nil, shardErr
	}
	if resErr != nil {
		return nil, resErr
	}
	sort.Slice(results, func(i, j int) bool { return results[i].batch < results[j].batch })
	planningFailed := ""
	for _, p := range shards {
		if p.Done {
			v.ShardsPlanned++
		}
		if p.Error != "" && planningFailed == "" {
			planningFailed = "planning shard " + p.Key + " failed: " + p.Error
		}
		v.Batches.Sent += p.BatchesSent
		if p.UpdatedAt.After(v.UpdatedAt) {
			v.UpdatedAt = p.UpdatedAt
		}
	}
	var withDiffs []string
	for _, r := range results {
		v.Keys.add(r.counts)
		v.Batches.Done++
		if r.dead {
			v.Batches.DeadLettered++
		}
		if (r.counts.Differing() > 0 || r.dead) && len(withDiffs) < MaxFailuresShown {
			withDiffs = append(withDiffs, r.batch)
		}
		if t := time.UnixMilli(r.finished).UTC(); r.finished > 0 && t.After(v.UpdatedAt) {
			v.UpdatedAt = t
		}
	}
	v.Batches.Pending = max(0, v.Batches.Sent-v.Batches.Done)
	if err := s.fillDifferences(ctx, m.ID, run.ID, v, withDiffs); err != nil {
		return nil, err
	}
	if v.Error == "" {
		v.Error = planningFailed
	}
	switch {
	case v.Error != "":
		v.State = VerifyFailed
	case v.ShardsPlanned < v.ShardsTotal || v.Batches.Pending > 0:
		v.State = VerifyRunning
	case v.Keys.Differing() > 0 || v.Batches.DeadLettered > 0:
		v.State = VerifyFailed
	default:
		v.State = VerifyPassed
	}
	return v, nil
}

func (s *Store) fillDifferences(ctx context.Context, id, run string, v *VerifyStatus, batches []string) error {
	full := make([]*VerifyResult, len(batches))
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			full[i], errs[i] = s.GetVerifyResult(ctx, id, run, b)
		}()
	}
	wg.Wait()
	for i, r := range full {
		if errs[i] != nil {
			return errs[i]
		}
		if r.DeadLettered && len(v.DeadLettered) < MaxFailuresShown {
			v.DeadLettered = append(v.DeadLettered, DeadLetter{Batch: r.Batch, Keys: r.Keys, Reason: r.Reason})
		}
		for _, d := range r.Differences {
			if len(v.Differences) >= MaxFailuresShown {
				break
			}
			d.Batch = r.Batch
			v.Differences = append(v.Differences, d)
		}
	}
	return nil
}
