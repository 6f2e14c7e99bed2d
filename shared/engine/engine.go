// Package engine runs a whole migration in one process: it checks both endpoints, plans every
// source shard and database, and feeds the batches through an in-memory queue to N copier
// workers. The CLI's copy command is a thin shell around Run.
package engine

import (
	"context"
	"errors"
	"fmt"
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
	// BatchAttempts is how often a batch is tried when a server fails mid-batch; default 5.
	BatchAttempts int
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
	PeakRSS      int64               `json:"peak_rss_bytes,omitempty"`
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
		if n > 0 && cfg.Copy.Existing == copier.ExistingFail {
			return nil, fmt.Errorf("target db %d already holds %d keys; refusing to copy into a non-empty database "+
				"(use --existing skip to keep the target's keys, or --existing replace to overwrite them)", tdb, n)
		}
	}
	return pf, nil
}

// Run checks, plans and copies, and returns the summary. The error is for a run that could not
// go on (a refused preflight, an unreachable server); key-level failures are in the summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	var sum Summary
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
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.BatchAttempts <= 0 {
		cfg.BatchAttempts = 5
	}
	cfg.Copy.DeferBigKeys = true
	cp := copier.New(cfg.Source, cfg.Target, cfg.Copy)
	// A retried batch may find keys its failed attempt already wrote. Under --existing fail the
	// target was empty at the start, so those are ours: the retry overwrites them instead of
	// reporting them as clashes.
	retryOpts := cfg.Copy
	if retryOpts.Existing == copier.ExistingFail || retryOpts.Existing == "" {
		retryOpts.Existing = copier.ExistingReplace
	}
	cps := [2]*copier.Copier{cp, copier.New(cfg.Source, cfg.Target, retryOpts)}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan plan.Batch, cfg.Workers*2)
	var scanned, batches atomic.Int64
	var mu sync.Mutex
	var total copier.Result
	var planErr error

	// Planner: every shard and mapped db, one after another (SCAN is cheap; the copiers are the work).
	go func() {
		defer close(queue)
		for shard, addr := range cfg.Source.Masters() {
			for _, db := range cfg.Copy.DBMap.Sources() {
				if _, has := pf.SourceDBs[db]; !has {
					continue
				}
				cur := plan.Cursor{Shard: shard, Addr: addr, DB: db}
				node := cfg.Source.Node(addr, db)
				for !cur.Done {
					bs, next, n, err := plan.Step(ctx, node, cur, cfg.Plan, plan.Limits{MaxKeys: 10000})
					if err != nil {
						mu.Lock()
						planErr = errors.New(redact.Error(err))
						mu.Unlock()
						cancel()
						return
					}
					scanned.Add(int64(n))
					for _, b := range bs {
						select {
						case queue <- b:
							batches.Add(1)
						case <-ctx.Done():
							return
						}
					}
					cur = next
				}
			}
		}
	}()

	// Big keys found by the copiers get their own batches and workers, so small keys never wait
	// behind a multi-gigabyte hash.
	bigQueue := make(chan plan.Batch, 1<<14)
	var bigWG sync.WaitGroup
	for w := 0; w < max(1, cfg.Workers/4); w++ {
		bigWG.Add(1)
		go func() {
			defer bigWG.Done()
			for b := range bigQueue {
				r := copyWithRetry(ctx, cps, b, cfg.BatchAttempts)
				mu.Lock()
				total.Add(r)
				mu.Unlock()
			}
		}()
	}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range queue {
				r := copyWithRetry(ctx, cps, b, cfg.BatchAttempts)
				for i, k := range r.BigKeys {
					batches.Add(1)
					bigQueue <- plan.Batch{ID: fmt.Sprintf("%s-big-%d", b.ID, i), Shard: b.Shard, DB: b.DB, Keys: [][]byte{k}, Big: true}
				}
				mu.Lock()
				total.Add(r)
				mu.Unlock()
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
					cfg.OnProgress(Progress{Scanned: scanned.Load(), Done: r.Keys(), Estimated: pf.Estimated, Result: r, Elapsed: time.Since(start)})
				case <-stopProgress:
					return
				}
			}
		}()
	}
	wg.Wait()
	bigWG.Wait()
	close(stopProgress)
	progressDone.Wait()
	if cfg.OnProgress != nil {
		cfg.OnProgress(Progress{Scanned: scanned.Load(), Done: total.Keys(), Estimated: pf.Estimated, Result: total, Elapsed: time.Since(start)})
	}

	sum.KeysScanned = scanned.Load()
	sum.Batches = batches.Load()
	sum.fill(total)
	sum.Seconds = time.Since(start).Seconds()
	if planErr != nil {
		return sum, planErr
	}
	if err := ctx.Err(); err != nil {
		return sum, err
	}
	return sum, nil
}

func (s *Summary) fill(r copier.Result) {
	s.KeysCopied, s.KeysSkipped, s.KeysMissing = r.Copied, r.Skipped, r.Missing
	s.KeysExpired, s.KeysFailed, s.KeysFallback = r.Expired, r.Failed, r.Fallback
	s.KeysBig = r.Big
	s.Bytes, s.Failures = r.Bytes, r.Failures
}

// copyWithRetry retries a batch whose servers failed mid-way; when every attempt fails, each of
// its keys is reported as failed with the last error, so no key goes unaccounted.
func copyWithRetry(ctx context.Context, cps [2]*copier.Copier, b plan.Batch, attempts int) copier.Result {
	var last error
	for i := 0; i < attempts; i++ {
		r, err := cps[min(i, 1)].Copy(ctx, b)
		if err == nil {
			return r
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(200*(i+1)) * time.Millisecond)
	}
	return FailBatch(b, fmt.Sprintf("batch %s failed %d times: %s", b.ID, attempts, redact.Error(last)))
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
