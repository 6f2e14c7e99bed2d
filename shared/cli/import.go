package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/redis-migrate/redis-migrate/shared/blobsrc"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/importer"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

func runImportCommand(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "import", "FILE --target URL [options]   or   import --blob URL --target URL [options]")
	target := fs.String("target", "", "target `URL`")
	blobURL := fs.String("blob", "", "read the RDB from Azure Blob storage (`URL`, with a SAS or with AZURE_STORAGE_CONNECTION_STRING / Entra ID)")
	match := fs.String("match", "", "import only keys matching this `glob`")
	existing := fs.String("existing", "fail", "keys already in the target: fail (refuse a non-empty target), skip, replace")
	dbMapS := fs.String("db-map", "", "file-to-target databases, e.g. `0:0,3:0` (default 0:0; other dbs must be mapped)")
	dbPrefix := fs.String("db-prefix", "", "key prefix per file db, e.g. `3:legacy:`")
	functions := fs.String("functions", "skip", "FUNCTION libraries in the file: skip, load, replace")
	modules := fs.String("modules", "fail", "module values the target cannot load: fail (report the key) or skip")
	skipCRC := fs.Bool("skip-checksum", false, "do not verify the file's CRC64")
	workers := fs.Int("workers", 4, "parallel pipelined writers")
	noVerify := fs.Bool("no-verify", false, "skip the verification that re-reads the file and checks the target")
	jsonOut := fs.Bool("json", false, "print one JSON summary on stdout")
	checkFirst := fs.Bool("check-first", false, "read the whole input once (CRC64, or every entry) before writing anything, so a corrupt file imports nothing. "+
		"Default on for a local file (its second read comes from the page cache), off for --blob (it doubles the blob reads)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err.Error() == "flag: help requested" {
			return exitError{ExitOK}
		}
		return usageError{err}
	}
	if (len(pos) == 1) == (*blobURL != "") || len(pos) > 1 {
		return usagef("give exactly one RDB file, or --blob URL")
	}
	if *target == "" {
		return usagef("--target is required")
	}
	checkFirstSet := false
	fs.Visit(func(f *flag.Flag) { checkFirstSet = checkFirstSet || f.Name == "check-first" })
	if !checkFirstSet && *blobURL == "" {
		*checkFirst = true
	}
	ex, err := copier.ParseExisting(*existing)
	if err != nil {
		return usagef("--%v", err)
	}
	if *functions != importer.FunctionsSkip && *functions != importer.FunctionsLoad && *functions != importer.FunctionsReplace {
		return usagef("--functions %q: want skip, load or replace", *functions)
	}
	if *modules != importer.ModulesSkip && *modules != importer.ModulesFail {
		return usagef("--modules %q: want skip or fail", *modules)
	}
	m, err := config.ParseDBMap(*dbMapS)
	if err != nil {
		return usagef("--db-map: %v", err)
	}
	if err := m.ParseDBPrefixes(*dbPrefix); err != nil {
		return usagef("--db-prefix: %v", err)
	}
	dstEP, err := config.ParseEndpoint(*target)
	if err != nil {
		return usagef("--target: %v", err)
	}
	// Open the input before the target, so a wrong path fails fast.
	var open func(offset int64) (io.Reader, func(), error)
	var size int64
	if *blobURL != "" {
		b, err := blobsrc.Open(ctx, *blobURL, env.Getenv("AZURE_STORAGE_CONNECTION_STRING"))
		if err != nil {
			return usageError{err}
		}
		size = b.Size
		open = func(off int64) (io.Reader, func(), error) { return b.Reader(ctx, off), func() {}, nil }
	} else {
		st, err := os.Stat(pos[0])
		if err != nil {
			return usagef("%v", err)
		}
		if st.IsDir() {
			return usagef("%s is a directory, not an RDB file", pos[0])
		}
		size = st.Size()
		open = func(off int64) (io.Reader, func(), error) {
			f, err := os.Open(pos[0])
			if err != nil {
				return nil, nil, err
			}
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				f.Close()
				return nil, nil, err
			}
			return f, func() { f.Close() }, nil
		}
	}
	// A file that is not an RDB (or of a version we do not read) is bad input: refuse it before
	// touching the target.
	if err := checkHeader(open); err != nil {
		name := "the blob"
		if len(pos) == 1 {
			name = pos[0]
		}
		return usagef("%s: %v", name, err)
	}
	dst, err := redisconn.Open(ctx, dstEP, redisconn.Options{Role: "target", PoolSize: *workers + 4})
	if err != nil {
		return usageError{err}
	}
	defer dst.Close()
	fitProcs(env, dst)
	o := importer.Options{
		Existing: ex, DBMap: m, ExplicitDBMap: *dbMapS != "", Match: *match,
		Functions: *functions, Modules: *modules, SkipChecksum: *skipCRC, Workers: *workers,
	}
	if err := importer.Check(ctx, dst, o); err != nil {
		return usageError{err}
	}
	var preNotes []string
	if w := engine.FileShortfall(ctx, dst, size, *match); w != "" {
		fmt.Fprintf(env.Stderr, "import: warning: %s\n", w) // now, before the import writes anything
		preNotes = append(preNotes, w)
	}
	if *checkFirst {
		if env.StderrIsTerminal {
			fmt.Fprintln(env.Stderr, "checking the whole input before writing anything (--check-first=false skips this)")
		}
		if err := importer.CheckFirst(ctx, open, *skipCRC); err != nil {
			name := "the blob"
			if len(pos) == 1 {
				name = pos[0]
			}
			var ce *importer.CheckError
			if errors.As(err, &ce) {
				hint := ""
				if errors.Is(err, rdb.ErrChecksum) {
					hint = "; --skip-checksum imports it anyway"
				}
				return usagef("%s: %v; nothing was written (the file is checked before importing%s)", name, err, hint)
			}
			return usageError{fmt.Errorf("%s: checking before writing: %w", name, err)}
		}
	}
	r, closeInput, err := open(0)
	if err != nil {
		return usagef("%v", err)
	}
	defer closeInput()
	bar := newByteProgress(env, size)
	o.Progress = bar.update
	evictedBefore, evictionsKnown := dst.Evictions(ctx)
	start := time.Now()
	sum, err := importer.Import(ctx, r, dst, o)
	bar.finish()
	es := importSummary(sum, time.Since(start))
	es.Notes = append(preNotes, es.Notes...)
	if n, known := dst.Evictions(ctx); known && evictionsKnown && n > evictedBefore {
		es.TargetEvictions = n - evictedBefore
		es.Notes = append(es.Notes, engine.EvictionNote("import", es.TargetEvictions))
	}
	if err != nil {
		reportSummary(env, "import", es, *jsonOut)
		var re *rdb.Error
		if errors.As(err, &re) && len(pos) == 1 {
			return fmt.Errorf("%s: %v", pos[0], err) // the file is at fault: name it
		}
		return fmt.Errorf("%v", err)
	}
	ok := sum.Failed == 0 && es.TargetEvictions == 0
	if !*noVerify {
		in, closeAgain, err := open(0)
		if err != nil {
			return err
		}
		o.WroteAll = sum.Failed == 0 && sum.Skipped == 0
		rep, err := importer.Verify(ctx, in, dst, o)
		closeAgain()
		if err != nil {
			es.Notes = append(es.Notes, "verification could not run: "+err.Error())
			ok = false
		} else {
			es.Verify = rep
			if es.TargetEvictions > 0 && rep.Ok() && sum.Failed == 0 {
				// The verification found every key of the file: the evictions took others.
				ok = true
				es.Notes = append(es.Notes, "the verification found every key of the file in the target after the evictions: none of the import's keys was evicted")
			}
			ok = ok && rep.Ok()
			defer printVerify(env.Stderr, "verify", rep)
		}
	}
	reportSummary(env, "import", es, *jsonOut)
	if !ok {
		return exitError{ExitFailures}
	}
	return nil
}

