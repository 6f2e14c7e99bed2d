package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/pace"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// copyFlags are the options copy shares with the function app's request.
type copyFlags struct {
	source, target, match, scanType, existing, dbMap, dbPrefix string
	workers, batchKeys                                         int
	dryRun, jsonOut, allowMerge                                bool
	noVerify, verifyFull                                       bool
	verifySample                                               int
	bigKeyBytes                                                int64
	stateFile                                                  string
	keepTarget                                                 bool
	retryWait                                                  time.Duration
	maxSourceOps                                               int
	readFromReplica                                            bool
}

// bindScope registers the flags copy and sync share: the endpoints, which keys, where they go
// and how big keys travel. verb names the command in the help text.
func (f *copyFlags) bindScope(fs *FlagSet, verb string) {
	fs.StringVar(&f.source, "source", "", "source `URL`: redis://[user:password@]host:port[/db] or rediss://...")
	fs.StringVar(&f.target, "target", "", "target `URL` (Azure Managed Redis: rediss://:<key>@<name>.<region>.redis.azure.net:10000)")
	fs.StringVar(&f.match, "match", "", verb+" only keys matching this `glob` (SCAN MATCH)")
	fs.StringVar(&f.scanType, "type", "", verb+" only keys of this `type` (SCAN TYPE: string, list, set, zset, hash, stream)")
	fs.StringVar(&f.dbMap, "db-map", "", "source-to-target databases, e.g. `0:0,3:0` (default 0:0; other dbs must be mapped)")
	fs.StringVar(&f.dbPrefix, "db-prefix", "", "key prefix per source db, e.g. `3:legacy:`")
	fs.BoolVar(&f.allowMerge, "allow-db-merge", false, "allow mapping several dbs to one target db without distinct prefixes")
	fs.Int64Var(&f.bigKeyBytes, "big-key-bytes", 8<<20, "copy keys whose MEMORY USAGE reaches this many `bytes` in chunks (-1: never)")
}

