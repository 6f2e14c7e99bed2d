// Package engine runs a whole migration in one process: it checks both endpoints, plans every
// source shard and database, and feeds the batches through an in-memory queue to N copier
// workers. The CLI's copy command is a thin shell around Run.
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/resume"
)

// Config is one migration.
type Config struct {
	Source, Target *redisconn.Conn
	Plan           plan.Options
	Copy           copier.Options
	// ExplicitDBMap is true when the user gave --db-map: databases left out of it are not copied
	// (and reported). Without it, a source with keys outside db 0 is refused.
	ExplicitDBMap bool
	AllowDBMerge  bool
	Workers       int
	// OnProgress is called about every ProgressEvery with running totals.
	OnProgress    func(Progress)
	ProgressEvery time.Duration
	// BatchAttempts is how often a batch is tried when it fails for a reason other than a
	// server being away; default 5.
	BatchAttempts int
	// RetryWait is how long a server may stay away (unreachable, LOADING, BUSY, TRYAGAIN,
	// MASTERDOWN) while batches wait for it with backoff; longer, and the run stops. Default 60s.
	RetryWait time.Duration
	// StepKeys bounds a plan step (the unit recorded in the state file); default 10,000 keys.
	StepKeys int
	// StateFile, when set, records finished plan steps; a rerun with it resumes after them.
	StateFile string
	// WatchEvery is how often the target's run_id is checked; default 500ms.
	WatchEvery time.Duration
	// SourcePacer, when set, paces and backs off the reads from the source (shared/pace).
	SourcePacer copier.SourcePacer
	// targetOurs: the state file says this migration already wrote into the target, so the
	// preflight does not refuse it as non-empty.
	targetOurs bool
}

// Progress is a running total.
type Progress struct {
	Scanned, Done, Estimated int64
	Result                   copier.Result
	Elapsed                  time.Duration
}

