package cli

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/notifyfeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/psyncfeed"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/syncer"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

type syncFlags struct {
	copyFlags
	feed, state, metricsAddr, declaredEvents string
	cutover, enableNotify                    bool
	untilLag, pauseWrites, ttlTolerance      time.Duration
	maxPending                               int
}

func runSync(ctx context.Context, env *Env, args []string) error {
	var f syncFlags
	fs := newFlagSet(env, "sync", "--source URL --target URL [options]")
	f.bindScope(fs, "sync")
	fs.StringVar(&f.feed, "feed", "auto", "change feed: auto (psync where the source allows it, else notify), psync, notify")
	fs.StringVar(&f.existing, "existing", "fail", "keys already in the target at the first run: fail, skip, replace (later runs own the keys they copied)")
	fs.IntVar(&f.workers, "workers", 8, "parallel copier workers (initial copy and changes)")
	fs.IntVar(&f.batchKeys, "batch-keys", 500, "keys per batch of the initial copy")
	fs.BoolVar(&f.jsonOut, "json", false, "print a JSON status line every second and a JSON summary on stdout")
	fs.BoolVar(&f.noVerify, "no-verify", false, "cut over without the verification")
	fs.IntVar(&f.verifySample, "verify-sample", 10000, "keys the cutover verification checks (random sample)")
	fs.BoolVar(&f.verifyFull, "verify-full", false, "verify every key at cutover")
	fs.BoolVar(&f.cutover, "cutover", false, "cut over as soon as the target has caught up")
	fs.DurationVar(&f.untilLag, "until-lag", 0, "cut over once caught up with a lag at most this `duration` (e.g. 500ms)")
	fs.DurationVar(&f.pauseWrites, "pause-writes", 0, "at cutover, CLIENT PAUSE writes on every source master for this `duration` (e.g. 10s) so the target can match exactly")
	fs.DurationVar(&f.ttlTolerance, "ttl-tolerance", 2*time.Second, "expiry difference the verification accepts")
	fs.StringVar(&f.state, "state", "", "state `file` (default .redis-migrate-sync-<id>.json in the working directory); a rerun resumes from it")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this `address` (e.g. :9121)")
	fs.BoolVar(&f.enableNotify, "enable-notifications", false, "notify feed: set notify-keyspace-events with CONFIG SET if it lacks what sync needs")
	fs.StringVar(&f.declaredEvents, "notify-keyspace-events", "", "notify feed: the source's notify-keyspace-events `value`, for servers that refuse CONFIG GET (Azure Cache for Redis)")
	fs.IntVar(&f.maxPending, "max-pending", 500000, "changed keys held before a gap is declared (and repaired)")
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
	switch f.feed {
	case "auto", "psync", "notify":
	default:
		return usagef("--feed %q: want auto, psync or notify", f.feed)
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
	if err := config.CheckKeyType(f.scanType); err != nil {
		return usagef("--type: %v", err)
	}
	// Barriers come every 100ms: a lag below that is never measured.
	if f.untilLag < 0 || (f.untilLag > 0 && f.untilLag < 100*time.Millisecond) {
		return usagef("--until-lag %s: want at least 100ms (the lag is measured by a barrier every 100ms)", f.untilLag)
	}
	if f.pauseWrites < 0 || (f.pauseWrites > 0 && f.pauseWrites < time.Second) {
		return usagef("--pause-writes %s: want at least 1s (the pause covers the last changes and the verification)", f.pauseWrites)
	}
	if f.maxPending < 1000 {
		return usagef("--max-pending %d: want at least 1000", f.maxPending)
	}
	if f.verifySample < 1 {
		return usagef("--verify-sample %d: want at least 1 (or --verify-full, or --no-verify)", f.verifySample)
	}
	if f.ttlTolerance < 0 {
		return usagef("--ttl-tolerance %s: want 0 or more", f.ttlTolerance)
	}
	existing, err := copier.ParseExisting(f.existing)
	if err != nil {
		return usagef("--%v", err)
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
		dbMap = config.DBMap{Target: map[int]int{srcEP.DB: 0}, Prefix: map[int]string{}}
		if err := dbMap.ParseDBPrefixes(f.dbPrefix); err != nil {
			return usagef("--db-prefix: %v", err)
		}
	}
	var metricsLn net.Listener
	if f.metricsAddr != "" {
		// Listen first: a bad address is refused before anything is captured or written.
		if metricsLn, err = net.Listen("tcp", f.metricsAddr); err != nil {
			return usagef("--metrics-addr %s: %v", f.metricsAddr, err)
		}
		defer metricsLn.Close()
	}
	src, err := redisconn.Open(ctx, srcEP, redisconn.Options{Role: "source", PoolSize: f.workers + 4, LongLived: true})
	if err != nil {
		return usageError{err}
	}
	defer src.Close()
	dst, err := redisconn.Open(ctx, dstEP, redisconn.Options{Role: "target", PoolSize: f.workers + 4, LongLived: true})
	if err != nil {
		return usageError{err}
	}
	defer dst.Close()
	fitProcs(env, src, dst)
	if srcEP.Addr() == dstEP.Addr() {
		return usagef("source and target are the same server (%s)", srcEP)
	}

	// The state file: which migration it belongs to, without secrets.
	fingerprint := strings.Join([]string{srcEP.String(), dstEP.String(), "db-map=" + f.dbMap, "db-prefix=" + f.dbPrefix,
		"match=" + f.match, "type=" + f.scanType}, " ")
	statePath := f.state
	if statePath == "" {
		sum := sha1.Sum([]byte(fingerprint))
		statePath = ".redis-migrate-sync-" + hex.EncodeToString(sum[:4]) + ".json"
	}
	var resume *syncer.Checkpoint
	if b, err := os.ReadFile(statePath); err == nil {
		var cp syncer.Checkpoint
		if err := json.Unmarshal(b, &cp); err != nil {
			return usagef("--state %s: not a sync state file (%v); remove it to start over", statePath, err)
		}
		if cp.Options != fingerprint {
			return usagef("--state %s belongs to another migration (%s); remove it or pass another --state", statePath, redact.String(cp.Options))
		}
		resume = &cp
	} else if !errors.Is(err, os.ErrNotExist) {
		return usagef("--state %s: %v", statePath, err)
	}

	if f.pauseWrites > 0 {
		// Refuse now, before anything is written, if the source does not allow CLIENT PAUSE.
		for _, m := range src.Masters() {
			if err := src.Node(m, 0).Do(ctx, "CLIENT", "PAUSE", 1, "WRITE").Err(); err != nil {
				return usagef("--pause-writes: source %s refuses CLIENT PAUSE ... WRITE (%s): it needs Redis 6.2+ and the CLIENT command allowed for this user (Azure Cache for Redis and some managed services block it); stop the application's writes yourself and cut over without --pause-writes",
					m, oneLine(err))
			}
		}
	}

	copyOpts := copier.Options{Existing: existing, DBMap: dbMap, Fallback: DefaultFallback(dst), Reencode: fallback.Reencoder(dst), BigKeyBytes: f.bigKeyBytes}
	logf := func(msg string) { fmt.Fprintf(env.Stderr, "sync: %s\n", msg) }
	cfg := syncer.Config{
		Source: src, Target: dst,
		Plan:          plan.Options{Match: f.match, Type: f.scanType, BatchKeys: f.batchKeys},
		Copy:          copyOpts,
		ExplicitDBMap: f.dbMap != "" || srcEP.DBSet,
		AllowDBMerge:  f.allowMerge,
		Workers:       f.workers,
		MaxPending:    f.maxPending,
		Resume:        resume,
		Log:           logf,
	}
	var sy *syncer.Syncer
	loader := func(ctx context.Context, shard string, rdb io.Reader) error { return sy.Loader()(ctx, shard, rdb) }
	notify := func() changefeed.Feed {
		return notifyfeed.New(src, nil, notifyfeed.Options{Enable: f.enableNotify, Declared: f.declaredEvents, DBs: dbMap.Sources()})
	}
	var feeds []changefeed.Feed
	switch f.feed {
	case "notify":
		feeds = []changefeed.Feed{notify()}
	case "psync", "auto":
		feeds = append(feeds, psyncfeed.New(src, loader, psyncfeed.Options{DBs: dbMap.Sources(), Log: logf}))
		if f.feed == "auto" {
			feeds = append(feeds, notify())
		}
	}
	if resume != nil && resume.Feed != "" {
		// A resumed run keeps its feed: positions and the initial copy belong to it.
		var keep []changefeed.Feed
		for _, fd := range feeds {
			if fd.Name() == resume.Feed {
				keep = append(keep, fd)
			}
		}
		if len(keep) > 0 {
			feeds = keep
		}
	}
	var startErr error
	var notPossible []string // feeds auto tried first: noted once the next one starts
	for i, fd := range feeds {
		cfg.Feed = fd
		sy = syncer.New(cfg)
		startErr = sy.Start(ctx)
		var refused *changefeed.RefusedError
		if startErr != nil && errors.As(startErr, &refused) && i < len(feeds)-1 {
			notPossible = append(notPossible, fmt.Sprintf("feed %s not possible here (%s)", fd.Name(), startErr))
			continue
		}
		break
	}
	if startErr != nil {
		if len(notPossible) > 0 {
			// One line: why the last feed refused, then why the ones before did.
			return usagef("%s; %s", startErr, strings.Join(notPossible, "; "))
		}
		return usageError{startErr}
	}
	for _, n := range notPossible {
		logf(n + "; using " + cfg.Feed.Name())
	}
	logf(fmt.Sprintf("capturing changes with the %s feed on %d source master(s); state in %s", cfg.Feed.Name(), len(cfg.Feed.Shards()), statePath))

	if metricsLn != nil {
		defer serveMetrics(metricsLn, sy).Close()
	}

	saveState := func() {
		cp := sy.Checkpoint(false)
		cp.Options = fingerprint
		if err := writeState(statePath, cp); err != nil {
			logf("cannot save the state: " + err.Error())
		}
	}

	saveState() // a run killed during its initial copy resumes with a repair pass, not a copy
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	runCtx := context.WithoutCancel(ctx)
	line := newStatusLine(env, f.jsonOut)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	cutover := false
	var stopErr error
	start := time.Now()
wait:
	for {
		st := sy.Status()
		caughtUp := false
		if _, ok := sy.CaughtUp(time.Time{}); ok {
			caughtUp = true
		}
		if caughtUp && (f.cutover || (f.untilLag > 0 && st.LagMs >= 0 && time.Duration(st.LagMs)*time.Millisecond <= f.untilLag)) {
			cutover = true
			break
		}
		select {
		case <-env.Cutover:
			cutover = true
			break wait
		case sig := <-sigs:
			if sig == os.Interrupt {
				logf("interrupted: cutting over once caught up (interrupt again to stop now)")
				cutover = true
			} else {
				stopErr = errors.New("stopped by SIGTERM; run the same command again to resume")
			}
			break wait
		case <-tick.C:
			line.update(sy.Status(), time.Since(start)) // st may be a second old by now
			saveState()
		}
	}
	if !cutover {
		line.finish()
		saveState()
		sy.Close()
		saveState()
		logf(stopErr.Error())
		return exitError{ExitError}
	}
	cctx, cancel := context.WithCancel(runCtx)
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			logf(fmt.Sprintf("%s during the cutover: stopping", sig))
			cancel()
		case <-cctx.Done():
		}
	}()
	res, err := cutoverRun(cctx, env, sy, src, dst, cfg, f, line)
	line.finish()
	saveState()
	sy.Close()
	saveState()
	if stopErr != nil {
		return stopErr
	}
	if err != nil {
		if cctx.Err() != nil {
			fmt.Fprintf(env.Stderr, "sync: stopped before the cutover finished; run the same command again to resume\n")
			return exitError{ExitError}
		}
		return err
	}
	if f.jsonOut {
		_ = writeJSON(env.Stdout, res)
	}
	if !res.Matches {
		return exitError{ExitFailures}
	}
	return nil
}

