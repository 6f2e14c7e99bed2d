// Package syncer is the online-migration engine: it starts a change feed on every source master,
// copies everything once (or lets a snapshot feed load it), then keeps re-copying the keys the
// feed reports as changed, with the copier's DUMP/RESTORE REPLACE (fallback and big keys
// included); a key gone from the source is deleted in the target.
//
// Guarantees: a key is never copied by two workers at once, and a key that changes while being
// copied is copied again, so the target converges whatever the order of events. Whatever the
// feed may have missed (a Gap) is closed by a repair pass that runs while capture goes on; a
// shard with an open gap is never reported in sync. Lag comes from the feed's barriers: every
// change made before the newest applied barrier's time T is in the target.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/importer"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// Config is one online migration.
type Config struct {
	Source, Target *redisconn.Conn
	// Feed captures changes; built for Shards (default every source master).
	Feed changefeed.Feed
	Plan plan.Options
	// Copy: Existing applies to the initial copy only; afterwards sync owns the keys it copies
	// and overwrites them.
	Copy          copier.Options
	ExplicitDBMap bool
	AllowDBMerge  bool
	Workers       int // apply workers, default 8
	ApplyBatch    int // keys per apply batch, default 200
	// MaxPending bounds the dirty set; a change that does not fit opens a gap (default 500,000).
	MaxPending   int
	BarrierEvery time.Duration // default 100ms
	TTLTolerance time.Duration // repair comparison of expiries, default 1s
	// Resume is the checkpoint of an earlier run against the same endpoints: no initial copy;
	// the feed continues from its positions where it can, and shards it cannot continue get a
	// repair pass.
	Resume *Checkpoint
	// Log receives one-line events (gaps, repairs, the end of the initial copy).
	Log func(string)
	// Handover: Resume comes from a live predecessor whose capture overlapped this one's (a
	// function-app chain hands over with its pending keys), so no gap is opened for changes
	// made "while sync was not running": there were none. Pending keys come with MarkPending.
	Handover bool
	// Gate, when set, holds every write to the target (appliers and repair passes) until it is
	// closed, while capture already runs: a continuation captures before its predecessor stops
	// applying and writes only once it holds the lease.
	Gate <-chan struct{}
	// ExternalRepair: the caller runs the repair passes (the function app fans them out over
	// its queues), so none runs in-process: a gap stays open until the caller takes it
	// (TakeGap), finds the differing keys, queues them (MarkPending) and closes it (CloseGap).
	// The CLI leaves it off.
	ExternalRepair bool
}

// Checkpoint is what a later run needs to continue: serializable, no secret in it.
type Checkpoint struct {
	Version     int                            `json:"version"`
	Feed        string                         `json:"feed"`
	Source      string                         `json:"source"`
	Target      string                         `json:"target"`
	Options     string                         `json:"options"`
	Shards      []string                       `json:"shards"`
	InitialDone bool                           `json:"initial_copy_done"`
	Positions   map[string]changefeed.Position `json:"positions,omitempty"`
	// Pending are keys changed but not yet applied (for a handover to a continuation; a CLI
	// restart repairs instead).
	Pending []DirtyKey `json:"pending,omitempty"`
	Saved   time.Time  `json:"saved"`
}

// DirtyKey is a pending key in a checkpoint.
type DirtyKey struct {
	Shard int    `json:"shard"`
	DB    int    `json:"db"`
	Key   []byte `json:"key"`
}

type barrier struct {
	t   time.Time
	pos changefeed.Position
}

// shard is the engine's view of one source master.
type shard struct {
	addr        string
	initialDone atomic.Bool
	gaps        atomic.Int64
	repairs     atomic.Int64
	changes     atomic.Int64

	mu         sync.Mutex
	applied    barrier // newest barrier whose changes are all in the target
	gapOpen    bool    // a gap no finished repair covers yet
	needRepair bool    // a gap arrived after the current repair (if any) started
	repairing  bool
	gapReason  string
	repairedAt time.Time // when the last gap closed: only barriers after it count
}

func (sh *shard) gapState() (open, repairing bool, reason string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.gapOpen, sh.repairing, sh.gapReason
}

