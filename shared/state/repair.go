package state

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"

	"github.com/redis-migrate/redis-migrate/shared/plan"
)

// A repair pass of an online migration's sync chain (after a gap) is planned and checked over
// the plan and copy queues like a verification run, under its own folder (run = <chain>-p<pass>):
//
//	<id>/repair/<run>/shards/<key>.json        planning progress of one plan key: a source
//	                                           shard and db (s<i>-d<db>), or a target master
//	                                           and db (t<j>-d<db>: keys the source lacks)
//	<id>/repair/<run>/steps/<key>/<step>.json  the batches one plan step cut (create-if-absent)
//	<id>/repair/<run>/results/<batch>.json     one per compared batch: the differing keys;
//	                                           counts in metadata
//	<id>/repair/<run>/dead/<batch>.json        a batch that ran out of deliveries (its message,
//	                                           so a resume can send it again)
//
// The pass itself is the chain record's Repair field: the chain's holder absorbs the results
// (marks their keys pending in its engine and applies them) and records which it absorbed.

// RepairPass is a chain's repair pass in progress.
type RepairPass struct {
	Pass      int       `json:"pass"`
	Run       string    `json:"run"`
	Reason    string    `json:"reason"`
	StartedAt time.Time `json:"startedAt"`
	// Keys are the plan keys of the pass (source side, then target side).
	Keys []string `json:"keys"`
	// Sent: the plan messages went out (a start that failed to send is sent again).
	Sent bool `json:"sent"`
	// Absorbed are the batches whose differing keys the holder marked pending; Differing counts
	// those keys and Applied the ones known to be in the target since.
	Absorbed  []string `json:"absorbed,omitempty"`
	Differing int64    `json:"differing"`
	Applied   int64    `json:"applied"`
	// Progress as the holder last saw it.
	ShardsPlanned int         `json:"shardsPlanned"`
	Batches       BatchCounts `json:"batches"`
	// Blocked says why the pass cannot complete (dead-lettered batches, a failed plan step).
	Blocked string `json:"blocked,omitempty"`
}

