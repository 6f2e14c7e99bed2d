package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// Online migrations (mode "online"): besides the copy's state, each source master has a sync
// chain record and the migration has one control record:
//
//	<id>/online.json            stop and cutover requests, the cutover's progress
//	<id>/sync/<chain>.json      one per source master: the lease, the handover, the chain's metrics
//	_running/online/<id>        present while the migration runs (the running index, see RunningOnline)
//
// Both are updated under optimistic concurrency (If-Match on the ETag), so the lease in a chain
// record is taken, renewed and released by conditional writes.

// SyncChain is one source master's sync chain: a sequence of SyncShard invocations (Seq) of one
// generation (Gen; a restart after a stall starts a new one). The invocation holding the lease
// is Seq with Holder set; Holder "" means released.
type SyncChain struct {
	Chain string `json:"chain"`
	Shard int    `json:"shard"`
	Addr  string `json:"addr"`
	Feed  string `json:"feed"`
	Gen   int    `json:"generation"`
	// Seq is the invocation of Gen that holds or last held the lease (-1: none yet).
	Seq        int       `json:"invocation"`
	Holder     string    `json:"holder,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil"`
	// NextCapturing is the Seq of a continuation whose capture is in place (it waits for the lease).
	NextCapturing int `json:"nextCapturing"`
	// HandedTo is the Seq the last holder saw capturing before it stopped its own capture: only
	// that invocation takes over without a gap.
	HandedTo int `json:"handedTo"`
	// Pending are the keys changed but not applied when the lease was released.
	Pending []PendingKey `json:"pending,omitempty"`
	// GapOpen: changes may have been missed and no repair pass has covered them yet.
	GapOpen   bool   `json:"gapOpen"`
	GapReason string `json:"gapReason,omitempty"`
	CopyDone  bool   `json:"copyDone"`
	Stopped   bool   `json:"stopped"`
	// Position (feed psync) is where the chain stands in the master's replication stream
	// (replication id, offset, database): every change up to it was applied or is in Pending.
	// A continuation resumes from it (PSYNC <replid> <offset+1>); written with every checkpoint.
	Position json.RawMessage `json:"position,omitempty"`
	// MasterOffset (psync) is the master's replication offset at the holder's last barrier.
	MasterOffset int64 `json:"masterOffset,omitempty"`
	// Continues (psync) counts links the master continued from a saved position; FullResyncs
	// those it could not (its backlog no longer held the position): each opened a gap.
	Continues   int64 `json:"continues,omitempty"`
	FullResyncs int64 `json:"fullResyncs,omitempty"`
	// Repair is the repair pass in progress (fanned out over the plan and copy queues, see
	// repair.go); RepairPasses numbers the passes started, LastRepair is the last one finished.
	Repair *RepairPass `json:"repair,omitempty"`
	// GapWaiting is the reason of a gap no repair pass covers yet (it opened after the pass in
	// progress started, or before the copy was complete): the next holder starts a new pass.
	GapWaiting   string      `json:"gapWaiting,omitempty"`
	RepairPasses int         `json:"repairPasses"`
	LastRepair   *RepairDone `json:"lastRepair,omitempty"`

	// Metrics, written at every checkpoint.
	AppliedAsOf   time.Time `json:"appliedAsOf"` // every change before it is in the target
	PendingKeys   int       `json:"pendingKeys"`
	Applied       int64     `json:"applied"`
	AppliedPerSec float64   `json:"appliedPerSecond"`
	Gaps          int64     `json:"gaps"`
	Repairs       int64     `json:"repairs"`   // repair passes finished
	Handovers     int64     `json:"handovers"` // gap-free handovers
	Takeovers     int64     `json:"takeovers"` // an invocation took an expired lease: a gap
	Restarts      int       `json:"restarts"`
	StalledAt     time.Time `json:"stalledAt"` // the last checkpoint of the chain last restarted
	CheckpointAt  time.Time `json:"checkpointAt"`
	Error         string    `json:"error,omitempty"`
}

// PendingKey is a key handed over from one invocation to the next.
type PendingKey struct {
	DB  int    `json:"db"`
	Key []byte `json:"key"`
}