func runCopy(ctx context.Context, env *Env, args []string) error {
	var f copyFlags
	fs := newFlagSet(env, "copy", "--source URL --target URL [options]")
	f.bindScope(fs, "copy")
	fs.StringVar(&f.existing, "existing", "fail", "keys already in the target: fail (refuse a non-empty target), skip, replace")
	fs.IntVar(&f.workers, "workers", 8, "parallel copier workers")
	fs.IntVar(&f.batchKeys, "batch-keys", 500, "keys per batch")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the plan (shards, keys per db, estimated size) and copy nothing")
	fs.BoolVar(&f.jsonOut, "json", false, "print one JSON summary on stdout")
	fs.BoolVar(&f.noVerify, "no-verify", false, "skip the verification that follows the copy")
	fs.IntVar(&f.verifySample, "verify-sample", 10000, "keys the closing verification checks (random sample)")
	fs.BoolVar(&f.verifyFull, "verify-full", false, "verify every key after the copy instead of a sample")
	fs.StringVar(&f.stateFile, "state", "", "record finished plan steps in this `file`; a rerun with it resumes after them")
	fs.BoolVar(&f.keepTarget, "keep-target-values", false, "with --existing skip: the target's own values are wanted, so the closing verification checks only that keys exist")
	fs.IntVar(&f.maxSourceOps, "max-source-ops", 0, "at most this many commands a second to the source (0: no limit; the copy also slows down by itself when the source answers slowly or busy)")
	fs.BoolVar(&f.readFromReplica, "read-from-replica", false, "cluster source: scan and read each shard from an in-sync replica instead of its master")
	fs.DurationVar(&f.retryWait, "retry-wait", 60*time.Second, "how long a server may stay away (restarting, LOADING, BUSY) while batches wait for it; then the copy stops")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err.Error() == "flag: help requested" {
			return exitError{ExitOK}
		}
		return usageError{err}
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if f.source == "" || f.target == "" {
		return usagef("--source and --target are required")
	}
	if err := config.CheckKeyType(f.scanType); err != nil {
		return usagef("--type: %v", err)
	}
	if f.workers < 1 || f.workers > 256 {
		return usagef("--workers %d: want 1..256", f.workers)
	}
	if f.bigKeyBytes == 0 || f.bigKeyBytes < -1 {
		return usagef("--big-key-bytes %d: want a positive size, or -1 to turn chunked copy off", f.bigKeyBytes)
	}
	if f.batchKeys < 1 || f.batchKeys > 10000 {
		return usagef("--batch-keys %d: want 1..10000", f.batchKeys)
	}
	if f.verifySample < 1 {
		// 0 or less would silently verify every key while the summary speaks of a sample.
		return usagef("--verify-sample %d: want at least 1 (or --verify-full, or --no-verify)", f.verifySample)
	}
	existing, err := copier.ParseExisting(f.existing)
	if err != nil {
		return usagef("--%v", err)
	}
	if f.keepTarget && existing != copier.ExistingSkip {
		return usagef("--keep-target-values goes with --existing skip")
	}
	if f.maxSourceOps < 0 {
		return usagef("--max-source-ops %d: want 0 (no limit) or more", f.maxSourceOps)
	}
	if f.maxSourceOps > 0 && f.maxSourceOps < 100 {
		return usagef("--max-source-ops %d: want at least 100 (a batch alone sends hundreds of commands)", f.maxSourceOps)
	}
	if f.retryWait < time.Second {
		return usagef("--retry-wait %s: want at least 1s", f.retryWait)
	}
	dbMap, err := config.ParseDBMap(f.dbMap)
	if err != nil {
		return usagef("--db-map: %v", err)
	}
	if err := dbMap.ParseDBPrefixes(f.dbPrefix); err != nil {
		return usagef("--db-prefix: %v", err)
	}
	srcEP, err := config.ParseEndpoint(f.source)
	if err != nil {
		return usagef("--source: %v", err)
	}
	dstEP, err := config.ParseEndpoint(f.target)
	if err != nil {
		return usagef("--target: %v", err)
	}
	if srcEP.DBSet && f.dbMap == "" {
		// redis://host/3 as source means "copy db 3" into db 0.
		dbMap = config.DBMap{Target: map[int]int{srcEP.DB: 0}, Prefix: map[int]string{}}
		if err := dbMap.ParseDBPrefixes(f.dbPrefix); err != nil {
			return usagef("--db-prefix: %v", err)
		}
	}
	src, err := redisconn.Open(ctx, srcEP, redisconn.Options{Role: "source", PoolSize: f.workers + 2})
	if err != nil {
		return usageError{err}
	}
	defer src.Close()
	var srcNotes []string
	if f.readFromReplica {
		if err := src.UseReplicas(ctx); err != nil {
			return usageError{err}
		}
		srcNotes = append(srcNotes, "read every shard from an in-sync replica")
	} else if desc, err := src.CheckReplicaInSync(ctx); err != nil {
		return usageError{err}
	} else if desc != "" {
		srcNotes = append(srcNotes, "the source is a "+desc)
	}
	dst, err := redisconn.Open(ctx, dstEP, redisconn.Options{Role: "target", PoolSize: f.workers + 2})
	if err != nil {
		return usageError{err}
	}
	defer dst.Close()
	fitProcs(env, src, dst)

	pacer := pace.New(pace.Options{MaxOps: f.maxSourceOps})
	cfg := engine.Config{
		Source: src, Target: dst,
		Plan:          plan.Options{Match: f.match, Type: f.scanType, BatchKeys: f.batchKeys},
		Copy:          copier.Options{Existing: existing, DBMap: dbMap, Fallback: DefaultFallback(dst), Reencode: fallback.Reencoder(dst), BigKeyBytes: f.bigKeyBytes},
		ExplicitDBMap: f.dbMap != "" || srcEP.DBSet,
		AllowDBMerge:  f.allowMerge,
		Workers:       f.workers,
		StateFile:     f.stateFile,
		RetryWait:     f.retryWait,
		SourcePacer:   pacer,
	}
	if f.dryRun {
		r, err := engine.Plan(ctx, cfg)
		if err != nil {
			return err
		}
		if f.jsonOut {
			return writeJSON(env.Stdout, r)
		}
		r.Print(env.Stdout)
		return nil
	}
	if w := engine.MemoryShortfall(ctx, cfg); w != "" {
		fmt.Fprintf(env.Stderr, "copy: warning: %s\n", w) // now, before the copy writes anything
		srcNotes = append(srcNotes, w)
	}
	bar := newProgress(env, "copy")
	cfg.OnProgress = bar.update
	sum, err := engine.Run(ctx, cfg)
	bar.finish()
	sum.Notes = append(srcNotes, sum.Notes...)
	if sum.SourceSlowdowns = pacer.Slowdowns(); sum.SourceSlowdowns > 0 {
		sum.Notes = append(sum.Notes, fmt.Sprintf("the source answered slowly or busy %d times: reads backed off, then sped up again",
			sum.SourceSlowdowns))
	}
	if err != nil {
		if sum.Batches == 0 && sum.KeysScanned == 0 {
			return usageError{err}
		}
		reportSummary(env, "copy", sum, f.jsonOut)
		return err
	}
	ok := sum.Ok()
	verifiedAll := false
	if !f.noVerify {
		rep, err := closingVerify(ctx, src, dst, cfg, f.verifySample, f.verifyFull, f.keepTarget)
		if err != nil {
			sum.Notes = append(sum.Notes, "verification could not run: "+err.Error())
			ok = false
		} else {
			sum.Verify = rep
			ok = ok && rep.Ok()
			verifiedAll = f.verifyFull && rep.Ok() && !f.keepTarget
			if !rep.Ok() && existing == copier.ExistingSkip {
				sum.Notes = append(sum.Notes, "keys kept by --existing skip differ from the source: rerun with --existing replace to overwrite "+
					"them (add --match to narrow it), or with --keep-target-values if the target's values are the ones wanted")
			}
			defer printVerify(env.Stderr, "verify", rep)
		}
	}
	if sum.TargetRestarts > 0 {
		if verifiedAll {
			sum.Notes = append(sum.Notes, "the full verification found every key in the target after its restart: nothing was lost")
		} else {
			ok = false
		}
	}
	if sum.TargetEvictions > 0 {
		if verifiedAll {
			sum.Notes = append(sum.Notes, "the full verification found every key in the target after the evictions: none of the copy's keys was evicted")
		} else {
			ok = false
		}
	}
	reportSummary(env, "copy", sum, f.jsonOut)
	if !ok {
		return exitError{ExitFailures}
	}
	return nil
}

