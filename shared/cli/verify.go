package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

func runVerifyCommand(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "verify", "--source URL --target URL [--sample N | --full] [options]")
	source := fs.String("source", "", "source `URL`")
	target := fs.String("target", "", "target `URL`")
	sample := fs.Int("sample", 0, "check `N` random keys instead of every key")
	full := fs.Bool("full", false, "check every key (the default when --sample is not given)")
	tol := fs.Duration("ttl-tolerance", 2*time.Second, "largest accepted difference between source and target expiry")
	match := fs.String("match", "", "check only keys matching this `glob`")
	typ := fs.String("type", "", "check only keys of this `type` (as given to copy --type)")
	dbMapS := fs.String("db-map", "", "source-to-target databases as given to copy, e.g. `0:0,3:0`")
	dbPrefix := fs.String("db-prefix", "", "key prefix per source db as given to copy, e.g. `3:legacy:`")
	workers := fs.Int("workers", 8, "parallel checkers")
	compare := fs.String("compare", verify.CompareDump, "how values are compared: `dump` (DUMP payloads, decoded where they differ; digests for big keys) or digest (in-server digests of every key)")
	jsonOut := fs.Bool("json", false, "print the report as JSON on stdout")
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
	if *source == "" || *target == "" {
		return usagef("--source and --target are required")
	}
	if err := config.CheckKeyType(*typ); err != nil {
		return usagef("--type: %v", err)
	}
	if *full && *sample > 0 {
		return usagef("--full and --sample exclude each other")
	}
	if *compare != verify.CompareDump && *compare != verify.CompareDigest {
		return usagef("--compare %q: want dump or digest", *compare)
	}
	if *sample < 0 {
		return usagef("--sample %d: want a positive count", *sample)
	}
	m, err := config.ParseDBMap(*dbMapS)
	if err != nil {
		return usagef("--db-map: %v", err)
	}
	if err := m.ParseDBPrefixes(*dbPrefix); err != nil {
		return usagef("--db-prefix: %v", err)
	}
	srcEP, err := config.ParseEndpoint(*source)
	if err != nil {
		return usagef("--source: %v", err)
	}
	dstEP, err := config.ParseEndpoint(*target)
	if err != nil {
		return usagef("--target: %v", err)
	}
	src, err := redisconn.Open(ctx, srcEP, redisconn.Options{Role: "source", PoolSize: *workers + 2})
	if err != nil {
		return usageError{err}
	}
	defer src.Close()
	dst, err := redisconn.Open(ctx, dstEP, redisconn.Options{Role: "target", PoolSize: *workers + 2})
	if err != nil {
		return usageError{err}
	}
	defer dst.Close()
	fitProcs(env, src, dst)
	rep, err := verify.Run(ctx, src, dst, verify.Options{DBMap: m, Match: *match, Type: *typ, Sample: *sample, TTLTolerance: *tol, Workers: *workers, Compare: *compare})
	if err != nil {
		return err
	}
	rep.PeakRSS = engine.PeakRSS()
	if *jsonOut {
		_ = writeJSON(env.Stdout, rep)
	}
	printVerify(env.Stderr, "verify", rep)
	if !rep.Ok() {
		return exitError{ExitFailures}
	}
	return nil
}

func printVerify(w io.Writer, what string, rep *verify.Report) {
	fmt.Fprintf(w, "%s: %s: checked %d keys in %.1fs: %d match, %d missing, %d different type, %d different value, %d different TTL, %d unreadable",
		what, rep.Mode, rep.Checked, rep.Seconds, rep.Matching, rep.Missing, rep.TypeDiff, rep.ValueDiff, rep.TTLDiff, rep.Errors)
	if rep.GoneSource > 0 {
		fmt.Fprintf(w, "; %d gone from the source meanwhile", rep.GoneSource)
	}
	fmt.Fprintln(w)
	switch {
	case !rep.ExtraChecked:
		fmt.Fprintf(w, "%s: keys that exist only in the target are not looked for by a sample (a full verification scans the target)\n", what)
	case rep.Extra > 0 && rep.ExtraAllowed:
		fmt.Fprintf(w, "%s: the target holds %d keys the source does not have (kept: the target was not empty)\n", what, rep.Extra)
	case rep.Extra > 0:
		fmt.Fprintf(w, "%s: the target holds %d keys the source does not have\n", what, rep.Extra)
	}
	for _, d := range rep.Differences {
		fmt.Fprintf(w, "%s: DIFFERENT %s key %q: %s\n", what, d.Kind, d.Key, d.Detail)
	}
	if n := rep.Listed() - int64(len(rep.Differences)); n > 0 {
		fmt.Fprintf(w, "%s: ... and %d more differing keys\n", what, n)
	}
	if rep.Ok() {
		fmt.Fprintf(w, "%s: OK: the target holds every checked key with the same type, value and TTL\n", what)
	}
}