// cutoverResult is the JSON summary of a cutover.
type cutoverResult struct {
	Matches      bool                `json:"matches"`
	AsOf         time.Time           `json:"as_of"`
	Paused       bool                `json:"writes_paused"`
	CutoverMs    int64               `json:"cutover_ms"`
	Status       syncer.Status       `json:"status"`
	Verify       *verify.Report      `json:"verify,omitempty"`
	PendingAfter int                 `json:"pending_after,omitempty"`
	FailedKeys   int64               `json:"keys_failed"`
	Failures     []copier.KeyFailure `json:"failures,omitempty"`
	PeakRSS      int64               `json:"peak_rss_bytes,omitempty"`
}

func cutoverRun(ctx context.Context, env *Env, sy *syncer.Syncer, src, dst *redisconn.Conn, cfg syncer.Config, f syncFlags, line *statusLine) (*cutoverResult, error) {
	logf := func(msg string) { line.clear(); fmt.Fprintf(env.Stderr, "sync: %s\n", msg) }
	// --until-lag already held when the cutover began; a second is close enough for the pause.
	maxLag := max(f.untilLag, time.Second)
	// Wait to be caught up first (a pause should be short).
	waitTick := time.NewTicker(time.Second)
	defer waitTick.Stop()
	for {
		if T, ok := sy.CaughtUp(time.Time{}); ok && time.Since(T) <= maxLag {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-waitTick.C:
			line.update(sy.Status(), 0)
		case <-time.After(20 * time.Millisecond):
		}
	}
	res := &cutoverResult{}
	began := time.Now()
	after := time.Now()
	if f.pauseWrites > 0 {
		ms := f.pauseWrites.Milliseconds()
		for _, m := range src.Masters() {
			if err := src.Node(m, 0).Do(ctx, "CLIENT", "PAUSE", ms, "WRITE").Err(); err != nil {
				return nil, fmt.Errorf("CLIENT PAUSE on source %s: %s", m, oneLine(err))
			}
		}
		after = time.Now()
		res.Paused = true
		logf(fmt.Sprintf("writes paused on %d source master(s) for %s; applying the last changes", len(src.Masters()), f.pauseWrites))
	}
	wctx := ctx
	if f.pauseWrites > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, f.pauseWrites)
		defer cancel()
	}
	T, err := sy.WaitCaughtUp(wctx, after, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("the target did not catch up within the %s pause; rerun with a longer --pause-writes", f.pauseWrites)
	}
	logf(fmt.Sprintf("caught up as of %s, %.1fs after the cutover began", T.UTC().Format(time.RFC3339Nano), time.Since(began).Seconds()))
	res.AsOf = T
	res.Matches = true
	if !f.noVerify {
		sample := f.verifySample
		if f.verifyFull {
			sample = 0
		}
		vo := verify.Options{DBMap: cfg.Copy.DBMap, Match: cfg.Plan.Match, Type: cfg.Plan.Type, Sample: sample,
			Workers: cfg.Workers, TTLTolerance: f.ttlTolerance}
		var rep *verify.Report
		for attempt := 0; attempt < 3; attempt++ {
			rep, err = verify.Run(ctx, src, dst, vo)
			if err != nil {
				return nil, fmt.Errorf("verification could not run: %s", redact.Error(err))
			}
			if rep.Ok() {
				break
			}
			logf(fmt.Sprintf("verification %d: %d keys differ (%.1fs after the cutover began); looking again after the next barrier", attempt+1, rep.Differing(), time.Since(began).Seconds()))
			// Keys that changed while they were compared: wait for the next applied barrier and
			// look again.
			if T2, err := sy.WaitCaughtUp(ctx, time.Now(), 0); err == nil {
				res.AsOf = T2
			}
		}
		res.Verify = rep
		res.Matches = rep.Ok()
	}
	res.CutoverMs = time.Since(began).Milliseconds()
	res.Status = sy.Status()
	res.PendingAfter = res.Status.Pending
	res.FailedKeys = res.Status.Failed + res.Status.Initial.KeysFailed
	res.Failures = sy.Failures()
	res.PeakRSS = engine.PeakRSS()
	if res.FailedKeys > 0 {
		res.Matches = false
	}
	line.clear()
	if res.Verify != nil {
		printVerify(env.Stderr, "sync", res.Verify)
	}
	for i, fl := range res.Failures {
		if i == 20 {
			break
		}
		fmt.Fprintf(env.Stderr, "sync: FAILED key %q: %s\n", fl.Key, fl.Reason)
	}
	asOf := res.AsOf.UTC().Format(time.RFC3339Nano)
	switch {
	case res.Matches && res.Paused:
		fmt.Fprintf(env.Stderr, "sync: the target matches the source as of %s (writes paused, cutover took %.1fs): switch the application to the target now\n",
			asOf, float64(res.CutoverMs)/1000)
	case res.Matches:
		fmt.Fprintf(env.Stderr, "sync: the target matches the source as of %s; writes were not paused, so changes made since (%d keys pending now) may still arrive: stop the application's writes before switching, or use --pause-writes\n",
			asOf, res.PendingAfter)
	default:
		// A key the target refused usually differs in the verification too: name it once.
		var names []string
		named := map[string]bool{}
		if res.Verify != nil {
			for _, d := range res.Verify.Differences {
				if len(names) < 10 && !named[d.Key] {
					named[d.Key] = true
					names = append(names, fmt.Sprintf("%q (%s)", d.Key, d.Kind))
				}
			}
		}
		for _, fl := range res.Failures {
			if len(names) < 10 && !named[fl.Key] {
				named[fl.Key] = true
				names = append(names, fmt.Sprintf("%q (failed)", fl.Key))
			}
		}
		var counts []string
		if res.Verify != nil && res.Verify.Differing() > 0 {
			counts = append(counts, fmt.Sprintf("%d keys differ", res.Verify.Differing()))
		}
		if res.FailedKeys > 0 {
			counts = append(counts, fmt.Sprintf("%d keys were refused by the target", res.FailedKeys))
		}
		fmt.Fprintf(env.Stderr, "sync: the target does NOT match the source as of %s: %s: %s; do not switch yet\n",
			asOf, strings.Join(counts, ", "), strings.Join(names, ", "))
	}
	return res, nil
}