// Online is the control record of an online migration.
type Online struct {
	Feed          string    `json:"feed"`
	Chains        []string  `json:"chains"`
	StopRequested bool      `json:"stopRequested"`
	StopAt        time.Time `json:"stopAt"`
	Cutover       *Cutover  `json:"cutover,omitempty"`
	Cutovers      int       `json:"cutovers"`
}

// Cutover states.
const (
	CutoverWaiting    = "waiting"    // for every chain to apply a barrier after the request
	CutoverVerifying  = "verifying"  // a verification run compares the target with the source
	CutoverConsistent = "consistent" // the verification passed: the target matched as of AsOf
	CutoverFailed     = "failed"
)

// Cutover is one POST /api/migrations/{id}/cutover.
type Cutover struct {
	State              string    `json:"state"`
	RequestedAt        time.Time `json:"requestedAt"`
	PauseWritesSeconds int       `json:"pauseWritesSeconds,omitempty"`
	CaughtUpAt         time.Time `json:"caughtUpAt"`
	AsOf               time.Time `json:"asOf"` // T: every change before it was in the target and verified
	VerifyRun          string    `json:"verifyRun,omitempty"`
	// GapsAtCatchUp is the chains' gap count when the verification started: one more means a
	// gap opened during it, and the cutover fails.
	GapsAtCatchUp int64     `json:"gapsAtCatchUp"`
	Error         string    `json:"error,omitempty"`
	FinishedAt    time.Time `json:"finishedAt"`
}

func onlineName(id string) string       { return id + "/online.json" }
func chainName(id, chain string) string { return id + "/sync/" + chain + ".json" }

// CreateOnline writes the control record (create-only).
func (s *Store) CreateOnline(ctx context.Context, id string, o *Online) error {
	_, err := s.putJSON(ctx, onlineName(id), o, nil, createOnly())
	return err
}

// GetOnline reads the control record.
func (s *Store) GetOnline(ctx context.Context, id string) (*Online, error) {
	o := &Online{}
	if _, err := s.getJSON(ctx, onlineName(id), o); err != nil {
		return nil, err
	}
	return o, nil
}

// UpdateOnline changes the control record under optimistic concurrency.
func (s *Store) UpdateOnline(ctx context.Context, id string, fn func(*Online) (bool, error)) (*Online, error) {
	return update(ctx, s, onlineName(id), fn)
}

// CreateChain writes a chain record (create-only).
func (s *Store) CreateChain(ctx context.Context, id string, c *SyncChain) error {
	_, err := s.putJSON(ctx, chainName(id, c.Chain), c, nil, createOnly())
	return err
}

// GetChain reads a chain record.
func (s *Store) GetChain(ctx context.Context, id, chain string) (*SyncChain, error) {
	c := &SyncChain{}
	if _, err := s.getJSON(ctx, chainName(id, chain), c); err != nil {
		return nil, err
	}
	return c, nil
}

// UpdateChain changes a chain record under optimistic concurrency (If-Match): the lease is
// taken, renewed and released only through it.
func (s *Store) UpdateChain(ctx context.Context, id, chain string, fn func(*SyncChain) (bool, error)) (*SyncChain, error) {
	return update(ctx, s, chainName(id, chain), fn)
}

// The running index: one empty blob per online migration that still runs, so a timer can find
// them with one small listing instead of reading every migration. The prefix starts with "_",
// which no migration id does (ValidID).
const runningPrefix = "_running/online/"

// MarkOnlineRunning adds an online migration to the running index (idempotent).
func (s *Store) MarkOnlineRunning(ctx context.Context, id string) error {
	_, err := s.putJSON(ctx, runningPrefix+id, struct{}{}, nil, nil)
	return err
}

// UnmarkOnlineRunning removes a stopped or failed online migration from the running index.
func (s *Store) UnmarkOnlineRunning(ctx context.Context, id string) error {
	_, err := s.c.NewBlobClient(runningPrefix+id).Delete(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("removing %s from the running index: %s", id, describe(err))
	}
	return nil
}

// RunningOnline lists the ids in the running index.
func (s *Store) RunningOnline(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.listAll(ctx, runningPrefix, func(rest string, _ metadata) {
		if ValidID(rest) {
			ids = append(ids, rest)
		}
	})
	return ids, err
}