// Syncer runs one online migration.
type Syncer struct {
	cfg    Config
	shards []*shard
	index  map[string]int
	dirty  *dirtySet
	cp     *copier.Copier

	applied   atomic.Int64 // keys applied (copied or deleted)
	deleted   atomic.Int64
	failed    atomic.Int64
	repairFix atomic.Int64 // keys a repair found different

	mu       sync.Mutex
	failures []copier.KeyFailure
	initial  engine.Summary
	initErr  error
	started  time.Time
	repairCh chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a migration; Start runs it.
func New(cfg Config) *Syncer {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ApplyBatch <= 0 {
		cfg.ApplyBatch = 200
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 500000
	}
	if cfg.BarrierEvery <= 0 {
		cfg.BarrierEvery = 100 * time.Millisecond
	}
	if cfg.TTLTolerance <= 0 {
		cfg.TTLTolerance = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = func(string) {}
	}
	s := &Syncer{cfg: cfg, index: map[string]int{}, repairCh: make(chan struct{}, 1)}
	for i, a := range cfg.Feed.Shards() {
		s.shards = append(s.shards, &shard{addr: a})
		s.index[a] = i
	}
	s.dirty = newDirtySet(len(s.shards), cfg.MaxPending)
	opts := cfg.Copy
	opts.Existing = copier.ExistingReplace
	opts.DeferBigKeys = false
	s.cp = copier.New(cfg.Source, cfg.Target, opts)
	return s
}

// Loader is what a snapshot feed (psync) is given: it imports the shard's RDB stream into the
// target with the migration's db map, prefixes, match and type. A resumed run reads a snapshot
// past instead: every snapshot it is sent comes with a gap (a saved position the master could
// not continue, none saved, or a later full resync), and the repair pass of that gap brings the
// target up to date without a second full copy.
func (s *Syncer) Loader() changefeed.Loader {
	return func(ctx context.Context, shard string, rdb io.Reader) error {
		if s.cfg.Resume != nil {
			s.cfg.Log(fmt.Sprintf("psync %s: a new snapshot is not loaded: the repair pass covers it (resumed run)", shard))
			if _, err := io.Copy(io.Discard, rdb); err != nil {
				return fmt.Errorf("reading the snapshot: %w", err)
			}
			return nil
		}
		// --existing skip holds for a shard's first snapshot, the initial copy, as for a SCAN copy
		// (fail was checked before: the target is empty); a later one overwrites what sync owns.
		existing := copier.ExistingReplace
		if i, ok := s.index[shard]; ok && s.cfg.Copy.Existing == copier.ExistingSkip && !s.shards[i].initialDone.Load() {
			existing = copier.ExistingSkip
		}
		o := importer.Options{
			Existing: existing, DBMap: s.cfg.Copy.DBMap, ExplicitDBMap: s.cfg.ExplicitDBMap,
			Match: s.cfg.Plan.Match, Type: s.cfg.Plan.Type, Workers: max(2, s.cfg.Workers/2),
		}
		sum, err := importer.Import(ctx, rdb, s.cfg.Target, o)
		if sum != nil {
			s.mu.Lock()
			s.initial.KeysScanned += sum.Scanned
			s.initial.KeysCopied += sum.Copied
			s.initial.KeysSkipped += sum.Skipped
			s.initial.KeysFailed += sum.Failed
			s.initial.KeysExpired += sum.Expired
			s.initial.KeysFallback += sum.Fallback
			s.initial.Bytes += sum.Bytes
			s.mu.Unlock()
			for _, f := range sum.Failures {
				s.addFailure(f)
			}
		}
		return err
	}
}

// Preflight checks the migration as copy would (db map, same server, a non-empty target under
// --existing fail on a first run). Nothing is written.
func (s *Syncer) Preflight(ctx context.Context) (*engine.Preflight, error) {
	ecfg := s.engineConfig()
	if s.cfg.Resume != nil {
		// The target holds what the earlier run copied: it is ours.
		ecfg.Copy.Existing = copier.ExistingReplace
	}
	return engine.Check(ctx, &ecfg)
}

func (s *Syncer) engineConfig() engine.Config {
	return engine.Config{
		Source: s.cfg.Source, Target: s.cfg.Target, Plan: s.cfg.Plan, Copy: s.cfg.Copy,
		ExplicitDBMap: s.cfg.ExplicitDBMap, AllowDBMerge: s.cfg.AllowDBMerge, Workers: s.cfg.Workers,
	}
}

// Start checks the migration, puts capture in place on every shard, and starts the initial copy
// (or the repair of a resumed run) and the appliers in the background. An error means nothing
// was written; it is a *changefeed.RefusedError when the feed cannot run on this source.
func (s *Syncer) Start(ctx context.Context) error {
	if _, err := s.Preflight(ctx); err != nil {
		return err
	}
	s.started = time.Now()
	if r, ok := s.cfg.Feed.(changefeed.Resumer); ok && s.cfg.Resume != nil && len(s.cfg.Resume.Positions) > 0 {
		r.Resume(s.cfg.Resume.Positions)
	}
	if err := s.cfg.Feed.Start(ctx, sink{s}); err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go func() { <-s.ctx.Done(); s.dirty.close() }()
	snapshot := changefeed.Snapshots(s.cfg.Feed)
	resumable := s.cfg.Resume != nil && len(s.cfg.Resume.Positions) > 0 && snapshot
	switch {
	case s.cfg.Resume != nil:
		for _, sh := range s.shards {
			sh.initialDone.Store(true)
			if !resumable && !s.cfg.Handover {
				s.openGap(sh, "restarted: changes made while sync was not running are found by a repair pass")
			}
		}
		s.startAppliers()
	case snapshot:
		// The feed loads each shard's snapshot; its first barrier ends the initial copy.
		s.startAppliers()
	default:
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.initialCopy()
			s.startAppliers()
		}()
	}
	s.wg.Add(1)
	go s.barrierLoop()
	if !s.cfg.ExternalRepair {
		s.wg.Add(1)
		go s.repairLoop()
	}
	return nil
}