// importSummary presents an import in the same JSON shape as copy.
func importSummary(s *importer.Summary, d time.Duration) engine.Summary {
	out := engine.Summary{
		KeysScanned: s.Scanned, KeysCopied: s.Copied, KeysSkipped: s.Skipped, KeysMissing: s.Missing,
		KeysExpired: s.Expired, KeysFailed: s.Failed, KeysFallback: s.Fallback, KeysBig: s.Big,
		Bytes: s.Bytes, Seconds: d.Seconds(), Failures: s.Failures, NotCopiedDBs: s.NotCopiedDBs,
		Notes: append([]string(nil), s.Notes...),
	}
	if s.FunctionsFound > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d of %d function libraries loaded (--functions)", s.Functions, s.FunctionsFound))
	}
	if s.ModuleAux > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d module AUX records (module-global data) were not imported", s.ModuleAux))
	}
	if s.EmptySkipped > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d empty collections in the file were skipped (Redis does not keep empty keys)", s.EmptySkipped))
	}
	return out
}

// byteProgress is the import's bar: bytes of the file.
type byteProgress struct {
	bar *progressbar.ProgressBar
}

func newByteProgress(env *Env, size int64) *byteProgress {
	if !env.StderrIsTerminal || size <= 0 {
		return &byteProgress{}
	}
	return &byteProgress{bar: progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(env.Stderr), progressbar.OptionSetDescription("import"),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(), progressbar.OptionClearOnFinish())}
}

func (p *byteProgress) update(offset int64, r copier.Result) {
	if p.bar != nil {
		_ = p.bar.Set64(offset)
		p.bar.Describe(fmt.Sprintf("import (%d keys)", r.Keys()))
	}
}

func (p *byteProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// checkHeader reads the input's RDB header only.
func checkHeader(open func(offset int64) (io.Reader, func(), error)) error {
	r, closeInput, err := open(0)
	if err != nil {
		return err
	}
	defer closeInput()
	_, err = rdb.NewReader(io.LimitReader(r, 9), rdb.Options{})
	return err
}