// Summary is the outcome of a run; it marshals to the CLI's --json output.
type Summary struct {
	KeysScanned  int64               `json:"keys_scanned"`
	KeysCopied   int64               `json:"keys_copied"`
	KeysSkipped  int64               `json:"keys_skipped"`
	KeysMissing  int64               `json:"keys_missing"`
	KeysExpired  int64               `json:"keys_expired"`
	KeysFailed   int64               `json:"keys_failed"`
	KeysFallback int64               `json:"keys_fallback"`
	KeysBig      int64               `json:"keys_big"`
	Bytes        int64               `json:"bytes"`
	Seconds      float64             `json:"seconds"`
	Batches      int64               `json:"batches"`
	Failures     []copier.KeyFailure `json:"failures,omitempty"`
	NotCopiedDBs map[string]int64    `json:"not_copied_dbs,omitempty"`
	Verify       any                 `json:"verify,omitempty"`
	Notes        []string            `json:"notes,omitempty"`
	// TargetRestarts counts target servers seen restarting (run_id changed) during the run: keys
	// written before may be lost (a target without persistence loses them all).
	TargetRestarts int `json:"target_restarts,omitempty"`
	// TargetEvictions counts keys the target evicted during the run (INFO evicted_keys, at its
	// maxmemory): keys written may be gone without an error naming them.
	TargetEvictions int64 `json:"target_evicted_keys,omitempty"`
	// SourceRestarts counts source shards whose scan started over after a restart.
	SourceRestarts int `json:"source_restarts,omitempty"`
	// BatchRetries counts batch attempts a server could not serve (unreachable, LOADING, BUSY,
	// TRYAGAIN, MASTERDOWN, CLUSTERDOWN), each waited out and retried; a note says which side.
	BatchRetries int64 `json:"batch_retries,omitempty"`
	// SourceSlowdowns counts the source's slow or busy answers that made the reads back off
	// (shared/pace); set by the caller that owns the pacer.
	SourceSlowdowns int64 `json:"source_slowdowns,omitempty"`
	// Resumed is set when a --state file let the run start after finished plan steps; the counts
	// include theirs.
	Resumed bool  `json:"resumed,omitempty"`
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// Ok reports whether every key was accounted for without a failure.
func (s Summary) Ok() bool { return s.KeysFailed == 0 }

// Preflight is what Check learned about the source.
type Preflight struct {
	SourceDBs    map[int]int64 // keys per source db
	Estimated    int64         // keys in the mapped dbs
	NotCopied    map[int]int64 // dbs with keys the map leaves out (explicit map only)
	TargetKeys   map[int]int64 // keys already in each mapped target db
	SourceShards []string
}

// Check refuses migrations that would lose or clobber data: unmapped source databases, several
// databases merged into one without prefixes, a target database other than 0 on a cluster, a
// non-empty target with --existing fail, and source = target.
func Check(ctx context.Context, cfg *Config) (*Preflight, error) {
	src, dst := cfg.Source, cfg.Target
	if src.Endpoint.Addr() == dst.Endpoint.Addr() {
		return nil, fmt.Errorf("source and target are the same server (%s)", src.Endpoint)
	}
	m := cfg.Copy.DBMap
	if m.Target == nil {
		m = config.DefaultDBMap()
		cfg.Copy.DBMap = m
	}
	if err := m.Check(cfg.AllowDBMerge); err != nil {
		return nil, err
	}
	dbs, err := src.KeyspaceDBs(ctx)
	if err != nil {
		return nil, err
	}
	pf := &Preflight{SourceDBs: dbs, NotCopied: map[int]int64{}, TargetKeys: map[int]int64{}, SourceShards: src.Masters()}
	var unmapped []string
	for db, n := range dbs {
		if _, ok := m.Target[db]; ok {
			pf.Estimated += n
			continue
		}
		if cfg.ExplicitDBMap {
			pf.NotCopied[db] = n
		} else {
			unmapped = append(unmapped, fmt.Sprintf("db %d (%d keys)", db, n))
		}
	}
	if len(unmapped) > 0 {
		sort.Strings(unmapped)
		return nil, fmt.Errorf("the source has keys outside db 0: %s; the target serves one database, so say where they go, "+
			"e.g. --db-map 0:0,3:0 --db-prefix 3:db3: (or list only the dbs to copy in --db-map)", strings.Join(unmapped, ", "))
	}
	for _, src := range m.Sources() {
		tdb := m.Target[src]
		if dst.Cluster && tdb != 0 {
			return nil, fmt.Errorf("db map sends source db %d to target db %d, but the target is a cluster and only has db 0", src, tdb)
		}
		if cfg.Source.Cluster && src != 0 {
			return nil, fmt.Errorf("db map names source db %d, but the source is a cluster and only has db 0", src)
		}
	}
	seen := map[int]bool{}
	for _, s := range m.Sources() {
		tdb := m.Target[s]
		if seen[tdb] {
			continue
		}
		seen[tdb] = true
		n, err := dst.DBSize(ctx, tdb)
		if err != nil {
			return nil, err
		}
		pf.TargetKeys[tdb] = n
		if n > 0 && cfg.Copy.Existing == copier.ExistingFail && !cfg.targetOurs {
			return nil, fmt.Errorf("target db %d already holds %d keys; refusing to copy into a non-empty database "+
				"(use --existing skip to keep the target's keys, or --existing replace to overwrite them)", tdb, n)
		}
	}
	return pf, nil
}

type job struct {
	b  plan.Batch
	st *step
}

// run is one Run in progress.
type run struct {
	cfg       Config
	pf        *Preflight
	cps       [2]*copier.Copier
	resumed   bool
	health    *health
	tracker   *tracker
	shards    map[string]*shardProgress
	queue     chan job
	scanned   atomic.Int64
	batches   atomic.Int64
	srcRunIDs map[string]string
	cancel    context.CancelFunc

	mu             sync.Mutex
	notes          []string
	stopMsg        string
	targetRestarts int
	sourceRestarts int
	waits          map[string]serverWait // side -> batch attempts it could not serve
}

// serverWait is how often one side could not serve a batch, and its last answer (redacted).
type serverWait struct {
	n    int64
	last string
}

func (e *run) note(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.notes {
		if n == s {
			return
		}
	}
	e.notes = append(e.notes, s)
}

// stop ends the run because a server stayed away.
func (e *run) stop(msg string) {
	e.mu.Lock()
	if e.stopMsg == "" {
		e.stopMsg = msg
	}
	e.mu.Unlock()
	e.cancel()
}

func (e *run) paceSource(ctx context.Context, n int) time.Time {
	if e.cfg.SourcePacer != nil {
		e.cfg.SourcePacer.Wait(ctx, n)
	}
	return time.Now()
}

func (e *run) pacedSource(start time.Time, n int, err error) {
	if e.cfg.SourcePacer != nil {
		e.cfg.SourcePacer.Done(start, n, err)
	}
}

func (e *run) shardProgress(shard int, addr string, db int) *shardProgress {
	if e.shards == nil {
		return nil
	}
	return e.shards[fmt.Sprint(addr, "/", db)]
}

// Fingerprint names the migration a state file belongs to.
func (cfg *Config) Fingerprint() resume.Fingerprint {
	return resume.Fingerprint{
		Source: cfg.Source.Endpoint.String(), Target: cfg.Target.Endpoint.String(),
		Match: cfg.Plan.Match, Type: cfg.Plan.Type, DBMap: cfg.Copy.DBMap.String(), Existing: string(cfg.Copy.Existing),
	}
}

// Run checks, plans and copies, and returns the summary. The error is for a run that could not
// go on (a refused preflight, a server away for longer than RetryWait); key-level failures are in
// the summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	var sum Summary
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.BatchAttempts <= 0 {
		cfg.BatchAttempts = 5
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 60 * time.Second
	}
	if cfg.StepKeys <= 0 {
		cfg.StepKeys = 10000
	}
	if cfg.WatchEvery <= 0 {
		cfg.WatchEvery = 500 * time.Millisecond
	}
	if cfg.Copy.Existing == "" {
		cfg.Copy.Existing = copier.ExistingFail
	}
	if cfg.Copy.DBMap.Target == nil {
		cfg.Copy.DBMap = config.DefaultDBMap()
	}
	var st *resume.File
	if cfg.StateFile != "" {
		var err error
		if st, err = resume.Load(cfg.StateFile, cfg.Fingerprint()); err != nil {
			return sum, err
		}
		cfg.targetOurs = st.Started()
	}
	pf, err := Check(ctx, &cfg)
	if err != nil {
		return sum, err
	}
	if len(pf.NotCopied) > 0 {
		sum.NotCopiedDBs = map[string]int64{}
		for db, n := range pf.NotCopied {
			sum.NotCopiedDBs[fmt.Sprintf("db%d", db)] = n
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e := &run{cfg: cfg, pf: pf, health: newHealth(cfg.RetryWait), cancel: cancel,
		queue: make(chan job, cfg.Workers*2), srcRunIDs: map[string]string{}}
	for _, addr := range cfg.Source.Masters() {
		id, err := cfg.Source.RunID(ctx, cfg.Source.ReadAddr(addr))
		if err != nil {
			return sum, fmt.Errorf("source %s: %s", addr, redact.Error(err))
		}
		e.srcRunIDs[addr] = id
	}
	dstIDs := map[string]string{}
	for _, addr := range cfg.Target.Masters() {
		id, err := cfg.Target.RunID(ctx, addr)
		if err != nil {
			return sum, fmt.Errorf("target %s: %s", addr, redact.Error(err))
		}
		dstIDs[addr] = id
	}
	evictedBefore, evictionsKnown := cfg.Target.Evictions(ctx)

	// The state file: every shard's record, started over when its source restarted since.
	var base copier.Result
	var baseScanned int64
	if st != nil {
		e.resumed = st.Started()
		var recs []resume.Shard
		for shard, addr := range cfg.Source.Masters() {
			for _, db := range cfg.Copy.DBMap.Sources() {
				rec := st.Find(addr, db)
				switch {
				case rec == nil:
					recs = append(recs, resume.Shard{Shard: shard, Addr: addr, DB: db, RunID: e.srcRunIDs[addr]})
				case rec.RunID != e.srcRunIDs[addr]:
					if rec.Step > 0 || rec.Done {
						e.note(fmt.Sprintf("state file: source shard %d (%s) restarted since the last run (run_id changed), so its scan starts over", shard, addr))
					}
					recs = append(recs, resume.Shard{Shard: shard, Addr: addr, DB: db, RunID: e.srcRunIDs[addr]})
				default:
					r := *rec
					r.Shard = shard
					recs = append(recs, r)
				}
			}
		}
		st.Shards = recs
		e.shards = map[string]*shardProgress{}
		for i := range st.Shards {
			r := &st.Shards[i]
			e.shards[fmt.Sprint(r.Addr, "/", r.DB)] = &shardProgress{rec: r, finished: map[int]*step{}}
			base.Add(r.Result)
			baseScanned += r.Scanned
			if r.Step > 0 || r.Done {
				sum.Resumed = true
			}
		}
		st.Wrote = true
		if err := st.Save(cfg.StateFile); err != nil {
			return sum, err
		}
		e.tracker = &tracker{path: cfg.StateFile, file: st}
	}

	cfg.Copy.DeferBigKeys = true
	if cfg.SourcePacer != nil && cfg.Copy.SourcePacer == nil {
		cfg.Copy.SourcePacer = cfg.SourcePacer
	}
	// A retried batch may find keys its failed attempt already wrote. Under --existing fail the
	// target was empty at the start, so those are ours: the retry overwrites them instead of
	// reporting them as clashes. A resumed run treats every batch so.
	retryOpts := cfg.Copy
	if retryOpts.Existing == copier.ExistingFail {
		retryOpts.Existing = copier.ExistingReplace
	}
	e.cps = [2]*copier.Copier{copier.New(cfg.Source, cfg.Target, cfg.Copy), copier.New(cfg.Source, cfg.Target, retryOpts)}

	var mu sync.Mutex
	var total copier.Result
	var planErr error

	// Planner: every shard and mapped db, one after another (SCAN is cheap; the copiers are the work).
	go func() {
		defer close(e.queue)
		for shard, addr := range cfg.Source.Masters() {
			for _, db := range cfg.Copy.DBMap.Sources() {
				if _, has := pf.SourceDBs[db]; !has {
					if sp := e.shardProgress(shard, addr, db); sp != nil && !sp.rec.Done {
						// Nothing to scan: record the shard as done.
						e.tracker.add(&step{shard: sp, n: sp.rec.Step, end: plan.Cursor{Shard: shard, Addr: addr, DB: db, Step: sp.rec.Step + 1, Done: true}, pending: 1}, copier.Result{}, true)
					}
					continue
				}
				if err := e.planShard(ctx, shard, addr, db); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						planErr = errors.New(redact.Error(err))
						mu.Unlock()
					}
					cancel()
					return
				}
			}
		}
	}()

	// The target's run_id, watched: a restart is reported (keys written before it may be gone).
	watchDone := make(chan struct{})
	checkTarget := func() {
		for addr, old := range dstIDs {
			id, err := cfg.Target.RunID(ctx, addr)
			if err != nil || id == old {
				continue
			}
			dstIDs[addr] = id
			e.mu.Lock()
			e.targetRestarts++
			e.mu.Unlock()
			e.note(fmt.Sprintf("the target %s restarted during the copy (run_id changed): keys written before the restart may be lost "+
				"(all of them if it has no persistence); rerun the copy with --existing replace, or with the same --state file, which copies everything again", addr))
			e.tracker.targetRestarted()
		}
	}
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		t := time.NewTicker(cfg.WatchEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				checkTarget()
			case <-watchDone:
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	// Big keys found by the copiers get their own batches and workers, so small keys never wait
	// behind a multi-gigabyte hash.
	bigQueue := make(chan job, 1<<14)
	var bigWG sync.WaitGroup
	for w := 0; w < max(1, cfg.Workers/4); w++ {
		bigWG.Add(1)
		go func() {
			defer bigWG.Done()
			for j := range bigQueue {
				r, ok := e.copyWithRetry(ctx, j.b)
				mu.Lock()
				total.Add(r)
				mu.Unlock()
				e.tracker.add(j.st, r, ok)
			}
		}()
	}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range e.queue {
				b := j.b
				r, ok := e.copyWithRetry(ctx, b)
				e.tracker.more(j.st, len(r.BigKeys))
				for i, k := range r.BigKeys {
					e.batches.Add(1)
					bigQueue <- job{b: plan.Batch{ID: fmt.Sprintf("%s-big-%d", b.ID, i), Shard: b.Shard, DB: b.DB, Keys: [][]byte{k}, Big: true}, st: j.st}
				}
				mu.Lock()
				total.Add(r)
				mu.Unlock()
				e.tracker.add(j.st, r, ok)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(bigQueue)
	}()

	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if cfg.OnProgress != nil {
		every := cfg.ProgressEvery
		if every <= 0 {
			every = 200 * time.Millisecond
		}
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					mu.Lock()
					r := total
					mu.Unlock()
					r.Add(base)
					cfg.OnProgress(Progress{Scanned: baseScanned + e.scanned.Load(), Done: r.Keys(), Estimated: pf.Estimated, Result: r, Elapsed: time.Since(start)})
				case <-stopProgress:
					return
				}
			}
		}()
	}
	wg.Wait()
	bigWG.Wait()
	close(watchDone)
	watchWG.Wait()
	if ctx.Err() == nil {
		checkTarget()
	}
	close(stopProgress)
	progressDone.Wait()
	total.Add(base)
	if cfg.OnProgress != nil {
		cfg.OnProgress(Progress{Scanned: baseScanned + e.scanned.Load(), Done: total.Keys(), Estimated: pf.Estimated, Result: total, Elapsed: time.Since(start)})
	}

	if n, ok := cfg.Target.Evictions(ctx); ok && evictionsKnown && n > evictedBefore {
		sum.TargetEvictions = n - evictedBefore
		e.note(EvictionNote("copy", sum.TargetEvictions))
	}
	sum.KeysScanned = baseScanned + e.scanned.Load()
	sum.Batches = e.batches.Load()
	sum.fill(total)
	sum.Seconds = time.Since(start).Seconds()
	e.mu.Lock()
	sum.Notes = append(sum.Notes, e.notes...)
	sum.TargetRestarts, sum.SourceRestarts = e.targetRestarts, e.sourceRestarts
	for _, side := range slices.Sorted(maps.Keys(e.waits)) {
		w := e.waits[side]
		sum.BatchRetries += w.n
		sum.Notes = append(sum.Notes, fmt.Sprintf("the %s could not serve %d batch attempts (last answer: %s): each batch waited and was retried whole",
			side, w.n, w.last))
	}
	stopMsg := e.stopMsg
	e.mu.Unlock()
	if e.tracker != nil && e.tracker.err != nil {
		sum.Notes = append(sum.Notes, "the state file could not be written: "+e.tracker.err.Error())
	}
	if planErr != nil {
		return sum, planErr
	}
	if stopMsg != "" {
		return sum, errStopped{stopMsg}
	}
	if err := ctx.Err(); err != nil {
		return sum, err
	}
	return sum, nil
}

// EvictionNote says what evictions during a run (what: copy, import) mean and what to do.
func EvictionNote(what string, n int64) string {
	return fmt.Sprintf("the target evicted %d keys during the %s (it reached its maxmemory): keys counted as written may be gone, "+
		"and no error names them; give the target more memory (or maxmemory-policy noeviction, so a key that does not fit is "+
		"refused and named) and rerun with --existing replace", n, what)
}

func (s *Summary) fill(r copier.Result) {
	s.KeysCopied, s.KeysSkipped, s.KeysMissing = r.Copied, r.Skipped, r.Missing
	s.KeysExpired, s.KeysFailed, s.KeysFallback = r.Expired, r.Failed, r.Fallback
	s.KeysBig = r.Big
	s.Bytes, s.Failures = r.Bytes, r.Failures
}

// FailBatch counts every key of b as failed with reason.
func FailBatch(b plan.Batch, reason string) copier.Result {
	var r copier.Result
	for _, k := range b.Keys {
		r.Failed++
		if len(r.Failures) < copier.MaxFailuresKept {
			r.Failures = append(r.Failures, copier.KeyFailure{Key: copier.PrintableKey(k), Reason: reason})
		}
	}
	return r
}