// initialCopy runs the copy engine over every shard while capture is already on; appliers wait
// until it ends, so no key is written by two workers at once.
func (s *Syncer) initialCopy() {
	ecfg := s.engineConfig()
	sum, err := engine.Run(s.ctx, ecfg)
	s.mu.Lock()
	s.initial = sum
	s.initErr = err
	s.mu.Unlock()
	for _, f := range sum.Failures {
		s.addFailure(f)
	}
	if err != nil {
		s.cfg.Log("initial copy stopped: " + redact.Error(err))
		if s.ctx.Err() == nil {
			for _, sh := range s.shards {
				s.openGap(sh, "the initial copy stopped part way: "+redact.Error(err))
			}
		}
	} else {
		s.cfg.Log(fmt.Sprintf("initial copy done: %d keys copied in %.1fs; applying changes", sum.KeysCopied, sum.Seconds))
	}
	for _, sh := range s.shards {
		sh.initialDone.Store(true)
	}
}

func (s *Syncer) startAppliers() {
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go s.applier()
	}
}

func (s *Syncer) addFailure(f copier.KeyFailure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < copier.MaxFailuresKept {
		s.failures = append(s.failures, f)
	}
}

// sink adapts the Syncer to changefeed.Sink.
type sink struct{ s *Syncer }

func (k sink) Changed(shard string, db int, key string) { k.s.changed(shard, db, key) }
func (k sink) Flushed(shard string, db int) {
	if i, ok := k.s.index[shard]; ok {
		k.s.openGap(k.s.shards[i], fmt.Sprintf("source db %d was flushed", db))
	}
}
func (k sink) Gap(shard, reason string) {
	if i, ok := k.s.index[shard]; ok {
		k.s.openGap(k.s.shards[i], reason)
	}
}
func (k sink) Barrier(shard string, t time.Time, pos changefeed.Position) {
	if i, ok := k.s.index[shard]; ok {
		k.s.dirty.barrier(i, barrier{t, pos})
		if changefeed.Snapshots(k.s.cfg.Feed) {
			k.s.shards[i].initialDone.Store(true)
		}
	}
}

func (s *Syncer) changed(addr string, db int, key string) {
	i, ok := s.index[addr]
	if !ok {
		return
	}
	if _, mapped := s.cfg.Copy.DBMap.Target[db]; !mapped {
		return
	}
	if s.cfg.Plan.Match != "" && !verify.Glob(s.cfg.Plan.Match, key) {
		return
	}
	sh := s.shards[i]
	sh.changes.Add(1)
	if !s.dirty.mark(i, dkey{db, key}) {
		s.openGap(sh, fmt.Sprintf("more than %d changed keys waiting (the dirty set is full)", s.cfg.MaxPending))
	}
}