// closingVerify checks the copy's result: a random sample (or every key), with the same db map,
// prefixes and match. After --existing skip a kept key that differs from the source is reported
// (it may be a stale copy from an interrupted run); only --keep-target-values checks presence alone.
func closingVerify(ctx context.Context, src, dst *redisconn.Conn, cfg engine.Config, sample int, full, keepTarget bool) (*verify.Report, error) {
	if full {
		sample = 0
	}
	opts := verify.Options{
		DBMap: cfg.Copy.DBMap, Match: cfg.Plan.Match, Type: cfg.Plan.Type, Sample: sample, Workers: cfg.Workers,
		PresenceOnly: keepTarget,
		// A target that may have held keys of its own: keys only there are named, not failed.
		AllowExtra: cfg.Copy.Existing != copier.ExistingFail,
	}
	// A server that restarted late in the copy may still be loading its data: the verification
	// waits it out for --retry-wait, as the copy's batches do, instead of failing the run.
	deadline := time.Now().Add(cfg.RetryWait)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		rep, err := verify.Run(ctx, src, dst, opts)
		var re *verify.ReadError
		// A connection broken by a restart (EOF, refused) is waited out too, not only LOADING.
		transient := err != nil && (busyServer(err) || (errors.As(err, &re) && re.Transient))
		if err == nil || !transient || time.Now().Add(wait).After(deadline) {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, err
		case <-time.After(wait):
		}
	}
}