func writeState(path string, cp syncer.Checkpoint) error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func oneLine(err error) string { return strings.ReplaceAll(redact.Error(err), "\n", " ") }

// statusLine draws the sync status: redrawn in place on a terminal, a JSON line per second with
// --json, a plain line every 10 s otherwise. Each carries the applied keys per second since the
// previous update.
type statusLine struct {
	env   *Env
	json  bool
	last  time.Time
	drawn bool

	rateAt      time.Time
	rateApplied int64
	rate        float64
}

// statusJSON is a --json status line: the engine's status and the apply rate.
type statusJSON struct {
	syncer.Status
	AppliedPerSec float64 `json:"keys_applied_per_second"`
}

func newStatusLine(env *Env, jsonOut bool) *statusLine {
	return &statusLine{env: env, json: jsonOut, rateAt: time.Now()} // the first rate is since the start
}

func (l *statusLine) update(st syncer.Status, _ time.Duration) {
	now := time.Now()
	if now.Sub(l.rateAt) >= 100*time.Millisecond {
		l.rate = float64(st.Applied-l.rateApplied) / now.Sub(l.rateAt).Seconds()
		l.rateAt, l.rateApplied = now, st.Applied
	}
	if l.json {
		b, _ := json.Marshal(statusJSON{st, l.rate})
		fmt.Fprintln(l.env.Stdout, string(b))
		return
	}
	lag := "-"
	if st.LagMs >= 0 {
		lag = (time.Duration(st.LagMs) * time.Millisecond).String()
	}
	txt := fmt.Sprintf("sync: %s, lag %s, %d pending, %d applied (%.0f/s), %d repaired, gaps %d (%d open), initial copy %d keys",
		st.Phase, lag, st.Pending, st.Applied, l.rate, st.RepairFixed, st.Gaps, st.GapsOpen, st.Initial.KeysCopied)
	if l.env.StderrIsTerminal {
		fmt.Fprintf(l.env.Stderr, "\r\033[K%s", txt)
		l.drawn = true
		return
	}
	if time.Since(l.last) >= 10*time.Second {
		l.last = time.Now()
		fmt.Fprintln(l.env.Stderr, txt)
	}
}

func (l *statusLine) clear() {
	if l.drawn {
		fmt.Fprint(l.env.Stderr, "\r\033[K")
		l.drawn = false
	}
}

func (l *statusLine) finish() { l.clear() }