func (s *Syncer) openGap(sh *shard, reason string) {
	sh.mu.Lock()
	already := sh.needRepair
	if s.cfg.ExternalRepair && already && sh.gapReason != reason {
		// The caller takes gaps on its own schedule (a tick), so two gaps of different causes
		// may both arrive before it does: each counts.
		already = false
	}
	sh.gapOpen, sh.needRepair, sh.gapReason = true, true, reason
	sh.mu.Unlock()
	if !already {
		sh.gaps.Add(1)
		s.cfg.Log(fmt.Sprintf("gap on shard %s: %s; a repair pass follows", sh.addr, redact.String(reason)))
	}
	select {
	case s.repairCh <- struct{}{}:
	default:
	}
}

func (s *Syncer) barrierLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.BarrierEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		_ = s.cfg.Feed.RequestBarrier(s.ctx)
		for i, sh := range s.shards {
			if b, ok := s.dirty.applied(i); ok {
				sh.mu.Lock()
				sh.applied = b
				sh.mu.Unlock()
			}
		}
	}
}

// waitGate waits for Config.Gate; false when the syncer stopped first.
func (s *Syncer) waitGate() bool {
	if s.cfg.Gate == nil {
		return true
	}
	select {
	case <-s.cfg.Gate:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// OpenGap declares that changes of shard (an address of Feed.Shards) may have been missed, e.g.
// a predecessor that died without handing its pending keys over: a repair pass follows.
func (s *Syncer) OpenGap(shard, reason string) {
	if i, ok := s.index[shard]; ok {
		s.openGap(s.shards[i], reason)
	}
}

// TakeGap starts an external repair of shard (Config.ExternalRepair): it returns the reason of
// the gaps opened since the last take, and false when there is none. The shard stays gap-open
// until CloseGap.
func (s *Syncer) TakeGap(shard string) (string, bool) {
	i, ok := s.index[shard]
	if !ok {
		return "", false
	}
	sh := s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.needRepair {
		return "", false
	}
	sh.needRepair, sh.repairing = false, true
	return sh.gapReason, true
}

// WaitingGap reports the reason of a gap of shard that TakeGap has not taken yet (external
// repair), without taking it: a checkpoint hands it on.
func (s *Syncer) WaitingGap(shard string) (string, bool) {
	i, ok := s.index[shard]
	if !ok {
		return "", false
	}
	sh := s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.gapReason, sh.needRepair
}

// RetakeGap gives back a gap TakeGap returned whose repair could not start: the next TakeGap
// returns it again. It is not counted as a new gap.
func (s *Syncer) RetakeGap(shard string) {
	if i, ok := s.index[shard]; ok {
		sh := s.shards[i]
		sh.mu.Lock()
		sh.needRepair = true
		sh.mu.Unlock()
	}
}

// CloseGap ends an external repair of shard whose differing keys have all been applied. It
// refuses (false) when a gap opened after the last TakeGap: that one is not covered yet.
func (s *Syncer) CloseGap(shard string) bool {
	i, ok := s.index[shard]
	if !ok {
		return false
	}
	sh := s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.needRepair {
		return false
	}
	sh.repairing, sh.gapOpen, sh.gapReason, sh.repairedAt = false, false, "", time.Now()
	sh.repairs.Add(1)
	return true
}

// applier copies dirty keys until the syncer stops.
func (s *Syncer) applier() {
	defer s.wg.Done()
	if !s.waitGate() {
		return
	}
	for {
		keys := s.dirty.take(s.cfg.ApplyBatch)
		if keys == nil {
			return
		}
		backoff := 100 * time.Millisecond
		for {
			err := s.apply(s.ctx, keys)
			if err == nil {
				s.dirty.done(keys)
				break
			}
			if s.ctx.Err() != nil {
				s.dirty.requeue(keys)
				return
			}
			s.cfg.Log("applying changes: " + redact.Error(err) + "; retrying")
			select {
			case <-s.ctx.Done():
				s.dirty.requeue(keys)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

// apply brings keys to their current source state: re-copied when present, deleted when gone
// (or no longer of the --type copied).
func (s *Syncer) apply(ctx context.Context, keys []dkey) error {
	byDB := map[int][][]byte{}
	for _, k := range keys {
		byDB[k.db] = append(byDB[k.db], []byte(k.key))
	}
	for db, ks := range byDB {
		tdb, ok := s.cfg.Copy.DBMap.Target[db]
		if !ok {
			continue
		}
		prefix := s.cfg.Copy.DBMap.Prefix[db]
		src := s.cfg.Source.Keys(db)
		pipe := src.Pipeline()
		var exists []*redis.IntCmd
		var types []*redis.StatusCmd
		for _, k := range ks {
			if s.cfg.Plan.Type != "" {
				types = append(types, pipe.Type(ctx, string(k)))
			} else {
				exists = append(exists, pipe.Exists(ctx, string(k)))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("source: %s", redact.Error(err))
		}
		var present, gone [][]byte
		for i, k := range ks {
			here := false
			if types != nil {
				here = types[i].Val() == s.cfg.Plan.Type
			} else {
				here = exists[i].Val() > 0
			}
			if here {
				present = append(present, k)
			} else {
				gone = append(gone, k)
			}
		}
		if len(gone) > 0 {
			dst := s.cfg.Target.Keys(tdb)
			dp := dst.Pipeline()
			for _, k := range gone {
				dp.Del(ctx, prefix+string(k))
			}
			if _, err := dp.Exec(ctx); err != nil {
				return fmt.Errorf("target: %s", redact.Error(err))
			}
			s.deleted.Add(int64(len(gone)))
			s.applied.Add(int64(len(gone)))
		}
		if len(present) > 0 {
			r, err := s.cp.Copy(ctx, plan.Batch{ID: "sync", DB: db, Keys: present})
			if err != nil {
				return err
			}
			s.applied.Add(int64(len(present)))
			if r.Failed > 0 {
				s.failed.Add(r.Failed)
				for _, f := range r.Failures {
					s.addFailure(f)
				}
			}
		}
	}
	return nil
}

// ShardStatus is one source master's state.
type ShardStatus struct {
	Shard       string    `json:"shard"`
	InitialDone bool      `json:"initial_copy_done"`
	Pending     int       `json:"pending_keys"`
	Changes     int64     `json:"changes_seen"`
	AppliedAsOf time.Time `json:"applied_as_of,omitempty"`
	LagMs       int64     `json:"lag_ms"` // -1: no barrier applied yet
	GapOpen     bool      `json:"gap_open"`
	GapReason   string    `json:"gap_reason,omitempty"`
	Repairing   bool      `json:"repairing"`
	Gaps        int64     `json:"gaps"`
	Repairs     int64     `json:"repairs"`
}

// Status is the whole migration's state.
type Status struct {
	Phase       string         `json:"phase"` // initial-copy, repairing, syncing, in-sync
	Feed        string         `json:"feed"`
	Pending     int            `json:"pending_keys"`
	Applied     int64          `json:"keys_applied"`
	Deleted     int64          `json:"keys_deleted"`
	Failed      int64          `json:"keys_failed"`
	RepairFixed int64          `json:"keys_repaired"`
	LagMs       int64          `json:"lag_ms"` // the worst shard's; -1 unknown
	AppliedAsOf time.Time      `json:"applied_as_of,omitempty"`
	Gaps        int64          `json:"gaps"`
	Repairs     int64          `json:"repairs"`
	GapsOpen    int            `json:"gaps_open"`
	Seconds     float64        `json:"seconds"`
	Initial     engine.Summary `json:"initial_copy"`
	Shards      []ShardStatus  `json:"shards"`
}

// Status reports where the migration stands.
func (s *Syncer) Status() Status {
	now := time.Now()
	_, per := s.dirty.size()
	st := Status{Feed: s.cfg.Feed.Name(), Applied: s.applied.Load(), Deleted: s.deleted.Load(), Failed: s.failed.Load(),
		RepairFixed: s.repairFix.Load(), LagMs: 0, Seconds: now.Sub(s.started).Seconds()}
	s.mu.Lock()
	st.Initial = s.initial
	s.mu.Unlock()
	allInit, anyRepair := true, false
	for i, sh := range s.shards {
		sh.mu.Lock()
		b := sh.applied
		sh.mu.Unlock()
		open, repairing, reason := sh.gapState()
		ss := ShardStatus{Shard: sh.addr, InitialDone: sh.initialDone.Load(), Pending: per[i], Changes: sh.changes.Load(),
			AppliedAsOf: b.t, LagMs: -1, GapOpen: open, Repairing: repairing,
			Gaps: sh.gaps.Load(), Repairs: sh.repairs.Load()}
		if open {
			ss.GapReason = reason
		}
		if !b.t.IsZero() {
			ss.LagMs = max(0, now.Sub(b.t).Milliseconds())
		}
		st.Pending += ss.Pending
		st.Gaps += ss.Gaps
		st.Repairs += ss.Repairs
		if ss.GapOpen {
			st.GapsOpen++
		}
		if ss.LagMs < 0 || st.LagMs < 0 {
			st.LagMs = -1
		} else if ss.LagMs > st.LagMs {
			st.LagMs = ss.LagMs
		}
		if st.AppliedAsOf.IsZero() || b.t.Before(st.AppliedAsOf) {
			st.AppliedAsOf = b.t
		}
		allInit = allInit && ss.InitialDone
		anyRepair = anyRepair || ss.Repairing || ss.GapOpen
		st.Shards = append(st.Shards, ss)
	}
	switch {
	case !allInit:
		st.Phase = "initial-copy"
	case anyRepair:
		st.Phase = "repairing"
	case st.LagMs >= 0 && st.LagMs < 2000:
		st.Phase = "in-sync"
	default:
		st.Phase = "syncing"
	}
	return st
}

// Failures are the keys the target refused (first 100).
func (s *Syncer) Failures() []copier.KeyFailure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]copier.KeyFailure(nil), s.failures...)
}

// InitialError is the error that stopped the initial copy, if any.
func (s *Syncer) InitialError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initErr
}

// CaughtUp reports whether every shard has its initial copy, no open gap, and every change
// made before `after` applied; it returns the time T as of which the target holds every change
// (the oldest shard's newest applied barrier).
func (s *Syncer) CaughtUp(after time.Time) (time.Time, bool) {
	var asOf time.Time
	for _, sh := range s.shards {
		if open, repairing, _ := sh.gapState(); !sh.initialDone.Load() || open || repairing {
			return time.Time{}, false
		}
		sh.mu.Lock()
		b := sh.applied
		sh.mu.Unlock()
		sh.mu.Lock()
		repaired := sh.repairedAt
		sh.mu.Unlock()
		if b.t.IsZero() || b.t.Before(after) || !b.t.After(repaired) {
			return time.Time{}, false
		}
		if asOf.IsZero() || b.t.Before(asOf) {
			asOf = b.t
		}
	}
	return asOf, len(s.shards) > 0
}

// WaitCaughtUp waits until CaughtUp(after) holds and the lag is at most maxLag.
func (s *Syncer) WaitCaughtUp(ctx context.Context, after time.Time, maxLag time.Duration) (time.Time, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if T, ok := s.CaughtUp(after); ok && (maxLag <= 0 || time.Since(T) <= maxLag) {
			return T, nil
		}
		if err := s.InitialError(); err != nil && s.ctx.Err() == nil {
			// Gaps were opened for it; keep waiting for the repair.
			_ = err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-s.ctx.Done():
			return time.Time{}, errors.New("sync stopped")
		case <-t.C:
		}
	}
}

// Checkpoint returns what a later run needs: feed positions as of the newest applied barriers
// (only when every shard has one) and the keys still pending.
func (s *Syncer) Checkpoint(withPending bool) Checkpoint {
	cp := Checkpoint{Version: 1, Feed: s.cfg.Feed.Name(), Source: s.cfg.Source.Endpoint.String(),
		Target: s.cfg.Target.Endpoint.String(), Shards: s.cfg.Feed.Shards(), InitialDone: true, Saved: time.Now().UTC()}
	pos := map[string]changefeed.Position{}
	for _, sh := range s.shards {
		if !sh.initialDone.Load() {
			cp.InitialDone = false
		}
		sh.mu.Lock()
		b := sh.applied
		sh.mu.Unlock()
		if open, _, _ := sh.gapState(); b.pos != nil && !open {
			pos[sh.addr] = b.pos
		}
	}
	if len(pos) == len(s.shards) {
		cp.Positions = pos
	}
	if withPending {
		cp.Pending = s.dirty.snapshot()
	}
	return cp
}

// MarkPending queues keys from a handed-over checkpoint.
func (s *Syncer) MarkPending(keys []DirtyKey) {
	for _, k := range keys {
		if k.Shard >= 0 && k.Shard < len(s.shards) {
			s.changed(s.shards[k.Shard].addr, k.DB, string(k.Key))
		}
	}
}

// Close stops the feed and the workers. Pending keys are not applied.
func (s *Syncer) Close() error {
	err := s.cfg.Feed.Close()
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return err
}

// Describe names the endpoints and options of a migration, to recognize a checkpoint as its own.
func Describe(parts ...string) string { return strings.Join(parts, " ") }