// busyServer reports an error that carries a server's "not now" answer (LOADING, BUSY,
// TRYAGAIN, MASTERDOWN, CLUSTERDOWN), also where it was flattened into a message.
func busyServer(err error) bool {
	if copier.IsBusyReply(err) {
		return true
	}
	msg := err.Error()
	for _, code := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"} {
		if strings.HasPrefix(msg, code+" ") || strings.Contains(msg, ": "+code+" ") {
			return true
		}
	}
	return false
}

func reportSummary(env *Env, what string, s engine.Summary, jsonOut bool) {
	s.PeakRSS = engine.PeakRSS()
	if jsonOut {
		_ = writeJSON(env.Stdout, s)
	}
	w := env.Stderr
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.KeysCopied) / s.Seconds
	}
	copied := fmt.Sprint(s.KeysCopied)
	if s.TargetRestarts > 0 {
		copied += " (written, but the target restarted during the copy: see below)"
	} else if s.TargetEvictions > 0 {
		copied += " (written, but the target evicted keys meanwhile: see below)"
	}
	fmt.Fprintf(w, "%s: scanned %d, copied %s, skipped %d, missing %d, expired %d, failed %d keys; %s in %.1fs (%.0f keys/s)\n",
		what, s.KeysScanned, copied, s.KeysSkipped, s.KeysMissing, s.KeysExpired, s.KeysFailed,
		engine.HumanBytes(s.Bytes), s.Seconds, rate)
	if s.Resumed {
		fmt.Fprintf(w, "%s: resumed from the --state file: the counts include the plan steps finished by earlier runs\n", what)
	}
	if s.KeysFallback > 0 && what == "import" {
		fmt.Fprintf(w, "%s: %d keys were re-encoded or rebuilt with commands because the target does not read their encoding\n", what, s.KeysFallback)
	} else if s.KeysFallback > 0 {
		fmt.Fprintf(w, "%s: %d keys took the per-key fallback (the target refused their DUMP payload; decoded and rewritten for it)\n", what, s.KeysFallback)
	}
	if s.KeysBig > 0 {
		fmt.Fprintf(w, "%s: %d big keys were copied in chunks\n", what, s.KeysBig)
	}
	for _, db := range sortedKeys(s.NotCopiedDBs) {
		fmt.Fprintf(w, "%s: not copied (not in --db-map): %s with %d keys\n", what, db, s.NotCopiedDBs[db])
	}
	for i, f := range s.Failures {
		if i == 20 {
			fmt.Fprintf(w, "%s: ... %d more failed keys (see --json)\n", what, s.KeysFailed-20)
			break
		}
		fmt.Fprintf(w, "%s: FAILED key %q: %s\n", what, f.Key, f.Reason)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "%s: %s\n", what, n)
	}
}

// progress draws a bar on a terminal and nothing otherwise.
type progress struct {
	bar *progressbar.ProgressBar
}

func newProgress(env *Env, what string) *progress {
	if !env.StderrIsTerminal {
		return &progress{}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(env.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("keys"),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionClearOnFinish(),
	)
	return &progress{bar: bar}
}

func (p *progress) update(pr engine.Progress) {
	if p.bar == nil {
		return
	}
	total := pr.Estimated
	if pr.Scanned > total {
		total = pr.Scanned
	}
	if total > 0 && p.bar.GetMax64() != total {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(pr.Done)
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// DefaultFallback is the copier's per-key fallback for payloads a target refuses; the function
// app uses the same one.
var DefaultFallback = fallback.New