// RepairDone is the last finished pass of a chain.
type RepairDone struct {
	Pass       int       `json:"pass"`
	Batches    int64     `json:"batches"`
	Differing  int64     `json:"differing"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// RepairResult is the outcome of one repair batch: the keys that differ (source keys: the db
// and the name without the target prefix).
type RepairResult struct {
	Batch        string       `json:"batch"`
	Keys         int          `json:"keys"`
	Differing    []PendingKey `json:"differing,omitempty"`
	Delivery     int          `json:"delivery"`
	FinishedAt   time.Time    `json:"finishedAt"`
	DeadLettered bool         `json:"deadLettered,omitempty"`
	Reason       string       `json:"reason,omitempty"`
	// Message is a dead-lettered batch's queue message body, sent again by a resume.
	Message []byte `json:"message,omitempty"`
}

// RepairRun names a chain's pass.
func RepairRun(chain string, pass int) string { return fmt.Sprintf("%s-p%d", chain, pass) }

func repairBase(id, run string) string { return id + "/repair/" + run + "/" }
func repairShardName(id, run, key string) string {
	return repairBase(id, run) + "shards/" + key + ".json"
}
func repairStepName(id, run, key string, step int) string {
	return fmt.Sprintf("%ssteps/%s/%d.json", repairBase(id, run), key, step)
}
func repairResultPrefix(id, run string) string { return repairBase(id, run) + "results/" }
func repairDeadPrefix(id, run string) string   { return repairBase(id, run) + "dead/" }

// CreateRepairShard writes a pass's plan key progress; an existing one is kept.
func (s *Store) CreateRepairShard(ctx context.Context, id, run string, p ShardProgress) error {
	return s.createShardAt(ctx, repairShardName(id, run, p.Key), p)
}

// GetRepairShard reads a pass's plan key progress.
func (s *Store) GetRepairShard(ctx context.Context, id, run, key string) (*ShardProgress, error) {
	return s.getShardAt(ctx, repairShardName(id, run, key))
}

// UpdateRepairShard applies fn to a pass's plan key progress under optimistic concurrency.
func (s *Store) UpdateRepairShard(ctx context.Context, id, run, key string, fn func(*ShardProgress) (bool, error)) (*ShardProgress, error) {
	return s.updateShardAt(ctx, repairShardName(id, run, key), fn)
}

// RepairShards reads the progress of every plan key of a pass (a key not written yet reads as
// step 0).
func (s *Store) RepairShards(ctx context.Context, id, run string, keys []string) ([]ShardProgress, error) {
	return s.shardsAt(ctx, keys, func(key string) string { return repairShardName(id, run, key) }, true)
}

// CreateRepairStep writes a pass's plan step manifest unless one exists and returns the one
// that stands, so every delivery of the step sends the same batches.
func (s *Store) CreateRepairStep(ctx context.Context, id, run string, m *StepManifest) (*StepManifest, error) {
	m.Prefix = stepPrefix(m.Batches)
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	_, err := s.putJSON(ctx, repairStepName(id, run, m.Key, m.Step), m, nil, createOnly())
	if err == nil {
		return m, nil
	}
	if err != ErrExists {
		return nil, err
	}
	return s.GetRepairStep(ctx, id, run, m.Key, m.Step)
}

// GetRepairStep reads a pass's plan step manifest; ErrNotFound if the step was never cut.
func (s *Store) GetRepairStep(ctx context.Context, id, run, key string, step int) (*StepManifest, error) {
	var m StepManifest
	if _, err := s.getJSON(ctx, repairStepName(id, run, key, step), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// HasRepairResult reports whether a repair batch's result is recorded.
func (s *Store) HasRepairResult(ctx context.Context, id, run, batch string) (bool, error) {
	return s.exists(ctx, repairResultPrefix(id, run)+batch+".json")
}

// RecordRepairResult writes a repair batch's result if none is recorded yet; false when one was
// there (the first stands, so a redelivered batch is counted once).
func (s *Store) RecordRepairResult(ctx context.Context, id, run string, r RepairResult) (bool, error) {
	return s.putRepair(ctx, repairResultPrefix(id, run)+r.Batch+".json", r)
}

// RecordRepairDead records a repair batch that ran out of deliveries (create-if-absent). It does
// not count as a result: the pass waits for the batch, which a resume sends again.
func (s *Store) RecordRepairDead(ctx context.Context, id, run string, r RepairResult) (bool, error) {
	r.DeadLettered = true
	return s.putRepair(ctx, repairDeadPrefix(id, run)+r.Batch+".json", r)
}

func (s *Store) putRepair(ctx context.Context, name string, r RepairResult) (bool, error) {
	if r.FinishedAt.IsZero() {
		r.FinishedAt = time.Now().UTC()
	}
	meta := map[string]*string{"keys": to.Ptr(strconv.Itoa(r.Keys)), "differing": to.Ptr(strconv.Itoa(len(r.Differing)))}
	_, err := s.putJSON(ctx, name, r, meta, createOnly())
	if err == ErrExists {
		return false, nil
	}
	return err == nil, err
}

// GetRepairResult reads one repair batch's result.
func (s *Store) GetRepairResult(ctx context.Context, id, run, batch string) (*RepairResult, error) {
	var r RepairResult
	if _, err := s.getJSON(ctx, repairResultPrefix(id, run)+batch+".json", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetRepairDead reads a dead-lettered repair batch.
func (s *Store) GetRepairDead(ctx context.Context, id, run, batch string) (*RepairResult, error) {
	var r RepairResult
	if _, err := s.getJSON(ctx, repairDeadPrefix(id, run)+batch+".json", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RepairListing is one listing of a pass's results and dead-lettered batches: batch id ->
// number of differing keys, and the dead-lettered batch ids that have no result.
type RepairListing struct {
	Results map[string]int64
	Dead    []string
}

// ListRepair lists a pass's results (with their differing counts, from metadata) and its
// dead-lettered batches still without a result.
func (s *Store) ListRepair(ctx context.Context, id, run string) (*RepairListing, error) {
	l := &RepairListing{Results: map[string]int64{}}
	if err := s.listMeta(ctx, repairResultPrefix(id, run), func(batch string, md metadata) {
		l.Results[batch] = md.num("differing")
	}); err != nil {
		return nil, err
	}
	if err := s.listMeta(ctx, repairDeadPrefix(id, run), func(batch string, _ metadata) {
		if _, ok := l.Results[batch]; !ok {
			l.Dead = append(l.Dead, batch)
		}
	}); err != nil {
		return nil, err
	}
	return l, nil
}

// RepairBatchOf is the batch id a repair pass gives a target-side batch: plan.Step names batches
// after the node's index and db, which a source-side key of the same pass may share.
func RepairBatchOf(b plan.Batch, target bool) plan.Batch {
	if target {
		b.ID = "t" + b.ID
	}
	return b
}
